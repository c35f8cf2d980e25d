"""Zeroth-Korean (OpenSLR 40, 51.6 h of read Korean) as released, into data dirs ``train`` and ``test``.

Release layout under ``--root`` (LibriSpeech style; the Kaldi recipe ``goodatlas/zeroth``
reads it the same way)::

    AUDIO_INFO                                   SPEAKERID|NAME|SEX|SCRIPTID|DATASET (optional here)
    train_data_01/<scriptid>/<reader>/<reader>_<scriptid>_<nnnn>.flac
    train_data_01/<scriptid>/<reader>/<reader>_<scriptid>.trans.txt   lines "utt-id transcript"
    test_data_01/...                             the same

The transcripts are already clean, spaced Hangul (UTF-8; CP949 is accepted too), so they are
only whitespace-normalised; ``meta.yaml`` records the ``spelling`` form because Zeroth writes
words as spelled. A transcript line without audio, an empty or undecodable audio file, and an
empty transcript are skipped, counted, logged and listed in ``skipped.txt``. The speaker is
the reader id (utterance ids start with it, so Kaldi's sort orders agree). Durations come
from the FLAC header.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kospeech.audio import audio_duration
from kospeech.data.corpora import (
    SetReport,
    Skip,
    Utterance,
    check_root_path,
    decode_transcript,
    parallel_map,
    write_split,
)
from kospeech.errors import DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)

SPLIT_DIRS: dict[str, str] = {"train": "train_data_01", "test": "test_data_01"}
AUDIO_SUFFIXES: tuple[str, ...] = (".flac", ".wav")
TRANSCRIPT_FORM = "spelling"


@dataclass(frozen=True)
class _Item:
    utt_id: str
    path: str
    text: str
    speaker: str


def _process(item: _Item) -> Utterance | Skip:
    path = Path(item.path)
    try:
        duration = audio_duration(path)
    except DataError as err:
        reason = "audio file missing" if not path.exists() else "unreadable audio"
        return Skip(item.utt_id, reason, str(err))
    if duration <= 0:
        return Skip(item.utt_id, "unreadable audio", f"{path}: no samples")
    return Utterance(item.utt_id, str(path), item.text, item.speaker, duration)


def read_trans(path: Path) -> tuple[list[tuple[str, str]], list[Skip]]:
    """``(utt-id, text)`` per line of a ``*.trans.txt``; empty transcripts become Skips."""
    entries: list[tuple[str, str]] = []
    bad: list[Skip] = []
    for n, line in enumerate(decode_transcript(path.read_bytes(), path).splitlines(), start=1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        text = " ".join(parts[1].split()) if len(parts) > 1 else ""
        if not text:
            bad.append(Skip(parts[0], "empty transcript", f"{path.name}:{n}"))
            continue
        entries.append((parts[0], text))
    return entries, bad


def _find_audio(folder: Path, utt_id: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        candidate = folder / f"{utt_id}{suffix}"
        if candidate.exists():
            return candidate
    return folder / f"{utt_id}{AUDIO_SUFFIXES[0]}"


@register("corpus", "zeroth")
class Zeroth:
    """Zeroth-Korean as released (flac + ``*.trans.txt``) -> data dirs ``train`` and ``test``.

    Args:
        transcript: accepted for a uniform CLI; Zeroth has one (spelled) form, so only
            ``spelling`` is recorded and ``phonetic`` logs a note.
        nj: worker processes for reading FLAC headers.
    """

    name = "zeroth"
    splits = tuple(SPLIT_DIRS)

    def __init__(self, *, transcript: str = TRANSCRIPT_FORM, nj: int = 1) -> None:
        if transcript != TRANSCRIPT_FORM:
            logger.info("zeroth: transcripts have a single (spelled) form; '%s' is recorded as 'spelling'", transcript)
        self.nj = max(1, int(nj))

    def _items(self, split_dir: Path) -> tuple[list[_Item], list[Skip]]:
        items: list[_Item] = []
        skipped: list[Skip] = []
        for trans in sorted(split_dir.rglob("*.trans.txt")):
            entries, bad = read_trans(trans)
            skipped += bad
            reader = trans.parent.name
            for utt_id, text in entries:
                speaker = utt_id.split("_", 1)[0] if "_" in utt_id else reader
                items.append(_Item(utt_id, str(_find_audio(trans.parent, utt_id)), text, speaker))
        return items, skipped

    def prepare(self, root: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, SetReport]:
        """Write ``out/train`` and ``out/test`` (a split whose folder is absent is left out, logged)."""
        root = check_root_path(root)
        out = Path(out)
        reports: dict[str, SetReport] = {}
        for split, dirname in SPLIT_DIRS.items():
            split_dir = root / dirname
            if not split_dir.is_dir():
                logger.warning("zeroth: %s is missing; split '%s' is not prepared", split_dir, split)
                continue
            items, skipped = self._items(split_dir)
            utterances: list[Utterance] = []
            for result in parallel_map(_process, items, nj=self.nj, chunksize=256):
                if isinstance(result, Skip):
                    skipped.append(result)
                else:
                    utterances.append(result)
            reports[split] = write_split(
                out / split, utterances, skipped, name=split, corpus=self.name, transcript=TRANSCRIPT_FORM
            )
        if not reports:
            raise DataError(f"zeroth: neither {', '.join(SPLIT_DIRS.values())} exists under {root}; check --root")
        return reports
