"""The options of training: the ``data:`` section (:class:`DataOptions`), the ``train:`` section
(:class:`TrainOptions`), how a section is checked against them, and the mixed-precision choice.

Kept apart from the training loop so that the schema check (:mod:`kospeech.train.schema`), the
recipes' tests and the loop itself read one definition of every option and its default. Both
sections live here, below the schema: the schema imports them and they import nothing of it,
so the two are not an import loop.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import typing
from collections.abc import Mapping
from typing import Any

import torch

from kospeech.errors import ConfigError
from kospeech.train.average import check_metric

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainOptions:
    """The ``train:`` section of a config.

    Args:
        max_epochs: passes over the training set.
        max_steps: stop after this many updates (0: no limit); a checkpoint is written there.
        max_minutes: stop after this much wall-clock training time in this run (0: no limit),
            validating and checkpointing there: a time budget (CPU recipes, shared machines)
            that cannot overrun however fast the machine is. ``--resume`` continues the run.
        augment_after: apply the ``augment:`` list only from this update on. A CTC model leaves
            its blank plateau sooner on clean batches; noise and masks then make it robust.
        accum_grad: micro-batches per update (gradient accumulation).
        max_grad_norm: clip the global gradient norm to this (0: no clipping).
        amp: mixed precision: ``auto`` (on CUDA bf16 where supported, else fp16; float32 on
            CPU), ``bf16``, ``fp16`` (CUDA, with a gradient scaler) or ``none``. ``bf16`` also
            runs on a CPU with native bf16 (AVX512-BF16, AMX), where convolutions and LSTMs
            run about twice as fast (``bench/las_vs_seed.py --amp bf16``).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        save_every: also checkpoint every this many updates (0: only at epoch ends).
        keep_last: numbered checkpoints kept (0: all); ``last.pt`` and ``best.pt`` are extra.
        keep_best: also keep this many numbered checkpoints best by ``keep_best_by``
            (ESPnet's ``keep_nbest_models``), however old; ``kospeech average --best N``
            averages them and run.sh's ``--average N --average-by METRIC`` decodes that.
        keep_best_by: ``valid_cer`` (greedy-decoding CER, lower is better) or ``valid_loss``.
            Only checkpoints written at a validation are ranked. ``best.pt`` stays the best by CER.
        log_every: a ``log.jsonl`` line every this many updates.
        valid_every: also validate (and checkpoint) every this many updates (0: epoch ends).
        num_workers: DataLoader worker processes.
        find_unused_parameters: DDP option for models with heads that a loss may not use.
        plot: redraw ``train.png`` at each validation.
        tensorboard: also write TensorBoard event files beside ``log.jsonl`` (losses, learning
            rate, validation CER, a few decoded validation utterances); needs the
            ``tensorboard`` package (``pip install 'kospeech[tensorboard]'``).
        max_nonfinite: stop with an error after this many batches or updates in a row with a
            non-finite loss or gradient (0: never). One such batch is skipped and counted; a
            run of them means the weights or the learning rate are broken, and skipping to the
            end of the run would only hide it.
    """

    max_epochs: int = 10
    max_steps: int = 0
    max_minutes: float = 0.0
    augment_after: int = 0
    accum_grad: int = 1
    max_grad_norm: float = 5.0
    amp: str = "auto"
    device: str = "auto"
    save_every: int = 0
    keep_last: int = 5
    keep_best: int = 0
    keep_best_by: str = "valid_cer"
    log_every: int = 20
    valid_every: int = 0
    num_workers: int = 0
    find_unused_parameters: bool = False
    plot: bool = True
    tensorboard: bool = False
    max_nonfinite: int = 50

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> TrainOptions:
        """The ``train:`` section, checked: option names, types and ranges."""
        opts = cls(**check_section(section, cls, "train"))
        if opts.accum_grad < 1:
            raise ConfigError(f"'train.accum_grad' must be >= 1, got {opts.accum_grad}")
        if opts.amp not in ("auto", "bf16", "fp16", "none"):
            raise ConfigError(f"'train.amp' = {opts.amp!r}: choose auto, bf16, fp16 or none")
        if opts.log_every < 1:
            raise ConfigError(f"'train.log_every' must be >= 1, got {opts.log_every}")
        if opts.keep_best < 0:
            raise ConfigError(f"'train.keep_best' must be >= 0, got {opts.keep_best}")
        check_metric(opts.keep_best_by, "'train.keep_best_by'")
        if opts.max_nonfinite < 0:
            raise ConfigError(f"'train.max_nonfinite' must be >= 0, got {opts.max_nonfinite}")
        return opts


@dataclasses.dataclass
class DataOptions:
    """The ``data:`` section of a training config.

    Args:
        train: feature dump (``kospeech features dump``) or Kaldi data dir of the training set.
        valid: the same for the validation set (optional: no validation CER, no best.pt).
        lang: tokenizer dir (``kospeech tokenizer train``).
        cmvn: ``cmvn.npz`` (default: ``<train>/cmvn.npz`` for a dump, computed for a data dir).
        batch_frames: padded feature frames per batch.
        max_frames: longer utterances are left out of training (counted).
        min_frames: shorter utterances are left out of training (counted); default: the fewest
            frames the model's front end accepts (7 for x4 convolution subsampling).
        num_buckets: length buckets of the batch sampler.
        sample_rate: audio sample rate when the frontend does not say.
    """

    train: str = ""
    valid: str | None = None
    lang: str = ""
    cmvn: str | None = None
    batch_frames: int = 20000
    max_frames: int | None = None
    min_frames: int | None = None
    num_buckets: int = 10
    sample_rate: int = 16000

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> DataOptions:
        """The ``data:`` section, checked: types, ranges and the required keys."""
        if section is None:
            raise ConfigError("the config has no 'data' section (data.train, data.valid, data.lang, ...)")
        opts = cls(**check_section(section, cls, "data"))
        for key in ("train", "lang"):
            if not getattr(opts, key):
                raise ConfigError(f"'data.{key}' is required")
        for key, low in (("batch_frames", 1), ("num_buckets", 1), ("max_frames", 1), ("min_frames", 0),
                         ("sample_rate", 1)):
            value = getattr(opts, key)
            if value is not None and value < low:
                raise ConfigError(f"'data.{key}' must be >= {low}, got {value}")
        if opts.max_frames is not None and opts.min_frames is not None and opts.min_frames > opts.max_frames:
            raise ConfigError(
                f"'data.min_frames' ({opts.min_frames}) is larger than 'data.max_frames' ({opts.max_frames})"
            )
        return opts


def did_you_mean(key: str, choices: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``choices`` to a misspelt ``key``, or nothing."""
    close = difflib.get_close_matches(key, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_section(section: Any, cls: type, prefix: str) -> dict[str, Any]:
    """Check a mapping against a dataclass's fields and their types; unknown keys get a did-you-mean."""
    from kospeech.registry.core import _check_type, _type_name

    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"'{prefix}' must be a mapping of options, got {type(section).__name__}: {section!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key, value in section.items():
        if key not in fields:
            raise ConfigError(
                f"unknown option '{prefix}.{key}'.{did_you_mean(str(key), fields)} Accepted: {', '.join(fields)}"
            )
        if not _check_type(value, hints[key]):
            raise ConfigError(f"'{prefix}.{key}' = {value!r} must be a {_type_name(hints[key])}")
    return dict(section)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): elsewhere oneDNN emulates it
    and bf16 autocast only slows a step down."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision.

    On CUDA ``auto`` picks bf16 where supported, else fp16. On CPU only an explicit ``bf16``
    turns autocast on (and only on a CPU with native bf16): ``auto`` keeps CPU runs in float32,
    so a CPU recipe's results do not move with the machine it runs on.
    """
    if device.type != "cuda":
        if mode == "bf16" and device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        if mode in ("bf16", "fp16"):
            logger.warning("train.amp=%s: %s; training in float32", mode,
                           "fp16 autocast is for CUDA" if mode == "fp16" else f"no native bf16 on {device}")
        return None
    if mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16
