"""CTC searches on numpy log-probabilities: greedy with token spans, prefix beam, forced alignment.

The same searches as :mod:`kospeech.search.ctc` (``ctc_greedy``, ``ctc_prefix_beam`` with or
without an n-gram for shallow fusion), written for one utterance ``(T, V)`` at a time in numpy so
the runtime needs no torch. As there, ``<pad>``, ``<sos>`` and ``<eos>`` are never emitted and
``<blank>`` is id 0. The n-gram is :class:`kospeech.lm.arpa.NgramScorer`, the model that the
torch searches' ``NgramLM`` wraps, so both fuse the same numbers; hotwords are the tables of
:class:`kospeech.lm.context.ContextGraph`, which both searches read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from kospeech.errors import ConfigError
from kospeech.text.special import BLANK_ID, EOS_ID, PAD_ID, SOS_ID

if TYPE_CHECKING:  # the scorer is passed in; decoding without an LM never loads its module
    from kospeech.lm.arpa import NgramScorer, NgramState
    from kospeech.lm.context import ContextGraph

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


def prefix_beam(
    log_probs: np.ndarray,
    beam_size: int = 10,
    *,
    lm: NgramScorer | None = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    context: ContextGraph | None = None,
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search of one utterance: the ``beam_size`` best prefixes with their scores,
    best first (:class:`PrefixBeam` over all frames at once)."""
    beam = PrefixBeam(log_probs.shape[-1], beam_size, lm=lm, lm_weight=lm_weight, length_bonus=length_bonus,
                      context=context)
    beam.advance(log_probs)
    return beam.hypotheses()


