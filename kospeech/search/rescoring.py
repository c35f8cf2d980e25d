"""Two-pass decoding: CTC prefix beam n-best, rescored by the attention decoder (WeNet style)."""

from __future__ import annotations

import torch

from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import Hypothesis, Search, check_beam_size, require_head
from kospeech.search.ctc import ctc_prefix_beam_search
from kospeech.text.special import EOS_ID, SOS_ID


def teacher_forced_scores(
    model: ASRModel,
    encoder_out: torch.Tensor,
    encoder_lengths: torch.Tensor,
    utt_index: torch.Tensor,
    hyps: list[list[int]],
) -> torch.Tensor:
    """Attention log-probability of ``<sos> hyp <eos>`` for every hypothesis, all in one batch.

    ``utt_index[i]`` names the utterance (row of ``encoder_out``) that hypothesis ``i`` belongs
    to. The decoder runs step by step through its decoding hook, so any model works.
    """
    device = encoder_out.device
    M = len(hyps)
    L = max((len(h) for h in hyps), default=0) + 1
    inputs = torch.full((M, L), EOS_ID, dtype=torch.long, device=device)
    outputs = torch.full((M, L), EOS_ID, dtype=torch.long, device=device)
    inputs[:, 0] = SOS_ID
    for i, h in enumerate(hyps):
        if h:
            inputs[i, 1 : len(h) + 1] = torch.tensor(h, device=device)
            outputs[i, : len(h)] = torch.tensor(h, device=device)
    n_steps = torch.tensor([len(h) + 1 for h in hyps], device=device)
    enc = encoder_out.index_select(0, utt_index)
    lens = encoder_lengths.to(device).index_select(0, utt_index)
    state = model.select_state(model.init_decoder_state(encoder_out, encoder_lengths), utt_index)
    total = torch.zeros(M, device=device)
    for step in range(L):
        logp, state = model.decoder_step(inputs[:, step], state, enc, lens)
        gained = logp.float().gather(1, outputs[:, step : step + 1]).squeeze(1)
        total = total + torch.where(step < n_steps, gained, torch.zeros_like(gained))
    return total


@register("search", "attention_rescoring")
class AttentionRescoring(Search):
    """CTC prefix beam search proposes ``beam_size`` hypotheses; the attention decoder,
    teacher-forced on all of them in one batch, picks the best by ``att + ctc_weight * ctc``.

    Cheaper than one-pass joint decoding (the decoder runs once per hypothesis, not per beam
    step) and keeps CTC's alignment robustness.

    Args:
        beam_size: size of the CTC prefix beam, i.e. of the n-best that is rescored.
        ctc_weight: weight of the CTC score added to the attention score.
    """

    name = "attention_rescoring"

    def __init__(self, *, model: ASRModel, beam_size: int = 10, ctc_weight: float = 0.5) -> None:
        super().__init__(model=model)
        require_head(self.name, model, "ctc")
        require_head(self.name, model, "decoder")
        check_beam_size(self.name, beam_size)
        self.beam_size = beam_size
        self.ctc_weight = ctc_weight

    @torch.no_grad()
    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        nbest = ctc_prefix_beam_search(self.model.ctc_log_probs(encoder_out), encoder_lengths, self.beam_size)
        flat = [(b, h) for b, hyps in enumerate(nbest) for h in hyps]
        if not flat:
            return [[] for _ in nbest]
        utt_index = torch.tensor([b for b, _ in flat], device=encoder_out.device)
        att = teacher_forced_scores(self.model, encoder_out, encoder_lengths, utt_index, [h.tokens for _, h in flat])
        out: list[list[Hypothesis]] = [[] for _ in nbest]
        for (b, h), a in zip(flat, att.tolist()):
            ctc = h.parts["ctc"]
            out[b].append(Hypothesis(h.tokens, a + self.ctc_weight * ctc, {"att": a, "ctc": ctc}))
        return [sorted(hyps, key=lambda h: h.score, reverse=True) for hyps in out]
