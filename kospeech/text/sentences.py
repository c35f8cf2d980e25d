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


def load_sentences(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Raw (notated) sentences, one per non-empty line; the packaged list when ``path`` is None."""
    if path is None:
        source = resources.files("kospeech").joinpath("resources").joinpath(DEFAULT_SENTENCES)
        where = f"kospeech/resources/{DEFAULT_SENTENCES}"
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
