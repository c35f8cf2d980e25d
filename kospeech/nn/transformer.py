"""Transformer encoder and decoder (Vaswani et al., 2017; Dong et al., 2018 for speech).

Registered as ``encoder/transformer`` and ``decoder/transformer``. The layers here (multi-head
attention, position-wise feed-forward, sinusoidal positions) are shared by the Conformer.

Padding never leaks into real frames: keys beyond an utterance's length are masked in every
attention, and every other operation works frame by frame, so an utterance gives the same output
whether it is batched alone or beside a longer one. The decoder's self-attention is causal only:
padding tokens sit after every real token, so the causal mask already hides them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.attention import attention_output_dim
from kospeech.nn.extractors import build_extractor, projection
from kospeech.nn.mask import causal_mask, lengths_to_mask
from kospeech.registry import build, component, register


def sinusoid_table(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(P,) positions (any sign, float) -> (P, dim) sin/cos table of Vaswani et al.

    Computed on the fly rather than stored, so there is no maximum length and nothing in the
    state dict.
    """
    half = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    freq = torch.exp(half * (-math.log(10000.0) / dim))
    angles = positions.float()[:, None] * freq[None, :]
    table = torch.zeros(positions.numel(), dim, device=positions.device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


class PositionalEncoding(nn.Module):
    """Adds absolute sinusoidal positions to ``x * sqrt(d_model)`` (the embedding scale of the paper).

    ``offset`` lets step-by-step decoding continue the positions of the tokens already emitted.
    """

    def __init__(self, d_model: int, dropout: float = 0.1, scale: bool = True) -> None:
        super().__init__()
        self.d_model = d_model
        self.xscale = math.sqrt(d_model) if scale else 1.0
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        pos = torch.arange(offset, offset + x.size(1), device=x.device)
        return self.dropout(x * self.xscale + sinusoid_table(pos, self.d_model).to(x.dtype)[None])


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over ``num_heads`` learned projections (Vaswani et al.).

    ``key_dim`` may differ from ``d_model`` (cross-attention onto an encoder of another width).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, key_dim: int | None = None) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ConfigError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads}); change one of them")
        key_dim = d_model if key_dim is None else key_dim
        self.num_heads = num_heads
        self.d_k = d_model // num_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(key_dim, d_model)
        self.v = nn.Linear(key_dim, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.d_k).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """query (B, Lq, d_model), keys (B, T, key_dim) -> (B, Lq, d_model).

        ``key_mask`` (B, T) hides padding; ``attn_mask`` (Lq, T) hides positions per query
        (causal). Both are bool, True where attention is allowed.
        """
        q, k, v = self._split(self.q(query)), self._split(self.k(keys)), self._split(self.v(keys))
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]
        if attn_mask is not None:
            mask = attn_mask[None, None] if mask is None else mask & attn_mask[None, None]
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        b, _, lq, _ = ctx.shape
        return self.out(ctx.transpose(1, 2).reshape(b, lq, self.num_heads * self.d_k))


class FeedForward(nn.Module):
    """Position-wise two-layer network; ``activation`` relu (Transformer) or swish (Conformer)."""

    def __init__(self, d_model: int, ff_dim: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU}
        if activation not in acts:
            raise ConfigError(f"activation must be one of {sorted(acts)}, got '{activation}'")
        self.net = nn.Sequential(
            nn.Linear(d_model, ff_dim), acts[activation](), nn.Dropout(dropout), nn.Linear(ff_dim, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerEncoderLayer(nn.Module):
    """Self-attention + feed-forward, each wrapped in a residual; pre-norm trains without warm-up tricks."""

    def __init__(
        self, d_model: int, num_heads: int, ff_dim: int, dropout: float, pre_norm: bool, attn_drop: float | None = None
    ) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads, dropout if attn_drop is None else attn_drop)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            x = x + self.drop(self.attn(h, h, mask))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, x, mask)))
        return self.norm2(x + self.drop(self.ff(x)))


