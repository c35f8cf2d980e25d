"""Cutting audio of any length into pieces a model decodes well, in bounded memory (numpy only).

A model trained on utterances of a few seconds decodes a one-hour recording badly and in
memory proportional to the hour. So long audio is streamed in blocks and cut into pieces the
way a recording falls apart by itself: at every pause of at least ``min_pause`` seconds (the
end of a sentence or phrase: each piece is then close to an utterance as the model saw them in
training), and, where speech runs on for longer than ``max_seconds`` without such a pause, at
the quietest stretch between ``min_seconds`` and ``max_seconds``. Quiet is measured against
the audio itself (within ``QUIET_DB`` of the quietest 10 ms frame of the window being cut, or
of ``FLOOR_DB`` for digital silence), so there is no level to tune and no model to download.

Every decision looks at exactly the next ``max_seconds`` of audio, so the pieces do not depend
on how the audio arrives (blocks of a file, or one array); memory is one block plus one piece
whatever the length of the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

HOP_SECONDS = 0.01
QUIET_DB = 10.0
FLOOR_DB = -80.0


def _levels(wave: np.ndarray, hop: int, smooth: int) -> np.ndarray:
    """dB of the mean energy of each ``hop``-sample frame, averaged over ``smooth`` frames."""
    n = len(wave) // hop
    energy = np.square(wave[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    if smooth > 1 and n >= smooth:
        csum = np.concatenate(([0.0], np.cumsum(energy)))
        inner = (csum[smooth:] - csum[:-smooth]) / smooth
        energy = np.concatenate((inner, np.full(smooth - 1, inner[-1])))
    return 10.0 * np.log10(energy + 1e-12)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return edges[0::2], edges[1::2]


def quietest_cut(wave: np.ndarray, sample_rate: int, lo: int, hi: int, window_seconds: float = 0.2) -> int:
    """Sample index in ``[lo, hi)`` in the middle of the longest stretch within 6 dB of the
    quietest ``window_seconds`` average: the least harmful place to cut running speech."""
    hop = max(1, int(sample_rate * HOP_SECONDS))
    w = max(1, int(round(window_seconds / HOP_SECONDS)))
    level = _levels(wave[lo:hi], hop, w)
    if len(level) < 2:
        return hi
    return lo + (lowest_point(level, 6.0) + w // 2) * hop


def lowest_point(score: np.ndarray, tolerance: float) -> int:
    """Index in the middle of the longest run of ``score`` within ``tolerance`` of its minimum.

    Where running speech must be cut, the middle of the longest low stretch is safer than the
    single lowest frame (a stop consonant's closure is short and low; a breath is long). Shared
    by the energy cutter (dB levels) and the silero cutter (speech probabilities,
    :mod:`kospeech.runtime.vad`).
    """
    starts, ends = _runs(score <= score.min() + tolerance)
    longest = int(np.argmax(ends - starts))
    return int((starts[longest] + ends[longest]) // 2)


def next_cut(wave: np.ndarray, sample_rate: int, *, max_len: int, min_len: int, min_pause: float,
             final: bool) -> int | None:
    """Where the next piece of ``wave`` ends, or None (``final``: keep the rest whole; otherwise:
    wait for more audio)."""
    if not final and len(wave) < max_len:
        return None
    hop = max(1, int(sample_rate * HOP_SECONDS))
    region = wave[:max_len]
    level = _levels(region, hop, 5)
    if len(level):
        quiet = level <= max(float(level.min()), FLOOR_DB) + QUIET_DB
        starts, ends = _runs(quiet)
        inner = (starts > 0) & (ends < len(level)) & ((ends - starts) * HOP_SECONDS >= min_pause)
        if inner.any():  # the first pause with speech on both sides of it
            i = int(np.flatnonzero(inner)[0])
            return int((starts[i] + ends[i]) // 2) * hop
    if len(wave) > max_len:
        return quietest_cut(wave, sample_rate, min_len, max_len)
    return None


def segment_stream(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    max_seconds: float = 20.0,
    min_seconds: float = 5.0,
    min_pause: float = 0.3,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_sample, piece)`` pairs covering the concatenated ``blocks`` without gaps."""
    max_len = int(max_seconds * sample_rate)
    min_len = min(int(min_seconds * sample_rate), max_len // 2)
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0

    def pieces(final: bool) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal buffer, offset
        while (cut := next_cut(buffer, sample_rate, max_len=max_len, min_len=min_len, min_pause=min_pause,
                               final=final)) is not None:
            yield offset, buffer[:cut]
            buffer = buffer[cut:]
            offset += cut

    for block in blocks:
        buffer = np.concatenate((buffer, np.asarray(block, dtype=np.float32)))
        yield from pieces(final=False)
    yield from pieces(final=True)
    if len(buffer):
        yield offset, buffer
