"""Cutting audio of any length into pieces a model decodes well, in bounded memory (numpy only).

A model trained on utterances of a few seconds decodes a one-hour recording badly and in
memory proportional to the hour. So long audio is streamed in blocks and cut into segments of
at most ``max_seconds``; each cut goes to the quietest stretch (lowest mean energy over
``window_seconds``) between ``min_seconds`` and ``max_seconds`` after the previous cut. In
speech that is a pause between words or sentences, so no word is split; in continuous sound it
is still the least harmful place. No threshold to tune, and no model to download: it needs only
the samples. Memory is one block plus one segment whatever the length of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

HOP_SECONDS = 0.01


def quietest_cut(wave: np.ndarray, sample_rate: int, lo: int, hi: int, window_seconds: float = 0.2) -> int:
    """Sample index in ``[lo, hi)`` in the middle of the longest quiet stretch.

    Quiet means within 6 dB of the quietest ``window_seconds`` average in the range (the local
    noise floor, so no absolute threshold); of several quiet stretches the longest wins, since
    a pause between sentences outlasts the short ones between words.
    """
    hop = max(1, int(sample_rate * HOP_SECONDS))
    region = wave[lo:hi]
    n = len(region) // hop
    if n < 2:
        return hi
    energy = np.square(region[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    w = max(1, min(n, int(round(window_seconds / HOP_SECONDS))))
    csum = np.concatenate(([0.0], np.cumsum(energy)))
    level = 10.0 * np.log10((csum[w:] - csum[:-w]) / w + 1e-12)  # dB of each window
    quiet = np.concatenate(([False], level <= level.min() + 6.0, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]  # runs of quiet windows [start, end)
    longest = int(np.argmax(ends - starts))
    centre = (starts[longest] + ends[longest]) // 2 + w // 2
    return lo + int(centre) * hop


def segment_stream(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    max_seconds: float = 20.0,
    min_seconds: float = 5.0,
    window_seconds: float = 0.2,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_sample, segment)`` pairs covering the concatenated ``blocks`` without gaps."""
    max_len = int(max_seconds * sample_rate)
    min_len = min(int(min_seconds * sample_rate), max_len // 2)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0
    for block in blocks:
        buffer = np.concatenate((buffer, np.asarray(block, dtype=np.float32)))
        while len(buffer) > max_len:
            cut = quietest_cut(buffer, sample_rate, min_len, max_len, window_seconds)
            yield offset, buffer[:cut]
            buffer = buffer[cut:]
            offset += cut
    if len(buffer):
        yield offset, buffer
