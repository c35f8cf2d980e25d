"""The neural token LMs' shared parts, and the LSTM LM (kind ``lm``, name ``lstm``), for shallow fusion.

It shares the tokenizer (and so the special ids) with the acoustic model: a sentence is read
as ``<sos> w1 .. wn`` and predicts ``w1 .. wn <eos>``. The searches call :meth:`LSTMLM.step`
once per output step for all live hypotheses at once, so its state keeps the hypothesis axis
first like every decoder state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kospeech.errors import ConfigError
from kospeech.lm.base import FusionLM
from kospeech.metadata import check_metadata, make_metadata
from kospeech.registry import build, register
from kospeech.text.special import EOS_ID, PAD_ID, SOS_ID
from kospeech.torch_files import atomic_save

LMState = tuple[torch.Tensor, torch.Tensor]  # h, c: (N, layers, hidden) each


class TokenLM(nn.Module, FusionLM):
    """A neural LM over token ids: ``forward(tokens (B, L)) -> (logits (B, L, V), state)``.

    Subclasses set ``vocab_size`` and ``hparams`` (their constructor options, saved in
    ``lm.pt``) and implement ``forward`` and ``step``; training (``nll``) and the first fusion
    step are shared.
    """

    name = ""
    vocab_size: int
    hparams: dict[str, Any]

    def start(self, batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, Any]:
        """Log-probabilities of the first token (after ``<sos>``) and the state that follows."""
        return self.step(torch.full((batch_size,), SOS_ID, dtype=torch.long, device=device), None)

    def nll(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed negative log-likelihood of ``<sos> targets <eos>`` and the number of predicted tokens.

        targets (B, L) padded with ``<pad>``, without sos/eos.
        """
        B = targets.size(0)
        sos = torch.full((B, 1), SOS_ID, dtype=torch.long, device=targets.device)
        inputs = torch.cat([sos, targets], 1)
        outputs = torch.cat([targets, torch.full((B, 1), PAD_ID, dtype=torch.long, device=targets.device)], 1)
        inside = torch.arange(outputs.size(1), device=targets.device)[None, :] < target_lengths[:, None]
        outputs = outputs.masked_fill(~inside, PAD_ID).scatter(1, target_lengths.unsqueeze(1), EOS_ID)
        logits, _ = self(inputs)
        loss = F.cross_entropy(logits.reshape(-1, self.vocab_size).float(), outputs.reshape(-1),
                               ignore_index=PAD_ID, reduction="sum")
        return loss, (target_lengths + 1).sum()


@register("lm", "lstm")
class LSTMLM(TokenLM):
    """Embedding -> stacked LSTM -> projection to the vocabulary.

    Args:
        vocab_size: size of the tokenizer's vocabulary (specials included).
        embed_dim: token embedding size.
        hidden: LSTM hidden size.
        layers: number of LSTM layers.
        dropout: dropout between layers and before the projection (training only).
    """

    name = "lstm"

    def __init__(
        self, *, vocab_size: int, embed_dim: int = 256, hidden: int = 512, layers: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hparams = {"embed_dim": embed_dim, "hidden": hidden, "layers": layers,
                        "dropout": dropout}
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(hidden, vocab_size)
        self.layers = layers
        self.hidden = hidden

    def forward(self, tokens: torch.Tensor, state: LMState | None = None) -> tuple[torch.Tensor, LMState]:
        """tokens (B, L) -> logits (B, L, V) and the final state."""
        hx = None if state is None else (state[0].transpose(0, 1).contiguous(), state[1].transpose(0, 1).contiguous())
        out, (h, c) = self.lstm(self.embed(tokens), hx)
        return self.proj(self.dropout(out)), (h.transpose(0, 1), c.transpose(0, 1))

    def init_state(self, batch_size: int, device: torch.device | str = "cpu") -> LMState:
        z = torch.zeros(batch_size, self.layers, self.hidden, device=device)
        return z, z.clone()

    def step(self, tokens: torch.Tensor, state: LMState | None) -> tuple[torch.Tensor, LMState]:
        """tokens (N,) -> next-token log-probabilities (N, V) and the new state (batched fusion)."""
        if state is None:
            state = self.init_state(tokens.size(0), tokens.device)
        logits, state = self(tokens.unsqueeze(1), state)
        return F.log_softmax(logits[:, 0].float(), dim=-1), state


def save_lm(lm: TokenLM, path: str | Path, **extra: Any) -> Path:
    """Write ``lm.pt``: registry name and options, weights, vocabulary size, the metadata block
    (plus ``extra`` such as perplexity). Plain tensors and data only: it loads with
    ``weights_only=True``."""
    return atomic_save({"config": {"name": lm.name, **lm.hparams}, "model": lm.state_dict(),
                        "vocab_size": lm.vocab_size, "metadata": make_metadata("lm"), **extra}, path)


def load_neural_lm(path: str | Path, device: torch.device | str = "cpu") -> TokenLM:
    """Rebuild an LM saved by :func:`save_lm` (any registered neural LM), in eval mode on ``device``."""
    path = Path(path)
    try:
        # weights_only: an LM file someone shared is data, never code (a pickle could run anything)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # foreign pickles (refused before anything runs), truncated files
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ConfigError(
            f"{path} cannot be read as an LM ({type(err).__name__}: {first}); only files written by "
            f"`kospeech lm train` load, and they never run code"
        ) from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise ConfigError(f"{path} is not an LM written by `kospeech lm train` (no config/model)")
    check_metadata(ckpt.get("metadata"), str(path))
    cfg = dict(ckpt["config"])
    cfg.setdefault("name", "lstm")  # files written before LMs were a registry kind
    vocab_size = cfg.pop("vocab_size", ckpt.get("vocab_size"))
    try:
        lm = build("lm", cfg, path=f"{path}:config", vocab_size=vocab_size)
        lm.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ConfigError(f"{path} is not an LM written by `kospeech lm train`: {err}") from None
    return lm.to(device).eval()
