"""The ``train:`` section of a config (:class:`TrainOptions`) and the mixed-precision choice.

Kept apart from the training loop so that the schema check (:mod:`kospeech.train.schema`), the
recipes' tests and the loop itself read one definition of every option and its default.
"""

from __future__ import annotations

import dataclasses
import logging
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
        amp: mixed precision on CUDA: ``auto`` (bf16 where supported, else fp16), ``bf16``,
            ``fp16`` (with a gradient scaler) or ``none``. Ignored on CPU.
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
        from kospeech.train.schema import check_section

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


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full precision."""
    if device.type != "cuda":
        if mode in ("bf16", "fp16"):
            logger.warning("train.amp=%s is for CUDA; training in float32 on %s", mode, device)
        return None
    if mode == "none":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16
