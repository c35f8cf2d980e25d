"""CTC searches on numpy log-probabilities: greedy with token spans, prefix beam, forced alignment.

The same searches as :mod:`kospeech.search.ctc` (``ctc_greedy``, ``ctc_prefix_beam`` without an
LM), written for one utterance ``(T, V)`` at a time in numpy so the runtime needs no torch. As
there, ``<pad>``, ``<sos>`` and ``<eos>`` are never emitted and ``<blank>`` is id 0.
"""

from __future__ import annotations

import numpy as np

from kospeech.text.special import BLANK_ID, EOS_ID, PAD_ID, SOS_ID

NEG_INF = -np.inf

#: (token id, first frame, one past the last frame, mean probability over its frames)
Span = tuple[int, int, int, float]


def mask_non_units(log_probs: np.ndarray) -> np.ndarray:
    out = np.array(log_probs, dtype=np.float32, copy=True)
    out[..., [PAD_ID, SOS_ID, EOS_ID]] = NEG_INF
    return out


def greedy(log_probs: np.ndarray) -> tuple[list[int], list[Span]]:
    """Best path of (T, V) log-probs: token ids and, per token, the run of frames it won."""
    lp = mask_non_units(log_probs)
    best = lp.argmax(-1)
    tokens: list[int] = []
    spans: list[Span] = []
    t, T = 0, best.size
    while t < T:
        tok, start = int(best[t]), t
        while t < T and best[t] == tok:
            t += 1
        if tok != BLANK_ID:
            tokens.append(tok)
            spans.append((tok, start, t, float(np.exp(lp[start:t, tok]).mean())))
    return tokens, spans


def prefix_beam(log_probs: np.ndarray, beam_size: int = 10) -> list[tuple[list[int], float]]:
    """CTC prefix beam search: the ``beam_size`` best prefixes with their log-probabilities, best first.

    Each frame scores the kept prefixes unchanged and every one-token extension, adds an
    extension that recreates a kept prefix to that prefix, and keeps the best ``beam_size``
    (the candidate set and merge rule of :func:`kospeech.search.ctc.ctc_prefix_beam_search`).
    """
    lp_all = mask_non_units(log_probs).astype(np.float64)
    T, V = lp_all.shape
    prefixes: list[tuple[int, ...]] = [()]
    pb = np.array([0.0])
    pnb = np.array([NEG_INF])
    for t in range(T):
        lp = lp_all[t]
        K = len(prefixes)
        last = np.array([p[-1] if p else -1 for p in prefixes])
        prev = np.logaddexp(pb, pnb)
        stay_b = prev + lp[BLANK_ID]
        stay_nb = np.where(last >= 0, pnb + lp[np.maximum(last, 0)], NEG_INF)
        ext = prev[:, None] + lp[None, :]
        rows = np.nonzero(last >= 0)[0]
        ext[rows, last[rows]] = pb[rows] + lp[last[rows]]  # a repeat needs a blank in between
        ext[:, BLANK_ID] = NEG_INF
        index = {p: k for k, p in enumerate(prefixes)}
        for j, p in enumerate(prefixes):
            k = index.get(p[:-1]) if p else None
            if k is not None:
                stay_nb[j] = np.logaddexp(stay_nb[j], ext[k, p[-1]])
                ext[k, p[-1]] = NEG_INF
        totals = np.concatenate([np.logaddexp(stay_b, stay_nb), ext.reshape(-1)])
        n_keep = min(beam_size, int(np.isfinite(totals).sum()))
        top = np.argsort(-totals, kind="stable")[:n_keep]
        new_prefixes, new_pb, new_pnb = [], [], []
        for c in top.tolist():
            if c < K:
                new_prefixes.append(prefixes[c])
                new_pb.append(stay_b[c])
                new_pnb.append(stay_nb[c])
            else:
                k, tok = divmod(c - K, V)
                new_prefixes.append((*prefixes[k], tok))
                new_pb.append(NEG_INF)
                new_pnb.append(ext[k, tok])
        prefixes, pb, pnb = new_prefixes, np.array(new_pb), np.array(new_pnb)
    final = np.logaddexp(pb, pnb)
    order = np.argsort(-final, kind="stable")
    return [(list(prefixes[i]), float(final[i])) for i in order.tolist()]


def align(log_probs: np.ndarray, tokens: list[int]) -> list[Span] | None:
    """Viterbi CTC alignment of ``tokens`` on (T, V) log-probs: each token's frames; None if they do not fit."""
    if not tokens:
        return []
    lp = np.asarray(log_probs, dtype=np.float64)
    T = lp.shape[0]
    states = np.zeros(2 * len(tokens) + 1, dtype=np.int64)
    states[1::2] = tokens
    S = states.size
    skip = np.zeros(S, dtype=bool)
    skip[3::2] = states[3::2] != states[1:-2:2]
    emit = lp[:, states]  # (T, S)
    alpha = np.full(S, NEG_INF)
    alpha[:2] = emit[0, :2]
    back = np.zeros((T, S), dtype=np.int8)
    for t in range(1, T):
        one = np.concatenate([[NEG_INF], alpha[:-1]])
        two = np.where(skip, np.concatenate([[NEG_INF, NEG_INF], alpha[:-2]]), NEG_INF)
        cand = np.stack([alpha, one, two])
        back[t] = cand.argmax(0)
        alpha = cand.max(0) + emit[t]
    s = S - 1 if S == 1 or alpha[S - 1] >= alpha[S - 2] else S - 2
    if not np.isfinite(alpha[s]):
        return None
    path = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    spans: list[Span] = []
    for i, tok in enumerate(tokens):
        frames = np.nonzero(path == 2 * i + 1)[0]
        start, end = int(frames[0]), int(frames[-1]) + 1
        spans.append((tok, start, end, float(np.exp(lp[start:end, tok]).mean())))
    return spans
