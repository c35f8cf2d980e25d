"""CTC searches: greedy (best path), batched prefix beam search, and the CTC prefix scorer.

The prefix beam search keeps, for each of ``K`` prefixes per utterance, the probability of
all alignments ending in a blank (``pb``) and in a non-blank (``pnb``). Each frame scores the
``K`` unchanged prefixes and all ``K x V`` one-token extensions as tensors, merges the
extensions that recreate a prefix already in the beam (``a + c == b``), and keeps the best
``K`` of ``K + K x V`` candidates per utterance. Only the loop over frames is in Python.
Hotwords (contextual biasing) follow the tables of :class:`kospeech.lm.context.ContextGraph`,
the ones the torch-free runtime's search (:func:`kospeech.runtime.ctc.prefix_beam`) reads too.

:class:`CTCPrefixScorer` gives the CTC probability of a prefix (ESPnet's joint decoding,
Watanabe et al. 2017). Its frame recursion is a linear recurrence, so it is evaluated in
closed form with cumulative sums and ``logcumsumexp`` over all frames at once.
"""

from __future__ import annotations

from typing import Any

import torch

from kospeech.errors import ConfigError
from kospeech.lm.context import DEFAULT_HOTWORD_WEIGHT, ContextGraph
from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import NEG_INF, Hypothesis, Search, check_beam_size, check_lm_vocab, mask_non_units, require_head
from kospeech.search.common import advance_lm, extend_prefixes, merge_extensions, nbest
from kospeech.text.special import BLANK_ID, EOS_ID


def ctc_best_path(log_probs: torch.Tensor, lengths: torch.Tensor) -> tuple[list[list[int]], torch.Tensor]:
    """(B, T, V), (B,) -> collapsed best-path token ids per utterance and the path log-probs (B,)."""
    best_lp, best = mask_non_units(log_probs).max(-1)
    T = log_probs.size(1)
    valid = torch.arange(T, device=log_probs.device)[None, :] < lengths[:, None].to(log_probs.device)
    prev = torch.nn.functional.pad(best, (1, 0), value=-1)[:, :-1]
    keep = valid & (best != BLANK_ID) & (best != prev)
    scores = (best_lp * valid).sum(-1)
    return [best[b][keep[b]].tolist() for b in range(best.size(0))], scores


