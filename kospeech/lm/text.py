"""The text an LM learns from: reading transcript files, encoding sentences, holding some out.

Apart from the trainers because both use it: the neural LM's loop (:mod:`kospeech.lm.train`)
and the n-gram's estimate (:mod:`kospeech.lm.ngram`), and ``kospeech lm ppl``. Here it needs
neither of them (nor torch), so the n-gram no longer borrows the neural trainer's module.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kospeech.errors import DataError
from kospeech.files import read_lines

logger = logging.getLogger(__name__)


def _has_hangul(s: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e" for ch in s)


def _is_kaldi_text(path: Path, lines: Sequence[str]) -> bool:
    """Whether ``lines`` are a Kaldi ``text`` (``utt-id transcript``) rather than plain sentences.

    Utterance ids never contain Hangul, so a file whose every line is ``field transcript`` with a
    Hangul-free first field is Kaldi text (the rule this function always had). A Kaldi text may
    also hold utterances with an empty transcript: the line is the id alone. Those used to make
    the whole file read as plain sentences, so the ids became training text. An id-only line
    still marks Kaldi text when it looks like the other ids: every first field Hangul-free and
    unique in the file (ids are keys; the first words of sentences repeat), the id-only ones
    with a digit in them (ids are numbered; a lone plain word like ``b/`` or ``OK`` is not), and
    at least one line with a transcript. A data dir's own ``text`` (beside ``wav.scp`` or
    ``utt2spk``) is Kaldi text whatever its ids look like.
    """
    if path.name == "text" and any((path.parent / f).is_file() for f in ("wav.scp", "utt2spk")):
        return True
    firsts = [ln.split(maxsplit=1) for ln in lines]
    if any(_has_hangul(f[0]) for f in firsts):
        return False
    if all(len(f) == 2 for f in firsts):
        return True
    ids = [f[0] for f in firsts]
    lone = [f[0] for f in firsts if len(f) == 1]
    return (
        len(lone) < len(firsts)
        and len(set(ids)) == len(ids)
        and all(any(ch.isascii() and ch.isdigit() for ch in i) for i in lone)
    )


def read_transcripts(path: str | Path, *, transcript: str | None = None) -> list[str]:
    """Transcripts of a Kaldi ``text`` file (``utt-id transcript``), or of a plain one-per-line file.

    Which of the two a file is, :func:`_is_kaldi_text` decides; otherwise each whole line is a
    sentence. In Kaldi text an utterance with an empty transcript (the id alone on its line) is
    skipped and counted in the log, never read as a sentence: its id is not text to learn.
    ``transcript`` (``phonetic`` or ``spelling``) reads the lines as KsponSpeech notation and
    keeps that form, so notated extra text matches the acoustic model's prepared transcripts;
    lines that normalise to nothing are dropped.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"LM text file not found: {path}")
    lines = [ln.strip() for ln in read_lines(path)]  # UTF-8 or CP949, as data prep reads transcripts
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path}: no sentences to train an LM on")

    if _is_kaldi_text(path, lines):
        fields = [ln.split(maxsplit=1) for ln in lines]
        empty = [f[0] for f in fields if len(f) < 2]
        if empty:
            logger.warning("%s: %d utterance(s) have an empty transcript and were skipped (e.g. %s)",
                           path, len(empty), ", ".join(empty[:3]))
        texts = [f[1] for f in fields if len(f) == 2]
        if not texts:
            raise DataError(f"{path}: every utterance has an empty transcript; no sentences to train an LM on")
    else:
        texts = lines
    if transcript is not None:
        from kospeech.text.normalize import normalize_kspon

        texts = [t for t in (normalize_kspon(x, transcript) for x in texts) if t]
    return texts


def encode_sentences(texts: Iterable[str], tokenizer: Any) -> list[list[int]]:
    """Token ids of each sentence; sentences that encode to nothing are skipped and counted."""
    out, skipped = [], 0
    for t in texts:
        ids = tokenizer.encode(t)
        if ids:
            out.append(ids)
        else:
            skipped += 1
    if skipped:
        logger.warning("LM data: %d sentences encode to no tokens and were skipped", skipped)
    return out


def hold_out(items: Sequence[Any], fraction: float, rng: random.Random) -> tuple[list[Any], list[Any]]:
    """A shuffled ``fraction`` of ``items`` (at least one, none of a single item) and the rest."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    n_valid = max(1, int(len(shuffled) * fraction)) if len(shuffled) > 1 else 0
    return shuffled[:n_valid], shuffled[n_valid:] or shuffled
