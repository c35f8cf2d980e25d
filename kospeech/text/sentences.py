"""The Korean sentence list behind the synthetic (espeak-ng) corpus, and its train/test split.

``kospeech/resources/sentences_ko.txt`` holds everyday sentences written in KsponSpeech notation
(dual ``(3시)/(세 시)``, fillers ``아/``, tags ``b/ n/ l/``, ``+`` and ``*``), so the synthetic
recipe exercises the same normalisation as the real corpus; the phonetic form of every line is
pure Hangul and spaces, which espeak-ng can speak.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from kospeech.errors import ConfigError, DataError
from kospeech.text.normalize import normalize_kspon

logger = logging.getLogger(__name__)

DEFAULT_SENTENCES = "sentences_ko.txt"
# Conversational sentences written for the project that only the training side speaks (never
# split into test sentences): new words and endings in the style of everyday talk, beyond what
# the few hundred listed training sentences and the templates hold.
DIALOGUE_SENTENCES = "dialogue_ko.txt"


def load_sentences(path: str | os.PathLike[str] | None = None, *, resource: str = DEFAULT_SENTENCES) -> list[str]:
    """Raw (notated) sentences, one per non-empty line; the packaged ``resource`` when ``path`` is None."""
    if path is None:
        source = resources.files("kospeech").joinpath("resources").joinpath(resource)
        where = f"kospeech/resources/{resource}"
        data = source.read_bytes()
    else:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"sentence file not found: {path}") from None
    out: list[str] = []
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise DataError(f"{where}:{lineno}: not UTF-8 ({err.reason}); save the file as UTF-8") from None
        if line:
            out.append(line)
    if not out:
        raise DataError(f"{where}: no sentences (the file is empty)")
    return out


def split_sentences(sentences: Sequence[str], *, test_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic, disjoint train/test split of raw sentences.

    Sentences are grouped by their phonetic form, so two lines that are spoken the same go to
    the same side and the test set never holds speech the model was trained on. Groups are
    ordered by their text and shuffled with ``seed``, so the split does not depend on the input
    order; each side keeps the input order. Lines with nothing to speak are dropped and counted.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    groups: dict[str, list[int]] = {}
    empty: set[int] = set()
    for i, s in enumerate(sentences):
        key = normalize_kspon(s, "phonetic")
        if key:
            groups.setdefault(key, []).append(i)
        else:
            empty.add(i)
    if empty:
        logger.warning("split_sentences: %d sentences have no speech after normalisation and were dropped", len(empty))
    if len(groups) < 2:
        raise DataError(f"need at least 2 distinct sentences to split, got {len(groups)}")
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_test = min(len(keys) - 1, max(1, round(test_fraction * len(keys))))
    test_idx = {i for k in keys[:n_test] for i in groups[k]}
    train = [s for i, s in enumerate(sentences) if i not in test_idx and i not in empty]
    test = [s for i, s in enumerate(sentences) if i in test_idx]
    return train, test


def raw_words(raw: str) -> list[str]:
    """Split a notated line at the spaces outside ``( )``, so ``(3시)/(세 시)`` stays one unit."""
    words: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in raw:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == " " and depth == 0:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(ch)
    if current:
        words.append("".join(current))
    return words


def recombine(sentences: Sequence[str], n: int, *, seed: int, forbidden: Sequence[str] = ()) -> list[str]:
    """``n`` new notated lines, each the head of one sentence joined to the tail of another.

    A few hundred sentences spoken many times let a recurrent model memorise whole sentences
    instead of learning sounds; new word sequences built from the same words take that
    shortcut away. A line whose phonetic form is one of ``forbidden`` (the test sentences) or of
    its own sources is never produced, so the test side stays unseen.
    """
    split = [w for w in (raw_words(s) for s in sentences) if len(w) >= 2]
    if len(split) < 2 or n <= 0:
        return []
    banned = {normalize_kspon(s, "phonetic") for s in (*forbidden, *sentences)}
    rng = random.Random(seed)
    out: list[str] = []
    attempts = 0
    while len(out) < n and attempts < 20 * n:
        attempts += 1
        head, tail = rng.sample(split, 2)
        line = " ".join(head[: rng.randint(1, len(head) - 1)] + tail[rng.randint(1, len(tail) - 1) :])
        spoken = normalize_kspon(line, "phonetic")
        if spoken and spoken not in banned:
            out.append(line)
    return out
