"""Attention-decoder greedy search in numpy over the exported decoder-step graph.

The search of :class:`kospeech.search.greedy.GreedySearch`, batched the same way: every
utterance starts from ``<sos>`` and takes the decoder's best token (never ``<blank>``, ``<pad>``
or ``<sos>``) until ``<eos>`` or ``ceil(max_len_ratio x its encoder frames)`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kospeech.text.special import BLANK_ID, EOS_ID, PAD_ID, SOS_ID

#: tokens (N,), state, encoder_out (N, T', H), encoder_lengths (N,) -> log-probs (N, V), new state
Step = Callable[[np.ndarray, Sequence[np.ndarray], np.ndarray, np.ndarray], tuple[np.ndarray, list[np.ndarray]]]


def max_output_lengths(encoder_lengths: np.ndarray, ratio: float, min_len: int = 1) -> np.ndarray:
    """``ceil(ratio x frames)`` per utterance, at least ``min_len`` (float32 as the torch search)."""
    lens = np.ceil(encoder_lengths.astype(np.float32) * np.float32(ratio)).astype(np.int64)
    return np.maximum(lens, min_len)


def greedy(encoder_out: np.ndarray, encoder_lengths: np.ndarray, step: Step, state: Sequence[np.ndarray],
           max_len_ratio: float = 1.0) -> list[list[int]]:
    """(B, T', H) padded encoder output and (B,) lengths -> token ids per utterance (no <eos>)."""
    B = encoder_out.shape[0]
    max_lens = max_output_lengths(encoder_lengths, max_len_ratio)
    tokens = np.full(B, SOS_ID, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    out = np.full((B, int(max_lens.max())), EOS_ID, dtype=np.int64)
    state = list(state)
    for t in range(int(max_lens.max())):
        logp, state = step(tokens, state, encoder_out, encoder_lengths)
        logp = np.array(logp, dtype=np.float32, copy=True)
        logp[:, [BLANK_ID, PAD_ID, SOS_ID]] = -np.inf
        best = np.where(done, EOS_ID, logp.argmax(-1))
        out[:, t] = best
        done |= (best == EOS_ID) | (t + 1 >= max_lens)
        tokens = best.astype(np.int64)
        if done.all():
            break
    results = []
    for row in out.tolist():
        results.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
    return results