@register("search", "ctc_greedy")
class CTCGreedySearch(Search):
    """Best path through the CTC posteriors: argmax per frame, merge repeats, drop blanks."""

    name = "ctc_greedy"

    def __init__(self, *, model: ASRModel) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "ctc")

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        seqs, scores = ctc_best_path(self.model.ctc_log_probs(encoder_out).float(), encoder_lengths)
        return [[Hypothesis(s, float(sc), {"ctc": float(sc)})] for s, sc in zip(seqs, scores)]


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    beam_size: int,
    *,
    lm: Any = None,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    context: ContextGraph | None = None,
) -> list[list[Hypothesis]]:
    """Batched CTC prefix beam search on (B, T, V) log-probabilities; n-best per utterance.

    The score that ranks prefixes is ``log P_ctc(prefix) + lm_weight * log P_lm(prefix) +
    length_bonus * len(prefix)``, plus, with hotwords (``context``), the bonuses the prefix
    earned in the context graph (:class:`kospeech.lm.context.ContextGraph`). An unchanged
    prefix keeps its bonus, an extension adds the bonus of its token, and an extension merged
    into a prefix already in the beam takes that prefix's own context state (the same tokens).
    The final ranking adds the LM's ``<eos>`` and takes back the bonus of a hotword left half
    matched; the hypotheses' ``parts`` then hold that final bonus as ``context``.
    """
    lp_all = mask_non_units(log_probs.float())
    device = lp_all.device
    B, T, V = lp_all.shape
    K = beam_size
    N = B * K
    lengths = lengths.to(device)
    pb = torch.full((B, K), NEG_INF, device=device)
    pb[:, 0] = 0.0
    pnb = torch.full((B, K), NEG_INF, device=device)
    prefixes = torch.full((B, K, 0), -1, dtype=torch.long, device=device)
    plen = torch.zeros(B, K, dtype=torch.long, device=device)
    last = torch.full((B, K), -1, dtype=torch.long, device=device)
    lm_score = torch.zeros(B, K, device=device)
    lm_logp = lm_state = None
    if lm is not None and lm_weight == 0.0:
        lm = None  # 0 x the LM's -inf (blank, pad, sos) would be NaN, and topk ranks NaN first
    if lm is not None:
        check_lm_vocab(lm, V, "ctc_prefix_beam")
        lm_logp, lm_state = lm.start(N, device)
    if context is not None:
        if context.vocab_size != V:
            raise ConfigError(f"search 'ctc_prefix_beam': the hotwords were built for {context.vocab_size} tokens "
                              f"but the model outputs {V}")
        # the graph's tables as tensors, once; the rule itself is the graph's (kospeech.lm.context)
        ctx_bonus = torch.from_numpy(context.bonus).to(device)  # (N_ctx, V) float32
        ctx_dest = torch.from_numpy(context.dest).to(device=device, dtype=torch.long)
        ctx_open = torch.from_numpy(context.open_bonus).to(device)
        ctx_node = torch.zeros(B, K, dtype=torch.long, device=device)
        ctx_score = torch.zeros(B, K, device=device)
    base = (torch.arange(B, device=device) * K).unsqueeze(1)
    vocab = torch.arange(V, device=device)

    for t in range(int(lengths.max())):
        lp = lp_all[:, t]  # (B, V)
        active = t < lengths  # (B,)
        prev = torch.logaddexp(pb, pnb)
        valid = torch.isfinite(prev)
        # the same prefix: a blank, or a repeat of its last token
        stay_b = prev + lp[:, BLANK_ID : BLANK_ID + 1]
        lp_last = lp.gather(1, last.clamp(min=0))
        stay_nb = torch.where(last >= 0, pnb + lp_last, torch.full_like(pnb, NEG_INF))
        # one-token extensions; repeating the last token needs a blank in between
        is_last = vocab.view(1, 1, V) == last.unsqueeze(-1)
        ext = torch.where(is_last, pb.unsqueeze(-1), prev.unsqueeze(-1)) + lp.unsqueeze(1)
        ext[..., BLANK_ID] = NEG_INF
        # an extension k + c that equals prefix j already in the beam adds to j instead
        if prefixes.size(-1) > 0:
            into, ext = merge_extensions(ext, prefixes, plen, last, valid)
            stay_nb = torch.logaddexp(stay_nb, into)
        same_total = torch.logaddexp(stay_b, stay_nb) + lm_weight * lm_score + length_bonus * plen
        ext_total = ext + length_bonus * (plen + 1).unsqueeze(-1)
        if lm is not None:
            ext_total = ext_total + lm_weight * (lm_score.unsqueeze(-1) + lm_logp.view(B, K, V))
        if context is not None:
            same_total = same_total + ctx_score
            ext_total = ext_total + (ctx_score.unsqueeze(-1) + ctx_bonus[ctx_node])
        allc = torch.cat([same_total, ext_total.view(B, K * V)], 1)
        _, top = allc.topk(K, dim=-1)  # (B, K)
        is_ext = top >= K
        e = (top - K).clamp(min=0)
        parent_k = torch.where(is_ext, e // V, top)
        tok = torch.where(is_ext, e % V, torch.full_like(top, -1))

        new_pb = torch.where(is_ext, torch.full_like(pb, NEG_INF), stay_b.gather(1, parent_k))
        new_pnb = torch.where(is_ext, ext.view(B, K * V).gather(1, e), stay_nb.gather(1, parent_k))
        new_last = torch.where(is_ext, tok, last.gather(1, parent_k))
        a2 = active.unsqueeze(1)
        if lm is not None:
            lm_logp, lm_state, lm_score = advance_lm(
                lm, lm_logp, lm_state, lm_score, (base + parent_k).view(-1), parent_k, tok, is_ext, a2
            )
        if context is not None:
            from_node = ctx_node.gather(1, parent_k)
            tok0 = tok.clamp(min=0)
            gained = ctx_bonus[from_node, tok0]
            new_ctx_score = ctx_score.gather(1, parent_k) + torch.where(is_ext, gained, torch.zeros_like(gained))
            new_ctx_node = torch.where(is_ext, ctx_dest[from_node, tok0], from_node)
            ctx_score = torch.where(a2, new_ctx_score, ctx_score)
            ctx_node = torch.where(a2, new_ctx_node, ctx_node)
        pb = torch.where(a2, new_pb, pb)
        pnb = torch.where(a2, new_pnb, pnb)
        prefixes, plen = extend_prefixes(prefixes, plen, parent_k, tok, is_ext, a2)
        last = torch.where(a2, new_last, last)

    ctc = torch.logaddexp(pb, pnb)
    lm_total = lm_score
    if lm is not None:
        lm_total = lm_score + lm_logp[:, EOS_ID].view(B, K)
    final = ctc + lm_weight * lm_total + length_bonus * plen
    parts = {"ctc": ctc} if lm is None else {"ctc": ctc, "lm": lm_total}
    if context is not None:
        ctx_final = ctx_score - ctx_open[ctx_node]  # a hotword left half matched earns nothing
        final = final + ctx_final
        parts["context"] = ctx_final
    return nbest(final, prefixes, plen, parts)


@register("search", "ctc_prefix_beam")
class CTCPrefixBeamSearch(Search):
    """CTC prefix beam search, batched over utterances, with optional LM shallow fusion.

    Args:
        beam_size: prefixes kept per utterance (and the n-best returned).
        lm: an LM from ``kospeech lm train`` (``lm.pt``, ``lm.arpa`` or their folder) (None: no LM).
        lm_weight: weight of the LM log-probabilities.
        length_bonus: added per emitted token; with an LM, a positive bonus offsets the LM's
            push towards deleting tokens.
        hotwords: contextual biasing towards these token-id sequences (names the LM has never
            seen), each already encoded by the model's tokenizer (the caller encodes the text,
            e.g. with ``Tokenizer.encode``); matched over the token stream, so a particle after
            a name does not matter. None or empty: no biasing.
        hotword_weight: bonus per matched hotword token (the rule of
            :class:`kospeech.lm.context.ContextGraph`); 0 turns the biasing off.
    """

    name = "ctc_prefix_beam"

    def __init__(
        self,
        *,
        model: ASRModel,
        beam_size: int = 10,
        lm: str | None = None,
        lm_weight: float = 0.0,
        length_bonus: float = 0.0,
        hotwords: list[list[int]] | None = None,
        hotword_weight: float = DEFAULT_HOTWORD_WEIGHT,
    ) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "ctc")
        check_beam_size(self.name, beam_size)
        self.beam_size = beam_size
        self._init_lm(lm, lm_weight)
        self.length_bonus = length_bonus
        self.hotwords = [[int(t) for t in h] for h in hotwords or []]
        self.hotword_weight = hotword_weight
        self._context: ContextGraph | None = None

    def _context_graph(self, vocab_size: int) -> ContextGraph | None:
        """The hotwords' graph for the model's output size (built at first use, when the size is known)."""
        if not any(self.hotwords) or self.hotword_weight == 0.0:
            return None
        if self._context is None or self._context.vocab_size != vocab_size:
            self._context = ContextGraph(self.hotwords, vocab_size, self.hotword_weight)
        return self._context

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        log_probs = self.model.ctc_log_probs(encoder_out)
        return ctc_prefix_beam_search(
            log_probs,
            encoder_lengths,
            self.beam_size,
            lm=self._fusion_lm(encoder_out.device),
            lm_weight=self.lm_weight,
            length_bonus=self.length_bonus,
            context=self._context_graph(log_probs.size(-1)),
        )


