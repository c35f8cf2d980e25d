"""Small pieces that several models share: the decoder's teacher-forcing input/output and a
holder for parameterless losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kospeech.text.special import EOS_ID, PAD_ID, SOS_ID


def decoder_io(targets: torch.Tensor, target_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """targets (B, L) padded with ``<pad>``, without sos/eos -> decoder input ``<sos> y`` and
    output ``y <eos>``, (B, L + 1) each.

    Positions past an utterance's end are ``<pad>`` in the output, so the loss ignores them.
    """
    b = targets.size(0)
    sos = targets.new_full((b, 1), SOS_ID)
    pad = targets.new_full((b, 1), PAD_ID)
    dec_in = torch.cat([sos, targets], dim=1)
    dec_out = torch.cat([targets, pad], dim=1)
    dec_out = dec_out.scatter(1, target_lengths[:, None].to(device=targets.device, dtype=torch.long), EOS_ID)
    return dec_in, dec_out


class NotAModule:
    """Holds a parameterless loss outside the module tree, so the printed model matches the
    architecture (KoSpeech's README tree) and the state dict holds only learned tensors."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
