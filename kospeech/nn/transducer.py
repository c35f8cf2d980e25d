"""Transducer parts (Graves, 2012): the prediction network and the joiner.

``decoder/transducer`` is the prediction network, a language-model-like LSTM over the tokens
emitted so far, started from ``<blank>``. :class:`Joiner` combines one encoder frame with one
prediction output into a distribution over the vocabulary (``<blank>`` included).

The LSTM state is kept batch first, (N, layers, hidden), so a search can reorder hypotheses
with the generic ``select_state``.
"""

from __future__ import annotations

import torch
from torch import nn

from kospeech.registry import register
from kospeech.text.special import BLANK_ID

PredictorState = tuple[torch.Tensor, torch.Tensor]


@register("decoder", "transducer")
class PredictionNetwork(nn.Module):
    """Embedding + LSTM over previous non-blank tokens.

    Args:
        vocab_size: number of token ids (provided by the model).
        embed_dim: token embedding size.
        hidden_dim: LSTM size, also the output size.
        num_layers: stacked LSTM layers.
        dropout: on the embedding and between LSTM layers.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 320,
        num_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embed_dim, hidden_dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers

    @property
    def output_dim(self) -> int:
        return self.hidden_dim

    def forward(self, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: targets (B, U) without blank -> (B, U + 1, hidden); row 0 follows ``<blank>``.

        Padding ids after a target only feed later positions, which the loss ignores, so no
        packing is needed.
        """
        start = torch.full((targets.size(0), 1), BLANK_ID, dtype=targets.dtype, device=targets.device)
        out, _ = self.lstm(self.drop(self.embed(torch.cat([start, targets], dim=1))))
        return out

    def init_state(self, batch_size: int, device: torch.device) -> PredictorState:
        """Zero (h, c), each (N, layers, hidden)."""
        zeros = torch.zeros(batch_size, self.num_layers, self.hidden_dim, device=device)
        return zeros, zeros.clone()

    def step(self, tokens: torch.Tensor, state: PredictorState) -> tuple[torch.Tensor, PredictorState]:
        """tokens (N,) -> output (N, hidden) and the new state."""
        h, c = state
        out, (h, c) = self.lstm(
            self.drop(self.embed(tokens[:, None])), (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
        )
        return out[:, 0], (h.transpose(0, 1), c.transpose(0, 1))


class Joiner(nn.Module):
    """``out(tanh(W_e enc + W_p pred))``: the additive joint network of Graves (2013).

    Args:
        encoder_dim: size of an encoder frame.
        predictor_dim: size of a prediction-network output.
        joint_dim: size of the shared hidden layer.
        vocab_size: output size (``<blank>`` included).
    """

    def __init__(self, *, encoder_dim: int, predictor_dim: int, joint_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(encoder_dim, joint_dim)
        self.pred_proj = nn.Linear(predictor_dim, joint_dim)
        self.output = nn.Linear(joint_dim, vocab_size)

    def forward(self, encoder_out: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        """(B, T, H), (B, U+1, P) -> logits (B, T, U+1, V), for the transducer loss."""
        joint = self.enc_proj(encoder_out)[:, :, None, :] + self.pred_proj(predictor_out)[:, None, :, :]
        return self.output(torch.tanh(joint))

    def step(self, encoder_frame: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        """(N, H), (N, P) -> logits (N, V), for decoding."""
        return self.output(torch.tanh(self.enc_proj(encoder_frame) + self.pred_proj(predictor_out)))