@register("encoder", "transformer")
class TransformerEncoder(nn.Module):
    """Speech Transformer encoder: a subsampling front end, then self-attention layers.

    Args:
        input_dim: feature size (provided by the model).
        extractor: front end that shortens the sequence (default 4x conv2d subsampling), since
            self-attention is quadratic in length; null feeds the features directly.
        d_model: width of every layer.
        num_heads: attention heads (d_model must divide by it).
        ff_dim: inner size of the feed-forward blocks.
        num_layers: encoder layers.
        dropout: on attention weights, residual branches and positions.
        pre_norm: LayerNorm before each block (and once at the end) instead of after; more stable.
        attention_dropout: on the attention weights only, when it should differ from ``dropout``
            (ESPnet's ``attention_dropout_rate``; 0.0 in its Zeroth Transformer); null = ``dropout``.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        extractor: component("extractor", "input_dim") | None = {"name": "conv2d_subsampling"},
        d_model: int = 256,
        num_heads: int = 4,
        ff_dim: int = 2048,
        num_layers: int = 12,
        dropout: float = 0.1,
        pre_norm: bool = True,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.extractor, ext_dim = build_extractor(extractor, input_dim, "encoder.extractor")
        self.input_proj = projection(ext_dim, d_model)
        self.pos = PositionalEncoding(d_model, dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, ff_dim, dropout, pre_norm, attention_dropout)
            for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.d_model = d_model

    @property
    def output_dim(self) -> int:
        return self.d_model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> (B, T', d_model), (B,)."""
        if self.extractor is not None:
            x, lengths = self.extractor(x, lengths)
        mask = lengths_to_mask(lengths, x.size(1))
        x = self.pos(self.input_proj(x))
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_norm(x), lengths


