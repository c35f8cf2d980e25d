"""A CTC model: any registered encoder, a linear layer to the vocabulary and the CTC loss."""

from __future__ import annotations

import torch
from torch import nn

from kospeech.errors import ConfigError
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

    Intermediate CTC (Lee & Watanabe 2021): the output layer is also applied after the encoder
    blocks in ``inter_ctc_after`` and their CTC losses, averaged, weigh ``inter_ctc_weight`` in
    the loss; the lower blocks then get a direct training signal, which regularises a small
    model trained on little data. With ``self_condition`` (Nozaki & Komatsu 2021) the
    intermediate posteriors are projected back and added to the hidden states, in training and
    decoding alike, so the upper blocks refine a first guess instead of starting from scratch.
    Needs an encoder whose ``forward`` takes ``tap``/``tap_after`` (``separable_conv``).

    Args:
        encoder: the acoustic encoder.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
        inter_ctc_after: 1-based encoder blocks followed by an intermediate CTC (empty: none).
        inter_ctc_weight: share of the intermediate losses in the loss, in [0, 1).
        self_condition: feed the intermediate posteriors back into the encoder.
    """

    has_ctc = True

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "separable_conv"},
        init: str = "default",
        inter_ctc_after: list[int] = [],
        inter_ctc_weight: float = 0.3,
        self_condition: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder = build("encoder", encoder, path="model.encoder", input_dim=input_dim)
        self.fc = nn.Linear(self.encoder.output_dim, vocab_size)
        self._criterion = NotAModule(build("loss", {"name": "ctc"}))
        self.inter_ctc_after = tuple(int(i) for i in inter_ctc_after)
        self.inter_ctc_weight = float(inter_ctc_weight)
        if not 0.0 <= self.inter_ctc_weight < 1.0:
            raise ConfigError(f"model 'ctc': inter_ctc_weight must be in [0, 1), got {inter_ctc_weight}")
        if self.inter_ctc_after:
            if not hasattr(self.encoder, "blocks"):
                raise ConfigError("model 'ctc': inter_ctc_after needs a block encoder such as separable_conv")
            num_blocks = len(self.encoder.blocks)
            bad = [i for i in self.inter_ctc_after if not 1 <= i < num_blocks]
            if bad:
                raise ConfigError(f"model 'ctc': inter_ctc_after {bad} not between 1 and {num_blocks - 1} (blocks)")
        elif self_condition:
            raise ConfigError("model 'ctc': self_condition needs inter_ctc_after")
        self.condition = nn.Linear(vocab_size, self.encoder.output_dim) if self_condition else None
        self._inter: list[torch.Tensor] | None = None  # intermediate log-probs of the running forward
        apply_init(self, init)

    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        if not self.inter_ctc_after:
            enc, enc_lengths = self.encode(features, feature_lengths)
            loss = self._criterion(self.training_log_probs(enc, enc_lengths), enc_lengths, targets, target_lengths)
            return {"loss": loss, "ctc": loss.detach()}
        self._inter = []
        try:
            enc, enc_lengths = self.encode(features, feature_lengths)
            inter = self._inter
        finally:
            self._inter = None
        final = self._criterion(self.training_log_probs(enc, enc_lengths), enc_lengths, targets, target_lengths)
        inter_loss = torch.stack([self._criterion(lp, enc_lengths, targets, target_lengths) for lp in inter]).mean()
        w = self.inter_ctc_weight
        loss = (1.0 - w) * final + w * inter_loss
        return {"loss": loss, "ctc": final.detach(), "inter_ctc": inter_loss.detach()}

    def _tap(self, hidden: torch.Tensor) -> torch.Tensor:
        log_probs = self.ctc_log_probs(hidden)
        if self._inter is not None:
            self._inter.append(log_probs)
        if self.condition is None:
            return hidden
        return hidden + self.condition(log_probs.exp().to(hidden.dtype))

    def training_log_probs(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> torch.Tensor:
        """The CTC head in training, where the lengths are known (a subclass may normalise with them)."""
        return self.ctc_log_probs(encoder_out)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.inter_ctc_after:
            return self.encoder(features, feature_lengths)
        return self.encoder(features, feature_lengths, tap=self._tap, tap_after=self.inter_ctc_after)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(encoder_out).float(), dim=-1)
