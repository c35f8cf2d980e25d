"""The one transcription driver, written once and torch-free, over a declared engine interface.

Every door (``kospeech.load(...).transcribe``, ``kospeech transcribe``, ``decode``, ``serve`` and
the torch-free ``kospeech.runtime``) goes through :class:`Driver`. It owns what must not differ
between a checkpoint and its ONNX export:

- opening inputs: paths (streamed in blocks), ``"-"`` (standard input), a file's bytes, numpy or
  torch waves (float, or integer PCM scaled by its type), resampling to the model's rate;
- the short-audio rule: audio shorter than the encoder accepts is padded with silence;
- long audio: streamed and cut at pauses (:mod:`kospeech.inference.segment`), or at the speech
  silero's VAD finds (``vad="silero"``, :mod:`kospeech.runtime.vad`), pieces batched within a
  window of a few batches so memory does not grow with the file;
- batching by length, per-item errors (a batch that fails is decoded item by item so the bad one
  names itself), and the :class:`~kospeech.inference.result.Result` of each item;
- the search: the model's (or package's) decoding by default, call-time options on top, and the
  rules that keep an LM from being silently ignored (:func:`resolve_search`).

An :class:`Engine` turns waves into token ids: :class:`kospeech.inference.api.TorchEngine` (a
checkpoint, PyTorch) and :class:`kospeech.runtime.model.OnnxEngine` (an export, onnxruntime).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kospeech.errors import ConfigError, DataError, KoSpeechError
from kospeech.inference.engine import Decoded, Engine, item_name, wave_from_array
from kospeech.inference.result import Result
from kospeech.inference.segment import segment_stream
from kospeech.inference.timing import assemble

logger = logging.getLogger(__name__)

BLOCK_SECONDS = 30.0
SORT_WINDOW_BATCHES = 4
#: how long audio is cut: at quiet stretches (numpy, keeps every sample) or at silero's speech regions
VADS = ("energy", "silero")
#: the LM weight used when an LM is given without one (never 0 without a word)
DEFAULT_LM_WEIGHT = 0.5
#: options that need a beam search (a greedy search given one of them becomes its head's beam search)
BEAM_OPTIONS = ("lm", "hotwords")
#: the beam search of each head, for a greedy search given an LM or hotwords
LM_SEARCH_FOR = {"ctc_greedy": {"name": "ctc_prefix_beam", "beam_size": 10}, "greedy": {"name": "beam", "beam_size": 5},
                 "transducer_greedy": {"name": "transducer_beam", "beam_size": 4}}


def resolve_search(base: Mapping[str, Any], search: str | Mapping[str, Any] | None,
                   options: Mapping[str, Any]) -> dict[str, Any]:
    """The search config of a call: ``base`` (the model's decoding), or ``search`` when given, plus options.

    An ``lm`` given to a search that takes none switches to the LM-capable search of the same head
    (``ctc_greedy`` -> ``ctc_prefix_beam``, ...); an LM without a weight gets
    :data:`DEFAULT_LM_WEIGHT`, said once in the log, so an LM is never ignored without a word.
    A named search that is the base's keeps the base's options (``--search ctc_prefix_beam`` on a
    package keeps its LM).
    """
    if isinstance(search, Mapping):
        if not search.get("name"):
            raise ConfigError(f"search {dict(search)} names no search: add name: ctc_greedy (or another)")
        cfg = dict(search)
    elif search is None or search == base.get("name"):
        cfg = dict(base)
    else:
        cfg = {"name": str(search)}
    cfg.update({k: v for k, v in options.items() if v is not None})
    wanted = [k for k in BEAM_OPTIONS if cfg.get(k)]
    if wanted and cfg["name"] in LM_SEARCH_FOR:
        if search is not None and not isinstance(search, Mapping) and search == cfg["name"]:
            raise ConfigError(f"search {cfg['name']} takes no {' or '.join(wanted)}; use "
                              f"{LM_SEARCH_FOR[cfg['name']]['name']} (or leave --search out and it is picked)")
        cfg = {**LM_SEARCH_FOR[cfg["name"]], **{k: v for k, v in cfg.items() if k != "name"}}
        logger.info("%s given: decoding with %s instead of the greedy search", " and ".join(wanted), cfg["name"])
    if cfg.get("lm") and cfg.get("lm_weight") is None:
        cfg["lm_weight"] = DEFAULT_LM_WEIGHT
        logger.warning("an LM was given without lm_weight: using %s (set lm_weight=W to choose)", DEFAULT_LM_WEIGHT)
    return cfg


class Driver:
    """Transcription over an engine; see the module docstring.

    Args:
        engine: a :class:`TorchEngine` or :class:`OnnxEngine`.
        search: the default search (name or mapping); None: the engine's own.
        max_segment_seconds: longer audio is cut at pauses into pieces of at most this length.
        name: what the model is called on pages and in ``/health`` (a package's or file's name).
        default_search: the decoding a package carries, in place of the engine's own.
        **options: search options that go with the default search (``beam_size``, ``lm``, ...).
    """

    def __init__(self, engine: Engine, *, search: str | Mapping[str, Any] | None = None,
                 max_segment_seconds: float = 20.0, name: str = "model",
                 default_search: Mapping[str, Any] | None = None, **options: Any) -> None:
        self.engine = engine
        self.max_segment_seconds = float(max_segment_seconds)
        self.name = name
        base = dict(default_search) if default_search else engine.default_search()
        self.search_cfg = resolve_search(base, search, options)
        self._search: Any = None  # built at first use: a caller may only ever pass its own
        self._warned_rate = False
        self._reach: Any = None  # the network's reach, for streams (measured once)
        self._fusion: dict[str, tuple[Any, Any]] = {}  # streams' LM and hotwords, per search config
        self._vads: dict[str, Any] = {}  # silero sessions, per model file (loaded at the first long file)

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, engine={self.engine.kind}, search={self.search_cfg})"

    # ---- searches --------------------------------------------------------------------------
    def search_config(self, search: str | Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """The search config a call with these arguments decodes with (see :func:`resolve_search`)."""
        return resolve_search(self.search_cfg, search, options)

    def search_for(self, cfg: Mapping[str, Any]) -> Any:
        return self.engine.build_search(cfg)

    @property
    def device(self) -> Any:
        return getattr(self.engine, "device", "cpu")

    def _searcher(self, search: Any, options: Mapping[str, Any]) -> Any:
        if search is None and not options:
            if self._search is None:
                self._search = self.search_for(self.search_cfg)
            return self._search
        if search is not None and not isinstance(search, (str, Mapping)):
            return search  # an already built search (decode_test_set)
        return self.search_for(self.search_config(search, **options))

    # ---- streaming -------------------------------------------------------------------------
    def stream(self, *, search: str | Mapping[str, Any] | None = None, step_seconds: float = 0.32,
               endpoint: Any = "default", look_ahead: float | None = None, **options: Any) -> Any:
        """A :class:`~kospeech.inference.stream.Stream`: ``feed(samples)`` returns the text so far,
        ``finish()`` the final Result. ``endpoint=None`` keeps one segment until ``finish``;
        ``look_ahead`` (seconds) trades accuracy for the latency of final text."""
        from kospeech.inference.stream import Endpoint, Stream

        return Stream(self, search=search, step_seconds=step_seconds, look_ahead=look_ahead,
                      endpoint=Endpoint() if endpoint == "default" else endpoint, **options)

    def stream_fusion(self, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
        """The n-gram and hotword graph of a stream's search, loaded once per config and shared by
        the streams (they are read-only; each stream's beam keeps its own LM states)."""
        key = repr(sorted((k, repr(v)) for k, v in cfg.items()))
        if key not in self._fusion:
            self._fusion[key] = self.engine.ctc_fusion(cfg)
        return self._fusion[key]

    def stream_reach(self, output: str | None = None) -> Any:
        """The model's :class:`~kospeech.inference.stream.Reach`, measured at the first stream on the
        network output it decodes (``log_probs`` or a transducer's ``encoder_out``; None: the
        engine's first output). One measure serves both: a head reads each encoder frame alone."""
        if self._reach is None:
            from kospeech.inference.stream import probe_reach

            chunk = getattr(self.engine, "chunk_frames", None)
            self._reach = probe_reach(lambda waves: self.engine.network_outputs(waves, output), self.sample_rate,
                                      chunk_frames=int(chunk()) if chunk is not None else 0)
            logger.info("streaming: %d samples per frame; each frame hears %s samples back, %s ahead",
                        self._reach.stride, self._reach.left, self._reach.right)
        return self._reach

    # ---- inputs ----------------------------------------------------------------------------
    def open(self, item: Any, sample_rate: int | None = None) -> tuple[str, float, Callable[[], Iterator[np.ndarray]]]:
        """(name, seconds, blocks) of one input at the model's rate; raises DataError naming the item."""
        from kospeech.audio import check_finite, read_audio_bytes, resample_wave, stream_audio

        rate = self.sample_rate
        name = item_name(item)
        if name == "<stdin>":
            return _open_stdin(rate)
        if isinstance(item, (str, Path)):
            seconds, blocks = stream_audio(item, sample_rate=rate, block_seconds=BLOCK_SECONDS)
            return name, seconds, lambda: blocks
        if isinstance(item, (bytes, bytearray)):
            wave, native = read_audio_bytes(item, name)
        elif isinstance(item, np.ndarray) or hasattr(item, "detach"):
            wave = wave_from_array(item, name)
            if sample_rate is None and not self._warned_rate:
                logger.warning("an array was given without sample_rate: assuming the model's %d Hz "
                               "(pass sample_rate=... to resample)", rate)
                self._warned_rate = True
            native = int(sample_rate or rate)
        else:
            raise DataError(f"cannot transcribe a {type(item).__name__}: give a path, bytes or a numpy/torch wave")
        if wave.size == 0:
            raise DataError(f"{name}: the audio has no samples")
        check_finite(wave, name)
        wave = resample_wave(wave, int(native), rate)
        return name, len(wave) / rate, lambda: iter([wave])

    def _pad_short(self, wave: np.ndarray) -> np.ndarray:
        need = self.engine.min_samples()
        if len(wave) >= need:
            return wave
        return np.concatenate((wave, np.zeros(need - len(wave), dtype=np.float32)))

    def _decode(self, waves: Sequence[np.ndarray], searcher: Any, timestamps: bool) -> list[Decoded | str]:
        """Decode a batch; when the batch fails, item by item, so a bad piece names itself (its error text)."""
        padded = [self._pad_short(w) for w in waves]
        try:
            return list(self.engine.decode(padded, searcher, timestamps=timestamps))
        except KoSpeechError as err:
            if len(padded) == 1:
                return [str(err)]
        out: list[Decoded | str] = []
        for w in padded:
            try:
                out.append(self.engine.decode([w], searcher, timestamps=timestamps)[0])
            except KoSpeechError as err:
                out.append(str(err))
        return out

    # ---- the API ---------------------------------------------------------------------------
    def transcribe(
        self,
        audio: Any,
        *,
        sample_rate: int | None = None,
        search: str | Mapping[str, Any] | Any | None = None,
        batch_size: int = 8,
        timestamps: bool = True,
        segment: bool = True,
        progress: Callable[[float], None] | None = None,
        max_segment_seconds: float | None = None,
        hotwords: Sequence[str] | None = None,
        vad: str | None = None,
        vad_model: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> Result | list[Result]:
        """Transcribe one input (returns a :class:`Result`) or a list (returns a list, in order).

        Args:
            audio: a path, ``"-"`` (standard input), bytes of an audio file, a 1-D numpy/torch
                wave, or a list of those.
            sample_rate: the rate of array inputs (default: the model's, with one warning).
            search: a search name or ``{name: ..., ...}`` mapping for this call; search options
                (``beam_size``, ``lm``, ``lm_weight``, ...) as further keyword arguments.
            batch_size: pieces decoded together.
            timestamps: word and syllable times (CTC models).
            segment: cut audio longer than ``max_segment_seconds`` at pauses.
            progress: called with the seconds of audio done after each batch (CLI progress bars).
            hotwords: words and names to favour (contextual biasing), e.g. ``["솔담채", "한빛나래"]``;
                they replace the package's list for this call (``hotword_weight=W`` per token).
            vad: how audio longer than ``max_segment_seconds`` is cut: ``"energy"`` (the default: at
                pauses, every sample decoded) or ``"silero"`` (silero's VAD network: only its speech
                regions are decoded, so noise between sentences is not; ``pip install 'kospeech[vad]'``).
            vad_model: a silero v5+ ``.onnx`` file for ``vad="silero"`` (implies it when ``vad`` is None).
        """
        if hotwords is not None:
            options["hotwords"] = list(hotwords)
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        limit = self.max_segment_seconds if max_segment_seconds is None else float(max_segment_seconds)
        cutter = self.cutter(vad, vad_model)  # before any decoding: a missing VAD model fails the call at once
        searcher = self._searcher(search, options)
        rate = self.sample_rate
        results: list[Result | None] = [None] * len(items)
        short: list[tuple[int, str, np.ndarray]] = []
        for i, item in enumerate(items):
            try:
                name, seconds, blocks = self.open(item, sample_rate)
                if segment and seconds > limit:
                    results[i] = self._transcribe_long(name, seconds, blocks(), searcher, batch_size, timestamps,
                                                       progress, limit, cutter)
                else:
                    short.append((i, name, np.concatenate(list(blocks()))))
            except KoSpeechError as err:
                results[i] = Result.failed(item_name(item), str(err))
        short.sort(key=lambda t: -len(t[2]))  # similar lengths together: little padding
        for start in range(0, len(short), batch_size):
            chunk = short[start : start + batch_size]
            for (i, name, wave), d in zip(chunk, self._decode([w for _, _, w in chunk], searcher, timestamps)):
                seconds = len(wave) / rate
                results[i] = (Result.failed(name, _named(name, d)) if isinstance(d, str)
                              else self._result(name, seconds, [(0.0, seconds, d)]))
            if progress is not None:
                progress(sum(len(w) for _, _, w in chunk) / rate)
        done = [r if r is not None else Result.failed(None, "not decoded") for r in results]
        return done[0] if single else done

    def cutter(self, vad: str | None, vad_model: str | os.PathLike[str] | None) -> Callable[..., Any]:
        """The function that cuts long audio (``segment_stream``'s signature): the energy cutter,
        or silero's (its session loaded once per model file and kept, so a server that asks for it at
        its start has it ready for its first long upload)."""
        name = vad if vad is not None else ("silero" if vad_model is not None else "energy")
        if name not in VADS:
            raise ConfigError(f"vad={name!r}: choose one of {', '.join(VADS)}")
        if name == "energy":
            if vad_model is not None:
                raise ConfigError("vad_model is silero's model file: it goes with vad='silero', not 'energy'")
            return segment_stream
        from functools import partial

        from kospeech.runtime.vad import load_vad, silero_segments

        return partial(silero_segments, vad=load_vad(vad_model, self._vads))

    def _transcribe_long(self, name: str, seconds: float, blocks: Iterator[np.ndarray], searcher: Any,
                         batch_size: int, timestamps: bool, progress: Callable[[float], None] | None,
                         limit: float, cutter: Callable[..., Any] = segment_stream) -> Result:
        rate = self.sample_rate
        pieces: list[tuple[float, float, Decoded]] = []
        pending: list[tuple[int, np.ndarray]] = []
        errors: list[str] = []
        reported = [0]  # samples handed to ``progress``

        def flush() -> None:
            # pieces of similar length share a batch (little padding); a window of a few batches
            # keeps memory bounded whatever the length of the file
            pending.sort(key=lambda p: -len(p[1]))
            for i in range(0, len(pending), batch_size):
                chunk = pending[i : i + batch_size]
                for (start, wave), d in zip(chunk, self._decode([w for _, w in chunk], searcher, timestamps)):
                    if isinstance(d, str):
                        errors.append(f"piece at {start / rate:.2f} s: {d}")
                    else:
                        pieces.append((start / rate, (start + len(wave)) / rate, d))
                if progress is not None:
                    samples = sum(len(w) for _, w in chunk)
                    reported[0] += samples
                    progress(samples / rate)
            pending.clear()

        for start, wave in cutter(blocks, rate, max_seconds=limit, min_seconds=limit / 4):
            pending.append((start, wave))
            if len(pending) == SORT_WINDOW_BATCHES * batch_size:
                flush()
        if pending:
            flush()
        if progress is not None and seconds * rate - reported[0] >= 1:
            progress(seconds - reported[0] / rate)  # what the VAD found no speech in is done too
        if errors:
            more = f" (and {len(errors) - 1} more)" if errors[1:] else ""
            return Result.failed(name, f"{name}: {errors[0]}{more}")
        pieces.sort(key=lambda p: p[0])
        return self._result(name, seconds, pieces)

    def _result(self, name: str, seconds: float, pieces: list[tuple[float, float, Decoded]]) -> Result:
        """Texts, words and syllables of the pieces of one item, in the item's time."""
        return assemble([(start, end, d.tokens, d.spans) for start, end, d in pieces], self.engine.detokenize,
                        space_symbol=self.engine.space_symbol, seconds=seconds, source=name)


def _open_stdin(rate: int) -> tuple[str, float, Callable[[], Iterator[np.ndarray]]]:
    """Standard input copied to a temporary file in 1 MiB blocks, then streamed as a path is:
    a 2-hour recording costs one block of memory instead of the whole file twice (bytes and
    samples), and a cut-short WAV is refused by the same check. The file goes when read."""
    from kospeech.audio import stream_audio

    fd, tmp_name = tempfile.mkstemp(prefix="kospeech-stdin-")
    spooled = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        if spooled.stat().st_size == 0:
            raise DataError("<stdin>: no audio bytes (empty input)")
        seconds, blocks = stream_audio(spooled, sample_rate=rate, block_seconds=BLOCK_SECONDS)
    except DataError as err:
        spooled.unlink(missing_ok=True)
        raise DataError(str(err).replace(f"audio file {spooled}", "<stdin>").replace(str(spooled), "<stdin>")) from None
    except BaseException:
        spooled.unlink(missing_ok=True)
        raise

    def read_then_remove() -> Iterator[np.ndarray]:
        try:
            yield from blocks
        finally:
            spooled.unlink(missing_ok=True)

    return "<stdin>", seconds, read_then_remove


def _named(name: str, error: str) -> str:
    return error if error.startswith(name) else f"{name}: {error}"
