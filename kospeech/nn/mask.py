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


def chunk_mask(size: int, chunk_size: int, left_chunks: int = -1, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool mask for chunk-wise self-attention, True where frame i may attend to frame j.

    Frames are cut into chunks of ``chunk_size`` counted from frame 0; a frame sees every frame
    of its own chunk and of the ``left_chunks`` chunks before it (all earlier chunks when
    ``left_chunks`` < 0), never a later chunk. So an output frame waits for the end of its chunk
    at most, which is what lets a stream emit it before the utterance ends; and because chunks
    are counted from the first frame, a window that starts at a chunk boundary computes the
    frames exactly as the whole utterance does. Built from ``arange`` so a traced graph keeps
    ``size`` dynamic.
    """
    chunk = torch.arange(size, device=device) // chunk_size
    mask = chunk[None, :] <= chunk[:, None]
    if left_chunks >= 0:
        mask = mask & (chunk[None, :] >= chunk[:, None] - left_chunks)
    return mask
