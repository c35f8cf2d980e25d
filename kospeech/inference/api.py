"""The Python API: ``kospeech.load(path).transcribe(audio)``.

:class:`Transcriber` holds a model rebuilt from a checkpoint (:mod:`kospeech.inference.loading`)
and decodes any mix of inputs: file paths (wav, flac, ogg, KsponSpeech ``.pcm``), ``"-"`` for
standard input, bytes of an audio file, and numpy/torch arrays (with their ``sample_rate``).
Each item succeeds or fails on its own: a failed item's :class:`Result` carries the error and
no text, the others are complete.

Audio longer than ``max_segment_seconds`` is streamed and cut at pauses
(:mod:`kospeech.inference.segment`); the pieces are decoded in batches and their word times
mapped back onto the whole file, so memory does not grow with the length of the recording.
Word and syllable times come from CTC forced alignment (``torchaudio.functional.forced_align``)
for models with a CTC head; other models give text without times.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kospeech.errors import ConfigError, DataError, KoSpeechError
from kospeech.inference.loading import InferenceBundle, load_for_inference
from kospeech.inference.result import Result
from kospeech.inference.segment import segment_stream
from kospeech.inference.timing import TokenSpan, assemble
from kospeech.text.special import NUM_SPECIAL

logger = logging.getLogger(__name__)

AudioInput = str | Path | bytes | bytearray | np.ndarray | torch.Tensor
BLOCK_SECONDS = 30.0
SORT_WINDOW_BATCHES = 4
PAD_SECONDS = 2.0  # batches padded to a multiple: few distinct shapes (see inputs.pad_arrays)


class _Decoded:
    """One decoded piece: token ids, score, and token spans in seconds (None without CTC)."""

    __slots__ = ("tokens", "score", "spans")

    def __init__(self, tokens: list[int], score: float | None, spans: list[TokenSpan] | None) -> None:
        self.tokens, self.score, self.spans = tokens, score, spans


class Transcriber:
    """A trained model ready to transcribe; see the module docstring.

    Args:
        bundle: model, tokenizer and input pipeline (from :func:`load`).
        search: the default search: a registered name or a ``{name: ..., option: ...}`` mapping;
            None uses the checkpoint's ``decode.search`` or the best search for the model's heads.
        max_segment_seconds: longer audio is cut into pieces of at most this length.
        **options: search options (``beam_size=10``, ``lm="exp/lm/lm.pt"``, ``lm_weight=0.3``).
    """

    def __init__(
        self,
        bundle: InferenceBundle,
        *,
        search: str | Mapping[str, Any] | None = None,
        max_segment_seconds: float = 20.0,
        **options: Any,
    ) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.tokenizer = bundle.tokenizer
        self.inputs = bundle.inputs
        self.config = bundle.config
        self.max_segment_seconds = float(max_segment_seconds)
        self.search_cfg = self.search_config(search, **options)
        self._search: Any = None  # built at first use: a caller may only ever pass its own
        self._min_samples: int | None = None

    # ---- facts -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.inputs.device

    @property
    def sample_rate(self) -> int:
        return self.inputs.sample_rate

    def __repr__(self) -> str:
        name = self.config.get("model", {}).get("name") if isinstance(self.config.get("model"), Mapping) else "?"
        return f"Transcriber(model={name}, search={self.search_cfg}, device={self.device}, path={self.bundle.path!r})"

    # ---- searches --------------------------------------------------------------------------
    def search_config(self, search: str | Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """A search config from a name or mapping plus keyword options (``lm`` included)."""
        from kospeech.decode import search_config

        if isinstance(search, Mapping):
            cfg = dict(search)
            if not cfg.get("name"):
                raise ConfigError(f"search {dict(search)} names no search: add name: ctc_greedy (or another)")
        else:
            cfg = search_config(self.model, self.config, search)
        cfg.update({k: v for k, v in options.items() if v is not None})
        return cfg

    def search_for(self, cfg: Mapping[str, Any]) -> Any:
        from kospeech.decode import build_search

        return build_search(self.model, cfg)

    # ---- decoding --------------------------------------------------------------------------
    @torch.no_grad()
    def decode_model_input(
        self, feats: torch.Tensor, lengths: torch.Tensor, search: Any, *, timestamps: bool
    ) -> list[_Decoded]:
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
            out.append(_Decoded(ids, float(hyps[0].score) if hyps else None, spans))
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

    def decode_features(self, arrays: Sequence[np.ndarray], search: Any) -> tuple[list[str], float]:
        """Dumped (T, D) features -> texts, and the seconds of audio they cover."""
        feats, lengths = self.inputs.from_features(arrays)
        decoded = self.decode_model_input(feats, lengths, search, timestamps=False)
        return [self.tokenizer.decode(d.tokens) for d in decoded], float(lengths.sum()) * self.inputs.frame_shift

    def _decode_waves(self, waves: Sequence[np.ndarray], search: Any, timestamps: bool) -> list[_Decoded]:
        padded = [self._pad_short(w) for w in waves]
        feats, lengths = self.inputs.from_waves(padded, pad_seconds=PAD_SECONDS)
        return self.decode_model_input(feats, lengths, search, timestamps=timestamps)

    # ---- short inputs ----------------------------------------------------------------------
    def min_samples(self) -> int:
        """The fewest samples the encoder accepts (its subsampling needs a few frames)."""
        if self._min_samples is None:
            from kospeech.models.base import min_input_frames

            frames = min_input_frames(self.model, int(self.model_input_dim()), self.device)
            hop = max(1, int(round(self.sample_rate * self.inputs.frame_shift)))
            self._min_samples = (frames - 1) * hop + 1
        return self._min_samples

    def model_input_dim(self) -> int:
        return int(self.inputs.output_dim or self.inputs.cmvn.mean.numel())

    def _pad_short(self, wave: np.ndarray) -> np.ndarray:
        need = self.min_samples()
        if len(wave) >= need:
            return wave
        return np.concatenate((wave, np.zeros(need - len(wave), dtype=np.float32)))

    # ---- inputs ----------------------------------------------------------------------------
    def _open(self, item: Any, sample_rate: int | None) -> tuple[str, float, Callable[[], Iterator[np.ndarray]]]:
        """(name, seconds, blocks) of one input; raises DataError naming the item."""
        from kospeech.audio import check_finite, read_audio_bytes, resample_wave, stream_audio

        rate = self.sample_rate
        name = _name_of(item)
        if name == "<stdin>":
            item = sys.stdin.buffer.read()
        if isinstance(item, (str, Path)):
            seconds, blocks = stream_audio(item, sample_rate=rate, block_seconds=BLOCK_SECONDS)
            return name, seconds, lambda: blocks
        if isinstance(item, (bytes, bytearray)):
            wave, native = read_audio_bytes(item, name)
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if wave.dtype == np.int16:
                wave = wave.astype(np.float32) / 32768.0
            if wave.ndim == 2:  # (channels, samples) or (samples, channels): average the short axis
                wave = wave.mean(axis=0 if wave.shape[0] < wave.shape[1] else 1)
            if wave.ndim != 1:
                raise DataError(f"{name}: expected a 1-D wave (or channels x samples), got shape {wave.shape}")
            native = int(sample_rate or rate)
        else:
            raise DataError(f"cannot transcribe a {type(item).__name__}: give a path, bytes or a numpy/torch wave")
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if wave.size == 0:
            raise DataError(f"{name}: the audio has no samples")
        check_finite(wave, name)
        wave = resample_wave(wave, int(native), rate)
        return name, len(wave) / rate, lambda: iter([wave])

    # ---- the API ---------------------------------------------------------------------------
    def transcribe(
        self,
        audio: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        search: str | Mapping[str, Any] | Any | None = None,
        batch_size: int = 8,
        timestamps: bool = True,
        segment: bool = True,
        progress: Callable[[float], None] | None = None,
        **options: Any,
    ) -> Result | list[Result]:
        """Transcribe one input (returns a :class:`Result`) or a list (returns a list, in order).

        Args:
            audio: a path, ``"-"`` (standard input), bytes of an audio file, a 1-D numpy/torch
                wave, or a list of those.
            sample_rate: the rate of array inputs (default: the model's).
            search: a search name or ``{name: ..., ...}`` mapping for this call; search options
                (``beam_size``, ``lm``, ``lm_weight``, ...) as further keyword arguments.
            batch_size: pieces decoded together.
            timestamps: word and syllable times (CTC models).
            segment: cut audio longer than ``max_segment_seconds`` at pauses.
            progress: called with the seconds of audio done after each batch (CLI progress bars).
        """
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if search is None and not options:
            if self._search is None:
                self._search = self.search_for(self.search_cfg)
            searcher = self._search
        elif search is not None and not isinstance(search, (str, Mapping)):
            searcher = search  # an already built search (decode_test_set)
        else:
            searcher = self.search_for(self.search_config(search if search is not None else self.search_cfg, **options))
        results: list[Result | None] = [None] * len(items)
        short: list[tuple[int, str, np.ndarray]] = []
        for i, item in enumerate(items):
            try:
                name, seconds, blocks = self._open(item, sample_rate)
                if segment and seconds > self.max_segment_seconds:
                    results[i] = self._transcribe_long(name, seconds, blocks(), searcher, batch_size, timestamps,
                                                       progress)
                else:
                    short.append((i, name, np.concatenate(list(blocks()))))
            except KoSpeechError as err:
                results[i] = Result.failed(_name_of(item), str(err))
        short.sort(key=lambda t: -len(t[2]))  # similar lengths together: little padding
        for start in range(0, len(short), batch_size):
            chunk = short[start : start + batch_size]
            decoded = self._decode_waves([w for _, _, w in chunk], searcher, timestamps)
            for (i, name, wave), d in zip(chunk, decoded):
                results[i] = self._result(name, len(wave) / self.sample_rate, [(0.0, len(wave) / self.sample_rate, d)])
            if progress is not None:
                progress(sum(len(w) for _, _, w in chunk) / self.sample_rate)
        done = [r if r is not None else Result.failed(None, "not decoded") for r in results]
        return done[0] if single else done

    def _transcribe_long(
        self,
        name: str,
        seconds: float,
        blocks: Iterator[np.ndarray],
        searcher: Any,
        batch_size: int,
        timestamps: bool,
        progress: Callable[[float], None] | None,
    ) -> Result:
        rate = self.sample_rate
        pieces: list[tuple[float, float, _Decoded]] = []
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            # pieces of similar length share a batch (little padding); a window of a few batches
            # keeps memory bounded whatever the length of the file
            pending.sort(key=lambda p: -len(p[1]))
            for i in range(0, len(pending), batch_size):
                chunk = pending[i : i + batch_size]
                decoded = self._decode_waves([w for _, w in chunk], searcher, timestamps)
                for (start, wave), d in zip(chunk, decoded):
                    pieces.append((start / rate, (start + len(wave)) / rate, d))
                if progress is not None:
                    progress(sum(len(w) for _, w in chunk) / rate)
            pending.clear()

        for start, wave in segment_stream(blocks, rate, max_seconds=self.max_segment_seconds,
                                          min_seconds=self.max_segment_seconds / 4):
            pending.append((start, wave))
            if len(pending) == SORT_WINDOW_BATCHES * batch_size:
                flush()
        if pending:
            flush()
        pieces.sort(key=lambda p: p[0])
        return self._result(name, seconds, pieces)

    def _result(self, name: str, seconds: float, pieces: list[tuple[float, float, _Decoded]]) -> Result:
        """Texts, words and syllables of the pieces of one item, in the item's time."""
        return assemble([(start, end, d.tokens, d.spans) for start, end, d in pieces], self.tokenizer.decode,
                        space_symbol=getattr(self.tokenizer, "space_symbol", "|"), seconds=seconds, source=name)


def _name_of(item: Any) -> str:
    if isinstance(item, (str, Path)):
        return "<stdin>" if str(item) == "-" else str(item)
    return f"<{type(item).__name__}>"


def load(
    path: str | Path | Sequence[str | Path],
    *,
    device: str | torch.device = "auto",
    search: str | Mapping[str, Any] | None = None,
    max_segment_seconds: float = 20.0,
    weights: Sequence[float] | None = None,
    trust_plugins: bool = False,
    user_dirs: Sequence[str | Path] = (),
    **options: Any,
) -> Transcriber:
    """A :class:`Transcriber` for a checkpoint file or an exp dir (its ``checkpoints/last.pt``),
    or for a list of them: an ensemble (:mod:`kospeech.inference.ensemble`; ``weights`` per member).

    ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``; ``search`` and ``options`` set the
    default search (``kospeech.load("exp/x", search="ctc_prefix_beam", beam_size=10)``).
    ``user_dirs`` are plugin folders to load first; ``trust_plugins`` imports the plugin folders
    a checkpoint recorded (only for checkpoints whose origin you trust: that runs their code).
    """
    from kospeech.registry import load_plugins

    load_plugins(user_dirs)
    if isinstance(path, (list, tuple)):
        from kospeech.inference.ensemble import load_ensemble

        bundle = load_ensemble(path, device=device, weights=weights, trust_plugins=trust_plugins)
    else:
        if weights is not None:
            raise ConfigError("weights apply to an ensemble: give a list of checkpoints")
        bundle = load_for_inference(path, device=device, trust_plugins=trust_plugins)
    return Transcriber(bundle, search=search, max_segment_seconds=max_segment_seconds, **options)
