"""Dropout fused with the ReLU before it, its mask cheap to draw on CPU."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A bool mask shaped like ``x``, True with probability ``1 - p`` (to 1 / 65536), drawn on
    CPU from 64-bit random words read as four 16-bit ones: PyTorch's CPU generator costs per
    number it writes, so one word per four elements is about a third of a uniform float per
    element (and a Bernoulli draw per element, PyTorch's CPU dropout, costs twice that)."""
    words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    return words.view(torch.int16)[: x.numel()].view(x.shape) >= -32768 + round(p * 65536)


class _ReLUDropout(torch.autograd.Function):
    """ReLU then dropout as one mask: an element passes when it is positive and kept, scaled by
    1 / (1 - p). One bool tensor is saved for the backward, where the two layers apart saved the
    activation and the mask and took a pass each way for each."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:
        passes = _keep_mask(x, p).logical_and_(x > 0)
        ctx.save_for_backward(passes)
        ctx.scale = 1.0 / (1.0 - p)
        return x.mul(passes).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (passes,) = ctx.saved_tensors
        return grad.mul(passes).mul_(ctx.scale), None


def relu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``dropout(relu(x))``; fused (:class:`_ReLUDropout`) in CPU training, the plain ops elsewhere."""
    if not training or not 0.0 < p < 1.0 or x.device.type != "cpu":
        return nn.functional.dropout(torch.relu(x), p, training)
    return _ReLUDropout.apply(x, p)
