"""Learning-rate schedules, registered under ``scheduler``; stepped once per optimizer update.

Each is a ``torch.optim.lr_scheduler.LRScheduler`` whose rate is a closed-form function of the
update count (``last_epoch``), so ``state_dict`` / ``load_state_dict`` resume a run exactly. The
optimizer is provided by the trainer: ``build("scheduler", cfg, optimizer=opt)``.

Convention: ``lr(n)`` is the rate used by update ``n`` (1-based). Right after construction the
optimizer holds ``lr(1)``; after ``k`` calls to ``step()`` it holds ``lr(k + 1)``. Unless a
schedule says otherwise, its peak is the optimizer's ``lr`` (per parameter group).
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
from torch.optim.lr_scheduler import LRScheduler

from kospeech.errors import ConfigError
from kospeech.registry import register

logger = logging.getLogger(__name__)


def _non_negative(name: str, **values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"scheduler '{name}': {key} must be >= 0, got {value}")


def warmup_lr(n: int, init: float, peak: float, warmup: int) -> float:
    """Linear ramp from ``init`` at update 0 to ``peak`` at update ``warmup``."""
    return init + (peak - init) * n / warmup


def cosine_lr(t: float, peak: float, floor: float) -> float:
    """Half a cosine from ``peak`` at ``t = 0`` to ``floor`` at ``t = 1``."""
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def tri_stage_lr(n: int, init: float, peak: float, final: float, warmup: int, hold: int, decay: int) -> float:
    """Linear ``init -> peak`` over ``warmup`` updates, ``peak`` for ``hold``, exponential
    ``peak -> final`` over ``decay``, then ``final`` for ever."""
    if n <= warmup:
        return warmup_lr(n, init, peak, warmup)
    n -= warmup
    if n <= hold:
        return peak
    n -= hold
    if n <= decay:
        return peak * math.exp(math.log(final / peak) * n / decay)
    return final


class _ClosedForm(LRScheduler):
    """Base: subclasses give ``lr_for(n, base_lr)``; the rest is torch's bookkeeping."""

    def lr_for(self, n: int, base_lr: float) -> float:
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        n = self.last_epoch + 1
        return [self.lr_for(n, base) for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


@register("scheduler", "tri_stage")
class TriStageScheduler(_ClosedForm):
    """Warm-up, hold, exponential decay: the schedule of SpecAugment (Park et al., 2019), as in fairseq.

    Rates are fractions of the optimizer's ``lr`` (the peak).

    Args:
        optimizer: provided by the trainer.
        warmup_steps: linear ramp from ``init_lr_scale * lr`` to ``lr``.
        hold_steps: updates at the peak.
        decay_steps: exponential decay to ``final_lr_scale * lr``, which then stays.
        init_lr_scale: start of the ramp, relative to the peak.
        final_lr_scale: end of the decay, relative to the peak (> 0).
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 25000,
        hold_steps: int = 0,
        decay_steps: int = 75000,
        init_lr_scale: float = 0.01,
        final_lr_scale: float = 0.05,
    ) -> None:
        _non_negative("tri_stage", warmup_steps=warmup_steps, hold_steps=hold_steps, decay_steps=decay_steps)
        if not 0 < final_lr_scale <= 1:
            raise ConfigError(f"scheduler 'tri_stage': final_lr_scale must be in (0, 1], got {final_lr_scale}")
        self.warmup_steps, self.hold_steps, self.decay_steps = warmup_steps, hold_steps, decay_steps
        self.init_lr_scale, self.final_lr_scale = init_lr_scale, final_lr_scale
        super().__init__(optimizer)

    def lr_for(self, n: int, base_lr: float) -> float:
        return tri_stage_lr(
            n,
            self.init_lr_scale * base_lr,
            base_lr,
            self.final_lr_scale * base_lr,
            self.warmup_steps,
            self.hold_steps,
            self.decay_steps,
        )


@register("scheduler", "noam")
class NoamScheduler(_ClosedForm):
    """The Transformer schedule (Vaswani et al., 2017): ``scale * d_model^-0.5 * min(n^-0.5, n * warmup^-1.5)``.

    Rises linearly for ``warmup_steps`` updates, then falls as ``1/sqrt(n)``; the peak is
    ``scale * (d_model * warmup_steps)^-0.5``. The formula sets the rate itself: the optimizer's
    ``lr`` is ignored.

    Args:
        optimizer: provided by the trainer.
        d_model: model width the rate is normalised by.
        warmup_steps: updates until the peak.
        scale: overall factor (ESPnet's ``transformer-lr``, often 1 to 10).
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        d_model: int = 256,
        warmup_steps: int = 25000,
        scale: float = 1.0,
    ) -> None:
        if warmup_steps < 1 or d_model < 1 or scale <= 0:
            raise ConfigError(
                f"scheduler 'noam': warmup_steps and d_model must be >= 1 and scale > 0, got "
                f"warmup_steps={warmup_steps}, d_model={d_model}, scale={scale}"
            )
        self.d_model, self.warmup_steps, self.scale = d_model, warmup_steps, scale
        super().__init__(optimizer)

    def lr_for(self, n: int, base_lr: float) -> float:
        return self.scale * self.d_model**-0.5 * min(n**-0.5, n * self.warmup_steps**-1.5)


@register("scheduler", "warmup_plateau_decay")
class WarmupPlateauDecayScheduler(_ClosedForm):
    """KoSpeech's schedule in absolute rates: linear ramp-up, high plateau, exponential decay, low plateau.

    The same shape as ``tri_stage`` but written as KoSpeech's ``init_lr / peak_lr / final_lr``
    options, which is how its recipes were tuned.

    Args:
        optimizer: provided by the trainer.
        init_lr: rate of the first update.
        peak_lr: rate of the high plateau; null uses the optimizer's ``lr``.
        final_lr: rate of the low plateau (> 0).
        warmup_steps: updates of the ramp.
        hold_steps: updates at ``peak_lr``.
        decay_steps: updates of the exponential decay from ``peak_lr`` to ``final_lr``.
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        init_lr: float = 1e-5,
        peak_lr: float | None = None,
        final_lr: float = 1e-6,
        warmup_steps: int = 4000,
        hold_steps: int = 40000,
        decay_steps: int = 160000,
    ) -> None:
        _non_negative("warmup_plateau_decay", warmup_steps=warmup_steps, hold_steps=hold_steps,
                      decay_steps=decay_steps, init_lr=init_lr)
        if final_lr <= 0 or (peak_lr is not None and peak_lr <= 0):
            raise ConfigError(
                f"scheduler 'warmup_plateau_decay': peak_lr and final_lr must be > 0, got "
                f"peak_lr={peak_lr}, final_lr={final_lr}"
            )
        self.init_lr, self.peak_lr, self.final_lr = init_lr, peak_lr, final_lr
        self.warmup_steps, self.hold_steps, self.decay_steps = warmup_steps, hold_steps, decay_steps
        super().__init__(optimizer)

    def lr_for(self, n: int, base_lr: float) -> float:
        peak = base_lr if self.peak_lr is None else self.peak_lr
        return tri_stage_lr(
            n, self.init_lr, peak, self.final_lr, self.warmup_steps, self.hold_steps, self.decay_steps
        )


@register("scheduler", "cosine")
class CosineScheduler(_ClosedForm):
    """Linear warm-up, then half a cosine from the peak down to a floor (Loshchilov & Hutter, 2017).

    Args:
        optimizer: provided by the trainer.
        warmup_steps: linear ramp from ``lr / warmup_steps`` to ``lr``.
        total_steps: update at which the cosine reaches the floor; the floor stays after it.
        min_lr: the floor.
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 1000,
        total_steps: int = 100000,
        min_lr: float = 0.0,
    ) -> None:
        _non_negative("cosine", warmup_steps=warmup_steps, min_lr=min_lr)
        if total_steps <= warmup_steps:
            raise ConfigError(
                f"scheduler 'cosine': total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})"
            )
        self.warmup_steps, self.total_steps, self.min_lr = warmup_steps, total_steps, min_lr
        super().__init__(optimizer)

    def lr_for(self, n: int, base_lr: float) -> float:
        if n <= self.warmup_steps:
            return warmup_lr(n, 0.0, base_lr, self.warmup_steps)
        progress = min(1.0, (n - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return cosine_lr(progress, base_lr, self.min_lr)


@register("scheduler", "warmup_reduce_on_plateau")
class WarmupReduceOnPlateauScheduler(_ClosedForm):
    """Linear warm-up, then the rate is cut by ``factor`` whenever a validation metric stops improving.

    Call ``step()`` after every update and ``step_metric(value)`` after every validation. The
    number of cuts is part of the state, so a resumed run continues at the same rate.

    Args:
        optimizer: provided by the trainer.
        warmup_steps: linear ramp from ``init_lr_scale * lr`` to ``lr``.
        init_lr_scale: start of the ramp, relative to the peak.
        factor: multiplier at each cut, in (0, 1).
        patience: validations without improvement tolerated before a cut.
        threshold: relative change that counts as an improvement.
        mode: ``min`` for losses and error rates, ``max`` for accuracies.
        min_lr: rates never go below this.
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 1000,
        init_lr_scale: float = 0.01,
        factor: float = 0.5,
        patience: int = 1,
        threshold: float = 1e-4,
        mode: Literal["min", "max"] = "min",
        min_lr: float = 1e-6,
    ) -> None:
        _non_negative("warmup_reduce_on_plateau", warmup_steps=warmup_steps, patience=patience, min_lr=min_lr)
        if not 0 < factor < 1:
            raise ConfigError(f"scheduler 'warmup_reduce_on_plateau': factor must be in (0, 1), got {factor}")
        self.warmup_steps, self.init_lr_scale = warmup_steps, init_lr_scale
        self.factor, self.patience, self.threshold, self.mode, self.min_lr = factor, patience, threshold, mode, min_lr
        self.best: float | None = None
        self.bad_evals = 0
        self.num_reductions = 0
        super().__init__(optimizer)

    def lr_for(self, n: int, base_lr: float) -> float:
        if n <= self.warmup_steps:
            return warmup_lr(n, self.init_lr_scale * base_lr, base_lr, self.warmup_steps)
        return max(self.min_lr, base_lr * self.factor**self.num_reductions)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - abs(self.best) * self.threshold
        return value > self.best + abs(self.best) * self.threshold

    def step_metric(self, value: float) -> None:
        """Report a validation metric; cuts the rate after ``patience`` evaluations without improvement.

        Metrics seen during warm-up set the best value but never cause a cut.
        """
        value = float(value)
        if self._improved(value):
            self.best = value
            self.bad_evals = 0
            return
        if self.last_epoch + 1 <= self.warmup_steps:
            return
        self.bad_evals += 1
        if self.bad_evals > self.patience:
            self.num_reductions += 1
            self.bad_evals = 0
            logger.info("validation metric stalled at %.4g: learning rate cut %d time(s)", value, self.num_reductions)
            for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
                group["lr"] = lr
            self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


@register("scheduler", "budget_decay")
class BudgetDecayScheduler(_ClosedForm):
    """Linear warm-up, the peak rate, then a cosine down to ``final_lr_scale`` over the last part
    of the training budget, whichever of ``train.max_minutes``, ``max_steps`` or ``max_epochs``
    ends the run first.

    Why: a run bounded by wall-clock time (the mini recipe's 11 minutes on a laptop) cannot
    know its number of updates in advance, so a step-based decay either ends too early on a
    fast machine or never starts on a slow one; annealing the rate at the end of a short run
    is worth a large share of its final accuracy. The trainer reports the spent share of the
    budget through :meth:`set_progress` before every step (the largest over DDP ranks, so all
    ranks use one rate). Progress never goes back, so a resumed run does not warm up again.

    Args:
        optimizer: provided by the trainer.
        warmup_steps: linear ramp from ``init_lr_scale * lr`` to ``lr``.
        init_lr_scale: start of the ramp, relative to the peak.
        decay_start: share of the budget spent at the peak before the decay starts.
        final_lr_scale: rate at the end of the budget, relative to the peak.
    """

    def __init__(
        self,
        *,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 1000,
        init_lr_scale: float = 0.01,
        decay_start: float = 0.5,
        final_lr_scale: float = 0.02,
    ) -> None:
        _non_negative("budget_decay", warmup_steps=warmup_steps, init_lr_scale=init_lr_scale)
        if not 0.0 <= decay_start < 1.0:
            raise ConfigError(f"scheduler 'budget_decay': decay_start must be in [0, 1), got {decay_start}")
        if not 0.0 <= final_lr_scale <= 1.0:
            raise ConfigError(f"scheduler 'budget_decay': final_lr_scale must be in [0, 1], got {final_lr_scale}")
        self.warmup_steps, self.init_lr_scale = warmup_steps, init_lr_scale
        self.decay_start, self.final_lr_scale = decay_start, final_lr_scale
        self.progress = 0.0
        super().__init__(optimizer)

    def set_progress(self, fraction: float) -> None:
        """Share of the training budget spent so far, in [0, 1]; the rate follows at the next step."""
        self.progress = max(self.progress, min(1.0, max(0.0, float(fraction))))

    def lr_for(self, n: int, base_lr: float) -> float:
        if n <= self.warmup_steps:
            return warmup_lr(n, self.init_lr_scale * base_lr, base_lr, self.warmup_steps)
        if self.progress <= self.decay_start:
            return base_lr
        t = (self.progress - self.decay_start) / (1.0 - self.decay_start)
        return cosine_lr(t, base_lr, self.final_lr_scale * base_lr)
