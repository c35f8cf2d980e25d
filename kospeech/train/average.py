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

Only checkpoints of one model and one run are averaged: another vocabulary, tokenizer, model
config or parameter shape is a DataError naming both files (it used to end in a tensor
RuntimeError, or in a model decoded with the wrong units); another run (seed, training data)
is a ConfigError unless ``allow_different_runs`` (``--allow-different-runs``): see
:func:`run_difference` for what identifies a run and why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
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


def _first_difference(a: Any, b: Any, prefix: str) -> str | None:
    """``key: A vs B`` for the first dotted key whose value differs between two configs, else None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                left = _short(a[key]) if key in a else "absent"
                right = _short(b[key]) if key in b else "absent"
                return f"{where}: {left} vs {right}"
            found = _first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
        return None if same else f"{prefix} (other values)"
    return None if a == b else f"{prefix}: {_short(a)} vs {_short(b)}"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seed(ckpt: Mapping[str, Any]) -> Any:
    return (ckpt.get("config") or {}).get("seed")


def _train_data(ckpt: Mapping[str, Any]) -> Any:
    return ((ckpt.get("config") or {}).get("data") or {}).get("train")


def check_same_model(ref: Mapping[str, Any], ref_path: str | Path, ckpt: Mapping[str, Any], path: str | Path) -> None:
    """A DataError naming both files when ``ckpt`` is not a checkpoint of ``ref``'s model.

    The mean of two models is only a model when both have the same layout and read and write
    the same units: the same ``model_args`` (vocabulary size, feature dimension), the same
    model and frontend config, the same tokenizer files and the same parameter shapes.
    Otherwise the average would fail in a tensor operation, or worse, succeed with a
    tokenizer that maps the averaged output units to other text.
    """
    def refuse(what: str) -> DataError:
        return DataError(
            f"{path} cannot be averaged with {ref_path}: {what}; average checkpoints of one model only"
        )

    args_a, args_b = dict(ref.get("model_args") or {}), dict(ckpt.get("model_args") or {})
    if args_a != args_b:
        if args_a.get("vocab_size") != args_b.get("vocab_size"):
            raise refuse(f"another vocabulary ({args_b.get('vocab_size')} output units vs {args_a.get('vocab_size')})")
        raise refuse(f"another model ({_first_difference(args_b, args_a, 'model_args')})")
    if ref.get("tokenizer") != ckpt.get("tokenizer"):
        files_a, files_b = dict(ref.get("tokenizer") or {}), dict(ckpt.get("tokenizer") or {})
        names = sorted(n for n in set(files_a) | set(files_b) if files_a.get(n) != files_b.get(n))
        raise refuse(f"another tokenizer (its {', '.join(names) or 'files'} differ: another vocabulary)")
    cfg_a, cfg_b = ref.get("config") or {}, ckpt.get("config") or {}
    for section in ("model", "frontend"):
        diff = _first_difference(cfg_b.get(section), cfg_a.get(section), section)
        if diff:
            raise refuse(f"another {section} config ({diff})")
    state_a, state_b = ref["model"], ckpt["model"]
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a).symmetric_difference(state_b))[:5]
        raise DataError(f"{path}: its model has different parameters from {ref_path} (e.g. {diff})")
    for key, value in state_a.items():
        if tuple(value.shape) != tuple(state_b[key].shape):
            raise refuse(f"parameter {key} has shape {tuple(state_b[key].shape)} vs {tuple(value.shape)}")


def run_difference(ref: Mapping[str, Any], ckpt: Mapping[str, Any]) -> str | None:
    """What says that two checkpoints of one model come from different runs, or None.

    A run is one trajectory of weights: one initialisation and one stream of training data.
    Averaging works along one trajectory; the weights of two independently initialised
    networks are not aligned (their hidden units are permuted copies of each other at best),
    so their mean is a damaged model that still decodes, just badly: a silent wrong result.
    What identifies a run, from what a checkpoint holds:

    - ``config.seed``: it draws the initial weights and the batch order;
    - the training data: its CMVN statistics when the checkpoints carry them (a content
      fingerprint: the same dump gives the same statistics bit for bit, whatever path spelling
      the config used), else ``config.data.train``.

    Not the exp dir (checkpoints are copied and moved, and the trainer already refuses to start
    a second run into a dir that holds checkpoints), and not the whole config: a resumed run
    may change its budget and schedule keys (``train.max_steps``, ``valid_every``, ...) and is
    still the same run. No run id is recorded in checkpoints; these keys are what is there.
    """
    if _seed(ref) != _seed(ckpt):
        return f"another seed ({_seed(ckpt)} vs {_seed(ref)})"
    cmvn_a, cmvn_b = ref.get("cmvn"), ckpt.get("cmvn")
    if cmvn_a is not None and cmvn_b is not None:
        diff = _first_difference(cmvn_b, cmvn_a, "cmvn")
        if diff:
            return f"other training data ({diff}: other CMVN statistics)"
    elif _train_data(ref) != _train_data(ckpt):
        return f"other training data (data.train {_short(_train_data(ckpt))} vs {_short(_train_data(ref))})"
    return None


def average_checkpoints(paths: Sequence[str | Path], *, allow_different_runs: bool = False) -> dict[str, Any]:
    """Average the model weights of ``paths``; other entries come from the last one.

    Every checkpoint must be of the first one's model (:func:`check_same_model`, a DataError
    otherwise) and, unless ``allow_different_runs``, of its run (:func:`run_difference`, a
    ConfigError that says how to allow it: averaging fine-tunes of one initialisation, a
    "model soup", is a deliberate choice).
    """
    if not paths:
        raise DataError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    newest: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    for i, path in enumerate(paths):
        ckpt = load_checkpoint(path)
        if i == 0:
            ref = {k: ckpt.get(k) for k in ("model_args", "tokenizer", "config", "cmvn")}
            ref["model"] = {k: torch.empty(v.shape, device="meta") for k, v in ckpt["model"].items()}
        else:
            check_same_model(ref, paths[0], ckpt, path)
            why = run_difference(ref, ckpt)
            if why and not allow_different_runs:
                raise ConfigError(
                    f"{path} and {paths[0]} come from different runs: {why}; their mean is not a better model. "
                    f"Average checkpoints of one run, or pass --allow-different-runs "
                    f"(allow_different_runs=True) to average them anyway"
                )
            if why:
                logger.warning("averaging checkpoints of different runs (%s and %s: %s)", paths[0], path, why)
        state = ckpt["model"]
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


def average_last(exp_dir: str | Path, n: int, out: str | Path, *, allow_different_runs: bool = False) -> Path:
    """Average the last ``n`` checkpoints of ``exp_dir`` into ``out`` (atomically)."""
    avg = average_checkpoints(last_checkpoints(exp_dir, n), allow_different_runs=allow_different_runs)
    return write_checkpoint(avg, out)  # a checksum of its own


def average_best(
    exp_dir: str | Path, n: int, out: str | Path, metric: str = "valid_cer", *, allow_different_runs: bool = False
) -> Path:
    """Average the ``n`` checkpoints of ``exp_dir`` best by ``metric`` into ``out`` (atomically, sealed)."""
    avg = average_checkpoints(best_checkpoints(exp_dir, n, metric), allow_different_runs=allow_different_runs)
    avg["averaged_by"] = metric
    return write_checkpoint(avg, out)
