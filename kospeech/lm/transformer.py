"""A Transformer token LM (kind ``lm``, name ``transformer``), for shallow fusion; ESPnet's ``TransformerLM``.

ESPnet's KsponSpeech recipe decodes with a 16 x 512 Transformer LM (8 heads, FF 2048, embedding
128, no positional encoding): tokens are embedded at ``embed_dim``, projected to ``d_model``, and
read by causal self-attention layers (pre-norm). The layers are the Transformer encoder's
(:mod:`kospeech.nn.transformer`); only the causal masking and the fusion state are new here.

Fusion state: each row's count of tokens read ``(N,)`` and the keys and values of every layer
for them ``(N, layers, 2, L, d_model)`` (a key/value cache), so a step costs one token's
worth of computation whatever the history. ``L`` covers the longest history in the batch and
grows in chunks: a search pads an older state with zeros where it mixes rows of two steps
(:func:`kospeech.search.where_state`); a row never attends beyond its own count.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.errors import ConfigError
from kospeech.lm.model import TokenLM
from kospeech.nn.mask import causal_mask
from kospeech.nn.transformer import TransformerEncoderLayer, projection, sinusoid_table
from kospeech.registry import register
from kospeech.text.special import PAD_ID

TransformerLMState = tuple[torch.Tensor, torch.Tensor]  # lengths (N,), key/value cache (N, layers, 2, L, d_model)


class _CausalLayer(TransformerEncoderLayer):
    """The encoder's pre-norm layer, its self-attention masked causally instead of by length."""

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, None, causal))
        return x + self.drop(self.ff(self.norm2(x)))


@register("lm", "transformer")
class TransformerLM(TokenLM):
    """Embedding -> linear to ``d_model`` -> causal self-attention layers -> projection to the vocabulary.

    Args:
        vocab_size: size of the tokenizer's vocabulary (specials included).
        embed_dim: token embedding size (ESPnet's ``embed_unit``; 128 in its KsponSpeech LM).
        d_model: attention width (``att_unit``; 512).
        num_heads: attention heads (8).
        ff_dim: feed-forward inner size (2048).
        num_layers: self-attention layers (16).
        dropout: dropout in every layer (training only).
        pos_enc: ``sinusoidal`` positions, or ``none`` (ESPnet's LM default: the causal mask alone
            lets the layers infer order).
    """

    name = "transformer"
    CHUNK = 32  # fusion cache positions added at a time

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int = 128,
        d_model: int = 512,
        num_heads: int = 8,
        ff_dim: int = 2048,
        num_layers: int = 16,
        dropout: float = 0.1,
        pos_enc: str = "sinusoidal",
    ) -> None:
        super().__init__()
        if pos_enc not in ("sinusoidal", "none"):
            raise ConfigError(f"lm transformer: pos_enc must be 'sinusoidal' or 'none', got {pos_enc!r}")
        self.vocab_size = vocab_size
        self.hparams = {"embed_dim": embed_dim, "d_model": d_model, "num_heads": num_heads, "ff_dim": ff_dim,
                        "num_layers": num_layers, "dropout": dropout, "pos_enc": pos_enc}
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.input = projection(embed_dim, d_model)
        self.d_model = d_model
        self.pos_enc = pos_enc
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            _CausalLayer(d_model, num_heads, ff_dim, dropout, pre_norm=True) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, None]:
        """tokens (B, L), right-padded -> logits (B, L, V); position i sees tokens 0..i only."""
        L = tokens.size(1)
        x = self.input(self.embed(tokens))
        if self.pos_enc == "sinusoidal":
            x = x + sinusoid_table(torch.arange(L, device=tokens.device), self.d_model).to(x.dtype)[None]
        x = self.dropout(x)
        causal = causal_mask(L, tokens.device)
        for layer in self.layers:
            x = layer(x, causal)
        return self.proj(self.norm(x)), None

    def step(self, tokens: torch.Tensor, state: TransformerLMState | None) -> tuple[torch.Tensor, TransformerLMState]:
        """tokens (N,) -> next-token log-probabilities (N, V) and the new state (batched fusion).

        The same computation as :meth:`forward` for the last position, with the earlier
        positions' keys and values taken from the cache.
        """
        N, d = tokens.size(0), self.d_model
        if state is None:
            lens = torch.zeros(N, dtype=torch.long, device=tokens.device)
            cache = torch.zeros(N, len(self.layers), 2, 0, d, device=tokens.device)
        else:
            lens, cache = state
        width = cache.size(3)
        if int(lens.max()) >= width:  # room for CHUNK more tokens
            width = int(lens.max()) + self.CHUNK
            cache = F.pad(cache, (0, 0, 0, width - cache.size(3)))
        else:
            cache = cache.clone()  # the caller may still hold the old state
        x = self.input(self.embed(tokens.unsqueeze(1)))  # (N, 1, d)
        if self.pos_enc == "sinusoidal":
            x = x + sinusoid_table(lens, d).to(x.dtype).unsqueeze(1)
        x = self.dropout(x)
        visible = (torch.arange(width, device=tokens.device)[None, :] <= lens[:, None])[:, None, None, :]
        at = lens.view(N, 1, 1).expand(N, 1, d)
        for i, layer in enumerate(self.layers):
            attn = layer.attn
            h = layer.norm1(x)
            keys = cache[:, i, 0].scatter_(1, at, attn.k(h).to(cache.dtype))
            values = cache[:, i, 1].scatter_(1, at, attn.v(h).to(cache.dtype))
            ctx = F.scaled_dot_product_attention(
                attn._split(attn.q(h)), attn._split(keys.to(h.dtype)), attn._split(values.to(h.dtype)),
                attn_mask=visible,
            )
            x = x + layer.drop(attn.out(ctx.transpose(1, 2).reshape(N, 1, d)))
            x = x + layer.drop(layer.ff(layer.norm2(x)))
        logits = self.proj(self.norm(x[:, 0]))
        return F.log_softmax(logits.float(), dim=-1), (lens + 1, cache)
