"""Neural building blocks, one component kind per module (extractors, attention, encoders, ...).

``kospeech.nn.Attention`` (the base class a plugin attention subclasses) and
``kospeech.nn.Extractor`` resolve lazily, so ``import kospeech.nn`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Attention": "kospeech.nn.attention",
    "masked_softmax": "kospeech.nn.attention",
    "Extractor": "kospeech.nn.extractors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kospeech.nn' has no attribute '{name}'")
