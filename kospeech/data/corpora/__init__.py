"""Corpus preparers: each turns a corpus as released into Kaldi data dirs (``kospeech data prep``).

Registered under the ``corpus`` kind: ``ksponspeech``, ``zeroth``, ``synthetic``, ``kaldi`` (an
existing Kaldi/ESPnet data dir). Each is a plain class whose keyword-only constructor arguments
are its options and whose ``prepare(root, out)`` writes one data dir per split under ``out`` and
returns a :class:`SetReport` per split.

What every preparer shares lives here: the record of skipped utterances (never a silent skip:
each is counted, logged and listed with its reason in ``<out>/<set>/skipped.txt``), transcript
decoding (UTF-8 first, strictly, then CP949), and writing a split.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kospeech.data.datadir import write_data_dir
from kospeech.errors import ConfigError, DataError
from kospeech.files import TEXT_ENCODINGS, decode_lines, write_atomic

logger = logging.getLogger(__name__)

def decode_transcript(data: bytes, path: str | os.PathLike[str]) -> str:
    """Bytes of a transcript file as text: each line UTF-8 (strictly, BOM dropped), else CP949.

    A line that is neither, or a file mixing the two, is a DataError naming the line
    (:func:`kospeech.data.datadir.decode_lines`).
    """
    return "\n".join(decode_lines(data, path)[0])


def read_transcript(path: str | os.PathLike[str]) -> str:
    """A transcript file's text (see :func:`decode_transcript`), lines joined by spaces."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"transcript {path} does not exist") from None
    return " ".join(decode_transcript(data, path).split())


@dataclass
class Utterance:
    """One utterance ready for a data dir."""

    utt_id: str
    path: str
    text: str
    speaker: str
    duration: float


@dataclass
class SetReport:
    """The outcome of preparing one split: how many utterances were kept and why others were not."""

    name: str
    directory: Path
    num_utts: int = 0
    seconds: float = 0.0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {c}" for r, c in sorted(self.skipped.items())) or "none"
        return (
            f"{self.name}: {self.num_utts} utterances, {self.seconds / 3600:.2f} h -> {self.directory}; "
            f"skipped {self.num_skipped} ({reasons})"
        )


@dataclass
class Skip:
    """An utterance (or .trn line) left out, with the reason; written to ``skipped.txt``."""

    key: str
    reason: str
    detail: str = ""


def write_split(
    directory: str | os.PathLike[str],
    utterances: Sequence[Utterance],
    skipped: Sequence[Skip],
    *,
    name: str,
    corpus: str,
    transcript: str,
    normalization: str | None = None,
) -> SetReport:
    """Write one data dir plus ``skipped.txt`` (``key<TAB>reason<TAB>detail``) and log the counts."""
    directory = Path(directory)
    report = SetReport(name=name, directory=directory)
    for s in skipped:
        report.skipped[s.reason] += 1
    by_id: dict[str, Utterance] = {}
    for utt in utterances:
        if utt.utt_id in by_id:
            report.skipped["duplicate utterance id"] += 1
            skipped = [*skipped, Skip(utt.utt_id, "duplicate utterance id", utt.path)]
            continue
        by_id[utt.utt_id] = utt
    if not by_id:
        raise DataError(
            f"{corpus} {name}: no usable utterances ({report.num_skipped} skipped: {dict(report.skipped)}); "
            "check --root"
        )
    from kospeech.data.kaldi_io import is_pipe

    durations = {u.utt_id: u.duration for u in by_id.values()}
    write_data_dir(
        directory,
        wav={u.utt_id: u.path for u in by_id.values()},
        text={u.utt_id: u.text for u in by_id.values()},
        utt2spk={u.utt_id: u.speaker for u in by_id.values()},
        utt2dur=durations,
        reco2dur=durations if any(is_pipe(u.path) for u in by_id.values()) else None,
        corpus=corpus,
        transcript=transcript,
        normalization=normalization,
    )
    lines = "".join(f"{s.key}\t{s.reason}\t{s.detail}\n" for s in sorted(skipped, key=lambda s: (s.key, s.reason)))
    write_atomic(directory / "skipped.txt", lines)
    report.num_utts = len(by_id)
    report.seconds = sum(u.duration for u in by_id.values())
    for s in skipped[:20]:
        logger.warning("%s %s: skipped %s: %s %s", corpus, name, s.key, s.reason, s.detail)
    if len(skipped) > 20:
        logger.warning("%s %s: ... %d more skipped, see %s", corpus, name, len(skipped) - 20, directory / "skipped.txt")
    logger.info("%s %s", corpus, report.summary())
    return report


T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, nj: int = 1, chunksize: int = 64) -> Iterator[R]:
    """``map(fn, items)`` in order, in ``nj`` processes when ``nj > 1`` (``fn`` must be picklable)."""
    if nj <= 1 or len(items) < 2 * chunksize:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(max_workers=nj) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_transcript_form(form: str) -> str:
    """``form`` if it is a KsponSpeech transcript form, else a ConfigError listing the choices."""
    from kospeech.data.datadir import TRANSCRIPT_FORMS

    if form not in TRANSCRIPT_FORMS:
        raise ConfigError(f"transcript form '{form}' is not one of {', '.join(TRANSCRIPT_FORMS)}")
    return form


def check_root_path(root: str | os.PathLike[str]) -> Path:
    """The corpus root, absolute; whitespace in it would break wav.scp, so it is refused early."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"corpus root {root} is not a folder; pass --root the folder the corpus was unpacked into")
    if any(c.isspace() for c in str(path)):
        raise DataError(
            f"corpus root {path} contains whitespace, which wav.scp cannot hold; make a symlink without "
            "spaces (ln -s) and pass that"
        )
    return path


__all__: list[Any] = [
    "TEXT_ENCODINGS",
    "SetReport",
    "Skip",
    "Utterance",
    "check_root_path",
    "check_transcript_form",
    "chunked",
    "decode_transcript",
    "parallel_map",
    "read_transcript",
    "write_split",
]
