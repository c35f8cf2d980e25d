"""Joint CTC/attention encoder-decoder (Kim et al., 2017; Karita et al., 2019), ``model/transformer``.

:class:`AttentionHead` (an attention decoder plus a CTC layer on the encoder and the joint loss)
is shared with the Conformer's ``head: attention``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.models.base import ASRModel, State
from kospeech.models.common import decoder_io
from kospeech.nn.init import apply_init
from kospeech.nn.losses import JointCTCAttentionLoss
from kospeech.registry import build, component, register


class AttentionHead(nn.Module):
    """An attention decoder and a CTC projection over the encoder output, trained jointly.

    CTC makes the alignment monotonic and speeds up convergence; the decoder models the output
    language. ``ctc_weight`` 0 trains the decoder alone (the CTC layer then exists but is unused).
    """

    def __init__(
        self,
        *,
        encoder_dim: int,
        vocab_size: int,
        decoder: Mapping[str, Any],
        ctc_weight: float,
        label_smoothing: float,
        path: str,
    ) -> None:
        super().__init__()
        self.decoder = build("decoder", decoder, path=path, vocab_size=vocab_size, encoder_dim=encoder_dim)
        self.ctc = nn.Linear(encoder_dim, vocab_size)
        self.criterion = JointCTCAttentionLoss(ctc_weight=ctc_weight, label_smoothing=label_smoothing)
        self.ctc_weight = ctc_weight

    def loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        dec_in, dec_out = decoder_io(targets, target_lengths)
        logits = self.decoder(dec_in, encoder_out, encoder_lengths)
        ctc_lp = self.ctc_log_probs(encoder_out) if self.ctc_weight > 0 else encoder_out.new_zeros(0)
        return self.criterion(ctc_lp, encoder_lengths, logits, dec_out, targets, target_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.ctc(encoder_out), dim=-1)

    def init_decoder_state(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> State:
        return self.decoder.init_state(encoder_out.size(0), encoder_out.device)

    def decoder_step(
        self, tokens: torch.Tensor, state: State, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        logits, state = self.decoder.step(tokens, state, encoder_out, encoder_lengths)
        return F.log_softmax(logits, dim=-1), state


class AttentionHooks:
    """Decoding hooks of a model with an :class:`AttentionHead`, the one :meth:`_attention`
    returns (which raises ``NotImplementedError`` where the model has none)."""

    def _attention(self) -> AttentionHead:
        raise NotImplementedError(f"{type(self).__name__} has no attention decoder")

    def init_decoder_state(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> State:
        return self._attention().init_decoder_state(encoder_out, encoder_lengths)

    def decoder_step(
        self, tokens: torch.Tensor, state: State, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        return self._attention().decoder_step(tokens, state, encoder_out, encoder_lengths)


@register("model", "transformer")
class TransformerASR(AttentionHooks, ASRModel):
    """Speech Transformer with a joint CTC/attention objective, ESPnet style.

    Args:
        input_dim: feature size (provided by the trainer).
        vocab_size: token ids, specials included (provided by the trainer).
        encoder: any registered encoder; default the Transformer encoder.
        decoder: the attention decoder (default ``transformer``); it gets ``vocab_size`` and
            ``encoder_dim`` and must offer the Transformer decoder's ``forward(tokens, memory,
            memory_lengths)``, ``init_state(batch, device)`` and ``step(tokens, state, memory,
            memory_lengths)``.
        ctc_weight: share of CTC in the loss (0.3 as in ESPnet); 0 disables the CTC head for
            decoding too.
        label_smoothing: for the decoder's cross entropy.
        init: parameter initialisation (:mod:`kospeech.nn.init`): ``default`` (PyTorch's) or
            ``xavier_uniform`` (ESPnet's Transformer recipes).
    """

    has_decoder = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "transformer"},
        decoder: component("decoder", "vocab_size", "encoder_dim") = {"name": "transformer"},
        ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.encoder = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        self.head = AttentionHead(
            encoder_dim=self.encoder.output_dim,
            vocab_size=vocab_size,
            decoder=decoder,
            ctc_weight=ctc_weight,
            label_smoothing=label_smoothing,
            path="model.decoder",
        )
        self.has_ctc = ctc_weight > 0
        apply_init(self, init)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        encoder_out, encoder_lengths = self.encode(features, feature_lengths)
        return self.head.loss(encoder_out, encoder_lengths, targets, target_lengths)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, feature_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return self.head.ctc_log_probs(encoder_out)

    def _attention(self) -> AttentionHead:
        return self.head
