"""Greedy decoding of an attention decoder, batched over utterances."""

from __future__ import annotations

import torch

from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import NEG_INF, Hypothesis, Search, require_head
from kospeech.text.special import BLANK_ID, EOS_ID, PAD_ID, SOS_ID


def mask_decoder_specials(logp: torch.Tensor) -> torch.Tensor:
    """An attention decoder never emits ``<blank>``, ``<pad>`` or ``<sos>``: rule them out.

    They are never targets, so an untrained or confused decoder could still rank them first;
    the searches agree on this mask so that beam_size 1 and greedy give the same result.
    """
    logp = logp.clone()
    logp[:, [BLANK_ID, PAD_ID, SOS_ID]] = NEG_INF
    return logp


def max_output_lengths(encoder_lengths: torch.Tensor, ratio: float, min_len: int = 1) -> torch.Tensor:
    """Upper bound on output tokens per utterance: ``ratio`` x encoder frames (at least ``min_len``)."""
    return torch.clamp((encoder_lengths.float() * ratio).ceil().long(), min=min_len)


@register("search", "greedy")
class GreedySearch(Search):
    """Most likely token at each step, for a whole batch at once, until ``<eos>``.

    Args:
        max_len_ratio: stop an utterance after ``max_len_ratio`` x its encoder frames tokens
            (a guard against a decoder that never emits ``<eos>``).
    """

    name = "greedy"

    def __init__(self, *, model: ASRModel, max_len_ratio: float = 1.0) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "decoder")
        if max_len_ratio <= 0:
            raise ValueError(f"greedy: max_len_ratio must be > 0, got {max_len_ratio}")
        self.max_len_ratio = max_len_ratio

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        B = encoder_out.size(0)
        device = encoder_out.device
        max_lens = max_output_lengths(encoder_lengths, self.max_len_ratio).to(device)
        state = self.model.init_decoder_state(encoder_out, encoder_lengths)
        tokens = torch.full((B,), SOS_ID, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        scores = torch.zeros(B, device=device)
        out = torch.full((B, int(max_lens.max())), EOS_ID, dtype=torch.long, device=device)
        for step in range(int(max_lens.max())):
            logp, state = self.model.decoder_step(tokens, state, encoder_out, encoder_lengths)
            best_lp, best = mask_decoder_specials(logp.float()).max(-1)
            live = ~done
            scores = scores + torch.where(live, best_lp, torch.zeros_like(best_lp))
            best = torch.where(live, best, torch.full_like(best, EOS_ID))
            out[:, step] = best
            done = done | (best == EOS_ID) | (step + 1 >= max_lens)
            tokens = best
            if bool(done.all()):
                break
        results = []
        for b in range(B):
            seq = out[b].tolist()
            seq = seq[: seq.index(EOS_ID)] if EOS_ID in seq else seq
            results.append([Hypothesis(seq, float(scores[b]), {"att": float(scores[b])})])
        return results
