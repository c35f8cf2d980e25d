"""Using a trained model: load it, transcribe audio of any length, get text with word times.

``kospeech.load(path)`` returns a :class:`Transcriber`; its ``transcribe`` takes paths, arrays,
bytes or lists of them and returns :class:`Result` objects. Light parts (``result``, ``timing``,
``formats``) import neither torch nor the registry, so the torch-free runtime
(``kospeech.runtime``) shares them; the torch parts load on first use.
"""

from __future__ import annotations

from typing import Any

from kospeech.inference.result import Result, Word

__all__ = ["Result", "Word", "Transcriber", "load"]


def __getattr__(name: str) -> Any:
    if name in ("Transcriber", "load"):
        from kospeech.inference import api

        return getattr(api, name)
    raise AttributeError(f"module 'kospeech.inference' has no attribute {name!r}")
