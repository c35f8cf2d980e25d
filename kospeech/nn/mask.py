"""Masks from lengths, built once per batch (batch first, True marks a real frame or token)."""

from __future__ import annotations

import torch


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True where a position holds data."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def causal_mask(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool mask, True where position i may attend to position j (j <= i)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()
