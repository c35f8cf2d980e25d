"""Korean text: KsponSpeech normalisation, Hangul jamo, tokenizers (character, jamo, sentencepiece).

The names below resolve on first use, not at import: ``kospeech.text.hangul`` (and
``kospeech.text.special``) must import without the registry, because the torch-free runtime
(``kospeech.runtime``) composes jamo with them. sentencepiece loads when a subword tokenizer is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Tokenizer": "kospeech.text.tokenizers",
    "load_tokenizer": "kospeech.text.tokenizers",
    "load_tokenizer_from_files": "kospeech.text.tokenizers",
    "read_lang_dir": "kospeech.text.tokenizers",
    "train_tokenizer": "kospeech.text.tokenizers",
    "is_empty_after_normalization": "kospeech.text.normalize",
    "normalize_kspon": "kospeech.text.normalize",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kospeech.text' has no attribute {name!r}")
