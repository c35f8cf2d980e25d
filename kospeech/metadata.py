"""The one metadata block that every checkpoint and export carries.

Why one block: a file outlives the code that wrote it. Whoever opens it later (an older or newer
KoSpeech, the torch-free runtime, ``kospeech compare``, a server) needs the same few facts: which
format it is, which package versions wrote it, whether its bytes are intact, which plugin modules
built its components and which corpus trained it. Each feature that adds a fact adds a key here
(``FIELDS``), never a block of its own.

The block is plain data (str, int, float, bool, None, lists and dicts of those), so it fits in a
``weights_only`` checkpoint and in an export's ``model.yaml`` alike. This module imports neither
torch nor the registry: the runtime reads it too.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
from collections.abc import Mapping
from typing import Any

from kospeech.errors import DataError

#: bump when a reader of the previous version cannot use files of the new one
FORMAT_VERSION = 1

#: what each key means; every key is optional for a reader (files of older writers lack some)
FIELDS: dict[str, str] = {
    "kind": "checkpoint, export, package (package.yaml) or lm (a language model file: lm.pt, or lm.yaml beside "
            "lm.arpa)",
    "format_version": "FORMAT_VERSION of the writer; a reader refuses a newer one",
    "versions": "package versions of the writer: kospeech, torch, torchaudio, onnx, ... (those installed)",
    "created": "UTC time the file was written, ISO 8601",
    "checksum": "sha256 of the weights (reliability: a file with overwritten bytes is refused)",
    "checksums": "sha256 per top-level entry of a checkpoint (optimizer, scheduler, sampler, rng, config, ...), "
                 "checked at load with the weights' checksum",
    "plugins": "plugin modules that registered components the file names (name, package or path)",
    "training_corpus": "corpus of the training data (from the data dir's meta.yaml) and its path",
}

_VERSIONED = ("kospeech", "torch", "torchaudio", "onnx", "onnxruntime", "sentencepiece", "numpy")


def package_versions(names: tuple[str, ...] = _VERSIONED) -> dict[str, str]:
    """Installed versions of ``names`` (missing packages left out), read without importing them."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "kospeech" not in out:  # a source tree run with PYTHONPATH=. has no distribution metadata
        from kospeech import __version__

        out["kospeech"] = __version__
    return out


def make_metadata(kind: str, **fields: Any) -> dict[str, Any]:
    """A fresh block for a file being written now; ``fields`` are further keys of ``FIELDS``."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown metadata field(s) {', '.join(unknown)}; add them to kospeech.metadata.FIELDS")
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **fields,
    }


def check_metadata(meta: Mapping[str, Any] | None, source: str) -> dict[str, Any]:
    """The block of a file being opened; refuses a format newer than this code reads.

    Files written before the block existed have none: they are format 0 and load as before.
    """
    if meta is None:
        return {"format_version": 0}
    if not isinstance(meta, Mapping):
        raise DataError(f"{source}: the metadata block is a {type(meta).__name__}, not a mapping; the file is damaged")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        writer = (meta.get("versions") or {}).get("kospeech", "a newer version") if isinstance(
            meta.get("versions"), Mapping) else "a newer version"
        raise DataError(
            f"{source}: written in format {version} by kospeech {writer}; this kospeech reads format "
            f"{FORMAT_VERSION} and older: upgrade kospeech (pip install -U kospeech) to open it"
        )
    return dict(meta)
