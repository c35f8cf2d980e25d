"""Run an exported model without PyTorch: onnxruntime, numpy, soundfile (and sentencepiece for subwords).

``kospeech.runtime.load(DIR)`` opens a directory written by ``kospeech export CHECKPOINT --format
onnx --out DIR`` and returns an :class:`~kospeech.runtime.model.ExportedModel` whose
``transcribe(items, search=..., **options)`` returns the same ``Result`` objects as
``kospeech.load(checkpoint).transcribe``. Nothing on this path imports torch, torchaudio or the
registry, so it runs where they are absent (tests/test_runtime.py proves it in a subprocess in
which ``import torch`` fails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kospeech.runtime.model import ExportedModel

__all__ = ["load"]


def load(directory: str | os.PathLike[str], *, int8: bool | None = None, num_threads: int = 0,
         search: str | Mapping[str, Any] | None = None, max_segment_seconds: float = 20.0,
         **options: Any) -> ExportedModel:
    """Open an export directory.

    Args:
        directory: written by ``kospeech export``.
        int8: use the int8 model (None: it when the export has one).
        num_threads: onnxruntime intra-op threads (0: its default, all cores).
        search, options: replace or add to the export's own decoding (``beam_size=4``, ``lm_weight=0``).
    """
    from kospeech.runtime.model import ExportedModel

    return ExportedModel(directory, int8=int8, num_threads=num_threads, search=search,
                         max_segment_seconds=max_segment_seconds, **options)
