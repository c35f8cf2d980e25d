"""Checkpoint averaging (the ESPnet / WeNet habit): the mean of the last N models' weights.

Averaging the weights of neighbouring checkpoints smooths the noise of the last updates and
usually lowers CER a little for free. Floating-point tensors are averaged in float64 and cast
back; integer buffers (step counters, BatchNorm's ``num_batches_tracked``) take the newest value.
The result is a normal checkpoint (config, tokenizer, CMVN from the newest input) without the
training state, so it decodes but is not meant to resume from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kospeech.errors import DataError
from kospeech.train.checkpoint import CKPT_DIR, list_checkpoints, load_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)

TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "sampler", "rng")


def last_checkpoints(exp_dir: str | Path, n: int) -> list[Path]:
    """The newest ``n`` numbered checkpoints of an experiment, oldest first."""
    exp_dir = Path(exp_dir)
    ckpt_dir = exp_dir / CKPT_DIR if (exp_dir / CKPT_DIR).is_dir() else exp_dir
    found = list_checkpoints(ckpt_dir)
    if n < 1:
        raise DataError(f"--last must be at least 1, got {n}")
    if not found:
        raise DataError(f"no checkpoints (ckpt_<step>.pt) in {ckpt_dir}; train first or check --exp-dir")
    if len(found) < n:
        raise DataError(
            f"asked to average the last {n} checkpoints but {ckpt_dir} holds {len(found)} "
            f"(train.keep_last limits how many are kept)"
        )
    return found[-n:]


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Average the model weights of ``paths``; other entries come from the last one."""
    if not paths:
        raise DataError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    newest: dict[str, Any] = {}
    for i, path in enumerate(paths):
        ckpt = load_checkpoint(path)
        state = ckpt["model"]
        if i == 0:
            keys = set(state)
        elif set(state) != keys:
            diff = sorted(keys.symmetric_difference(state))[:5]
            raise DataError(f"{path}: its model has different parameters from {paths[0]} (e.g. {diff})")
        for k, v in state.items():
            if v.is_floating_point():
                total[k] = total[k] + v.double() if k in total else v.double()
        newest = ckpt
    out = {k: v for k, v in newest.items() if k not in TRAINING_KEYS}
    model = {}
    for k, v in newest["model"].items():
        model[k] = (total[k] / len(paths)).to(v.dtype) if v.is_floating_point() else v
    out["model"] = model
    out["averaged_from"] = [str(p) for p in paths]
    logger.info("averaged %d checkpoints: %s", len(paths), ", ".join(Path(p).name for p in paths))
    return out


def average_last(exp_dir: str | Path, n: int, out: str | Path) -> Path:
    """Average the last ``n`` checkpoints of ``exp_dir`` into ``out`` (atomically)."""
    return write_checkpoint(average_checkpoints(last_checkpoints(exp_dir, n)), out)  # a checksum of its own
