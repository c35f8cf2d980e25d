"""Deep Speech 2 (Amodei et al. 2016): convolutions, bidirectional RNNs and a CTC output."""

from __future__ import annotations

import torch
from torch import nn

from kospeech.models.base import ASRModel
from kospeech.models.common import NotAModule
from kospeech.nn.init import apply_init
from kospeech.registry import build, component, register


@register("model", "deepspeech2")
class DeepSpeech2(ASRModel):
    """CTC model: the ``deepspeech2`` conv extractor, a bidirectional GRU/LSTM stack (the
    ``rnn`` encoder) and a linear layer to the vocabulary, trained with the ``ctc`` loss.

    Decoding uses the CTC hooks (greedy or prefix beam search, optionally with an LM).

    Args:
        encoder: the acoustic encoder; by default KoSpeech's DS2 body: ``deepspeech2``
            extractor and 3 bidirectional GRU layers of 512 units.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
    """

    has_ctc = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {
            "name": "rnn",
            "rnn_type": "gru",
            "hidden_dim": 512,
            "num_layers": 3,
            "bidirectional": True,
            "dropout": 0.1,
            "extractor": {"name": "deepspeech2"},
        },
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
        loss = self._criterion(self.training_log_probs(enc, enc_lengths), enc_lengths, targets, target_lengths)
        return {"loss": loss, "ctc": loss.detach()}

    def training_log_probs(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> torch.Tensor:
        """The CTC head in training, where the lengths are known (a subclass may normalise with them)."""
        return self.ctc_log_probs(encoder_out)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(features, feature_lengths)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(encoder_out).float(), dim=-1)


@register("model", "ctc")
class CTCModel(DeepSpeech2):
    """Any registered encoder, a linear layer and the CTC loss; by default the convolution-only
    ``separable_conv`` encoder (QuartzNet-style), the fastest CTC model to train on a CPU here.

    Deep Speech 2 is this model with a recurrent encoder; the decoding hooks are the same.

    Args:
        encoder: the acoustic encoder.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "separable_conv"},
        init: str = "default",
    ) -> None:
        super().__init__(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, init=init)
