"""Decoding searches, registered under kind ``search``.

One interface for every search, so the decode CLI, ``transcribe`` and the benchmarks never
care which one runs::

    search = build("search", {"name": "beam", "beam_size": 5}, model=model)
    nbest = search(encoder_out, encoder_lengths)       # list (B) of lists of Hypothesis, best first
    ids = search.decode(features, feature_lengths)     # list (B) of best token ids, no specials

``model`` is provided by the caller (an :class:`kospeech.models.base.ASRModel`); every other
constructor argument is the search's YAML schema (``decode.search`` in a training config).
A search checks at construction that the model has the head it needs (``has_ctc``,
``has_decoder``, ``is_transducer``) and raises a :class:`~kospeech.errors.ConfigError` naming
both otherwise. Searches are batched over utterances (and beams); their loops run over output
steps or encoder frames, never over utterances.

Registered names: ``greedy``, ``beam`` (attention decoder), ``ctc_greedy``,
``ctc_prefix_beam``, ``joint_ctc_attention``, ``attention_rescoring``, ``transducer_greedy``,
``transducer_beam``. Those that accept ``lm`` and ``lm_weight`` add an external LM by shallow
fusion: any LM of kind ``lm`` (``lm.pt`` of an LSTM or Transformer LM, ``lm.arpa`` of an
n-gram, from ``kospeech lm train``) through the one interface of :mod:`kospeech.lm.base`.

This module stays light on purpose (no torch import at module level): it holds only the
shared result type, the base class and small helpers. The prefix bookkeeping that the CTC and
transducer beams share is in :mod:`kospeech.search.common`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kospeech.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from kospeech.lm.base import FusionLM
    from kospeech.models.base import ASRModel


NEG_INF = float("-inf")


@dataclass
class Hypothesis:
    """One decoding result: token ids without specials, its total score and the score parts.

    ``parts`` holds the unweighted components that made up ``score`` (``att``, ``ctc``,
    ``lm``, ``transducer``), for rescoring and for debugging weights.
    """

    tokens: list[int]
    score: float
    parts: dict[str, float] = field(default_factory=dict)


_HEADS = {
    "ctc": ("has_ctc", "a CTC head"),
    "decoder": ("has_decoder", "an attention decoder"),
    "transducer": ("is_transducer", "a transducer (predictor + joiner)"),
}


def require_head(search_name: str, model: Any, head: str) -> None:
    """Fail early, naming the search and the model, when the model lacks a needed head."""
    flag, words = _HEADS[head]
    if not getattr(model, flag, False):
        have = [w for f, w in _HEADS.values() if getattr(model, f, False)] or ["no decoding head"]
        raise ConfigError(
            f"search '{search_name}' needs {words}, but model {type(model).__name__} has "
            f"{', '.join(have)}; choose a search that fits the model (ctc_* for CTC models, "
            f"greedy/beam/joint_ctc_attention/attention_rescoring for attention decoders, "
            f"transducer_* for transducers)"
        )


def default_search(model: Any, *, greedy: bool = False) -> dict[str, Any]:
    """The search for a model when neither the CLI nor the config names one.

    ``greedy`` asks for the cheapest search of the cheapest head (validation CER during
    training); otherwise the strongest search that fits the model's heads (decoding).
    """
    if greedy:
        greedy_by_head = (("has_ctc", "ctc_greedy"), ("has_decoder", "greedy"), ("is_transducer", "transducer_greedy"))
        for flag, name in greedy_by_head:
            if getattr(model, flag, False):
                return {"name": name}
    elif getattr(model, "has_ctc", False) and getattr(model, "has_decoder", False):
        return {"name": "joint_ctc_attention", "beam_size": 5}
    else:
        for flag, cfg in (
            ("has_decoder", {"name": "beam", "beam_size": 5}),
            ("is_transducer", {"name": "transducer_beam", "beam_size": 4}),
            ("has_ctc", {"name": "ctc_prefix_beam", "beam_size": 10}),
        ):
            if getattr(model, flag, False):
                return cfg
    raise ConfigError(f"model {type(model).__name__} has no decoding head (CTC, attention decoder or transducer)")


def check_beam_size(search_name: str, beam_size: int) -> None:
    if beam_size < 1:
        raise ValueError(f"{search_name}: beam_size must be >= 1, got {beam_size}")


class Search:
    """Base of every search: ``__call__`` on encoder output, ``decode`` on features."""

    name = "search"

    def __init__(self, *, model: ASRModel) -> None:
        self.model = model

    def _init_lm(self, lm: str | None, lm_weight: float) -> None:
        """For searches with ``lm`` and ``lm_weight`` arguments: the LM is loaded at first use."""
        self.lm_path = lm
        self.lm_weight = lm_weight
        self._lm: FusionLM | None = None

    def _fusion_lm(self, device: Any) -> FusionLM | None:
        """The shallow-fusion LM on ``device`` (loaded once), or None when none is asked for."""
        if self._lm is None and self.lm_path and self.lm_weight:
            self._lm = load_fusion_lm(self.lm_path, self.lm_weight, device)
        return self._lm

    def __call__(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        raise NotImplementedError

    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        """Encode a padded batch and return the best hypothesis' token ids for each utterance."""
        import torch

        with torch.no_grad():
            enc, enc_lens = self.model.encode(features, feature_lengths)
            nbest = self(enc, enc_lens)
        return [hyps[0].tokens if hyps else [] for hyps in nbest]


