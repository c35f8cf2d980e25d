"""Normalisation layers shared by the encoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _per_channel(stat: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A (C,) statistic shaped to broadcast over (B, C, T), or over (B, T, C) as it is."""
    return stat if channels_last else stat[:, None]


class _MaskedBatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm over the real frames of ``(B, C, T)`` or ``(B, T, C)``, with its
    backward written out: the statistics take a handful of passes over the activations, where
    autograd through the same formulas took about three times as many (the norm was a tenth of
    a small convolutional model's update on CPU). The arithmetic is the textbook one (centred
    variance)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dims = (0, 1) if channels_last else (0, 2)
        count = mask.sum().clamp(min=2.0)
        mean = (x * mask).sum(dim=dims) / count
        centred = (x - _per_channel(mean, channels_last)) * mask
        var = centred.pow(2).sum(dim=dims) / count
        invstd = torch.rsqrt(var + eps)
        normed = centred * _per_channel(invstd, channels_last)  # zero at padding
        y = torch.addcmul(_per_channel(bias, channels_last), normed, _per_channel(weight, channels_last)) * mask
        ctx.save_for_backward(normed, invstd, mask, weight, count)
        ctx.channels_last = channels_last
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        normed, invstd, mask, weight, count = ctx.saved_tensors
        last = ctx.channels_last
        dims = (0, 1) if last else (0, 2)
        g = grad_y * mask
        grad_bias = g.sum(dim=dims)
        grad_weight = (g * normed).sum(dim=dims)
        # d/dx of (x - mean) * invstd over the real frames: the mean and variance take their share
        grad_x = g - _per_channel(grad_bias / count, last) - normed * _per_channel(grad_weight / count, last)
        grad_x = grad_x * _per_channel(weight * invstd, last) * mask
        return grad_x, None, grad_weight, grad_bias, None, None


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over ``(B, C, T)`` (or ``(B, T, C)`` with ``channels_last``) whose statistics
    count real frames only.

    With plain ``BatchNorm1d`` the padding of a batch shifts the mean and variance, so an
    utterance's output in training would depend on its batch mates' lengths. Padded outputs are
    zero, which is also what the next convolution must see past the end of an utterance. In
    eval mode the running statistics are used, so outputs never depend on padding.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, mask: torch.Tensor | None = None, *, channels_last: bool = False
    ) -> torch.Tensor:
        """x (B, C, T), mask (B, T) bool or (B, 1, T) 0/1, true at real frames -> (B, C, T).

        ``channels_last``: x (B, T, C) and mask (B, T) or (B, T, 1), the layout in which a
        1x1 convolution is a plain matrix product."""
        if channels_last:
            if mask is not None and mask.dim() == 2:
                mask = mask[:, :, None]
            if not self.training and self.running_mean is not None:
                y = super().forward(x.reshape(-1, x.size(-1))).view(x.shape)
                return y if mask is None else y * mask.to(x.dtype)
            if mask is None:
                mask = x.new_ones(x.shape[:-1] + (1,))
        else:
            if mask is None:
                return super().forward(x)
            if mask.dim() == 2:
                mask = mask[:, None, :]
            if not self.training and self.running_mean is not None:
                return super().forward(x) * mask.to(x.dtype)
        # statistics in float32 whatever autocast made x (bf16 sums drift; the buffers are fp32)
        out_dtype = x.dtype
        x, mask = x.float(), mask.float()
        weight = self.weight if self.affine else x.new_ones(self.num_features)
        bias = self.bias if self.affine else x.new_zeros(self.num_features)
        y, mean, var, count = _MaskedBatchNormTrain.apply(x, mask, weight, bias, self.eps, channels_last)
        if self.training and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1), momentum)
        return y.to(out_dtype)
