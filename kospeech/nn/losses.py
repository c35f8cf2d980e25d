"""Training criteria, registered under ``loss``.

Every loss is normalised per target token, so the weights of a joint CTC/attention loss mean
the same thing whatever the batch or utterance lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.registry import register
from kospeech.text.special import BLANK_ID, PAD_ID


@register("loss", "cross_entropy")
class CrossEntropyLoss(nn.Module):
    """Token-level cross entropy with label smoothing; ``<pad>`` targets are ignored.

    Args:
        label_smoothing: mass spread uniformly over the vocabulary (0.1 in Transformer ASR).
    """

    def __init__(self, *, label_smoothing: float = 0.0, ignore_index: int = PAD_ID) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """logits (B, L, V), targets (B, L) -> mean loss over real tokens."""
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


@register("loss", "ctc")
class CTCLoss(nn.Module):
    """Connectionist temporal classification over encoder frames (blank id 0).

    ``zero_infinity`` turns impossible alignments (targets longer than frames) into zero loss
    instead of inf, so one odd utterance cannot poison a batch.
    """

    def __init__(self, *, zero_infinity: bool = True) -> None:
        super().__init__()
        self.zero_infinity = zero_infinity

    def forward(
        self,
        log_probs: torch.Tensor,
        input_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        """log_probs (B, T, V) -> loss per target token, averaged over the batch."""
        return F.ctc_loss(
            log_probs.float().transpose(0, 1),
            targets,
            input_lengths,
            target_lengths,
            blank=BLANK_ID,
            reduction="mean",
            zero_infinity=self.zero_infinity,
        )


@register("loss", "joint_ctc_attention")
class JointCTCAttentionLoss(nn.Module):
    """``ctc_weight * CTC + (1 - ctc_weight) * CE``, the multi-task loss of Kim et al. (2017).

    Args:
        ctc_weight: share of the CTC term, in [0, 1]; 0.3 is the ESPnet default.
        label_smoothing: for the attention (cross entropy) term.
    """

    def __init__(self, *, ctc_weight: float = 0.3, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")
        self.ctc_weight = ctc_weight
        self.ctc = CTCLoss()
        self.ce = CrossEntropyLoss(label_smoothing=label_smoothing)

    def forward(
        self,
        ctc_log_probs: torch.Tensor,
        encoder_lengths: torch.Tensor,
        logits: torch.Tensor,
        decoder_targets: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Returns ``loss`` and its parts ``ctc`` and ``att``."""
        att = self.ce(logits, decoder_targets)
        if self.ctc_weight == 0.0:
            return {"loss": att, "att": att.detach()}
        ctc = self.ctc(ctc_log_probs, encoder_lengths, targets, target_lengths)
        loss = self.ctc_weight * ctc + (1.0 - self.ctc_weight) * att
        return {"loss": loss, "ctc": ctc.detach(), "att": att.detach()}


@register("loss", "transducer")
class TransducerLoss(nn.Module):
    """RNN-T loss (torchaudio's ``rnnt_loss``), averaged per target token.

    Takes joiner logits (B, T, U+1, V); the log-softmax is fused inside the kernel.
    """

    def __init__(self, *, clamp: float = -1.0) -> None:
        super().__init__()
        self.clamp = clamp

    def forward(
        self,
        logits: torch.Tensor,
        logit_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> torch.Tensor:
        import torchaudio.functional as AF

        per_utt = AF.rnnt_loss(
            logits.float(),
            targets.int(),
            logit_lengths.int(),
            target_lengths.int(),
            blank=BLANK_ID,
            clamp=self.clamp,
            reduction="none",
        )
        return per_utt.sum() / target_lengths.sum().clamp(min=1)
