"""Normalisation layers shared by the encoders."""

from __future__ import annotations

import torch
from torch import nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over ``(B, C, T)`` whose statistics count real frames only.

    With plain ``BatchNorm1d`` the padding of a batch shifts the mean and variance, so an
    utterance's output in training would depend on its batch mates' lengths. Padded outputs are
    zero, which is also what the next convolution must see past the end of an utterance. In
    eval mode the running statistics are used, so outputs never depend on padding.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """x (B, C, T), mask (B, T) bool or (B, 1, T) 0/1, true at real frames -> (B, C, T)."""
        if mask is None:
            return super().forward(x)
        if mask.dim() == 2:
            mask = mask[:, None, :]
        if not self.training and self.running_mean is not None:
            return super().forward(x) * mask.to(x.dtype)
        # statistics in float32 whatever autocast made x (bf16 sums drift; the buffers are fp32)
        out_dtype = x.dtype
        x, mask = x.float(), mask.float()
        count = mask.sum().clamp(min=2.0)
        mean = (x * mask).sum(dim=(0, 2)) / count
        centred = (x - mean[:, None]) * mask
        var = centred.pow(2).sum(dim=(0, 2)) / count
        if self.training and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        y = centred * torch.rsqrt(var + self.eps)[:, None]
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return (y * mask).to(out_dtype)
