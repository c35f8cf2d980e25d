"""Optimizers, registered under ``optimizer``: ``adam``, ``adamw``, ``sgd``.

Each is the torch optimizer itself (so ``state_dict`` / ``load_state_dict`` and AMP grad
scalers work unchanged) with a keyword-only constructor that is its YAML schema. ``params``
is provided by the trainer: ``build("optimizer", cfg, params=model.parameters())``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from kospeech.errors import ConfigError
from kospeech.registry import register


def _check_lr(name: str, lr: float) -> None:
    if lr <= 0:
        raise ConfigError(f"optimizer '{name}': lr must be > 0, got {lr}")


@register("optimizer", "adam")
class Adam(torch.optim.Adam):
    """Adam (Kingma & Ba, 2015), with ``weight_decay`` added to the gradient (L2).

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate; a scheduler (``noam`` excepted) uses it as the peak.
        betas: moment decay rates; (0.9, 0.98) is the Transformer setting.
        eps: denominator floor; 1e-9 as in Vaswani et al.
        weight_decay: L2 penalty.
        amsgrad: use the AMSGrad variant.
    """

    def __init__(
        self,
        *,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-9,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        _check_lr("adam", lr)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@register("optimizer", "adamw")
class AdamW(torch.optim.AdamW):
    """AdamW (Loshchilov & Hutter, 2019): weight decay decoupled from the adaptive step.

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate (peak of the schedule).
        betas: moment decay rates.
        eps: denominator floor.
        weight_decay: decoupled decay, multiplied by lr at each step.
        amsgrad: use the AMSGrad variant.
    """

    def __init__(
        self,
        *,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ) -> None:
        _check_lr("adamw", lr)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


@register("optimizer", "sgd")
class SGD(torch.optim.SGD):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate.
        momentum: heavy-ball momentum factor.
        nesterov: Nesterov momentum (needs momentum > 0).
        weight_decay: L2 penalty.
    """

    def __init__(
        self,
        *,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        _check_lr("sgd", lr)
        if nesterov and momentum <= 0:
            raise ConfigError(f"optimizer 'sgd': nesterov needs momentum > 0, got momentum={momentum}")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