class _CrossAttention(nn.Module):
    """Adapts either our multi-head attention or any registered ``attention`` to ``(query, memory, mask)``."""

    def __init__(
        self, d_model: int, num_heads: int, dropout: float, encoder_dim: int, cfg: Mapping[str, Any] | None, path: str
    ) -> None:
        super().__init__()
        if cfg is None:
            self.mha: nn.Module | None = MultiHeadAttention(d_model, num_heads, dropout, key_dim=encoder_dim)
            self.registered = None
            self.proj: nn.Module = nn.Identity()
            return
        self.mha = None
        self.registered = build("attention", cfg, path=path, query_dim=d_model, key_dim=encoder_dim)
        if getattr(self.registered, "stepwise", False):
            raise ConfigError(
                f"'{path}': attention '{cfg['name']}' needs the previous step's alignment, but the "
                "Transformer decoder attends for all positions at once; use a stateless attention "
                "such as scaled_dot, or null for the built-in multi-head attention"
            )
        self.proj = projection(attention_output_dim(self.registered, encoder_dim), d_model)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mha is not None:
            return self.mha(query, memory, mask)
        context, _, _ = self.registered(query, memory, memory, mask, None)
        return self.proj(context)


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention onto the encoder, feed-forward (pre- or post-norm)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        ff_dim: int,
        dropout: float,
        pre_norm: bool,
        encoder_dim: int,
        cross_cfg: Mapping[str, Any] | None,
        path: str,
        attention_dropout: float | None = None,
    ) -> None:
        super().__init__()
        attn_drop = dropout if attention_dropout is None else attention_dropout
        self.self_attn = MultiHeadAttention(d_model, num_heads, attn_drop)
        self.cross_attn = _CrossAttention(d_model, num_heads, attn_drop, encoder_dim, cross_cfg, path)
        self.ff = FeedForward(d_model, ff_dim, dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self,
        x: torch.Tensor,
        history: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``x`` (B, Lq, D) are the queries, ``history`` (B, L, D) this layer's inputs at every
        position so far (equal to ``x`` when teacher forcing; the cache plus ``x`` when stepping)."""
        n1, n2, n3 = self.norms
        if self.pre_norm:
            x = x + self.drop(self.self_attn(n1(x), n1(history), None, self_mask))
            x = x + self.drop(self.cross_attn(n2(x), memory, memory_mask))
            return x + self.drop(self.ff(n3(x)))
        x = n1(x + self.drop(self.self_attn(x, history, None, self_mask)))
        x = n2(x + self.drop(self.cross_attn(x, memory, memory_mask)))
        return n3(x + self.drop(self.ff(x)))


@register("decoder", "transformer")
class TransformerDecoder(nn.Module):
    """Autoregressive Transformer decoder over token ids, attending to the encoder output.

    Teacher forcing runs all positions at once (``forward``); decoding runs one token at a time
    (``step``) with a cache of every layer's past inputs, so each step costs one query per layer
    instead of re-running the prefix.

    Args:
        vocab_size: output size (provided by the model).
        encoder_dim: width of the encoder output (provided by the model).
        d_model: width of every layer.
        num_heads: self- (and default cross-) attention heads.
        ff_dim: inner size of the feed-forward blocks.
        num_layers: decoder layers.
        dropout: on attention weights, residual branches and positions.
        pre_norm: LayerNorm before each block (and once at the end).
        attention_dropout: on the attention weights (self and cross) only, when it should differ
            from ``dropout``; null = ``dropout``.
        cross_attention: null for our multi-head attention; otherwise any registered attention
            without a recurrent state (e.g. ``{name: scaled_dot}``); it gets ``query_dim=d_model``
            and ``key_dim=encoder_dim`` and its output is projected to ``d_model`` if needed.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        encoder_dim: int,
        d_model: int = 256,
        num_heads: int = 4,
        ff_dim: int = 2048,
        num_layers: int = 6,
        dropout: float = 0.1,
        pre_norm: bool = True,
        attention_dropout: float | None = None,
        cross_attention: component("attention", "query_dim", "key_dim") | None = None,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = PositionalEncoding(d_model, dropout)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(
                d_model, num_heads, ff_dim, dropout, pre_norm, encoder_dim, cross_attention,
                f"decoder.cross_attention[{i}]", attention_dropout,
            )
            for i in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.output = nn.Linear(d_model, vocab_size)
        self.d_model = d_model

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: tokens (B, L) (``<sos>`` first) -> logits (B, L, V)."""
        memory_mask = lengths_to_mask(memory_lengths, memory.size(1))
        self_mask = causal_mask(tokens.size(1), tokens.device)
        x = self.pos(self.embed(tokens))
        for layer in self.layers:
            x = layer(x, x, self_mask, memory, memory_mask)
        return self.output(self.final_norm(x))

    def init_state(self, batch_size: int, device: torch.device) -> dict[str, list[torch.Tensor]]:
        """Empty cache: per layer, its inputs at the positions decoded so far, (N, 0, d_model)."""
        return {"layers": [torch.zeros(batch_size, 0, self.d_model, device=device) for _ in self.layers]}

    def step(
        self,
        tokens: torch.Tensor,
        state: dict[str, list[torch.Tensor]],
        memory: torch.Tensor,
        memory_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """tokens (N,) -> logits (N, V) of the next token and the grown cache."""
        memory_mask = lengths_to_mask(memory_lengths, memory.size(1))
        offset = state["layers"][0].size(1)
        x = self.pos(self.embed(tokens[:, None]), offset=offset)
        new_cache = []
        for layer, past in zip(self.layers, state["layers"]):
            history = torch.cat([past, x], dim=1)
            new_cache.append(history)
            x = layer(x, history, None, memory, memory_mask)
        return self.output(self.final_norm(x[:, 0])), {"layers": new_cache}


__all__ = [
    "FeedForward",
    "MultiHeadAttention",
    "PositionalEncoding",
    "TransformerDecoder",
    "TransformerEncoder",
    "sinusoid_table",
]
