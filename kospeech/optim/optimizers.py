"""Optimizers, registered under ``optimizer``: ``adam``, ``adamw``, ``sgd``, ``radam``,
``adamp``, ``novograd``.

Each is a torch optimizer (so ``state_dict`` / ``load_state_dict`` and AMP grad scalers work
unchanged) with a keyword-only constructor that is its YAML schema. ``params`` is provided by
the trainer: ``build("optimizer", cfg, params=model.parameters())``.

``adamp`` and ``novograd`` are those of the ``pytorch-optimizer`` package (the ``optim``
extra), imported only when one is built; tests/test_optim.py checks their updates against the
papers' equations.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import torch

from kospeech.errors import ConfigError
from kospeech.registry import register


def _check_lr(name: str, lr: float) -> None:
    if lr <= 0:
        raise ConfigError(f"optimizer '{name}': lr must be > 0, got {lr}")


def _fusable(params: list[Any]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters (float tensors on CPU or CUDA)."""
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return bool(tensors) and all(
        torch.is_tensor(p) and p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors
    )


def _fused_choice(name: str, params: list[Any], fused: bool | None) -> bool:
    """``fused=None`` (the default) fuses where the kernel allows: one pass over all parameters
    instead of about ten kernels per tensor (on CPU the unfused loop is most of a small model's
    update); the update is the same up to float rounding."""
    if fused is None:
        return _fusable(params)
    if fused and not _fusable(params):
        raise ConfigError(f"optimizer '{name}': fused=true needs float parameters on CPU or CUDA")
    return fused


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
        fused: torch's fused kernel; ``None`` uses it wherever the parameters allow.
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
        fused: bool | None = None,
    ) -> None:
        _check_lr("adam", lr)
        params = list(params)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         fused=_fused_choice("adam", params, fused))


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
        fused: torch's fused kernel; ``None`` uses it wherever the parameters allow.
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
        fused: bool | None = None,
    ) -> None:
        _check_lr("adamw", lr)
        params = list(params)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         fused=_fused_choice("adamw", params, fused))


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


@register("optimizer", "radam")
class RAdam(torch.optim.RAdam):
    """RAdam (Liu et al., 2020): Adam whose adaptive step is switched on only once the variance
    of its second-moment estimate is tractable (about 2 / (1 - beta2) updates), a warm-up the
    optimizer does itself.

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate.
        betas: moment decay rates.
        eps: denominator floor.
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``.
        decoupled_weight_decay: AdamW-style decay (multiplied by lr) instead of L2.
    """

    def __init__(
        self,
        *,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
    ) -> None:
        _check_lr("radam", lr)
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay)


def _pytorch_optimizer(name: str, cls: str) -> Any:
    try:
        module = importlib.import_module("pytorch_optimizer")
    except ImportError:
        raise ConfigError(
            f"optimizer '{name}' needs the pytorch-optimizer package: pip install 'kospeech[optim]' "
            "(or pip install pytorch-optimizer)"
        ) from None
    return getattr(module, cls)


@register("optimizer", "adamp")
def adamp(
    *,
    params: Iterable[Any],
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """AdamP (Heo et al., 2021): Adam that removes, for scale-invariant weights (those followed
    by a norm), the radial part of each update, which only grows the weight norm and so shrinks
    the effective step. A weight counts as scale-invariant when its cosine similarity with the
    gradient is below ``delta / sqrt(dim)``; its weight decay is then scaled by ``wd_ratio``.

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate.
        betas: moment decay rates.
        eps: denominator floor.
        weight_decay: decoupled decay (multiplied by lr).
        delta: threshold of the scale-invariance test.
        wd_ratio: weight-decay factor for the projected weights.
        nesterov: Nesterov momentum.
    """
    _check_lr("adamp", lr)
    cls = _pytorch_optimizer("adamp", "AdamP")
    return cls(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, weight_decouple=True,
               delta=delta, wd_ratio=wd_ratio, nesterov=nesterov)


@register("optimizer", "novograd")
def novograd(
    *,
    params: Iterable[Any],
    lr: float = 1e-2,
    betas: tuple[float, float] = (0.95, 0.98),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    grad_averaging: bool = False,
) -> torch.optim.Optimizer:
    """NovoGrad (Ginsburg et al., 2019), Jasper's optimizer: the second moment is one number per
    layer (the decayed squared norm of its gradient), the gradient is divided by its root before
    the momentum, and weight decay is added to that normalised gradient. One scalar of state per
    layer instead of one per weight, and a step insensitive to each layer's gradient scale.

    Args:
        params: parameters or parameter groups (provided by the trainer).
        lr: learning rate.
        betas: momentum and second-moment decay; Jasper used (0.95, 0.5) (paper: 0.95, 0.98).
        eps: denominator floor.
        weight_decay: added to the normalised gradient (times the weight).
        grad_averaging: scale the normalised gradient by (1 - beta1) in the momentum.

    The package divides ``p.grad`` in place by the layer norm during ``step``: read gradient
    norms (and clip) before it.
    """
    _check_lr("novograd", lr)
    cls = _pytorch_optimizer("novograd", "NovoGrad")
    return cls(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, weight_decouple=False,
               grad_averaging=grad_averaging)
