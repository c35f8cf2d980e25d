"""RNN transducer (Graves, 2012), ``model/rnnt``.

:class:`TransducerHead` (prediction network, joiner and loss) is shared with the Conformer's
``head: transducer``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.models.base import ASRModel, State
from kospeech.nn.losses import TransducerLoss
from kospeech.nn.transducer import Joiner
from kospeech.registry import build, component, register


class TransducerHead(nn.Module):
    """Prediction network + joiner over an encoder output, trained with the RNN-T loss."""

    def __init__(
        self, *, encoder_dim: int, vocab_size: int, predictor: Mapping[str, Any], joint_dim: int, path: str
    ) -> None:
        super().__init__()
        self.predictor = build("decoder", predictor, path=path, vocab_size=vocab_size)
        self.joiner = Joiner(
            encoder_dim=encoder_dim,
            predictor_dim=self.predictor.output_dim,
            joint_dim=joint_dim,
            vocab_size=vocab_size,
        )
        self.criterion = TransducerLoss()

    def logits(self, encoder_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T, H), targets (B, U) -> joiner logits (B, T, U+1, V)."""
        return self.joiner(encoder_out, self.predictor(targets))

    def loss(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        # trim padding the loss would ignore anyway: (B, T, U+1, V) is the memory peak of training
        u = int(target_lengths.max())
        t = int(encoder_lengths.max())
        targets = targets[:, :u]
        logits = self.logits(encoder_out[:, :t], targets)
        loss = self.criterion(logits, encoder_lengths, targets, target_lengths)
        return {"loss": loss, "transducer": loss.detach()}

    def predictor_init_state(self, batch_size: int, device: torch.device) -> State:
        return self.predictor.init_state(batch_size, device)

    def predictor_step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.predictor.step(tokens, state)

    def joint(self, encoder_frame: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.joiner.step(encoder_frame, predictor_out), dim=-1)


class TransducerHooks:
    """Decoding hooks of a model with a :class:`TransducerHead`, by default ``self.transducer``;
    a model whose head is optional overrides :meth:`_transducer` to raise when it is absent."""

    transducer: TransducerHead

    def _transducer(self) -> TransducerHead:
        return self.transducer

    def predictor_init_state(self, batch_size: int, device: torch.device) -> State:
        return self._transducer().predictor_init_state(batch_size, device)

    def predictor_step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self._transducer().predictor_step(tokens, state)

    def joint(self, encoder_frame: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        return self._transducer().joint(encoder_frame, predictor_out)


@register("model", "rnnt")
class RNNTransducer(TransducerHooks, ASRModel):
    """Transducer: any encoder (an LSTM ``rnn`` or ``conformer``) + prediction network + joiner.

    Args:
        input_dim: feature size (provided by the trainer).
        vocab_size: token ids, ``<blank>`` included (provided by the trainer).
        encoder: any registered encoder (default ``conformer``; ``{name: rnn, ...}`` for the
            classic LSTM transducer).
        predictor: the prediction network (``decoder/transducer``).
        joint_dim: hidden size of the joiner.
    """

    is_transducer = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "conformer"},
        predictor: component("decoder", "vocab_size") = {"name": "transducer"},
        joint_dim: int = 320,
    ) -> None:
        super().__init__()
        self.encoder = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        self.transducer = TransducerHead(
            encoder_dim=self.encoder.output_dim,
            vocab_size=vocab_size,
            predictor=predictor,
            joint_dim=joint_dim,
            path="model.predictor",
        )

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        encoder_out, encoder_lengths = self.encode(features, feature_lengths)
        return self.transducer.loss(encoder_out, encoder_lengths, targets, target_lengths)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, feature_lengths)
