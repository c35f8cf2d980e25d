"""A Transformer token LM (kind ``lm``, name ``transformer``), for shallow fusion; ESPnet's ``TransformerLM``.

ESPnet's KsponSpeech recipe decodes with a 16 x 512 Transformer LM (8 heads, FF 2048, embedding
128, no positional encoding): tokens are embedded at ``embed_dim``, projected to ``d_model``, and
read by causal self-attention layers (pre-norm). The layers are the Transformer encoder's
(:mod:`kospeech.nn.transformer`); only the causal masking and the fusion state are new here.

Fusion state: the tokens read so far, right-padded in a fixed-width window ``(N, context)``
with their counts ``(N,)``, so that a search can keep or reorder rows with ``torch.where`` and
``index_select`` like any other state. Each step runs the layers over the longest history in
the batch and reads the output at each row's last token (no key/value cache: simple, and
exact; a cache would make long outputs faster). Histories longer than the window drop their
oldest tokens.
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

TransformerLMState = tuple[torch.Tensor, torch.Tensor]  # history (N, context), lengths (N,)


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
    context = 512  # tokens of history a fusion state keeps

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
        """tokens (N,) -> next-token log-probabilities (N, V) and the new state (batched fusion)."""
        N = tokens.size(0)
        if state is None:
            hist = torch.full((N, self.context), PAD_ID, dtype=torch.long, device=tokens.device)
            lens = torch.zeros(N, dtype=torch.long, device=tokens.device)
        else:
            hist, lens = state
        full = lens >= self.context  # slide the window of rows that filled it
        if bool(full.any()):
            hist = torch.where(full.unsqueeze(1), torch.roll(hist, -1, 1), hist)
            lens = torch.where(full, lens - 1, lens)
        hist = hist.scatter(1, lens.unsqueeze(1), tokens.unsqueeze(1))
        lens = lens + 1
        width = int(lens.max())
        logits, _ = self(hist[:, :width])
        last = logits.gather(1, (lens - 1).view(N, 1, 1).expand(N, 1, logits.size(-1)))[:, 0]
        return F.log_softmax(last.float(), dim=-1), (hist, lens)
