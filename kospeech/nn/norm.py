"""Normalisation layers shared by the encoders."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _MaskedBatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm over the real frames of ``(B, C, T)``, with its backward written
    out: the statistics take a handful of passes over the activations, where autograd through
    the same formulas took about three times as many (the norm was a tenth of a small
    convolutional model's update on CPU). The arithmetic is the textbook one (centred variance)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        count = mask.sum().clamp(min=2.0)
        mean = (x * mask).sum(dim=(0, 2)) / count
        centred = (x - mean[:, None]) * mask
        var = centred.pow(2).sum(dim=(0, 2)) / count
        invstd = torch.rsqrt(var + eps)
        normed = centred * invstd[:, None]  # zero at padding
        y = torch.addcmul(bias[:, None], normed, weight[:, None]) * mask
        ctx.save_for_backward(normed, invstd, mask, weight, count)
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        normed, invstd, mask, weight, count = ctx.saved_tensors
        g = grad_y * mask
        grad_bias = g.sum(dim=(0, 2))
        grad_weight = (g * normed).sum(dim=(0, 2))
        # d/dx of (x - mean) * invstd over the real frames: the mean and variance take their share
        grad_x = (g - (grad_bias / count)[:, None] - normed * (grad_weight / count)[:, None])
        grad_x = grad_x * (weight * invstd)[:, None] * mask
        return grad_x, None, grad_weight, grad_bias, None


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

        ``channels_last``: x (B, T, C) and mask (B, T) or (B, T, 1), the layout in which a 1x1
        convolution is one matrix product; in eval mode it is normalised as it lies."""
        if channels_last:
            if mask is not None and mask.dim() == 3:
                mask = mask[..., 0]
            if self.training or self.running_mean is None:
                return self.forward(x.transpose(1, 2), mask).transpose(1, 2)
            y = super().forward(x.reshape(-1, x.size(-1))).view(x.shape)
            return y if mask is None else y * mask[..., None].to(x.dtype)
        if mask is None:
            return super().forward(x)
        if mask.dim() == 2:
            mask = mask[:, None, :]
        if not self.training and self.running_mean is not None:
            return super().forward(x) * mask.to(x.dtype)
        # statistics in float32 whatever autocast made x (bf16 sums drift; the buffers are fp32)
        out_dtype = x.dtype
        x, mask = x.float(), mask.float()
        weight = self.weight if self.affine else x.new_ones(x.size(1))
        bias = self.bias if self.affine else x.new_zeros(x.size(1))
        y, mean, var, count = _MaskedBatchNormTrain.apply(x, mask, weight, bias, self.eps)
        if self.training and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / (count - 1), momentum)
        return y.to(out_dtype)
