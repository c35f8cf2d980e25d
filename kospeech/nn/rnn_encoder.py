"""The recurrent encoder (LAS listener, Deep Speech 2 body), registered as ``encoder/rnn``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from kospeech.errors import ConfigError
from kospeech.nn.extractors import build_extractor
from kospeech.registry import component, register

RNN_TYPES: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}


def rnn_class(rnn_type: str, where: str) -> type[nn.RNNBase]:
    if rnn_type not in RNN_TYPES:
        raise ConfigError(f"{where}: rnn_type must be one of {', '.join(RNN_TYPES)}, got '{rnn_type}'")
    return RNN_TYPES[rnn_type]


@register("encoder", "rnn")
class RNNEncoder(nn.Module):
    """A convolutional extractor followed by a stack of LSTM/GRU layers (KoSpeech's listener).

    Padded frames are packed away (``pack_padded_sequence``), so a backward RNN starts at each
    utterance's last real frame and outputs do not depend on batch padding. Outputs past an
    utterance's length are zero. ``output_dim = hidden_dim * (2 if bidirectional else 1)``.

    Args:
        rnn_type: lstm or gru.
        hidden_dim: units per direction.
        num_layers: stacked recurrent layers.
        bidirectional: read the utterance both ways (offline recognition).
        dropout: between recurrent layers.
        extractor: front end (``vgg``, ``deepspeech2``, ``conv2d_subsampling``, ...); ``null`` or
            ``{name: none}`` feeds the features directly.
        norm: ``none``, ``batch`` or ``layer``: normalise each recurrent layer's input and the
            output, then dropout. ``batch`` is Deep Speech 2's sequence-wise batch norm (statistics
            over every real frame of the batch, never padding). Without it a CTC model can sit on
            the all-blank plateau for most of a short training (``recipes/mini/RESULTS.md``).
            ``none`` keeps KoSpeech's LAS and DS2 architectures and parameter counts exact.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        rnn_type: str = "lstm",
        hidden_dim: int = 256,
        num_layers: int = 3,
        bidirectional: bool = True,
        dropout: float = 0.3,
        extractor: component("extractor", "input_dim") = {"name": "vgg"},
        norm: Literal["none", "batch", "layer"] = "none",
    ) -> None:
        super().__init__()
        self.extractor, rnn_input = build_extractor(extractor, input_dim, "encoder.extractor")
        cls = rnn_class(rnn_type, "encoder 'rnn'")
        self.output_dim = hidden_dim * (2 if bidirectional else 1)
        self.norm = norm
        if norm == "none":
            self.rnn = cls(
                rnn_input,
                hidden_dim,
                num_layers=num_layers,
                batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0,
                bidirectional=bidirectional,
            )
            return
        # one module per layer so that a norm can sit between them
        dims = [rnn_input] + [self.output_dim] * (num_layers - 1)
        make_norm = nn.BatchNorm1d if norm == "batch" else nn.LayerNorm
        self.norms = nn.ModuleList(make_norm(d) for d in dims)
        self.layers = nn.ModuleList(cls(d, hidden_dim, batch_first=True, bidirectional=bidirectional) for d in dims)
        self.out_norm = make_norm(self.output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), lengths (B,) -> (B, T', output_dim), lengths (B,)."""
        if self.extractor is not None:
            x, lengths = self.extractor(x, lengths)
        total = x.size(1)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        if self.norm != "none":
            for norm, layer in zip(self.norms, self.layers):
                packed, _ = layer(self._per_frame(packed, norm))
            packed = self._per_frame(packed, self.out_norm)
        else:
            packed, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(packed, batch_first=True, total_length=total)
        return out, lengths

    def _per_frame(self, packed: PackedSequence, norm: nn.Module) -> PackedSequence:
        """Norm + dropout on the packed (frames, dim) data: padding never enters the statistics."""
        return packed._replace(data=self.dropout(norm(packed.data)))
