"""The torch engine and the front door: ``kospeech.load(path).transcribe(audio)``.

:func:`load` opens whatever a user has (a checkpoint, an exp dir, a list of checkpoints as an
ensemble, a model package from ``kospeech pack`` or a recipe's last stage, or an export dir) and
returns one interface, a :class:`~kospeech.inference.driver.Driver`: :class:`Transcriber` over
the :class:`TorchEngine` here, or ``kospeech.runtime``'s ``ExportedModel`` over onnxruntime. The
driver (inputs, long audio, batching, per-item errors, the search and its LM) is written once in
:mod:`kospeech.inference.driver`; this module holds only what needs torch.

Word and syllable times come from CTC forced alignment (``torchaudio.functional.forced_align``)
for models with a CTC head; other models give text without times.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kospeech.errors import ConfigError
from kospeech.inference.driver import Driver
from kospeech.inference.engine import Decoded, encode_hotwords, samples_for_frames
from kospeech.inference.loading import InferenceBundle, load_for_inference
from kospeech.inference.timing import TokenSpan
from kospeech.models.base import chunk_frames, model_head, set_chunk_size
from kospeech.text.special import NUM_SPECIAL

logger = logging.getLogger(__name__)

PAD_SECONDS = 2.0  # batches padded to a multiple: few distinct shapes (see inputs.pad_arrays)


class TorchEngine:
    """A checkpoint's model, tokenizer and input pipeline as a driver engine (PyTorch)."""

    kind = "torch"

    def __init__(self, bundle: InferenceBundle) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.inputs = bundle.inputs
        self.config = bundle.config
        self.space_symbol = getattr(self.tokenizer, "space_symbol", "|")
        self._min_samples: int | None = None

    @property
    def sample_rate(self) -> int:
        return self.inputs.sample_rate

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def default_search(self) -> dict[str, Any]:
        """The checkpoint's ``decode.search``, else the strongest search for the model's heads."""
        from kospeech.search import default_search

        saved = (self.config.get("decode") or {}).get("search")
        return dict(saved) if isinstance(saved, Mapping) and saved.get("name") else default_search(self.model)

    def build_search(self, cfg: Mapping[str, Any]) -> Any:
        from kospeech.decode import build_search

        return build_search(self.model, encode_hotwords(cfg, self.tokenizer.encode))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def min_samples(self) -> int:
        """The fewest samples the encoder accepts (its subsampling needs a few frames)."""
        if self._min_samples is None:
            from kospeech.models.base import min_input_frames

            dim = int(self.inputs.output_dim or self.inputs.cmvn.mean.numel())
            frames, fe = min_input_frames(self.model, dim, self.device), self.inputs.frontend
            if getattr(fe, "name", "") == "kaldi_fbank":  # Kaldi framing: one frame fewer than centred frames
                from kospeech.runtime.features import kaldi_min_samples

                self._min_samples = kaldi_min_samples(frames, fe.hop_length, fe.win_length, fe.snip_edges)
            else:
                self._min_samples = samples_for_frames(frames, self.sample_rate, self.inputs.frame_shift)
        return self._min_samples

    def chunk_frames(self) -> int:
        """The encoder's chunk size in output frames (0: none), from :func:`chunk_frames`."""
        return chunk_frames(self.model)

    @property
    def head(self) -> str:
        """``transducer``, ``ctc`` or ``attention``: the head an export of this model decodes with
        (:func:`~kospeech.models.base.model_head`), so both engines name it alike."""
        return model_head(self.model)

    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """CTC log-probabilities (T', V) per wave, as numpy (what a CTC stream decodes)."""
        return self.network_outputs(waves, "log_probs")

    @torch.no_grad()
    def network_outputs(self, waves: Sequence[np.ndarray], output: str | None = None) -> list[np.ndarray]:
        """Per wave, as numpy, what :meth:`OnnxEngine.network_outputs
        <kospeech.runtime.model.OnnxEngine.network_outputs>` gives: CTC log-probs (T', V)
        (``output="log_probs"``, the default for a model with a CTC head) or encoder frames (T', H)
        (``"encoder_out"``, the default otherwise: what a transducer stream decodes)."""
        name = output or ("log_probs" if self.head == "ctc" else "encoder_out")
        if name == "log_probs" and not self.model.has_ctc:
            raise ConfigError(f"a {type(self.model).__name__} without a CTC head has no CTC log-probabilities; "
                              f"a stream decodes CTC models, the CTC branch of joint models and transducers")
        feats, lengths = self.inputs.from_waves(waves)
        enc, enc_lens = self.model.encode(feats, lengths)
        out = (self.model.ctc_log_probs(enc) if name == "log_probs" else enc).float().cpu().numpy()
        return [out[b, : int(n)] for b, n in enumerate(enc_lens)]

    # -- the transducer's step and joint for the numpy greedy (kospeech.runtime.transducer) -------
    def predictor_state(self) -> Any:
        """The prediction network's start state for one hypothesis (torch tensors, kept as they are)."""
        return self.model.predictor_init_state(1, self.device)

    @torch.no_grad()
    def predictor_step(self, tokens: np.ndarray, state: Any) -> tuple[torch.Tensor, Any]:
        """One prediction-network step: tokens (1,) -> its output (1, P) and the next state."""
        return self.model.predictor_step(torch.as_tensor(tokens, device=self.device), state)

    @torch.no_grad()
    def joint(self, frame: np.ndarray, predictor_out: torch.Tensor) -> np.ndarray:
        """The joiner on one encoder frame (1, H): log-probabilities (1, V) as numpy."""
        enc = torch.from_numpy(frame).to(self.device, predictor_out.dtype)
        return self.model.joint(enc, predictor_out).float().cpu().numpy()

    def ctc_fusion(self, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
        """The n-gram and hotword graph of a CTC search config, for the numpy beam of a stream."""
        from kospeech.runtime.ctc import ctc_fusion

        return ctc_fusion(cfg, self.tokenizer.vocab_size, self.tokenizer.encode)

    def decode(self, waves: Sequence[np.ndarray], search: Any, *, timestamps: bool) -> list[Decoded]:
        feats, lengths = self.inputs.from_waves(waves, pad_seconds=PAD_SECONDS)
        return self.decode_model_input(feats, lengths, search, timestamps=timestamps)

    @torch.no_grad()
    def decode_model_input(
        self, feats: torch.Tensor, lengths: torch.Tensor, search: Any, *, timestamps: bool
    ) -> list[Decoded]:
        """Model input (B, T, D) -> best hypothesis per item, with token times when asked."""
        enc, enc_lens = self.model.encode(feats, lengths)
        nbest = search(enc, enc_lens)
        logp = self.model.ctc_log_probs(enc) if timestamps and self.model.has_ctc else None
        out = []
        for b, hyps in enumerate(nbest):
            ids = list(hyps[0].tokens) if hyps else []
            spans = None
            if logp is not None:
                n_enc = int(enc_lens[b])
                frame_seconds = self.inputs.frame_shift * float(lengths[b]) / max(n_enc, 1)
                spans = self._align(logp[b, :n_enc], ids, frame_seconds)
            out.append(Decoded(ids, float(hyps[0].score) if hyps else None, spans))
        return out

    def _align(self, log_probs: torch.Tensor, tokens: list[int], frame_seconds: float) -> list[TokenSpan] | None:
        """Per-token spans by CTC forced alignment; None when it cannot align (too few frames)."""
        import torchaudio.functional as AF

        if not tokens:
            return []
        try:
            labels, scores = AF.forced_align(
                log_probs[None].float().cpu(),
                torch.tensor([tokens], dtype=torch.int32),
                torch.tensor([log_probs.size(0)]),
                torch.tensor([len(tokens)]),
                blank=0,
            )
        except RuntimeError as err:
            logger.warning("CTC forced alignment failed (%s); no word times for this piece", err)
            return None
        spans = AF.merge_tokens(labels[0], scores[0].exp())
        return [  # <unk> and other specials are aligned but not text
            TokenSpan(self.tokenizer.id_to_token(int(s.token)), s.start * frame_seconds, s.end * frame_seconds,
                      round(float(s.score), 4))
            for s in spans
            if int(s.token) >= NUM_SPECIAL
        ]


class Transcriber(Driver):
    """A trained model ready to transcribe with PyTorch (see :class:`~kospeech.inference.driver.Driver`).

    Args:
        bundle: model, tokenizer and input pipeline (from :func:`load`).
        search: the default search: a registered name or a ``{name: ..., option: ...}`` mapping;
            None uses the checkpoint's ``decode.search`` or the best search for the model's heads.
        max_segment_seconds: longer audio is cut into pieces of at most this length.
        **options: search options (``beam_size=10``, ``lm="exp/lm/lm.pt"``, ``lm_weight=0.3``).
    """

    def __init__(self, bundle: InferenceBundle, *, search: str | Mapping[str, Any] | None = None,
                 max_segment_seconds: float = 20.0, name: str | None = None,
                 default_search: Mapping[str, Any] | None = None, **options: Any) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.inputs = bundle.inputs
        self.config = bundle.config
        super().__init__(TorchEngine(bundle), search=search, max_segment_seconds=max_segment_seconds,
                         name=name or Path(bundle.path).name or "model", default_search=default_search, **options)

    def decode_features(self, arrays: Sequence[np.ndarray], search: Any) -> tuple[list[str], float]:
        """Dumped (T, D) features -> texts, and the seconds of audio they cover."""
        feats, lengths = self.inputs.from_features(arrays)
        decoded = self.engine.decode_model_input(feats, lengths, search, timestamps=False)
        return [self.tokenizer.decode(d.tokens) for d in decoded], float(lengths.sum()) * self.inputs.frame_shift


def load_torch(
    path: str | Path | Sequence[str | Path],
    *,
    device: str | torch.device = "auto",
    search: str | Mapping[str, Any] | None = None,
    max_segment_seconds: float = 20.0,
    weights: Sequence[float] | None = None,
    trust_plugins: bool = False,
    user_dirs: Sequence[str | Path] = (),
    chunk_size: int | None = None,
    **options: Any,
) -> Driver:
    """The torch part of :func:`kospeech.inference.load` (checkpoints, exp dirs, packages, ensembles)."""
    from kospeech.inference import package
    from kospeech.registry import load_plugins

    load_plugins(user_dirs)
    if isinstance(path, (list, tuple)):
        from kospeech.inference.ensemble import load_ensemble

        bundle = load_ensemble(path, device=device, weights=weights, trust_plugins=trust_plugins)
        if chunk_size is not None:
            set_chunk_size(bundle.model, chunk_size, "the ensemble")
        return Transcriber(bundle, search=search, max_segment_seconds=max_segment_seconds, name="ensemble",
                           **options)
    if weights is not None:
        raise ConfigError("weights apply to an ensemble: give a list of checkpoints")
    if package.is_package(path):
        pkg = package.read_package(path)
        bundle = load_for_inference(pkg.checkpoint, device=device, trust_plugins=trust_plugins)
        if chunk_size is not None:
            set_chunk_size(bundle.model, chunk_size, str(path))
        return Transcriber(bundle, search=search, max_segment_seconds=max_segment_seconds, name=pkg.name,
                           default_search=pkg.search, **options)
    bundle = load_for_inference(path, device=device, trust_plugins=trust_plugins)
    if chunk_size is not None:
        set_chunk_size(bundle.model, chunk_size, str(path))
    return Transcriber(bundle, search=search, max_segment_seconds=max_segment_seconds, **options)
