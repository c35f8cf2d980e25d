"""Parameter initialisation schemes, chosen by a model's ``init`` option.

- ``default``: PyTorch's per-layer defaults (Kaiming-uniform linears/convs, uniform RNNs).
- ``uniform``: every weight and bias drawn from U(-0.08, 0.08), the seq2seq recipe KoSpeech
  applied with ``--init_uniform`` (Sutskever et al. 2014). Normalisation layers keep their
  scale 1 and shift 0: a batch-norm scale near 0 would switch off the features it normalises.
- ``xavier_uniform``: ESPnet2's ``init: xavier_uniform`` (its Transformer recipes, e.g. Zeroth):
  Glorot-uniform for every parameter of two or more dimensions, zero for the one-dimensional
  ones (biases), then embeddings and normalisation layers back to their own defaults.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from kospeech.errors import ConfigError

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def init_uniform(module: nn.Module, bound: float = 0.08) -> None:
    """U(-bound, bound) for every parameter outside normalisation layers."""
    for sub in module.modules():
        if isinstance(sub, _NORMS):
            continue
        for param in sub.parameters(recurse=False):
            nn.init.uniform_(param, -bound, bound)


def init_xavier_uniform(module: nn.Module) -> None:
    """Glorot-uniform matrices and kernels, zero biases; embeddings and norms keep their defaults."""
    for param in module.parameters():
        if param.dim() > 1:
            nn.init.xavier_uniform_(param)
        else:
            nn.init.zeros_(param)
    for sub in module.modules():
        if isinstance(sub, (nn.Embedding, *_NORMS)) and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()


def init_default(module: nn.Module) -> None:
    """Keep the framework's initialisation (a no-op, named for the config)."""


INITS: dict[str, Callable[[nn.Module], None]] = {
    "default": init_default,
    "uniform": init_uniform,
    "xavier_uniform": init_xavier_uniform,
}


def apply_init(module: nn.Module, name: str, where: str = "model.init") -> None:
    if name not in INITS:
        raise ConfigError(f"'{where}' = '{name}': unknown initialisation; choose one of {', '.join(INITS)}")
    INITS[name](module)
