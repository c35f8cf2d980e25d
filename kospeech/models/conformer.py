"""Conformer ASR with a choice of head, ``model/conformer``.

``head: ctc`` (a linear CTC layer; fastest decoding), ``attention`` (joint CTC/attention with a
Transformer decoder, ESPnet's recipe) or ``transducer`` (prediction network + joiner, the
paper's setup). Only the parts of the chosen head are built, so a checkpoint holds nothing
unused.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.models.base import ASRModel
from kospeech.models.rnnt import TransducerHead, TransducerHooks
from kospeech.models.transformer import AttentionHead, AttentionHooks
from kospeech.nn.losses import CTCLoss
from kospeech.registry import build, component, register


@register("model", "conformer")
class ConformerASR(AttentionHooks, TransducerHooks, ASRModel):
    """Conformer encoder + CTC, attention or transducer head.

    Args:
        input_dim: feature size (provided by the trainer).
        vocab_size: token ids, specials included (provided by the trainer).
        encoder: default ``conformer``; any registered encoder works.
        head: ``ctc``, ``attention`` or ``transducer``.
        decoder: attention decoder for ``head: attention`` (default ``transformer``).
        predictor: prediction network for ``head: transducer`` (default ``transducer``).
        ctc_weight: CTC share of the joint loss, ``head: attention`` only.
        label_smoothing: decoder cross entropy smoothing, ``head: attention`` only.
        joint_dim: joiner hidden size, ``head: transducer`` only.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "conformer"},
        head: Literal["ctc", "attention", "transducer"] = "attention",
        decoder: component("decoder", "vocab_size", "encoder_dim") = {"name": "transformer"},
        predictor: component("decoder", "vocab_size") = {"name": "transducer"},
        ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
        joint_dim: int = 320,
    ) -> None:
        super().__init__()
        self.encoder = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        dim = self.encoder.output_dim
        self.head_kind = head
        self.ctc: nn.Module | None = None
        self.attention: AttentionHead | None = None
        self.transducer: TransducerHead | None = None
        if head == "ctc":
            self.ctc = nn.Linear(dim, vocab_size)
            self.ctc_loss = CTCLoss()
            self.has_ctc = True
        elif head == "attention":
            self.attention = AttentionHead(
                encoder_dim=dim,
                vocab_size=vocab_size,
                decoder=decoder,
                ctc_weight=ctc_weight,
                label_smoothing=label_smoothing,
                path="model.decoder",
            )
            self.has_ctc = ctc_weight > 0
            self.has_decoder = True
        else:
            self.transducer = TransducerHead(
                encoder_dim=dim, vocab_size=vocab_size, predictor=predictor, joint_dim=joint_dim, path="model.predictor"
            )
            self.is_transducer = True

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        encoder_out, encoder_lengths = self.encode(features, feature_lengths)
        if self.attention is not None:
            return self.attention.loss(encoder_out, encoder_lengths, targets, target_lengths)
        if self.transducer is not None:
            return self.transducer.loss(encoder_out, encoder_lengths, targets, target_lengths)
        loss = self.ctc_loss(self.ctc_log_probs(encoder_out), encoder_lengths, targets, target_lengths)
        return {"loss": loss, "ctc": loss.detach()}

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, feature_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        if self.ctc is not None:
            return F.log_softmax(self.ctc(encoder_out), dim=-1)
        if self.attention is not None:
            return self.attention.ctc_log_probs(encoder_out)
        return super().ctc_log_probs(encoder_out)

    def _attention(self) -> AttentionHead:
        if self.attention is None:
            raise NotImplementedError(f"conformer with head '{self.head_kind}' has no attention decoder")
        return self.attention

    def _transducer(self) -> TransducerHead:
        if self.transducer is None:
            raise NotImplementedError(f"conformer with head '{self.head_kind}' is not a transducer")
        return self.transducer
