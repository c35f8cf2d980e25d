"""KoSpeech: Korean end-to-end speech recognition, assembled from registered components.

``kospeech.load(path)`` is the way in for a trained model (see :mod:`kospeech.inference`); it is
resolved lazily, so importing a light part of the package (``kospeech.runtime``,
``kospeech.metadata``) does not import torch.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Result", "Transcriber", "Word", "load", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Transcriber", "Result", "Word"):
        import kospeech.inference as inference

        return getattr(inference, name)
    raise AttributeError(f"module 'kospeech' has no attribute {name!r}")
