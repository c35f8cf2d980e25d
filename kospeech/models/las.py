"""Listen, Attend and Spell (Chan et al. 2016) as in KoSpeech, registered as ``model/las``."""

from __future__ import annotations

import torch
from torch import nn

from kospeech.models.base import ASRModel, State
from kospeech.models.common import NotAModule, decoder_io
from kospeech.nn.init import apply_init
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import build, component, register


@register("model", "las")
class ListenAttendSpell(ASRModel):
    """Attention encoder-decoder: a listener (``encoder``) and a speller (``decoder``) with an
    attention between them; optionally a CTC head on the listener trained jointly (Kim et al.
    2017) and usable in joint CTC/attention decoding.

    The defaults are KoSpeech's LAS: VGG extractor, 3-layer bidirectional LSTM listener of 256
    units, 2-layer LSTM speller of 512 units with 8-head scaled dot-product attention
    (16,525,878 parameters for 80 mel bins and 2038 output units). Swapping the attention is
    one line: ``model.decoder.attention.name: location_aware``.

    Args:
        encoder: the listener; any ``encoder`` with an ``output_dim`` (``rnn`` by default).
        decoder: the speller; a decoder with the ``rnn`` decoder's interface.
        ctc_weight: weight of the CTC loss on the listener; 0 builds no CTC head.
        label_smoothing: of the attention (cross-entropy) loss.
        init: ``uniform`` (KoSpeech's U(-0.08, 0.08)) or ``default`` (PyTorch's).
        auto_teacher_forcing_step: advance the speller's scheduled-sampling schedule once per
            training forward (one optimiser update without gradient accumulation); set false
            to call :meth:`step_teacher_forcing` yourself.
    """

    has_decoder = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "rnn"},
        decoder: component("decoder", "vocab_size", "encoder_dim") = {"name": "rnn"},
        ctc_weight: float = 0.0,
        label_smoothing: float = 0.1,
        init: str = "uniform",
        auto_teacher_forcing_step: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.listener = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        self.speller = build(
            "decoder", decoder, path="model.decoder", vocab_size=vocab_size, encoder_dim=self.listener.output_dim
        )
        self.has_ctc = ctc_weight > 0.0
        self.ctc_head = nn.Linear(self.listener.output_dim, vocab_size) if self.has_ctc else None
        self.ctc_weight = ctc_weight
        self.auto_teacher_forcing_step = auto_teacher_forcing_step
        if self.has_ctc:
            loss = build("loss", {"name": "joint_ctc_attention", "ctc_weight": ctc_weight,
                                  "label_smoothing": label_smoothing})
        else:
            loss = build("loss", {"name": "cross_entropy", "label_smoothing": label_smoothing})
        self._criterion = NotAModule(loss)
        apply_init(self, init)

    def step_teacher_forcing(self) -> float:
        """Advance the speller's scheduled-sampling ratio; returns the new value."""
        return self.speller.step_teacher_forcing()

    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        enc, enc_lengths = self.encode(features, feature_lengths)
        mask = lengths_to_mask(enc_lengths, enc.size(1))
        dec_in, dec_out = decoder_io(targets, target_lengths)
        logits = self.speller(dec_in, enc, mask)
        if self.training and self.auto_teacher_forcing_step:
            self.speller.step_teacher_forcing()
        if self.has_ctc:
            return self._criterion(self.ctc_log_probs(enc), enc_lengths, logits, dec_out, targets, target_lengths)
        loss = self._criterion(logits, dec_out)
        return {"loss": loss, "att": loss.detach()}

    def attention_logits(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced speller logits (B, L + 1, V), for scoring and tests."""
        enc, enc_lengths = self.encode(features, feature_lengths)
        dec_in, _ = decoder_io(targets, target_lengths)
        return self.speller(dec_in, enc, lengths_to_mask(enc_lengths, enc.size(1)))

    # ---- decoding hooks -------------------------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.listener(features, feature_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        if self.ctc_head is None:
            raise NotImplementedError("this las model has no CTC head (set model.ctc_weight > 0 to train one)")
        return torch.log_softmax(self.ctc_head(encoder_out).float(), dim=-1)

    def init_decoder_state(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> State:
        return self.speller.init_state(encoder_out, lengths_to_mask(encoder_lengths, encoder_out.size(1)))

    def decoder_step(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, State]:
        return self.speller.step(tokens, state, encoder_out, lengths_to_mask(encoder_lengths, encoder_out.size(1)))