def load_fusion_lm(path: str | None, weight: float, device: Any) -> FusionLM | None:
    """The external LM for shallow fusion, or None when no LM (or a zero weight) is asked for."""
    if not path or weight == 0.0:
        return None
    from kospeech.lm.loading import load_lm

    return load_lm(path, device=device)


def check_lm_vocab(lm: Any, vocab_size: int, search_name: str) -> None:
    if lm is not None and lm.vocab_size != vocab_size:
        raise ConfigError(
            f"search '{search_name}': the LM has {lm.vocab_size} tokens but the model outputs "
            f"{vocab_size}; train the LM with the model's lang dir (kospeech lm train --lang ...)"
        )


def mask_non_units(log_probs: torch.Tensor) -> torch.Tensor:
    """CTC and transducer heads never emit ``<pad>``, ``<sos>`` or ``<eos>``: rule them out.

    They are never targets of those losses, but an untrained head still gives them mass;
    ``<blank>`` (id 0) keeps its meaning and ``<unk>`` stays a possible output.
    """
    from kospeech.text.special import EOS_ID, PAD_ID, SOS_ID

    out = log_probs.clone()
    out[..., [PAD_ID, SOS_ID, EOS_ID]] = float("-inf")
    return out


def pad_like(t: torch.Tensor, shape: Any) -> torch.Tensor:
    """``t`` padded with zeros at the end of each axis to ``shape`` (no larger on any axis)."""
    import torch

    if tuple(t.shape) == tuple(shape):
        return t
    pad: list[int] = []
    for have, want in zip(reversed(t.shape), reversed(tuple(shape))):
        pad += [0, want - have]
    return torch.nn.functional.pad(t, pad)


def where_state(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Row-wise choice between two state pytrees of the same structure: ``new`` where ``mask``.

    A tensor that grew between the two (an LM's key/value cache of a longer history) is
    padded with zeros to the larger shape first.
    """
    import torch

    if isinstance(new, torch.Tensor):
        if new.shape != old.shape:
            shape = tuple(max(a, b) for a, b in zip(new.shape, old.shape))
            new, old = pad_like(new, shape), pad_like(old, shape)
        m = mask.view(-1, *([1] * (new.dim() - 1)))
        return torch.where(m, new, old)
    if isinstance(new, dict):
        return {k: where_state(mask, new[k], old[k]) for k in new}
    if isinstance(new, (list, tuple)):
        return type(new)(where_state(mask, n, o) for n, o in zip(new, old))
    return new


def child_matrix(prefixes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, K, L) token prefixes padded with -1, (B, K) lengths -> (B, K, K) bool.

    ``out[b, k, j]`` is True when prefix j is prefix k plus one token. Used by the prefix and
    transducer beam searches to merge the two ways of reaching the same token sequence.
    """
    import torch

    B, K, L = prefixes.shape
    if L == 0:
        return torch.zeros(B, K, K, dtype=torch.bool, device=prefixes.device)
    last = (lengths - 1).clamp(min=0)
    parent_view = prefixes.scatter(2, last.unsqueeze(-1), -1)  # drop each prefix's last token
    same = (prefixes.unsqueeze(2) == parent_view.unsqueeze(1)).all(-1)  # (B, K(parent), K(child))
    return same & (lengths > 0).unsqueeze(1) & (lengths.unsqueeze(2) + 1 == lengths.unsqueeze(1))