class PrefixBeam:
    """CTC prefix beam search that takes its frames in any number of calls (streaming).

    Each frame scores the kept prefixes unchanged and every one-token extension, adds an
    extension that recreates a kept prefix to that prefix, and keeps the best ``beam_size``
    (the candidate set and merge rule of :func:`kospeech.search.ctc.ctc_prefix_beam_search`).
    Candidates rank by ``log P_ctc + lm_weight * log P_lm + length_bonus * len``; the final
    ranking (and the returned score) adds the LM's ``<eos>``. Hotwords (``context``) add the
    bonuses of :class:`kospeech.lm.context.ContextGraph` as the torch search does: an unchanged
    prefix keeps its bonus, an extension adds its token's, and the final ranking takes back a
    hotword left half matched. The arithmetic is float32, as in the torch search, so both keep
    the same prefixes; equal scores keep the lower candidate index (the torch search's ``topk``
    does not promise an order among them).

    Frames given in chunks give exactly what they give at once: the state after a frame is all
    the next frame needs. :meth:`advance` never changes an array in place, so ``copy.copy(beam)``
    is a cheap snapshot to look ahead from (a stream's partial text) without disturbing it.

    Args:
        vocab_size: ``V``, the model's output units.
        beam_size: prefixes kept (and returned at most).
        lm: an n-gram for shallow fusion (:func:`kospeech.lm.arpa.load_ngram`), or None.
        lm_weight: weight of its log-probabilities; 0 leaves the LM out, as the searches do.
        length_bonus: added per emitted token (offsets the LM's push towards fewer tokens).
        context: the hotwords' graph over the model's ``V`` tokens, or None (no biasing).
    """

    def __init__(self, vocab_size: int, beam_size: int = 10, *, lm: NgramScorer | None = None,
                 lm_weight: float = 0.0, length_bonus: float = 0.0, context: ContextGraph | None = None) -> None:
        if lm is not None and lm.vocab_size != vocab_size:
            raise ConfigError(f"the n-gram has {lm.vocab_size} tokens but the model outputs {vocab_size}; "
                              f"train the LM with the model's lang dir (kospeech lm train --lang ...)")
        if context is not None and context.vocab_size != vocab_size:
            raise ConfigError(f"the hotwords were built for {context.vocab_size} tokens but the model outputs "
                              f"{vocab_size}")
        self.vocab_size, self.beam_size = vocab_size, beam_size
        self.lm = lm if lm_weight != 0.0 else None
        self.context = context
        self.weight, self.bonus = np.float32(lm_weight), np.float32(length_bonus)
        self.prefixes: list[tuple[int, ...]] = [()]
        self.pb = np.zeros(1, dtype=np.float32)
        self.pnb = np.full(1, NEG_INF, dtype=np.float32)
        self.plen = np.zeros(1, dtype=np.int64)
        self.last = np.full(1, -1, dtype=np.int64)
        self.lm_score = np.zeros(1, dtype=np.float32)
        self.lm_logp: np.ndarray | None = None
        self.lm_state: NgramState | None = None
        if self.lm is not None:
            self.lm_logp, self.lm_state = self.lm.start(1)
        self.ctx_node = np.zeros(1, dtype=np.int64)
        self.ctx_score = np.zeros(1, dtype=np.float32)
        self.frames = 0

    def advance(self, log_probs: np.ndarray) -> None:
        """Take (T, V) more frames of CTC log-probabilities."""
        lp_all = mask_non_units(log_probs)
        if lp_all.ndim != 2 or lp_all.shape[1] != self.vocab_size:
            raise ConfigError(f"expected (T, {self.vocab_size}) log-probabilities, got {lp_all.shape}")
        V, lm, context = self.vocab_size, self.lm, self.context
        weight, bonus = self.weight, self.bonus
        prefixes, pb, pnb, plen, last = self.prefixes, self.pb, self.pnb, self.plen, self.last
        lm_score, lm_logp, lm_state = self.lm_score, self.lm_logp, self.lm_state
        ctx_node, ctx_score = self.ctx_node, self.ctx_score
        for lp in lp_all:
            K = len(prefixes)
            prev = np.logaddexp(pb, pnb)
            stay_b = prev + lp[BLANK_ID]
            stay_nb = np.where(last >= 0, pnb + lp[np.maximum(last, 0)], np.float32(NEG_INF))
            ext = prev[:, None] + lp[None, :]
            rows = np.nonzero(last >= 0)[0]
            ext[rows, last[rows]] = pb[rows] + lp[last[rows]]  # a repeat needs a blank in between
            ext[:, BLANK_ID] = NEG_INF
            # an extension k + c that equals prefix j already in the beam adds to j instead
            index = {p: k for k, p in enumerate(prefixes)}
            for j, p in enumerate(prefixes):
                k = index.get(p[:-1]) if p else None
                if k is not None:
                    stay_nb[j] = np.logaddexp(stay_nb[j], ext[k, p[-1]])
                    ext[k, p[-1]] = NEG_INF
            same_total = np.logaddexp(stay_b, stay_nb) + weight * lm_score + bonus * plen.astype(np.float32)
            ext_total = ext + (bonus * (plen + 1).astype(np.float32))[:, None]
            if lm_logp is not None:
                ext_total = ext_total + weight * (lm_score[:, None] + lm_logp)
            if context is not None:
                gain, dest = context.advance(ctx_node)  # (K, V) each
                same_total = same_total + ctx_score
                ext_total = ext_total + (ctx_score[:, None] + gain)
            totals = np.concatenate([same_total, ext_total.reshape(-1)])
            n_keep = min(self.beam_size, int(np.isfinite(totals).sum()))
            top = np.argsort(-totals, kind="stable")[:n_keep]
            is_ext = top >= K
            e = np.where(is_ext, top - K, 0)
            parent = np.where(is_ext, e // V, top)
            tok = np.where(is_ext, e % V, -1)
            pb = np.where(is_ext, np.float32(NEG_INF), stay_b[parent])
            pnb = np.where(is_ext, ext.reshape(-1)[e], stay_nb[parent])
            last = np.where(is_ext, tok, last[parent])
            plen = plen[parent] + is_ext
            prefixes = [(*prefixes[k], c) if c >= 0 else prefixes[k] for k, c in zip(parent.tolist(), tok.tolist())]
            if context is not None:
                ctx_score = ctx_score[parent] + np.where(is_ext, gain.reshape(-1)[e], np.float32(0.0))
                ctx_node = np.where(is_ext, dest.reshape(-1)[e], ctx_node[parent]).astype(np.int64)
            if lm is not None and lm_logp is not None and lm_state is not None:
                lm_logp, lm_state, lm_score = _advance_lm(lm, lm_logp, lm_state, lm_score, parent, tok, is_ext)
        self.prefixes, self.pb, self.pnb, self.plen, self.last = prefixes, pb, pnb, plen, last
        self.lm_score, self.lm_logp, self.lm_state = lm_score, lm_logp, lm_state
        self.ctx_node, self.ctx_score = ctx_node, ctx_score
        self.frames += lp_all.shape[0]

    def hypotheses(self) -> list[tuple[list[int], float]]:
        """The kept prefixes ranked as if the utterance ended here (the LM's ``<eos>`` added), best first."""
        ctc = np.logaddexp(self.pb, self.pnb)
        lm_total = self.lm_score if self.lm_logp is None else self.lm_score + self.lm_logp[:, EOS_ID]
        final = ctc + self.weight * lm_total + self.bonus * self.plen.astype(np.float32)
        if self.context is not None:  # a hotword left half matched earns nothing
            final = final + (self.ctx_score - self.context.open_bonus[self.ctx_node])
        order = np.argsort(-final, kind="stable")
        return [(list(self.prefixes[i]), float(final[i])) for i in order.tolist() if np.isfinite(final[i])]

    def best(self) -> list[int]:
        """The best prefix so far (empty before any token)."""
        hyps = self.hypotheses()
        return hyps[0][0] if hyps else []


def ctc_fusion(cfg: Mapping[str, Any], vocab_size: int,
               encode: Callable[[str], list[int]]) -> tuple[NgramScorer | None, ContextGraph | None]:
    """The n-gram and the hotwords' graph a ``ctc_prefix_beam`` config asks for (None where it does not).

    ``encode`` spells a hotword in the model's units (its tokenizer's). The LM must be an n-gram
    (``lm.arpa`` or its folder): the numpy beam fuses nothing else.
    """
    lm = None
    if cfg.get("lm") and cfg.get("lm_weight"):
        from kospeech.lm.arpa import load_ngram

        lm = load_ngram(cfg["lm"])
        if lm.vocab_size != vocab_size:
            raise ConfigError(f"the LM {cfg['lm']} has {lm.vocab_size} tokens but the model outputs "
                              f"{vocab_size}; train the LM with the model's lang dir")
    context = None
    if cfg.get("hotwords"):
        from kospeech.inference.engine import encode_hotwords
        from kospeech.lm.context import DEFAULT_HOTWORD_WEIGHT, ContextGraph

        ids = encode_hotwords(cfg, encode)["hotwords"]
        context = ContextGraph(ids, vocab_size, float(cfg.get("hotword_weight", DEFAULT_HOTWORD_WEIGHT)))
    return lm, context


def _advance_lm(
    lm: NgramScorer,
    lm_logp: np.ndarray,
    lm_state: NgramState,
    lm_score: np.ndarray,
    parent: np.ndarray,
    tok: np.ndarray,
    emit: np.ndarray,
) -> tuple[np.ndarray, NgramState, np.ndarray]:
    """The LM after a frame (:func:`kospeech.search.common.advance_lm` for one utterance): each
    kept prefix takes its parent's LM row, adds the log-prob of the token it emitted, and only
    the rows that emitted one step the LM."""
    logp = lm_logp[parent]
    state = lm.select(lm_state, parent)
    gained = logp[np.arange(parent.size), np.maximum(tok, 0)]
    score = lm_score[parent] + np.where(emit, gained, np.float32(0.0))
    rows = np.nonzero(emit)[0]
    if rows.size:
        s_logp, s_state = lm.step(tok[rows], lm.select(state, rows))
        logp[rows] = s_logp
        state = state.put(rows, s_state)
    return logp, state, score


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
