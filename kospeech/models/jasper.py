"""Jasper (Li et al. 2019) as a CTC model, registered as ``model/jasper``."""

from __future__ import annotations

import torch

from kospeech.models.ctc import CTCModel
from kospeech.nn.conv_encoder import MaskedBatchNorm1d
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import component, register


@register("model", "jasper")
class Jasper(CTCModel):
    """The ``jasper`` encoder, a 1x1 convolution to the vocabulary (``fc``) and batch norm, CTC.

    The output batch norm is the original KoSpeech's (its last Jasper sub-block keeps the norm
    of every sub-block); it is part of its parameter count, which this model matches exactly
    (``10x5``: 334,740,706 with a 2,038-unit vocabulary; ``5x3``: 111,817,442). The original's
    ReLU on the logits is left out: it would clip every negative score to the same value.

    The norm holds every logit at unit scale until its learnt scale grows (about ``lr`` per
    update with Adam), so sharp outputs come late: on the 8-utterance test batch the loss took
    600 updates to reach 0.1 nats with it, 313 to reach 0.01 without. ``output_norm: false``
    drops it (and 2 x vocabulary parameters).

    Args:
        encoder: the acoustic encoder, by default ``{name: jasper, preset: 10x5}``.
        output_norm: batch norm on the logits, as the original.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {"name": "jasper", "preset": "10x5"},
        output_norm: bool = True,
        init: str = "default",
    ) -> None:
        super().__init__(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, init=init)
        self.out_norm = MaskedBatchNorm1d(vocab_size, eps=1e-3) if output_norm else None

    def training_log_probs(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> torch.Tensor:
        return self._log_probs(encoder_out, encoder_lengths)

    def _log_probs(self, encoder_out: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.out_norm is None:
            return torch.log_softmax(self.fc(encoder_out).float(), dim=-1)
        logits = self.fc(encoder_out).transpose(1, 2)  # (B, V, T)
        if lengths is None:  # decoding: the running statistics, no batch statistics to mask
            mask = torch.ones_like(logits[:, :1])
        else:
            mask = lengths_to_mask(lengths, logits.size(2))[:, None, :].to(logits.dtype)
        return torch.log_softmax(self.out_norm(logits, mask).transpose(1, 2).float(), dim=-1)

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return self._log_probs(encoder_out, None)
