"""Conformer encoder (Gulati et al., 2020), registered as ``encoder/conformer``.

Each block is a "macaron": half a feed-forward, relative-position self-attention, a convolution
module, the other half feed-forward, then a LayerNorm. Attention sees the whole utterance; the
depthwise convolution models local patterns that attention captures poorly.

Streaming (WeNet's U2 recipe): ``chunk_size`` cuts the frames into chunks counted from the first
frame, and self-attention lets a frame see its own chunk and earlier ones only (``left_chunks``
of them when set); ``causal_conv`` pads the depthwise convolution on the left only, so it never
reads a later frame either. An output frame then depends on the audio up to the end of its
chunk, and a stream (:mod:`kospeech.inference.stream`) emits it one chunk after it is spoken.
``dynamic_chunk`` trains on a random chunk size per batch (or full context) so that one
checkpoint decodes at any chunk size, set at decode time, and at full context.

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
import torch.nn.functional as F
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.attention import attention_output_dim
from kospeech.nn.extractors import build_extractor, projection
from kospeech.nn.mask import chunk_mask, lengths_to_mask
from kospeech.nn.norm import MaskedBatchNorm1d
from kospeech.nn.transformer import FeedForward
from kospeech.registry import build, component, register

#: the largest chunk (encoder frames) ``dynamic_chunk`` trains on, as WeNet's U2 does (1 s after x4)
DYNAMIC_CHUNK_MAX = 25


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, norm, swish, pointwise conv.

    ``causal``: the depthwise convolution is padded with ``kernel_size - 1`` frames on the left
    and none on the right, so output frame t reads frames t - kernel_size + 1 .. t; a centred
    kernel would read ``kernel_size // 2`` frames into the next chunk in every block.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, norm: str, causal: bool = False) -> None:
        super().__init__()
        if kernel_size < 1 or (kernel_size % 2 == 0 and not causal):
            raise ConfigError(f"encoder 'conformer': kernel_size must be odd so frames stay aligned, got {kernel_size}")
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.glu = nn.GLU(dim=1)
        self.left_pad = kernel_size - 1 if causal else 0
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=0 if causal else kernel_size // 2,
                                   groups=d_model)
        self.norm_kind = norm
        self.norm: nn.Module = MaskedBatchNorm1d(d_model) if norm == "batch_norm" else nn.LayerNorm(d_model)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True at real frames -> (B, T, D)."""
        h = self.glu(self.pointwise_in(x.transpose(1, 2)))  # (B, D, T)
        h = h.masked_fill(~mask[:, None, :], 0.0)
        if self.left_pad:
            h = F.pad(h, (self.left_pad, 0))
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
        causal_conv: bool = False,
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(d_model, ff_dim, dropout, activation="swish")
        self.ff2 = FeedForward(d_model, ff_dim, dropout, activation="swish")
        self.attn = build("attention", attention, path=path, query_dim=d_model, key_dim=d_model)
        self.attn_proj = projection(attention_output_dim(self.attn, d_model), d_model)
        self.conv = ConvolutionModule(d_model, kernel_size, dropout, conv_norm, causal_conv)
        self.norm_ff1 = nn.LayerNorm(d_model)
        self.norm_attn = nn.LayerNorm(d_model)
        self.norm_conv = nn.LayerNorm(d_model)
        self.norm_ff2 = nn.LayerNorm(d_model)
        self.norm_out = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), mask (B, T) True at real frames; attn_mask (B, T, T) per query (chunk-wise
        attention) replaces ``mask`` in self-attention when given."""
        x = x + 0.5 * self.drop(self.ff1(self.norm_ff1(x)))
        h = self.norm_attn(x)
        context, _, _ = self.attn(h, h, h, mask if attn_mask is None else attn_mask, None)
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
        chunk_size: chunk-wise attention for streaming, in encoder frames (after the extractor;
            16 frames of 40 ms are 640 ms): a frame attends to its own chunk and earlier ones, so
            it can be emitted once its chunk has arrived. 0: full context (offline).
        left_chunks: how many earlier chunks a frame attends to (-1: all), which bounds what a
            stream re-reads per step; ignored at full context.
        causal_conv: depthwise convolution on past frames only (``kernel_size - 1`` of them), so
            no block reads past the end of a chunk; without it every block reads ``kernel_size //
            2`` frames into the next chunk and a stream waits that much longer.
        dynamic_chunk: in training, each batch takes full context with probability 0.5, else a
            chunk size drawn from 1..25 frames (WeNet's U2), so one checkpoint decodes at any
            chunk size and at full context; ``chunk_size`` is then only the evaluation default.
        dynamic_left_chunks: with ``dynamic_chunk``, each chunked batch also draws how many earlier
            chunks a frame attends to (0 up to all, as WeNet's U2++ does), so the checkpoint decodes
            with a bounded ``left_chunks`` as well as with all of them; without it, training uses
            ``left_chunks`` as set.
        decode_chunk_size: the chunk size in evaluation (decoding, export, streaming) when it
            should differ from ``chunk_size`` (0: full context); ``set_decode_chunk_size`` and
            ``kospeech.load(..., chunk_size=N)`` change it without retraining.
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
        chunk_size: int = 0,
        left_chunks: int = -1,
        causal_conv: bool = False,
        dynamic_chunk: bool = False,
        dynamic_left_chunks: bool = False,
        decode_chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_chunk_option("chunk_size", chunk_size)
        if decode_chunk_size is not None:
            _check_chunk_option("decode_chunk_size", decode_chunk_size)
        if isinstance(left_chunks, bool) or not isinstance(left_chunks, int) or left_chunks < -1:
            raise ConfigError(f"encoder 'conformer': left_chunks must be -1 (all) or a count >= 0, got {left_chunks!r}")
        self.extractor, ext_dim = build_extractor(extractor, input_dim, "encoder.extractor")
        self.input_proj = projection(ext_dim, d_model)
        self.input_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            ConformerBlock(d_model, ff_dim, kernel_size, dropout, conv_norm, attention, f"encoder.attention[{i}]",
                           causal_conv)
            for i in range(num_layers)
        )
        self.d_model = d_model
        self.chunk_size = chunk_size
        self.left_chunks = left_chunks
        self.causal_conv = causal_conv
        self.dynamic_chunk = dynamic_chunk
        if dynamic_left_chunks and not dynamic_chunk:
            raise ConfigError("encoder 'conformer': dynamic_left_chunks draws left chunks per batch of dynamic_chunk "
                              "training; set dynamic_chunk: true too")
        self.dynamic_left_chunks = dynamic_left_chunks
        self.decode_chunk_size = chunk_size if decode_chunk_size is None else decode_chunk_size
        if chunk_size or dynamic_chunk or self.decode_chunk_size:
            self._check_query_mask("chunk_size" if chunk_size else "dynamic_chunk" if dynamic_chunk
                                   else "decode_chunk_size")

    def _check_query_mask(self, option: str) -> None:
        """Chunk-wise attention needs every block's self-attention to take a per-query mask."""
        for layer in self.layers:
            if not getattr(layer.attn, "accepts_query_mask", False):
                raise ConfigError(
                    f"encoder 'conformer': {option} needs a self-attention that takes a per-query mask "
                    f"(relative_multi_head does); attention '{type(layer.attn).__name__}' does not"
                )

    def set_decode_chunk_size(self, chunk_size: int) -> None:
        """The chunk size (encoder frames; 0: full context) used from now on in evaluation mode:
        a dynamic-chunk checkpoint decodes at any chunk size without retraining."""
        _check_chunk_option("decode_chunk_size", chunk_size)
        if chunk_size:
            self._check_query_mask("decode_chunk_size")
        self.decode_chunk_size = chunk_size

    @property
    def decode_chunk_frames(self) -> int:
        """The chunk size evaluation uses (0: full context): a stream starts its windows on
        multiples of it so that its chunks are the whole utterance's."""
        return self.decode_chunk_size

    def _current_chunk(self, frames: int) -> tuple[int, int]:
        """This batch's chunk size and left chunks: drawn per batch in dynamic-chunk training (the
        left chunks too with ``dynamic_left_chunks``, from 0 to all of the ``frames``), else as configured."""
        if not self.training:
            return self.decode_chunk_size, self.left_chunks
        if self.dynamic_chunk:
            if float(torch.rand(())) < 0.5:
                return 0, self.left_chunks
            chunk = int(torch.randint(1, DYNAMIC_CHUNK_MAX + 1, ()))
            if self.dynamic_left_chunks:
                return chunk, int(torch.randint(0, max(frames - 1, 0) // chunk + 1, ()))
            return chunk, self.left_chunks
        return self.chunk_size, self.left_chunks

    @property
    def output_dim(self) -> int:
        return self.d_model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> (B, T', d_model), (B,)."""
        if self.extractor is not None:
            x, lengths = self.extractor(x, lengths)
        mask = lengths_to_mask(lengths, x.size(1))
        chunk, left_chunks = self._current_chunk(x.size(1))
        attn_mask = None
        if chunk > 0:
            attn_mask = chunk_mask(x.size(1), chunk, left_chunks, x.device)[None] & mask[:, None, :]
        x = self.input_drop(self.input_proj(x))
        for layer in self.layers:
            x = layer(x, mask, attn_mask)
        return x, lengths


def _check_chunk_option(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"encoder 'conformer': {name} must be a number of frames >= 0 (0: full context), "
                          f"got {value!r}")
