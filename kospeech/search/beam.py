"""Batched beam search over an attention decoder, with optional CTC prefix scoring and LM fusion.

All utterances and all their beams advance together as one ``(B x K)`` batch: one decoder call
per output step, and one top-k over ``K x V`` candidates per utterance. Finished hypotheses
(``<eos>``, or the length limit) are moved out of the beam and the beam is refilled from the
next best candidates (the first ``K`` non-``<eos>`` of the best ``2K``).

The per-token score is ``(1 - ctc_weight) * att + ctc_weight * ctc + lm_weight * lm +
length_penalty``; ``joint_ctc_attention`` (kospeech/search/joint.py) is this search with a
CTC weight.
"""

from __future__ import annotations

from typing import Any

import torch

from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import NEG_INF, Hypothesis, Search, check_beam_size, check_lm_vocab, require_head
from kospeech.search.greedy import mask_decoder_specials, max_output_lengths
from kospeech.text.special import EOS_ID, SOS_ID


@register("search", "beam")
class BeamSearch(Search):
    """Beam search over the attention decoder, batched over utterances x beams.

    Args:
        beam_size: hypotheses kept per utterance (and the n-best returned).
        max_len_ratio: at most ``max_len_ratio`` x encoder frames output tokens per utterance.
        length_penalty: added to the score of every emitted token (``<eos>`` included); a
            positive value counters the search's preference for short outputs.
        length_normalize: rank finished hypotheses by score / (tokens + 1) instead of score.
        lm: an LM from ``kospeech lm train`` (``lm.pt``, ``lm.arpa`` or their folder) for shallow fusion (None: no LM).
        lm_weight: weight of the LM log-probabilities.
    """

    name = "beam"
    ctc_weight = 0.0
    pre_beam_ratio = 1.5

    def __init__(
        self,
        *,
        model: ASRModel,
        beam_size: int = 5,
        max_len_ratio: float = 1.0,
        length_penalty: float = 0.0,
        length_normalize: bool = False,
        lm: str | None = None,
        lm_weight: float = 0.0,
    ) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "decoder")
        check_beam_size(self.name, beam_size)
        self.beam_size = beam_size
        self.max_len_ratio = max_len_ratio
        self.length_penalty = length_penalty
        self.length_normalize = length_normalize
        self._init_lm(lm, lm_weight)

    def _final(self, score: float, n_tokens: int) -> float:
        return score / (n_tokens + 1) if self.length_normalize else score

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        model = self.model
        device = encoder_out.device
        B, K = encoder_out.size(0), self.beam_size
        N = B * K
        rows = torch.arange(B, device=device).repeat_interleave(K)
        enc = encoder_out.index_select(0, rows)
        lens = encoder_lengths.to(device).index_select(0, rows)
        state = model.select_state(model.init_decoder_state(encoder_out, encoder_lengths), rows)
        max_lens = max_output_lengths(encoder_lengths, self.max_len_ratio).tolist()

        tokens = torch.full((N,), SOS_ID, dtype=torch.long, device=device)
        scores = torch.zeros(B, K, device=device)
        scores[:, 1:] = NEG_INF  # all beams start as the same empty prefix: keep one
        parts = {k: torch.zeros(B, K, device=device) for k in ("att", "ctc", "lm")}
        seqs = torch.empty(B, K, 0, dtype=torch.long, device=device)

        lm = self._fusion_lm(device)
        lm_logp = lm_state = None
        if lm is not None:
            lm_logp, lm_state = lm.start(N, device)
        scorer = None
        if self.ctc_weight > 0:
            from kospeech.search.ctc import CTCPrefixScorer

            scorer = CTCPrefixScorer(model.ctc_log_probs(encoder_out), encoder_lengths.to(device), K)

        finished: list[list[Hypothesis]] = [[] for _ in range(B)]
        done = [False] * B
        base = (torch.arange(B, device=device) * K).unsqueeze(1)
        for step in range(max(max_lens)):
            logp, state = model.decoder_step(tokens, state, enc, lens)
            att = mask_decoder_specials(logp.float())
            V = att.size(-1)
            if step == 0:
                check_lm_vocab(lm, V, self.name)
            cand = att * (1.0 - self.ctc_weight)
            if lm is not None:
                cand = cand + self.lm_weight * lm_logp
            ctc_inc = None
            if scorer is not None:
                C = min(V, max(1, int(self.pre_beam_ratio * K)))
                pre_ids = cand.topk(C, dim=-1).indices  # (N, C)
                psi = scorer.score(pre_ids)  # (N, C) prefix scores of each extension
                prev = scorer.psi[:, None]
                inc = torch.where(torch.isfinite(prev), psi - prev, torch.full_like(psi, NEG_INF))
                ctc_inc = torch.full_like(cand, NEG_INF).scatter(1, pre_ids, inc.float())
                cand = cand + self.ctc_weight * ctc_inc
            cand = cand + self.length_penalty
            total = (scores.view(N, 1) + cand).view(B, K * V)
            top_val, top_idx = total.topk(min(2 * K, K * V), dim=-1)
            top_beam, top_tok = top_idx // V, top_idx % V
            is_eos = top_tok == EOS_ID

            # ---- move finished hypotheses out (eos among the best K, or the length limit)
            last_step = [step + 1 >= m for m in max_lens]
            fin_mask = is_eos.clone()
            fin_mask[:, K:] = False
            for b in range(B):
                if last_step[b]:
                    fin_mask[b, :K] = True
            fin_mask &= torch.isfinite(top_val)
            if bool(fin_mask.any()):
                self._collect(finished, done, fin_mask, top_val, top_beam, top_tok, base, seqs, parts,
                              att, ctc_inc, lm_logp, scorer, V)

            # ---- refill the beam with the best K candidates that are not <eos>
            order = (is_eos.long() * top_val.size(1) + torch.arange(top_val.size(1), device=device)).argsort(-1)
            keep = order[:, :K]
            new_val = top_val.gather(1, keep)
            new_beam = top_beam.gather(1, keep)
            new_tok = top_tok.gather(1, keep)
            parent = (base + new_beam).view(-1)
            tokens = new_tok.view(-1)
            state = model.select_state(state, parent)
            seqs = torch.cat([seqs.view(N, -1).index_select(0, parent).view(B, K, -1), new_tok.unsqueeze(-1)], -1)
            parts["att"] = parts["att"].view(N).index_select(0, parent).view(B, K) + att[parent, tokens].view(B, K)
            if lm is not None:
                lm_gain = lm_logp[parent, tokens].view(B, K)
                parts["lm"] = parts["lm"].view(N).index_select(0, parent).view(B, K) + lm_gain
                lm_logp, lm_state = lm.step(tokens, lm.select_state(lm_state, parent))
            if scorer is not None:
                scorer.select(parent, tokens)
                parts["ctc"] = scorer.psi.float().view(B, K)

            # ---- end detection
            for b in range(B):
                if done[b]:
                    continue
                if last_step[b]:
                    done[b] = True
                elif len(finished[b]) >= K:
                    if self.length_normalize:
                        done[b] = True
                    else:  # stop once no live hypothesis can still beat the K-th finished one
                        kth = sorted((h.score for h in finished[b]), reverse=True)[K - 1]
                        gain = max(0.0, self.length_penalty) * (max_lens[b] - step - 1)
                        done[b] = bool(new_val[b].max() + gain <= kth)
            dead = torch.tensor(done, device=device)
            scores = new_val.masked_fill(dead.unsqueeze(1), NEG_INF)
            if all(done):
                break
        return [sorted(f, key=lambda h: h.score, reverse=True)[:K] for f in finished]

    def _collect(
        self,
        finished: list[list[Hypothesis]],
        done: list[bool],
        fin_mask: torch.Tensor,
        top_val: torch.Tensor,
        top_beam: torch.Tensor,
        top_tok: torch.Tensor,
        base: torch.Tensor,
        seqs: torch.Tensor,
        parts: dict[str, torch.Tensor],
        att: torch.Tensor,
        ctc_inc: torch.Tensor | None,
        lm_logp: torch.Tensor | None,
        scorer: Any,
        V: int,
    ) -> None:
        """Turn the marked candidates into :class:`Hypothesis` objects (few per step)."""
        K = self.beam_size
        for b, j in fin_mask.nonzero().tolist():
            if done[b]:
                continue
            k, c = int(top_beam[b, j]), int(top_tok[b, j])
            row = b * K + k
            toks = seqs[b, k].tolist() + ([] if c == EOS_ID else [c])
            p = {"att": float(parts["att"][b, k] + att[row, c])}
            if scorer is not None and ctc_inc is not None:
                p["ctc"] = float(scorer.psi[row] + ctc_inc[row, c])
            if lm_logp is not None:
                p["lm"] = float(parts["lm"][b, k] + lm_logp[row, c])
            finished[b].append(Hypothesis(toks, self._final(float(top_val[b, j]), len(toks)), p))
