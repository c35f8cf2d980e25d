"""The LAS speller: an attention RNN decoder, registered as ``decoder/rnn``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kospeech.errors import ConfigError
from kospeech.nn.attention import attention_output_dim
from kospeech.nn.rnn_encoder import rnn_class
from kospeech.registry import build, component, register

DecoderState = dict[str, Any]


def _sync_ratio(module: nn.Module, incompatible_keys: Any) -> None:
    """After ``load_state_dict``: refresh the Python copy of the teacher-forcing ratio."""
    module._ratio = float(module.tf_ratio)


@register("decoder", "rnn")
class RNNDecoder(nn.Module):
    """Attention-based recurrent decoder (Chan et al. 2016 "Listen, Attend and Spell"; the
    layout of KoSpeech's speller).

    Each step embeds the previous token, runs the LSTM/GRU stack, attends over the encoder
    output with the RNN output as query, and predicts the next token from
    ``fc2(tanh(fc1([rnn_out; context])))``. With ``input_feeding`` the previous context is also
    fed into the RNN (Luong et al. 2015), which makes every step depend on the last attention.

    Teacher forcing with scheduled sampling (Bengio et al. 2015): during training each input
    token is the reference with probability ``teacher_forcing_ratio``, else the decoder's own
    previous prediction. The ratio starts at ``teacher_forcing_ratio`` and drops by
    ``teacher_forcing_step`` per :meth:`step_teacher_forcing` call, down to
    ``min_teacher_forcing_ratio``; its current value is saved in the state dict.

    Args:
        hidden_dim: RNN size (also the embedding size unless ``embedding_dim`` is set).
        num_layers: stacked RNN layers.
        rnn_type: lstm or gru.
        embedding_dim: token embedding size; ``None`` uses ``hidden_dim``.
        dropout: on embeddings and between RNN layers.
        attention: the attention over encoder outputs (any ``attention`` component).
        input_feeding: feed the previous context vector into the RNN.
        teacher_forcing_ratio: initial probability of feeding the reference token.
        teacher_forcing_step: decrease of the ratio per schedule step.
        min_teacher_forcing_ratio: floor of the ratio.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        encoder_dim: int,
        hidden_dim: int = 512,
        num_layers: int = 2,
        rnn_type: str = "lstm",
        embedding_dim: int | None = None,
        dropout: float = 0.3,
        attention: component("attention", "query_dim", "key_dim") = {"name": "scaled_dot", "num_heads": 8},
        input_feeding: bool = False,
        teacher_forcing_ratio: float = 1.0,
        teacher_forcing_step: float = 0.0,
        min_teacher_forcing_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        for key, value in (("teacher_forcing_ratio", teacher_forcing_ratio),
                           ("min_teacher_forcing_ratio", min_teacher_forcing_ratio)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"decoder 'rnn': {key} must be in [0, 1], got {value}")
        embedding_dim = embedding_dim or hidden_dim
        self.vocab_size = vocab_size
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.rnn_type = rnn_type
        self.input_feeding = input_feeding
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.input_dropout = nn.Dropout(dropout)
        # the attention is built before the RNN to learn its context size, but registered after
        # it, so the module tree reads in data-flow order
        att = build("attention", attention, path="decoder.attention", query_dim=hidden_dim, key_dim=encoder_dim)
        self.context_dim = attention_output_dim(att)
        rnn_input = embedding_dim + (self.context_dim if input_feeding else 0)
        self.rnn = rnn_class(rnn_type, "decoder 'rnn'")(
            rnn_input, hidden_dim, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.attention = att
        self.fc1 = nn.Linear(hidden_dim + self.context_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, vocab_size)
        # the current ratio lives in a buffer, so checkpoints resume the schedule (and averaging
        # tools see only tensors); a Python copy avoids a device sync on every forward
        self.register_buffer("tf_ratio", torch.tensor(float(teacher_forcing_ratio)))
        self._ratio = float(teacher_forcing_ratio)
        self.register_load_state_dict_post_hook(_sync_ratio)
        self.teacher_forcing_step = teacher_forcing_step
        self.min_teacher_forcing_ratio = min_teacher_forcing_ratio

    # ---- scheduled sampling --------------------------------------------------------------
    @property
    def teacher_forcing_ratio(self) -> float:
        """Current probability of feeding the reference token during training."""
        return self._ratio

    @teacher_forcing_ratio.setter
    def teacher_forcing_ratio(self, value: float) -> None:
        self._ratio = float(value)
        self.tf_ratio.fill_(self._ratio)

    def step_teacher_forcing(self) -> float:
        """Advance the schedule by one step; returns the new ratio."""
        self.teacher_forcing_ratio = max(
            self.min_teacher_forcing_ratio, self.teacher_forcing_ratio - self.teacher_forcing_step
        )
        return self.teacher_forcing_ratio

    # ---- training ------------------------------------------------------------------------
    def forward(
        self,
        inputs: torch.Tensor,
        encoder_out: torch.Tensor,
        encoder_mask: torch.Tensor,
    ) -> torch.Tensor:
        """inputs (B, L) starting with ``<sos>``; encoder_out (B, T, H); mask (B, T) True=valid
        -> logits (B, L, V) for the next token at every position."""
        ratio = self.teacher_forcing_ratio if self.training else 1.0
        if ratio >= 1.0 and not self.input_feeding:
            return self._forward_parallel(inputs, encoder_out, encoder_mask)
        return self._forward_stepwise(inputs, encoder_out, encoder_mask, ratio)

    def _forward_parallel(self, inputs: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Full teacher forcing without input feeding: one RNN call over all positions."""
        out, _ = self.rnn(self.input_dropout(self.embedding(inputs)))
        context, _, _ = self.attention(out, enc, enc, mask)
        return self._predict(out, context)

    def _forward_stepwise(
        self, inputs: torch.Tensor, enc: torch.Tensor, mask: torch.Tensor, ratio: float
    ) -> torch.Tensor:
        state = self.init_state(enc, mask)
        steps = []
        tokens = inputs[:, 0]
        for i in range(inputs.size(1)):  # one step per target token
            if i > 0:
                tokens = inputs[:, i]
                if ratio < 1.0:
                    own = steps[-1].argmax(-1)
                    use_ref = torch.rand(tokens.shape, device=tokens.device) < ratio
                    tokens = torch.where(use_ref, tokens, own)
            logits, state = self._step_logits(tokens, state, enc, mask)
            steps.append(logits)
        return torch.stack(steps, dim=1)

    def _predict(self, out: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(torch.cat([out, context], dim=-1))))

    # ---- decoding ------------------------------------------------------------------------
    def init_state(self, encoder_out: torch.Tensor, encoder_mask: torch.Tensor) -> DecoderState:
        """State before the first step; every tensor has the hypothesis axis first."""
        n = encoder_out.size(0)
        zeros = encoder_out.new_zeros(n, self.num_layers, self.hidden_dim)
        state: DecoderState = {"h": zeros, "attention": None}
        if self.rnn_type == "lstm":
            state["c"] = zeros.clone()
        if self.input_feeding:
            state["context"] = encoder_out.new_zeros(n, self.context_dim)
        return state

    def _step_logits(
        self, tokens: torch.Tensor, state: DecoderState, enc: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, DecoderState]:
        x = self.input_dropout(self.embedding(tokens))[:, None, :]  # (N, 1, E)
        if self.input_feeding:
            x = torch.cat([x, state["context"][:, None, :]], dim=-1)
        h = state["h"].transpose(0, 1).contiguous()
        hidden: Any = (h, state["c"].transpose(0, 1).contiguous()) if self.rnn_type == "lstm" else h
        out, hidden = self.rnn(x, hidden)
        context, _, att_state = self.attention(out, enc, enc, mask, state["attention"])
        new_state: DecoderState = {"attention": att_state}
        if self.rnn_type == "lstm":
            new_state["h"], new_state["c"] = hidden[0].transpose(0, 1), hidden[1].transpose(0, 1)
        else:
            new_state["h"] = hidden.transpose(0, 1)
        if self.input_feeding:
            new_state["context"] = context[:, 0]
        return self._predict(out, context)[:, 0], new_state

    def step(
        self,
        tokens: torch.Tensor,
        state: DecoderState,
        encoder_out: torch.Tensor,
        encoder_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, DecoderState]:
        """One decoding step: tokens (N,) -> log-probabilities (N, V) of the next token, new state."""
        logits, state = self._step_logits(tokens, state, encoder_out, encoder_mask)
        return torch.log_softmax(logits.float(), dim=-1), state
