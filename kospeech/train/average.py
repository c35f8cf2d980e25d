"""Checkpoint averaging (the ESPnet / WeNet habit): the mean of the last N models' weights,
or of the N best by a validation metric (ESPnet's ``keep_nbest_models`` + ``valid.acc.ave``).

Averaging the weights of neighbouring checkpoints smooths the noise of the last updates and
usually lowers CER a little for free. Floating-point tensors are averaged in float64 and cast
back; integer buffers (step counters, BatchNorm's ``num_batches_tracked``) take the newest value.
The result is a normal checkpoint (config, tokenizer, CMVN from the newest input) without the
training state, so it decodes but is not meant to resume from.

The best N are ranked by the ``metrics`` each checkpoint carries (``valid_cer``, ``valid_loss``:
what the trainer's validation measured at that step). A checkpoint written between
validations (``save_every``) carries the previous validation's numbers; when it records
``valid_step`` and that differs from its own ``step`` it is not ranked, so stale numbers cannot
select it. Ties go to the newer checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kospeech.errors import ConfigError, DataError
from kospeech.train.checkpoint import CKPT_DIR, list_checkpoints, load_checkpoint, write_checkpoint

logger = logging.getLogger(__name__)

TRAINING_KEYS = ("optimizer", "scheduler", "scaler", "sampler", "rng")

#: validation metrics a checkpoint can be ranked by, and whether higher is better
METRICS: dict[str, bool] = {"valid_cer": False, "valid_loss": False}


def check_metric(metric: str, where: str = "--metric") -> bool:
    """``metric``'s direction (True: higher is better); a ConfigError names the choices."""
    if metric not in METRICS:
        raise ConfigError(f"{where} = {metric!r}: checkpoints can be ranked by {', '.join(METRICS)}")
    return METRICS[metric]


def select_best(scored: Sequence[tuple[Any, float | None]], n: int, *, higher_is_better: bool = False) -> list[Any]:
    """The ``n`` best of ``(item, value)`` pairs in their given (oldest-first) order.

    ``None`` or NaN values are never chosen; among equal values the later item wins. Shared by
    averaging and by the trainer's ``keep_best`` pruning, so both rank alike.
    """
    ranked = [
        (i, item, float(v)) for i, (item, v) in enumerate(scored) if v is not None and float(v) == float(v)
    ]
    sign = -1.0 if higher_is_better else 1.0
    ranked.sort(key=lambda t: (sign * t[2], -t[0]))
    keep = sorted(ranked[: max(n, 0)], key=lambda t: t[0])
    return [item for _, item, _ in keep]


def checkpoint_metric(path: str | Path, metric: str) -> float | None:
    """``metrics[metric]`` of a checkpoint, None if absent or stale (see the module docstring).

    Read memory-mapped, so ranking a directory of large checkpoints does not load their tensors.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # truncated files, foreign pickles
        raise DataError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: not a KoSpeech checkpoint")
    metrics = ckpt.get("metrics") or {}
    value = metrics.get(metric)
    if value is None:
        return None
    valid_step = metrics.get("valid_step")
    if valid_step is not None and ckpt.get("step") is not None and int(valid_step) != int(ckpt["step"]):
        return None
    return float(value)


def best_checkpoints(exp_dir: str | Path, n: int, metric: str = "valid_cer") -> list[Path]:
    """The ``n`` numbered checkpoints of an experiment best by ``metric``, oldest first."""
    higher = check_metric(metric)
    if n < 1:
        raise DataError(f"--best must be at least 1, got {n}")
    exp_dir = Path(exp_dir)
    ckpt_dir = exp_dir / CKPT_DIR if (exp_dir / CKPT_DIR).is_dir() else exp_dir
    found = list_checkpoints(ckpt_dir)
    if not found:
        raise DataError(f"no checkpoints (ckpt_<step>.pt) in {ckpt_dir}; train first or check --exp-dir")
    scored = [(p, checkpoint_metric(p, metric)) for p in found]
    n_scored = sum(v is not None for _, v in scored)
    if n_scored < n:
        raise DataError(
            f"asked to average the {n} best checkpoints by {metric} but only {n_scored} of the {len(found)} in "
            f"{ckpt_dir} carry it from a validation at their own step (set train.keep_best, and "
            f"train.valid_every or epoch-end validation with data.valid)"
        )
    best = select_best(scored, n, higher_is_better=higher)
    logger.info(
        "the %d best by %s: %s", n, metric, ", ".join(f"{p.name} ({v:.4g})" for p, v in scored if p in best)
    )
    return best


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


def average_best(exp_dir: str | Path, n: int, out: str | Path, metric: str = "valid_cer") -> Path:
    """Average the ``n`` checkpoints of ``exp_dir`` best by ``metric`` into ``out`` (atomically, sealed)."""
    avg = average_checkpoints(best_checkpoints(exp_dir, n, metric))
    avg["averaged_by"] = metric
    return write_checkpoint(avg, out)
