"""A CTC model: any registered encoder, a linear layer to the vocabulary and the CTC loss."""

from __future__ import annotations

import torch
from torch import nn

from kospeech.models.base import ASRModel
from kospeech.models.common import NotAModule
from kospeech.nn.init import apply_init
from kospeech.registry import build, component, register


@register("model", "ctc")
class CTCModel(ASRModel):
    """Any registered encoder, a linear layer and the CTC loss; by default the convolution-only
    ``separable_conv`` encoder (QuartzNet-style), the fastest CTC model to train on a CPU here.

    Decoding uses the CTC hooks (greedy or prefix beam search, optionally with an LM). Deep
    Speech 2 (``model deepspeech2``) is this model with a recurrent encoder.

    Args:
        encoder: the acoustic encoder.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
    """

    has_ctc = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "separable_conv"},
        init: str = "default",
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        self.fc = nn.Linear(self.encoder.output_dim, vocab_size)
        self._criterion = NotAModule(build("loss", {"name": "ctc"}))
        apply_init(self, init)

    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        enc, enc_lengths = self.encode(features, feature_lengths)
        loss = self._criterion(self.ctc_log_probs(enc), enc_lengths, targets, target_lengths)
        return {"loss": loss, "ctc": loss.detach()}

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, feature_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(encoder_out).float(), dim=-1)
