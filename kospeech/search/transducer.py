"""Transducer searches: greedy, and modified beam search (one symbol per frame), both batched.

Both walk the encoder frames; at each frame the joiner scores every live hypothesis against
that frame in one call. The beam search is icefall's "modified beam search": each frame emits
at most one token per hypothesis, so all hypotheses stay on the same frame and the batch stays
rectangular; the two ways of reaching the same sequence (``a`` + blank and ``a' + c`` with
``a' + c == a``) are merged by adding their probabilities.
"""

from __future__ import annotations

import torch

from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import (
    NEG_INF,
    Hypothesis,
    Search,
    check_beam_size,
    check_lm_vocab,
    mask_non_units,
    require_head,
    where_state,
)
from kospeech.search.common import advance_lm, extend_prefixes, merge_extensions, nbest
from kospeech.text.special import BLANK_ID, EOS_ID


@register("search", "transducer_greedy")
class TransducerGreedySearch(Search):
    """Best token per frame until blank (at most ``max_symbols_per_frame`` tokens per frame).

    Args:
        max_symbols_per_frame: guard against a joiner that never emits blank.
    """

    name = "transducer_greedy"

    def __init__(self, *, model: ASRModel, max_symbols_per_frame: int = 3) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "transducer")
        if max_symbols_per_frame < 1:
            raise ValueError(f"{self.name}: max_symbols_per_frame must be >= 1, got {max_symbols_per_frame}")
        self.max_symbols = max_symbols_per_frame

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        model = self.model
        B, device = encoder_out.size(0), encoder_out.device
        lengths = encoder_lengths.to(device)
        blank = torch.full((B,), BLANK_ID, dtype=torch.long, device=device)
        pred_out, pred_state = model.predictor_step(blank, model.predictor_init_state(B, device))
        score = torch.zeros(B, device=device)
        emitted: list[tuple[torch.Tensor, torch.Tensor]] = []
        for t in range(int(lengths.max())):
            frame = encoder_out[:, t]
            still = t < lengths
            for _ in range(self.max_symbols):
                lp, best = mask_non_units(model.joint(frame, pred_out).float()).max(-1)
                score = score + torch.where(still, lp, torch.zeros_like(lp))
                emit = still & (best != BLANK_ID)
                if not bool(emit.any()):
                    break
                emitted.append((best, emit))
                new_out, new_state = model.predictor_step(torch.where(emit, best, blank), pred_state)
                pred_out = torch.where(emit.unsqueeze(1), new_out, pred_out)
                pred_state = where_state(emit, new_state, pred_state)
                still = emit
        results = []
        if emitted:
            toks = torch.stack([e[0] for e in emitted], 1)
            mask = torch.stack([e[1] for e in emitted], 1)
        for b in range(B):
            seq = toks[b][mask[b]].tolist() if emitted else []
            results.append([Hypothesis(seq, float(score[b]), {"transducer": float(score[b])})])
        return results


@register("search", "transducer_beam")
class TransducerBeamSearch(Search):
    """Modified beam search (at most one token per frame), batched over utterances x beams.

    Args:
        beam_size: hypotheses kept per utterance (and the n-best returned).
        lm: an LM from ``kospeech lm train`` (``lm.pt``, ``lm.arpa`` or their folder) for shallow fusion (None: no LM).
        lm_weight: weight of the LM log-probabilities (the LM scores each emitted token and,
            at the end, ``<eos>``).
    """

    name = "transducer_beam"

    def __init__(self, *, model: ASRModel, beam_size: int = 4, lm: str | None = None, lm_weight: float = 0.0) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "transducer")
        check_beam_size(self.name, beam_size)
        self.beam_size = beam_size
        self._init_lm(lm, lm_weight)

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        model = self.model
        device = encoder_out.device
        B, K = encoder_out.size(0), self.beam_size
        N = B * K
        lengths = encoder_lengths.to(device)
        lm, w = self._fusion_lm(device), self.lm_weight
        rows = torch.arange(B, device=device).repeat_interleave(K)
        base = (torch.arange(B, device=device) * K).unsqueeze(1)
        blank = torch.full((N,), BLANK_ID, dtype=torch.long, device=device)
        pred_out, pred_state = model.predictor_step(blank, model.predictor_init_state(N, device))
        score = torch.full((B, K), NEG_INF, device=device)
        score[:, 0] = 0.0
        am = torch.zeros(B, K, device=device)  # transducer part of the score
        lm_score = torch.zeros(B, K, device=device)
        prefixes = torch.full((B, K, 0), -1, dtype=torch.long, device=device)
        plen = torch.zeros(B, K, dtype=torch.long, device=device)
        last = torch.full((B, K), -1, dtype=torch.long, device=device)
        lm_logp = lm_state = None
        if lm is not None:
            lm_logp, lm_state = lm.start(N, device)

        for t in range(int(lengths.max())):
            active = (t < lengths).unsqueeze(1)  # (B, 1)
            logp = mask_non_units(model.joint(encoder_out[:, t].index_select(0, rows), pred_out).float())  # (N, V)
            V = logp.size(-1)
            if t == 0:
                check_lm_vocab(lm, V, self.name)
            fused = logp if lm is None else logp + w * lm_logp
            fused = fused.clone()
            fused[:, BLANK_ID] = logp[:, BLANK_ID]
            cand = score.unsqueeze(-1) + fused.view(B, K, V)
            if prefixes.size(-1) > 0:  # merge k + c into j when they spell the same sequence
                into, cand = merge_extensions(cand, prefixes, plen, last, torch.isfinite(score))
                cand[..., BLANK_ID] = torch.logaddexp(cand[..., BLANK_ID], into)
            top_val, top = cand.view(B, K * V).topk(K, dim=-1)
            parent_k, tok = top // V, top % V
            emit = tok != BLANK_ID
            parent = (base + parent_k).view(-1)
            gained = logp[parent, tok.view(-1)].view(B, K)
            new_am = am.gather(1, parent_k) + gained
            new_last = torch.where(emit, tok, last.gather(1, parent_k))
            # predictor (and LM) advance only where a token was emitted
            flat_emit = (emit & active).view(-1)
            keep = active.expand(B, K).reshape(-1)
            p_out = pred_out.index_select(0, parent)
            p_state = model.select_state(pred_state, parent)
            if bool(flat_emit.any()):
                s_out, s_state = model.predictor_step(torch.where(flat_emit, tok.view(-1), blank), p_state)
                p_out = torch.where(flat_emit.unsqueeze(1), s_out, p_out)
                p_state = where_state(flat_emit, s_state, p_state)
            pred_out = torch.where(keep.unsqueeze(1), p_out, pred_out)
            pred_state = where_state(keep, p_state, pred_state)
            if lm is not None:
                lm_logp, lm_state, lm_score = advance_lm(
                    lm, lm_logp, lm_state, lm_score, parent, parent_k, tok, emit, active
                )
            score = torch.where(active, top_val, score)
            am = torch.where(active, new_am, am)
            prefixes, plen = extend_prefixes(prefixes, plen, parent_k, tok, emit, active)
            last = torch.where(active, new_last, last)

        final = score
        lm_total = lm_score
        if lm is not None:
            lm_total = lm_score + lm_logp[:, EOS_ID].view(B, K)
            final = score + w * lm_logp[:, EOS_ID].view(B, K)
        return nbest(final, prefixes, plen, {"transducer": am} if lm is None else {"transducer": am, "lm": lm_total})
