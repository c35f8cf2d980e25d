"""Dropout whose mask is cheap to draw on CPU."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same options, same state dict) that on CPU draws its mask from uniform
    floats: PyTorch's CPU dropout draws a Bernoulli sample per element, which costs about twice
    as much, and in a small convolutional model the draws were a tenth of an update. On other
    devices, in eval mode, or with ``p`` 0 or 1 it is ``nn.Dropout``. The random stream differs
    from ``nn.Dropout``'s, so a model swapping one for the other trains on other masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return super().forward(x)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep
