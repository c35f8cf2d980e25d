"""Encoder-decoder attentions of the LAS family (kind ``attention``).

Every attention subclasses :class:`Attention` and is built by its decoder with
``query_dim`` (decoder state size) and ``key_dim`` (encoder output size) provided:

``forward(query (B, Lq, Dq), keys (B, T, Dk), values (B, T, Dk), mask (B, T) bool True=valid,
state=None) -> (context (B, Lq, output_dim), weights (B, heads, Lq, T), new_state)``

``output_dim`` is the size of the context vectors (for the built-ins: ``attention_dim``, which
defaults to ``query_dim``); the decoder sizes its layers after it. ``state`` carries what an
attention needs from the previous decoder step (the previous alignment for location-aware
attention); it is ``None`` at the first step and stateless attentions return ``None``.
Masked positions get exactly zero weight, so padding never changes a context vector.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.registry import register


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` that gives exactly 0 where ``mask`` is False (and 0, not NaN, in a
    row with no valid position)."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim).masked_fill(~mask, 0.0)


class Attention(nn.Module):
    """Base class of encoder-decoder attentions; subclass it to add one.

    Subclasses set ``self.output_dim`` (context size) in ``__init__`` and implement ``forward``
    with the signature in the module docstring. Set the class attribute ``stepwise = True``
    when the attention needs the previous step's alignment: decoders then call it one query
    at a time (or it loops itself over ``Lq``) and keep ``new_state`` between calls.

    >>> from kospeech.registry import register
    >>> @register("attention", "dot")
    ... class DotAttention(Attention):
    ...     def __init__(self, *, query_dim: int, key_dim: int) -> None:
    ...         super().__init__()
    ...         self.output_dim = key_dim
    ...     def forward(self, query, keys, values, mask, state=None):
    ...         w = masked_softmax(query @ keys.transpose(1, 2), mask[:, None, :])
    ...         return w @ values, w[:, None], None
    """

    stepwise: bool = False
    #: True when ``forward`` also takes a per-query mask (B, Lq, T) besides the (B, T) one: what a
    #: self-attention needs to hide later chunks from each frame (the Conformer's chunk_size)
    accepts_query_mask: bool = False
    output_dim: int
    num_heads: int = 1

    @property
    def out_dim(self) -> int:
        """Old spelling of ``output_dim``, read and set with a warning for a while."""
        _warn_out_dim(self)
        return self.output_dim

    @out_dim.setter
    def out_dim(self, value: int) -> None:
        _warn_out_dim(self)
        self.output_dim = value

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        raise NotImplementedError


def _warn_out_dim(attention: nn.Module) -> None:
    warnings.warn(
        f"attention {type(attention).__qualname__}.out_dim is deprecated; write output_dim",
        FutureWarning,
        stacklevel=3,
    )


def attention_output_dim(attention: nn.Module, default: int | None = None) -> int:
    """Context size of a registered attention (``output_dim`` by the attention contract).

    An attention that only sets ``out_dim`` (the old spelling) is read with a warning; one
    that sets neither has ``default``.
    """
    if hasattr(attention, "output_dim"):
        return int(attention.output_dim)
    if hasattr(attention, "out_dim"):
        _warn_out_dim(attention)
        return int(attention.out_dim)
    if default is None:
        raise ConfigError(f"attention {type(attention).__qualname__} sets no output_dim (its context size)")
    return default


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, H*d) -> (B, H, L, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) -> (B, L, H*d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _check_heads(name: str, attention_dim: int, num_heads: int) -> None:
    if num_heads < 1 or attention_dim % num_heads:
        raise ConfigError(
            f"attention '{name}': attention_dim {attention_dim} must be a multiple of num_heads {num_heads}"
        )


@register("attention", "scaled_dot")
class ScaledDotAttention(Attention):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017), as KoSpeech's LAS uses it.

    Queries and encoder outputs are projected to ``attention_dim`` and split into heads; as in
    KoSpeech, one projection (``value_proj``) serves keys and values unless
    ``separate_key_proj`` adds a ``key_proj``. ``output_dim = attention_dim``: the concatenated
    heads, with no output projection (the speller mixes context and state itself).

    Args:
        num_heads: heads; ``attention_dim`` must divide by it.
        attention_dim: projection size; ``None`` uses ``query_dim``.
        separate_key_proj: give keys their own projection (Transformer style).
        dropout: dropout on the attention weights during training.
    """

    def __init__(
        self,
        *,
        query_dim: int,
        key_dim: int,
        num_heads: int = 8,
        attention_dim: int | None = None,
        separate_key_proj: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        attention_dim = attention_dim or query_dim
        _check_heads("scaled_dot", attention_dim, num_heads)
        self.num_heads = num_heads
        self.output_dim = attention_dim
        self.scale = 1.0 / math.sqrt(attention_dim // num_heads)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.value_proj = nn.Linear(key_dim, attention_dim)
        self.key_proj = nn.Linear(key_dim, attention_dim) if separate_key_proj else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        h = self.num_heads
        q = _split_heads(self.query_proj(query), h)
        v = _split_heads(self.value_proj(values), h)
        if self.key_proj is not None:
            k = _split_heads(self.key_proj(keys), h)
        else:
            k = v if keys is values else _split_heads(self.value_proj(keys), h)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale  # (B, H, Lq, T)
        weights = masked_softmax(scores, mask[:, None, None, :])
        attn = self.dropout(weights) if self.dropout is not None else weights
        return _merge_heads(torch.matmul(attn, v)), weights, None


class _ScoredAttention(Attention):
    """Base of the attentions that score each head as ``w·tanh(W s_i + V h_j + ... + b)``
    (``additive``, ``location_aware``): queries (with the bias ``b``), keys (without) and
    values are projected to ``attention_dim`` and split into heads."""

    def __init__(self, name: str, *, query_dim: int, key_dim: int, num_heads: int, attention_dim: int | None) -> None:
        super().__init__()
        attention_dim = attention_dim or query_dim
        _check_heads(name, attention_dim, num_heads)
        self.num_heads = num_heads
        self.output_dim = attention_dim
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.key_proj = nn.Linear(key_dim, attention_dim, bias=False)
        self.value_proj = nn.Linear(key_dim, attention_dim)

    def _score_vector(self) -> nn.Parameter:
        """A new per-head ``w`` (heads, d); subclasses create it after their own layers."""
        d = self.output_dim // self.num_heads
        w = nn.Parameter(torch.empty(self.num_heads, d))
        nn.init.normal_(w, std=d**-0.5)
        return w

    def _project(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> q (B, H, Lq, d), k (B, H, T, d), v (B, H, T, d)."""
        h = self.num_heads
        k = _split_heads(self.key_proj(keys), h)
        v = _split_heads(self.value_proj(values), h)
        return _split_heads(self.query_proj(query), h), k, v


@register("attention", "location_aware")
class LocationAwareAttention(_ScoredAttention):
    """Multi-head location-aware attention (Chorowski et al. 2015, "Attention-based models for
    speech recognition"): each head scores ``w·tanh(W s_i + V h_j + U f_ij + b)`` where
    ``f_i = F * alpha_{i-1}`` convolves the head's previous alignment, so the alignment moves
    forward monotonically instead of jumping to similar-sounding frames.

    The state is the previous alignment (B, heads, T); at the first step it is uniform over
    the valid frames. With ``Lq > 1`` queries the attention steps through them itself.
    ``output_dim = attention_dim`` (per-head contexts over projected values, concatenated).

    Args:
        num_heads: heads (1 is the paper's single-head attention).
        attention_dim: projection size; ``None`` uses ``query_dim``.
        conv_channels: location filters per head (the paper's k = 10).
        conv_kernel_size: width in frames of the location filters (odd).
        smoothing: normalise with sigmoid instead of softmax (the paper's "smoothing"),
            which spreads the alignment over more frames.
    """

    stepwise = True

    def __init__(
        self,
        *,
        query_dim: int,
        key_dim: int,
        num_heads: int = 8,
        attention_dim: int | None = None,
        conv_channels: int = 10,
        conv_kernel_size: int = 31,
        smoothing: bool = False,
    ) -> None:
        super().__init__(
            "location_aware", query_dim=query_dim, key_dim=key_dim, num_heads=num_heads, attention_dim=attention_dim
        )
        if conv_kernel_size % 2 == 0:
            raise ConfigError(f"attention 'location_aware': conv_kernel_size must be odd, got {conv_kernel_size}")
        self.smoothing = smoothing
        self.loc_conv = nn.Conv1d(
            num_heads, num_heads * conv_channels, conv_kernel_size, padding=conv_kernel_size // 2,
            groups=num_heads, bias=False,
        )
        self.loc_proj = nn.Linear(conv_channels, self.output_dim // num_heads, bias=False)
        self.score_proj = self._score_vector()

    def _initial_alignment(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        m = mask.to(dtype)
        align = m / m.sum(-1, keepdim=True).clamp(min=1.0)
        return align[:, None, :].expand(-1, self.num_heads, -1)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        b, t, _ = keys.shape
        h = self.num_heads
        q_all, k, v = self._project(query, keys, values)
        prev = self._initial_alignment(mask, keys.dtype) if state is None else state
        valid = mask[:, None, :]
        contexts, all_weights = [], []
        for i in range(query.size(1)):  # steps over target tokens, each needs the previous alignment
            loc = self.loc_conv(prev).view(b, h, -1, t).transpose(-1, -2)  # (B, H, T, C)
            energy = torch.tanh(k + q_all[:, :, i : i + 1] + self.loc_proj(loc))  # (B, H, T, d)
            scores = torch.einsum("bhtd,hd->bht", energy, self.score_proj)
            if self.smoothing:
                w = torch.sigmoid(scores).masked_fill(~valid, 0.0)
                w = w / w.sum(-1, keepdim=True).clamp(min=1e-8)
            else:
                w = masked_softmax(scores, valid)
            contexts.append(torch.einsum("bht,bhtd->bhd", w, v))
            all_weights.append(w)
            prev = w
        context = torch.stack(contexts, dim=2)  # (B, H, Lq, d)
        return _merge_heads(context), torch.stack(all_weights, dim=2), prev


@register("attention", "additive")
class AdditiveAttention(_ScoredAttention):
    """Additive (Bahdanau et al. 2015) attention: ``w·tanh(W s_i + V h_j + b)`` per head.

    Content-only, so all queries are scored at once; they are processed in chunks to bound the
    (B, Lq, T, attention_dim) energy tensor. ``output_dim = attention_dim``.

    Args:
        num_heads: heads (1 is the original).
        attention_dim: projection size; ``None`` uses ``query_dim``.
        max_chunk_elements: upper bound on the energy tensor's size per chunk of queries.
    """

    def __init__(
        self,
        *,
        query_dim: int,
        key_dim: int,
        num_heads: int = 1,
        attention_dim: int | None = None,
        max_chunk_elements: int = 1 << 24,
    ) -> None:
        super().__init__(
            "additive", query_dim=query_dim, key_dim=key_dim, num_heads=num_heads, attention_dim=attention_dim
        )
        self.max_chunk_elements = max_chunk_elements
        self.score_proj = self._score_vector()

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        b, t, _ = keys.shape
        q, k, v = self._project(query, keys, values)
        chunk = max(1, self.max_chunk_elements // max(1, b * t * self.output_dim))
        scores = []
        for start in range(0, q.size(2), chunk):
            energy = torch.tanh(q[:, :, start : start + chunk, None, :] + k[:, :, None, :, :])  # (B,H,l,T,d)
            scores.append(torch.einsum("bhltd,hd->bhlt", energy, self.score_proj))
        weights = masked_softmax(torch.cat(scores, dim=2), mask[:, None, None, :])
        context = torch.matmul(weights, v)
        return _merge_heads(context), weights, None

