"""A model package: one directory that decodes as the recipe scored it, and the export dir's twin.

::

    PKG/package.yaml   name, the decoding (search and its options; ``lm: lm`` relative to PKG),
                       the output form (KsponSpeech phonetic or spelling transcripts),
                       the scores the recipe measured with this decoding, the metadata block
    PKG/model.pt       the checkpoint (weights, config, tokenizer, frontend, CMVN), unchanged
    PKG/lm/            the language model of the decoding (lm.arpa + lm.yaml, or lm.pt), if any
    PKG/README.md      the model card: what it was trained on, scores with intervals, how to use it

``kospeech export PKG --out DIR`` writes an export dir (:mod:`kospeech.export.manifest`) that
carries the same ``lm/``, card and decoding, so the torch-free runtime decodes as the package does.
This module is the format and its readers (:func:`read_package`, :func:`is_package`,
:func:`is_export_dir`), which need no torch: the runtime reads packages' decodings too. Writing
one (:mod:`kospeech.inference.pack`) opens the checkpoint to check it and to fill the card.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.export import manifest as mf
from kospeech.metadata import check_metadata

logger = logging.getLogger(__name__)

PACKAGE_FILE = "package.yaml"
CHECKPOINT_FILE = "model.pt"
LM_DIR = "lm"
CARD_FILE = "README.md"


@dataclass
class Package:
    """A package read back: where its parts are and how it decodes (``search['lm']`` an absolute path)."""

    directory: Path
    name: str
    search: dict[str, Any]
    checkpoint: Path | None = None
    transcript: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".pcm", ".m4a", ".opus")


def check_model_path(path: str | os.PathLike[str]) -> None:
    """An audio file where a model is expected: say that the model comes first."""
    p = Path(path)
    if p.suffix.lower() in AUDIO_SUFFIXES:
        raise DataError(f"{p}: this is audio, not a model; the model comes first "
                        f"(kospeech transcribe MODEL AUDIO..., kospeech.load(MODEL))")


def is_package(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / PACKAGE_FILE).is_file()


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / mf.MANIFEST).is_file()


def resolve_lm(search: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """``search`` with a relative ``lm`` taken from ``directory`` (a package's or export's own LM)."""
    out = dict(search)
    lm = out.get("lm")
    if lm and not Path(str(lm)).is_absolute():
        path = directory / str(lm)
        if not path.exists():
            raise DataError(f"{directory}: the decoding names the LM {lm!r} but {path} is missing; "
                            "the package is incomplete, make it again with `kospeech pack`")
        out["lm"] = str(path)
    return out


def read_package(path: str | os.PathLike[str]) -> Package:
    """Open ``PKG/package.yaml``; errors name the file and what is missing."""
    d = Path(path)
    file = d / PACKAGE_FILE
    try:
        info = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{file}: cannot be read as a package manifest ({err})") from None
    if not isinstance(info, Mapping):
        raise DataError(f"{file}: not a mapping; the package is damaged")
    check_metadata(info.get("metadata"), str(file))
    checkpoint = d / str(info.get("checkpoint", CHECKPOINT_FILE))
    if not checkpoint.is_file():
        raise DataError(f"{d}: the package has no {checkpoint.name}; make it again with `kospeech pack`")
    search = (info.get("decode") or {}).get("search")
    if not isinstance(search, Mapping) or not search.get("name"):
        raise DataError(f"{file}: decode.search names no search; make the package again with `kospeech pack`")
    return Package(directory=d, name=str(info.get("name") or d.name), search=resolve_lm(search, d),
                   checkpoint=checkpoint, transcript=info.get("transcript"), info=dict(info))


def package_name(directory: Path) -> str:
    """``conv_ctc`` for ``exp/conv_ctc/package``: the run's name, since recipes name packages ``package``."""
    d = directory.resolve()
    return d.parent.name if d.name in ("package", "export", "onnx") else d.name


def replace_dir(tmp: Path, out: Path, kinds: Sequence[str]) -> None:
    """Move a finished ``tmp`` onto ``out``; an existing ``out`` is replaced only when it is of ``kinds``
    (files named there, e.g. ``package.yaml``) or empty, so ``--out`` never deletes a user's folder."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not any((out / k).is_file() for k in kinds)):
            raise ConfigError(f"--out {out}: exists and is not an earlier output of this command (no "
                              f"{' or '.join(kinds)}); choose a new folder, it is not replaced")
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def out_dir(path: str | os.PathLike[str]) -> Path:
    """An output folder as an absolute path (``--out .`` is the current folder, with its real name)."""
    out = Path(path).expanduser().resolve()
    if out == Path(out.anchor):
        raise ConfigError(f"--out {path}: the filesystem root cannot be an output folder")
    return out


def copy_lm(lm: str | os.PathLike[str], dest: Path) -> None:
    """The LM's files (``lm.arpa`` + ``lm.yaml`` [+ ``spellings.txt``], or ``lm.pt``) into ``dest``."""
    from kospeech.lm.base import lm_file

    src = lm_file(lm)
    dest.mkdir(parents=True, exist_ok=True)
    names = ("lm.arpa", "lm.yaml", "spellings.txt") if src.suffix in (".arpa", ".yaml") else (src.name,)
    for name in names:
        if (src.parent / name).is_file():
            shutil.copy2(src.parent / name, dest / name)
