"""The contract between models, the trainer and the searches.

Every registered model subclasses :class:`ASRModel`. Training calls ``forward``; searches
call only the decoding hooks below, so each search is written once and works for every model
that has the heads it needs (``has_ctc``, ``has_decoder``, ``is_transducer``).

Shapes are batch first. ``N`` in the step hooks is the number of live hypotheses (batch x
beam); a search reorders them with ``select_state``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

State = Any  # a pytree (tensor, tuple, list, dict or None) whose tensors have the hypothesis axis first


def map_state(state: State, fn: Any) -> State:
    """Apply ``fn`` to every tensor of a state pytree."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(map_state(v, fn) for v in state)
    return state


class ASRModel(nn.Module):
    """Base of every model: ``forward`` for training, hooks for decoding.

    Constructors take keyword-only arguments (their YAML schema) and always ``input_dim``
    (feature size) and ``vocab_size``, which the trainer provides from the frontend and the
    tokenizer.
    """

    has_ctc: bool = False
    has_decoder: bool = False
    is_transducer: bool = False

    # ---- training -----------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        targets: torch.Tensor,
        target_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """features (B, T, D), targets (B, L) padded with ``<pad>`` and without sos/eos.

        Returns ``{"loss": scalar, **parts}``; parts (``ctc``, ``att``, ``transducer``) are
        detached, for logging.
        """
        raise NotImplementedError

    # ---- decoding hooks -----------------------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D), (B,) -> encoder output (B, T', H) and its lengths (B,)."""
        raise NotImplementedError

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        """(B, T', H) -> (B, T', V) log-probabilities of the CTC head."""
        raise NotImplementedError(f"{type(self).__name__} has no CTC head")

    def init_decoder_state(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> State:
        """Attention decoder state before the first step, one entry per row of ``encoder_out``."""
        raise NotImplementedError(f"{type(self).__name__} has no attention decoder")

    def decoder_step(
        self,
        tokens: torch.Tensor,
        state: State,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
    ) -> tuple[torch.Tensor, State]:
        """One attention-decoder step.

        tokens (N,) are the last emitted ids (``<sos>`` at the first step); ``encoder_out``
        (N, T', H) is already expanded to the hypotheses. Returns (N, V) log-probabilities of
        the next token and the new state.
        """
        raise NotImplementedError(f"{type(self).__name__} has no attention decoder")

    def predictor_init_state(self, batch_size: int, device: torch.device) -> State:
        """Transducer prediction-network state before any token."""
        raise NotImplementedError(f"{type(self).__name__} is not a transducer")

    def predictor_step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """tokens (N,) (``<blank>`` id at start) -> prediction output (N, P) and new state."""
        raise NotImplementedError(f"{type(self).__name__} is not a transducer")

    def joint(self, encoder_frame: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        """(N, H), (N, P) -> (N, V) log-probabilities of the joiner."""
        raise NotImplementedError(f"{type(self).__name__} is not a transducer")

    def select_state(self, state: State, index: torch.Tensor) -> State:
        """Reorder or repeat hypotheses: keep rows ``index`` (LongTensor) of every tensor."""
        return map_state(state, lambda t: t.index_select(0, index))


@torch.no_grad()
def min_input_frames(model: nn.Module, input_dim: int, device: torch.device | str = "cpu", limit: int = 4096) -> int:
    """The fewest feature frames the model's encoder accepts (7 for x4 convolution subsampling).

    Probed by encoding zeros (binary search), so it holds for any encoder, plugins included.
    Training leaves shorter utterances out (``data.min_frames``); transcription pads them.
    """
    from kospeech.errors import ConfigError

    def encodes(frames: int) -> bool:
        try:
            x = torch.zeros(1, frames, input_dim, device=device)
            _, lens = model.encode(x, torch.tensor([frames], device=device))
            return int(lens[0]) > 0
        except (RuntimeError, ValueError):
            return False

    was_training = model.training
    model.eval()  # batch norm in training mode rejects a batch of one frame
    try:
        lo, hi = 1, 1
        while not encodes(hi):
            lo, hi = hi, hi * 2
            if hi > limit:
                raise ConfigError(f"the model's encoder rejects every input length up to {limit} frames")
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if encodes(mid) else (mid + 1, hi)
    finally:
        model.train(was_training)
    return hi


def model_head(model: nn.Module) -> str:
    """The head an export and a stream decode a model with: ``transducer``, ``ctc`` or
    ``attention`` ("" when it has none), the first of those it has: a joint CTC/attention model
    exports and streams its CTC branch."""
    if getattr(model, "is_transducer", False):
        return "transducer"
    if getattr(model, "has_ctc", False):
        return "ctc"
    return "attention" if getattr(model, "has_decoder", False) else ""


def chunk_frames(model: nn.Module) -> int:
    """The chunk size in encoder frames that a model's chunk-wise attention uses when decoding (0:
    full context): every module with a ``decode_chunk_frames`` (the Conformer encoder) counts, and an
    ensemble of chunk sizes gets their least common multiple, on which all their chunks start."""
    sizes = {int(m.decode_chunk_frames) for m in model.modules() if hasattr(m, "decode_chunk_frames")} - {0}
    return math.lcm(*sizes) if sizes else 0


def set_chunk_size(model: nn.Module, chunk_size: int, source: str = "the model") -> None:
    """Decode ``model`` with chunk-wise attention of ``chunk_size`` encoder frames (0: full context),
    on every encoder that has it (``set_decode_chunk_size``); a model with none is refused."""
    from kospeech.errors import ConfigError

    encoders = [m for m in model.modules() if hasattr(m, "set_decode_chunk_size")]
    if not encoders:
        raise ConfigError(f"chunk_size: {source} has no encoder with chunk-wise attention (a conformer encoder has)")
    for encoder in encoders:
        encoder.set_decode_chunk_size(chunk_size)
