"""Decoding with several checkpoints at once: ``kospeech decode a.pt b.pt``.

Members that share a tokenizer and a frontend are combined into one :class:`EnsembleModel`,
which implements the decoding hooks of :class:`~kospeech.models.base.ASRModel`, so every search
runs on an ensemble unchanged:

- CTC: the members' per-frame log-probabilities are averaged (weights summing to 1) and
  renormalised over the vocabulary (a normalised weighted geometric mean of the members'
  distributions). Frames must line up, so CTC ensembles need members of one frame rate; members
  of different rates are refused, or, when they all have attention decoders too, decoded with
  those alone.
- Attention decoders: at every step of the (beam) search each member advances its own state
  and the next-token log-probabilities are averaged the same way.

Each member keeps its own CMVN (the shared input pipeline computes the frontend only), so
members trained on differently normalised features combine correctly. An ensemble of one
checkpoint given twice decodes exactly as that checkpoint alone (tested).

The searches see one encoder output tensor: the members' outputs padded to a common length and
concatenated on the feature axis, followed by one channel per member holding its encoder
lengths, which the hooks unpack.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kospeech.data.inputs import InputPipeline, resolve_device
from kospeech.errors import ConfigError
from kospeech.inference.loading import InferenceBundle, load_for_inference
from kospeech.models.base import ASRModel, State

logger = logging.getLogger(__name__)

_PROBE_FRAMES = 400


class EnsembleModel(ASRModel):
    """Several trained models behind the decoding hooks; see the module docstring.

    Args:
        models: the members, in eval mode.
        cmvns: each member's CMVN module (or None), applied to the shared frontend's features.
        weights: one positive weight per member; normalised to sum to 1.
        dims: each member's encoder output size.
        ctc: combine the CTC heads (members of one frame rate).
        decoder: combine the attention decoders.
    """

    def __init__(self, models: Sequence[nn.Module], cmvns: Sequence[nn.Module | None], weights: Sequence[float],
                 dims: Sequence[int], *, ctc: bool, decoder: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.cmvns = nn.ModuleList([c if c is not None else nn.Identity() for c in cmvns])
        self._has_cmvn = [c is not None for c in cmvns]
        w = torch.tensor([float(x) for x in weights], dtype=torch.float32)
        self.register_buffer("weights", w / w.sum(), persistent=False)
        self.dims = [int(d) for d in dims]
        self.has_ctc = ctc
        self.has_decoder = decoder

    # ---- packing ----------------------------------------------------------------------------
    def _unpack(self, encoder_out: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out, start = [], 0
        n = len(self.members)
        lengths = encoder_out[:, 0, sum(self.dims) :].round().long()  # (N, members)
        for i, d in enumerate(self.dims):
            out.append((encoder_out[..., start : start + d], lengths[:, i]))
            start += d
        assert lengths.size(1) == n
        return out

    def _combine(self, log_probs: list[torch.Tensor]) -> torch.Tensor:
        mixed = sum(w * lp.float() for w, lp in zip(self.weights.tolist(), log_probs))
        return torch.log_softmax(mixed, dim=-1)

    # ---- hooks ------------------------------------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = []
        for model, cmvn, has in zip(self.members, self.cmvns, self._has_cmvn):
            x = cmvn(features, feature_lengths) if has else features
            outs.append(model.encode(x, feature_lengths))
        t = max(enc.size(1) for enc, _ in outs)
        dtype = torch.float32 if any(enc.dtype != torch.float32 for enc, _ in outs) else outs[0][0].dtype
        parts = [nn.functional.pad(enc.to(dtype), (0, 0, 0, t - enc.size(1))) for enc, _ in outs]
        lengths = torch.stack([lens.to(features.device) for _, lens in outs], dim=1)  # (B, members)
        parts.append(lengths.to(dtype)[:, None, :].expand(-1, t, -1))
        return torch.cat(parts, dim=-1), lengths.max(dim=1).values

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        if not self.has_ctc:
            raise NotImplementedError("this ensemble's members encode at different frame rates: no joint CTC head")
        return self._combine([m.ctc_log_probs(enc) for m, (enc, _) in zip(self.members, self._unpack(encoder_out))])

    def init_decoder_state(self, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> State:
        return [m.init_decoder_state(enc, lens) for m, (enc, lens) in zip(self.members, self._unpack(encoder_out))]

    def decoder_step(
        self, tokens: torch.Tensor, state: State, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, State]:
        log_probs, states = [], []
        for m, s, (enc, lens) in zip(self.members, state, self._unpack(encoder_out)):
            lp, s = m.decoder_step(tokens, s, enc, lens)
            log_probs.append(lp)
            states.append(s)
        return self._combine(log_probs), states

    def select_state(self, state: State, index: torch.Tensor) -> State:
        return [m.select_state(s, index) for m, s in zip(self.members, state)]


def _tokenizer_difference(a: Any, b: Any) -> str | None:
    """Why two tokenizers differ (None when they map every id to the same unit)."""
    if type(a) is not type(b):
        return f"{type(a).__name__} vs {type(b).__name__}"
    if a.vocab_size != b.vocab_size:
        return f"{a.vocab_size} vs {b.vocab_size} units"
    for i in range(a.vocab_size):
        if a.id_to_token(i) != b.id_to_token(i):
            return f"unit {i} is '{a.id_to_token(i)}' vs '{b.id_to_token(i)}'"
    return None


@torch.no_grad()
def _probe(bundle: InferenceBundle, input_dim: int) -> tuple[int, int]:
    """(encoder frames for _PROBE_FRAMES input frames, encoder output size) of a member."""
    x = torch.zeros(1, _PROBE_FRAMES, input_dim, device=bundle.device)
    enc, lens = bundle.model.encode(x, torch.tensor([_PROBE_FRAMES], device=bundle.device))
    return int(lens[0]), int(enc.size(-1))


def load_ensemble(
    paths: Sequence[str | Path],
    device: str | torch.device = "cpu",
    *,
    weights: Sequence[float] | None = None,
    trust_plugins: bool = False,
) -> InferenceBundle:
    """One :class:`InferenceBundle` whose model is the :class:`EnsembleModel` of ``paths``.

    Refuses, with a ConfigError naming the files: a different tokenizer or frontend, a
    transducer, members that share no decoding head, CTC-only members of different frame rates,
    and weights that are not one positive number per checkpoint.
    """
    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise ConfigError("an ensemble needs at least two checkpoints (the same one twice is allowed)")
    if weights is None:
        weights = [1.0] * len(paths)
    weights = [float(w) for w in weights]
    if len(weights) != len(paths) or any(w <= 0 for w in weights):
        raise ConfigError(f"--weights: give one positive weight per checkpoint ({len(paths)}), got {weights}")
    device = resolve_device(device)
    bundles = [load_for_inference(p, device=device, trust_plugins=trust_plugins) for p in paths]
    first = bundles[0]
    for path, b in zip(paths[1:], bundles[1:]):
        why = _tokenizer_difference(first.tokenizer, b.tokenizer)
        if why:
            raise ConfigError(f"ensemble: {paths[0]} and {path} have different tokenizers ({why}); the members of "
                              "an ensemble must share one tokenizer (the same lang dir)")
        if json.dumps(first.config.get("frontend"), sort_keys=True) != json.dumps(b.config.get("frontend"),
                                                                                 sort_keys=True):
            raise ConfigError(f"ensemble: {paths[0]} and {path} use different frontends ({first.config.get('frontend')}"
                              f" vs {b.config.get('frontend')}); members must read the same features")
    for path, b in zip(paths, bundles):
        if b.model.is_transducer:
            raise ConfigError(f"ensemble: {path} is a transducer; ensembles combine CTC heads and attention decoders")
    inputs = InputPipeline.from_config(first.config.get("frontend"), cmvn=None, device=device)
    input_dim = int(inputs.output_dim or first.inputs.cmvn.mean.numel())
    probes = [_probe(b, input_dim) for b in bundles]
    frames = {n for n, _ in probes}
    ctc = all(b.model.has_ctc for b in bundles) and len(frames) == 1
    decoder = all(b.model.has_decoder for b in bundles)
    if all(b.model.has_ctc for b in bundles) and len(frames) > 1:
        rates = ", ".join(f"{p}: {n} frames" for p, (n, _) in zip(paths, probes))
        if not decoder:
            raise ConfigError(f"ensemble: CTC members must encode at one frame rate to be averaged per frame; for "
                              f"{_PROBE_FRAMES} input frames {rates}")
        logger.warning("ensemble: members encode at different frame rates (%s); combining their attention "
                       "decoders only", rates)
    if not ctc and not decoder:
        raise ConfigError(f"ensemble: the members of {', '.join(paths)} share no decoding head (all CTC, or all "
                          "with an attention decoder)")
    model = EnsembleModel([b.model for b in bundles], [b.inputs.cmvn for b in bundles], weights,
                          [d for _, d in probes], ctc=ctc, decoder=decoder).to(device).eval()
    config = dict(first.config)
    config["model"] = {"name": "ensemble", "checkpoints": paths, "weights": weights,
                       "members": [b.config.get("model") for b in bundles]}
    corpora = list({json.dumps(b.metadata.get("training_corpus"), sort_keys=True): b.metadata.get("training_corpus")
                    for b in bundles if b.metadata.get("training_corpus")}.values())
    metadata = {
        "kind": "ensemble",
        "members": [b.metadata for b in bundles],
        "training_corpus": corpora[0] if len(corpora) == 1 else (corpora or None),
    }
    return InferenceBundle(model=model, tokenizer=first.tokenizer, inputs=inputs, config=config,
                           metadata=metadata, path=" ".join(paths))
