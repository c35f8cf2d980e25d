"""Conformer encoder (Gulati et al., 2020), registered as ``encoder/conformer``.

Each block is a "macaron": half a feed-forward, relative-position self-attention, a convolution
module, the other half feed-forward, then a LayerNorm. Attention sees the whole utterance; the
depthwise convolution models local patterns that attention captures poorly.

Padding: the convolution module zeroes padded frames before its depthwise convolution, so a
real frame near the end of an utterance sees the same zeros whether the batch is padded or not.
The normalisation inside the convolution module is LayerNorm by default (per frame, so padding
cannot reach it). ``conv_norm: batch_norm`` (the paper's choice) uses a masked batch norm whose
statistics come from real frames only; in eval mode it uses running statistics, so outputs are
padding invariant; in training they depend on the batch, as any batch norm does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.attention import attention_output_dim
from kospeech.nn.extractors import build_extractor, projection
from kospeech.nn.mask import lengths_to_mask
from kospeech.nn.norm import MaskedBatchNorm1d
from kospeech.nn.transformer import FeedForward
from kospeech.registry import build, component, register


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, norm, swish, pointwise conv."""

    def __init__(self, d_model: int, kernel_size: int, dropout: float, norm: str) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ConfigError(f"encoder 'conformer': kernel_size must be odd so frames stay aligned, got {kernel_size}")
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.norm_kind = norm
        self.norm: nn.Module = MaskedBatchNorm1d(d_model) if norm == "batch_norm" else nn.LayerNorm(d_model)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True at real frames -> (B, T, D)."""
        h = self.glu(self.pointwise_in(x.transpose(1, 2)))  # (B, D, T)
        h = h.masked_fill(~mask[:, None, :], 0.0)
        h = self.depthwise(h)
        if self.norm_kind == "batch_norm":
            h = self.norm(h, mask)
        else:
            h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        h = self.pointwise_out(self.act(h))
        return self.dropout(h.transpose(1, 2))


class ConformerBlock(nn.Module):
    """FF/2, MHSA, Conv, FF/2, LayerNorm; every sub-block pre-normed with a residual."""

    def __init__(
        self,
        d_model: int,
        ff_dim: int,
        kernel_size: int,
        dropout: float,
        conv_norm: str,
        attention: Mapping[str, Any],
        path: str,
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_dim, dropout, activation="swish")
        self.ff2 = FeedForward(d_model, ff_dim, dropout, activation="swish")
        self.attn = build("attention", attention, path=path, query_dim=d_model, key_dim=d_model)
        self.attn_proj = projection(attention_output_dim(self.attn, d_model), d_model)
        self.conv = ConvolutionModule(d_model, kernel_size, dropout, conv_norm)
        self.norm_ff1 = nn.LayerNorm(d_model)
        self.norm_attn = nn.LayerNorm(d_model)
        self.norm_conv = nn.LayerNorm(d_model)
        self.norm_ff2 = nn.LayerNorm(d_model)
        self.norm_out = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
        h = self.norm_attn(x)
        context, _, _ = self.attn(h, h, h, mask, None)
        x = x + self.drop(self.attn_proj(context))
        x = x + self.conv(self.norm_conv(x), mask)
        x = x + 0.5 * self.drop(self.ff2(self.norm_ff2(x)))
        return self.norm_out(x)


@register("encoder", "conformer")
class ConformerEncoder(nn.Module):
    """Conformer encoder: subsampling front end, linear projection, Conformer blocks.

    Args:
        input_dim: feature size (provided by the model).
        extractor: front end that shortens the sequence (default 4x conv2d subsampling); null
            feeds the features directly.
        d_model: width of every block (256 for Conformer-M, 144 for Conformer-S).
        ff_dim: inner size of each feed-forward half (4 x d_model in the paper).
        num_layers: Conformer blocks.
        kernel_size: depthwise convolution width in frames (odd; 31 in the paper, 15 in ESPnet).
        dropout: on residual branches, feed-forwards and the input.
        conv_norm: ``layer_norm`` (default; per frame, padding cannot leak) or ``batch_norm``
            (paper; statistics over real frames only).
        attention: self-attention of each block; gets ``query_dim = key_dim = d_model``. Default
            Transformer-XL relative positions; set ``num_heads`` here (``{name: relative_multi_head,
            num_heads: 8}``).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        extractor: component("extractor", "input_dim") | None = {"name": "conv2d_subsampling"},
        d_model: int = 256,
        ff_dim: int = 1024,
        num_layers: int = 12,
        kernel_size: int = 15,
        dropout: float = 0.1,
        conv_norm: Literal["layer_norm", "batch_norm"] = "layer_norm",
        attention: component("attention", "query_dim", "key_dim") = {"name": "relative_multi_head"},
    ) -> None:
        super().__init__()
        self.extractor, ext_dim = build_extractor(extractor, input_dim, "encoder.extractor")
        self.input_proj = projection(ext_dim, d_model)
        self.input_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, ff_dim, kernel_size, dropout, conv_norm, attention, f"encoder.attention[{i}]")
            for i in range(num_layers)
        )
        self.d_model = d_model

    @property
    def output_dim(self) -> int:
        return self.d_model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> (B, T', d_model), (B,)."""
        if self.extractor is not None:
            x, lengths = self.extractor(x, lengths)
        mask = lengths_to_mask(lengths, x.size(1))
        x = self.input_drop(self.input_proj(x))
        for layer in self.layers:
            x = layer(x, mask)
        return x, lengths
