"""Using a trained model: load it, transcribe audio of any length, get text with word times.

``kospeech.load(path)`` returns a :class:`Transcriber`; its ``transcribe`` takes paths, arrays,
bytes or lists of them and returns :class:`Result` objects. Light parts (``result``, ``timing``,
``formats``) import neither torch nor the registry, so the torch-free runtime
(``kospeech.runtime``) shares them; the torch parts load on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from kospeech.inference.result import Result, Word

__all__ = ["Result", "Word", "Transcriber", "load"]


def load(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    device: Any = "auto",
    search: str | Mapping[str, Any] | None = None,
    max_segment_seconds: float = 20.0,
    weights: Sequence[float] | None = None,
    trust_plugins: bool = False,
    user_dirs: Sequence[str | os.PathLike[str]] = (),
    chunk_size: int | None = None,
    **options: Any,
) -> Any:
    """The front door: a :class:`~kospeech.inference.driver.Driver` for any model a user has.

    ``path`` is a checkpoint file or exp dir (its ``checkpoints/last.pt``), a model package
    (``kospeech pack``; decodes with its own search and LM), an export dir (``kospeech export``;
    onnxruntime, and torch is not imported: the light install opens it), or a list of
    checkpoints: an ensemble (:mod:`kospeech.inference.ensemble`; ``weights`` per member).

    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; ``search`` and ``options`` replace or
    add to the model's decoding (``kospeech.load("exp/x", search="ctc_prefix_beam", beam_size=10)``).
    ``user_dirs`` are plugin folders to load first; ``trust_plugins`` imports the plugin folders
    a checkpoint recorded (only for checkpoints whose origin you trust: that runs their code).
    ``chunk_size`` decodes a Conformer with chunk-wise attention of that many encoder frames (0:
    full context) instead of its configured ``decode_chunk_size``; a dynamic-chunk checkpoint
    decodes at any. An export has its chunk size fixed in its graph and refuses one.
    """
    from kospeech.inference import package

    if isinstance(path, (str, os.PathLike)):
        package.check_model_path(path)
        if package.is_export_dir(path):
            from kospeech import runtime

            if weights is not None:
                from kospeech.errors import ConfigError

                raise ConfigError("weights apply to an ensemble: give a list of checkpoints")
            if chunk_size is not None:
                from kospeech.errors import ConfigError

                raise ConfigError(f"chunk_size: {path} is an export, whose chunk size is fixed in its graph; "
                                  f"export the checkpoint with the chunk size wanted")
            return runtime.load(path, search=search, max_segment_seconds=max_segment_seconds, **options)
    from kospeech.inference import api

    return api.load_torch(path, device=device, search=search, max_segment_seconds=max_segment_seconds,
                          weights=weights, trust_plugins=trust_plugins, user_dirs=user_dirs, chunk_size=chunk_size,
                          **options)


def __getattr__(name: str) -> Any:
    if name == "Transcriber":
        from kospeech.inference import api

        return api.Transcriber
    raise AttributeError(f"module 'kospeech.inference' has no attribute {name!r}")