class CTCPrefixScorer:
    """CTC prefix probabilities of ``B x K`` attention hypotheses and their extensions.

    Keeps, for each hypothesis, the forward variables ``r_n(t)``, ``r_b(t)`` (log-probability
    of emitting the prefix by frame ``t``, ending in a non-blank / a blank) and ``psi``, the
    log-probability of all label sequences that start with the prefix.
    """

    def __init__(self, log_probs: torch.Tensor, lengths: torch.Tensor, beam_size: int) -> None:
        B, T, _ = log_probs.shape
        K = beam_size
        device = log_probs.device
        self.x = log_probs.double().clamp(min=-1e10)  # (B, T, V); clamp keeps -inf out of cumsums
        self.rows = torch.arange(B, device=device).repeat_interleave(K)  # hypothesis -> utterance
        self.lengths = lengths.to(device).index_select(0, self.rows)
        self.frames = torch.arange(T, device=device)
        blank = self.x[:, :, BLANK_ID].index_select(0, self.rows)  # (N, T)
        self.blank_cum = blank.cumsum(-1)
        self.r_n = torch.full_like(blank, NEG_INF)
        self.r_b = self.blank_cum.clone()
        self.psi = torch.zeros(B * K, dtype=torch.float64, device=device)
        self.last = torch.full((B * K,), -1, dtype=torch.long, device=device)
        self._cache: tuple[torch.Tensor, ...] | None = None

    def score(self, cand: torch.Tensor) -> torch.Tensor:
        """cand (N, C) token ids -> (N, C) prefix log-probabilities of each ``prefix + c``."""
        N, C = cand.shape
        T = self.x.size(1)
        y = self.x[self.rows[:, None, None], self.frames[None, None, :], cand[:, :, None]]  # (N, C, T)
        r_n, r_b = self.r_n.unsqueeze(1), self.r_b.unsqueeze(1)  # (N, 1, T)
        phi = torch.where((cand == self.last[:, None]).unsqueeze(-1), r_b, torch.logaddexp(r_n, r_b))
        start = torch.where(self.last < 0, 0.0, NEG_INF).to(phi).view(N, 1, 1).expand(N, C, 1)
        a = torch.cat([start, phi[..., :-1]], -1) + y  # a(t): the prefix enters c at frame t
        inside = self.frames[None, None, :] < self.lengths[:, None, None]
        a = a.masked_fill(~inside, NEG_INF)
        psi = a.logsumexp(-1)
        y_cum = y.cumsum(-1)
        new_rn = y_cum + torch.logcumsumexp(a - y_cum, -1)
        d = self.blank_cum.unsqueeze(1)
        acc = torch.logcumsumexp(new_rn - d, -1)
        new_rb = d + torch.cat([torch.full_like(acc[..., :1], NEG_INF), acc[..., :-1]], -1)
        # <eos>: the prefix is complete at the last frame
        end = (self.lengths - 1).clamp(min=0)
        fin = torch.logaddexp(self.r_n.gather(1, end[:, None]), self.r_b.gather(1, end[:, None]))  # (N, 1)
        psi = torch.where(cand == EOS_ID, fin.expand(N, C), psi)
        self._cache = (cand, new_rn, new_rb, psi)
        del T
        return psi

    def select(self, parent: torch.Tensor, tokens: torch.Tensor) -> None:
        """Keep hypothesis ``parent[i]`` extended by ``tokens[i]`` as the new row ``i``."""
        assert self._cache is not None, "score() must run before select()"
        cand, new_rn, new_rb, psi = self._cache
        pos = (cand.index_select(0, parent) == tokens[:, None]).long().argmax(-1)  # column of each token
        self.r_n = new_rn[parent, pos]
        self.r_b = new_rb[parent, pos]
        self.psi = psi[parent, pos]
        self.last = tokens.clone()
        self._cache = None
