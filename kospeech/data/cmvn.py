"""Global cepstral mean and variance normalisation (CMVN) over a training set.

Statistics are streaming sums in float64 (count, sum, sum of squares per dimension): a
KsponSpeech training set has ~10^8 frames, where float32 sums lose the low digits and a
two-pass mean would read the dump twice. They are saved as ``cmvn.npz`` with ``mean`` and
``std`` (float32, one value per feature dimension); :class:`GlobalCMVN` applies them as a
module whose buffers travel inside checkpoints, so a checkpoint normalises like its training.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kospeech.errors import DataError
from kospeech.files import write_atomic

logger = logging.getLogger(__name__)

STD_FLOOR = 1e-5
"""Smallest std used; a constant dimension (e.g. a dead mel band) is left unscaled instead of exploding."""


class CMVNStats:
    """Streaming per-dimension count / sum / sum of squares (float64)."""

    def __init__(self, dim: int | None = None) -> None:
        self.count = 0
        self.sum: np.ndarray | None = None if dim is None else np.zeros(dim, np.float64)
        self.sum_sq: np.ndarray | None = None if dim is None else np.zeros(dim, np.float64)

    def add(self, feats: np.ndarray, *, utt_id: str = "?") -> None:
        """Accumulate one utterance's (T, D) features."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2:
            raise DataError(f"CMVN: features of '{utt_id}' have shape {x.shape}, expected (frames, dim)")
        if self.sum is None:
            self.sum = np.zeros(x.shape[1], np.float64)
            self.sum_sq = np.zeros(x.shape[1], np.float64)
        if x.shape[1] != self.sum.shape[0]:
            raise DataError(
                f"CMVN: '{utt_id}' has feature dim {x.shape[1]}, earlier utterances had {self.sum.shape[0]}; "
                "was the dump made with two different frontends?"
            )
        self.count += x.shape[0]
        self.sum += x.sum(axis=0)
        self.sum_sq += np.square(x).sum(axis=0)

    def merge(self, other: CMVNStats) -> None:
        """Combine with stats from another worker."""
        if other.sum is None:
            return
        if self.sum is None:
            self.sum, self.sum_sq = other.sum.copy(), other.sum_sq.copy()  # type: ignore[union-attr]
        else:
            self.sum += other.sum
            self.sum_sq += other.sum_sq  # type: ignore[operator]
        self.count += other.count

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        if self.sum is None or self.count == 0:
            raise DataError("CMVN: no frames were accumulated (empty dump?)")
        mean = self.sum / self.count
        var = np.maximum(self.sum_sq / self.count - mean**2, 0.0)  # type: ignore[operator]
        std = np.maximum(np.sqrt(var), STD_FLOOR)
        return mean.astype(np.float32), std.astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> Path:
        mean, std = self.mean_std()
        return save_cmvn(path, mean, std, count=self.count)


def save_cmvn(path: str | os.PathLike[str], mean: np.ndarray, std: np.ndarray, *, count: int = 0) -> Path:
    """Write ``cmvn.npz`` (mean, std float32, count) atomically (:func:`write_atomic`)."""
    buf = io.BytesIO()
    np.savez(buf, mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32), count=np.int64(count))
    return write_atomic(path, buf.getvalue())


def load_cmvn(source: str | os.PathLike[str] | Mapping[str, Any] | tuple[Any, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float32 from a ``cmvn.npz`` path, a ``{mean, std}`` mapping or a pair."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"CMVN file {path} does not exist; make it with `kospeech features dump ... --cmvn`")
        try:
            with np.load(path, allow_pickle=False) as data:
                mean, std = data["mean"], data["std"]
        except (KeyError, ValueError, OSError) as err:
            raise DataError(f"CMVN file {path} is not a cmvn.npz with 'mean' and 'std' arrays: {err}") from None
        where = str(path)
    elif isinstance(source, Mapping):
        mean, std, where = source["mean"], source["std"], "cmvn mapping"
    else:
        mean, std = source
        where = "cmvn pair"
    mean = np.asarray(mean.cpu() if isinstance(mean, Tensor) else mean, np.float32).reshape(-1)
    std = np.asarray(std.cpu() if isinstance(std, Tensor) else std, np.float32).reshape(-1)
    if mean.shape != std.shape:
        raise DataError(f"{where}: mean has {mean.size} dims but std has {std.size}")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"{where}: mean/std contain non-finite values or a non-positive std")
    return mean, std


def compute_cmvn(features: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of every frame of ``features`` (an iterable of (T, D) arrays)."""
    stats = CMVNStats()
    for i, f in enumerate(features):
        stats.add(f, utt_id=str(i))
    return stats.mean_std()


class GlobalCMVN(nn.Module):
    """``(x - mean) / std`` per feature dimension; ``mean``/``std`` are buffers, so they are checkpointed.

    Padded frames stay zero when ``lengths`` is given, so masks downstream see clean padding.
    """

    def __init__(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor) -> None:
        super().__init__()
        mean_np, std_np = load_cmvn((mean, std))
        self.register_buffer("mean", torch.from_numpy(mean_np))
        self.register_buffer("std", torch.from_numpy(std_np))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GlobalCMVN:
        return cls(*load_cmvn(path))

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        if features.size(-1) != self.dim:
            raise DataError(f"GlobalCMVN has {self.dim} dims but the features have {features.size(-1)}")
        out = (features - self.mean.to(features.dtype)) / self.std.to(features.dtype)
        if lengths is not None and features.dim() == 3:
            steps = torch.arange(features.size(1), device=features.device)
            mask = steps[None, :] < lengths.to(features.device)[:, None]
            out = out.masked_fill(~mask[..., None], 0.0)
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
