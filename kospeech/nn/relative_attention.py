"""Multi-head attention with relative positions (Transformer-XL, Dai et al. 2019), as in the Conformer.

Registered as ``attention/relative_multi_head``. The score between query ``i`` and key ``j`` is

    (q_i + u) . k_j  +  (q_i + v) . W_p p(i - j)

where ``p(r)`` is a sinusoid of the signed offset ``r`` and ``u``, ``v`` are learned per-head
biases. Because only offsets enter, a frame's output does not depend on how long the padded
batch is, and the encoder generalises to lengths it never saw in training.

Offsets are looked up with a gather rather than the "pad and reshape" shift trick: it is the
same cost, works for any query/key lengths, and is obvious to read.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.attention import Attention, masked_softmax
from kospeech.nn.transformer import sinusoid_table
from kospeech.registry import register


class RelativePositionalEncoding(nn.Module):
    """Sinusoids for every offset ``i - j`` between ``Lq`` queries and ``T`` keys.

    Returns a table (Lq + T - 1, dim) whose row ``k`` holds offset ``Lq - 1 - k`` (from the
    largest positive offset down to ``-(T - 1)``); nothing is stored, so any length works.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
        offsets = torch.arange(query_len - 1, -key_len, -1, device=device)
        return sinusoid_table(offsets, self.dim)


@register("attention", "relative_multi_head")
class RelativeMultiHeadAttention(Attention):
    """Multi-head self-attention with Transformer-XL relative positions (Conformer's MHSA).

    Args:
        query_dim: size of the queries; also the output size (provided by the parent).
        key_dim: size of keys and values (provided by the parent; equal to ``query_dim`` in
            self-attention).
        num_heads: attention heads.
        attention_dim: width of the projected queries/keys/values; defaults to ``query_dim``.
        dropout: on the attention weights.

    ``forward(query, keys, values, mask, state=None) -> (context, weights, None)`` follows the
    attention contract: ``mask`` (B, T) is True at real keys; ``weights`` are (B, heads, Lq, T).
    It also takes a per-query ``mask`` (B, Lq, T) (``accepts_query_mask``): the Conformer's
    chunk-wise attention for streaming, which hides later chunks from each query.
    """

    accepts_query_mask = True

    def __init__(
        self,
        *,
        query_dim: int,
        key_dim: int,
        num_heads: int = 4,
        attention_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        attention_dim = query_dim if attention_dim is None else attention_dim
        if attention_dim % num_heads:
            raise ConfigError(
                f"attention 'relative_multi_head': attention_dim ({attention_dim}) must be divisible by "
                f"num_heads ({num_heads})"
            )
        self.num_heads = num_heads
        self.d_k = attention_dim // num_heads
        self.q = nn.Linear(query_dim, attention_dim)
        self.k = nn.Linear(key_dim, attention_dim)
        self.v = nn.Linear(key_dim, attention_dim)
        self.out = nn.Linear(attention_dim, query_dim)
        self.pos_proj = nn.Linear(attention_dim, attention_dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.pos_enc = RelativePositionalEncoding(attention_dim)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = query_dim

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.d_k).transpose(1, 2)  # (B, H, t, d_k)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        state: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        b, lq, _ = query.shape
        t = keys.size(1)
        q = self.q(query).view(b, lq, self.num_heads, self.d_k)  # (B, Lq, H, d_k)
        k = self._split(self.k(keys))
        v = self._split(self.v(values))
        pos = self.pos_proj(self.pos_enc(lq, t, query.device).to(query.dtype))  # (Lq+T-1, A)
        pos = pos.view(-1, self.num_heads, self.d_k).transpose(0, 1)  # (H, Lq+T-1, d_k)

        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))  # (B, H, Lq, T)
        by_offset = torch.matmul((q + self.pos_bias_v).transpose(1, 2), pos.transpose(-2, -1))  # (B,H,Lq,Lq+T-1)
        # row k of the table is offset Lq-1-k, so pair (i, j) with offset i-j sits at column Lq-1-i+j
        i = torch.arange(lq, device=query.device)[:, None]
        j = torch.arange(t, device=query.device)[None, :]
        index = (lq - 1 - i + j).expand(b, self.num_heads, lq, t)
        position = torch.gather(by_offset, -1, index)

        scores = (content + position) / math.sqrt(self.d_k)
        if mask is not None and mask.dim() == 3:
            # per query (chunk-wise attention): a padded query may see no real key at all, so its
            # row gives zeros instead of a softmax over nothing (NaN)
            weights = masked_softmax(scores, mask[:, None, :, :])
        else:
            if mask is not None:
                scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
            weights = torch.softmax(scores, dim=-1)
        context = torch.matmul(self.dropout(weights), v)  # (B, H, Lq, d_k)
        context = context.transpose(1, 2).reshape(b, lq, self.num_heads * self.d_k)
        return self.out(context), weights, None
