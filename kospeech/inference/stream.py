"""Streaming recognition: text while the audio arrives, over either engine (torch or ONNX).

    s = asr.stream()            # kospeech.load(...) or kospeech.runtime.load(...)
    s.feed(samples)             # float or int16 samples at the model's rate -> the text so far
    s.finish()                  # the final Result: words with times on the whole stream

How it works. A CTC network with a finite receptive field (convolutions, no global attention)
makes each output frame from a bounded stretch of audio: ``left`` samples before it and
``right`` after it (:class:`Reach`, measured once per model by :func:`probe_reach`, since no
model declares it). Every ``step_seconds`` the engine runs on a window that starts ``left``
samples before the first frame not yet decided and ends at the newest sample; the frames whose
whole reach lies inside the window are *stable*: they are what decoding the whole recording
would give, and they go into an incremental CTC prefix beam (:class:`kospeech.runtime.ctc.PrefixBeam`,
with the n-gram LM and hotwords) that never looks at them again. The newer frames, computed as
if the audio ended there, are *tentative*: their best path, after the beam's best prefix, is
the partial text, which may still change. A transducer streams the same way with its encoder frames
in place of log-probabilities: the stable frames go into an incremental greedy search
(:class:`kospeech.runtime.transducer.Greedy`) that keeps its prediction network's state and
tokens between calls, and the partial text is that search continued over the tentative frames
from a copy of it. A model whose reach is unbounded (global self-attention) is re-decoded on a
growing window from the start of its segment: none of its frames is stable before the segment
ends, so its endpointing judges the window's frames as they are, and closing the segment commits them.
A Conformer with chunk-wise attention (``chunk_size``) counts its chunks from the first frame of
its input, so a frame's reach depends on where it sits in its chunk: the probe takes the widest
over every position in a chunk, and windows start on chunk boundaries of the segment
(:attr:`Reach.period`), where the whole segment's chunks start too.
Both engines stream through the same code; only the window's network output (and a transducer's
prediction-network step and joiner) are theirs.

Endpointing (the rules of Kaldi's online decoders and sherpa-onnx) closes a segment on the
stable frames' best path: trailing non-speech (blank; for a transducer, frames that emitted
nothing) after text, a long stretch with no text (dropped), or a segment grown too long. A closed
segment is a final :class:`Result` with times on the whole stream; a new segment starts with a
fresh search, so an hour of audio costs the memory of one segment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kospeech.errors import ConfigError
from kospeech.inference.engine import Decoded, wave_from_array
from kospeech.inference.result import Result
from kospeech.inference.timing import TokenSpan
from kospeech.runtime import ctc, transducer

logger = logging.getLogger(__name__)

#: searches a stream runs over CTC log-probabilities (a joint model streams with its CTC branch)
CTC_STREAM_SEARCHES = ("ctc_greedy", "ctc_prefix_beam")
#: searches a stream runs over encoder frames (a transducer's prediction network and joiner)
TRANSDUCER_STREAM_SEARCHES = ("transducer_greedy",)
STREAM_SEARCHES = CTC_STREAM_SEARCHES + TRANSDUCER_STREAM_SEARCHES
PROBE_SECONDS = 12.0


@dataclass(frozen=True)
class Endpoint:
    """When a segment closes (seconds of stable frames; sherpa-onnx's rules 1-3).

    Args:
        silence_after_speech: trailing non-speech after some text closes the segment (rule 2).
        silence_without_speech: a segment with no text yet is dropped after this much (rule 1).
        max_segment: a segment is closed at this length whatever it holds (rule 3).
    """

    silence_after_speech: float = 1.0
    silence_without_speech: float = 2.4
    max_segment: float = 20.0


@dataclass(frozen=True)
class Reach:
    """How the network's output frames depend on the audio, in samples.

    Frame ``j`` sits at sample ``j * stride`` of its window and depends on samples
    ``[j * stride - left, j * stride + right]``; None: on all of them (global attention).
    ``period``: samples per chunk of a chunk-wise attention (0: none); a window must start on a
    multiple of it from the segment's start to compute the frames the whole segment gives.
    """

    stride: int
    left: int | None
    right: int | None
    period: int = 0

    @property
    def bounded(self) -> bool:
        return self.left is not None and self.right is not None


def probe_reach(log_probs: Callable[[list[np.ndarray]], list[np.ndarray]], sample_rate: int,
                seconds: float = PROBE_SECONDS, *, chunk_frames: int = 0, feature_dim: int = 0) -> Reach:
    """Measure a network's :class:`Reach`: run it on noise, change one sample in the middle, and
    see which output frames change (exactly: outside the reach the arithmetic is the same).

    One stride of margin is added on each side for the sample's phase within a frame. With
    ``chunk_frames`` (chunk-wise attention) the first frame of a chunk hears to the chunk's end
    and its last frame less, so one sample is changed at every frame position of a chunk and
    the widest reach is kept. With ``feature_dim`` the network reads feature frames ``(T,
    feature_dim)`` instead of samples (``sample_rate``: frames per second), and the reach is in
    frames: what an export that streams features needs (:mod:`kospeech.export.sherpa_online`).
    """
    rng = np.random.default_rng(0)
    n = int(seconds * sample_rate)
    shape = (n + sample_rate, feature_dim) if feature_dim else (n + sample_rate,)
    wave = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    base, longer = log_probs([wave[:n], wave])
    frames_per_second = longer.shape[0] - base.shape[0]
    if frames_per_second <= 0 or sample_rate % frames_per_second:
        raise ConfigError(f"cannot stream this model: one second of audio adds {frames_per_second} output "
                          f"frames, not a whole number of samples per frame")
    stride = sample_rate // frames_per_second
    period = chunk_frames * stride
    centre = n // 2 if not period else n // 2 // period * period
    lefts: list[int | None] = []
    rights: list[int | None] = []
    positions = [centre + k * stride for k in range(max(chunk_frames, 1))]
    if period:  # the same batch shape as every changed copy: attention's sums may round otherwise
        base = log_probs([wave[:n]])[0]
    for at in positions:
        changed_wave = wave[:n].copy()
        changed_wave[at] += 0.5
        changed = np.nonzero((log_probs([changed_wave])[0] != base).any(axis=1))[0]
        if changed.size == 0:
            raise ConfigError("cannot stream this model: its output does not depend on its input")
        first, last = int(changed[0]), int(changed[-1])
        lefts.append(None if last >= base.shape[0] - 1 else max(last * stride - at + stride, 0))
        rights.append(None if first <= 0 else max(at - first * stride + stride, 0))
    left = None if None in lefts else max(v for v in lefts if v is not None)
    right = None if None in rights else max(v for v in rights if v is not None)
    return Reach(stride, left, right, period)


def _best_path(log_probs: np.ndarray, last: int) -> tuple[list[int], np.ndarray]:
    """The best path's units over ``log_probs`` (argmax per frame, repeats merged, blanks dropped),
    continuing from a frame whose best unit was ``last``; and each frame's best unit."""
    best = ctc.mask_non_units(log_probs).argmax(-1)
    tokens = []
    for tok in best.tolist():
        if tok != ctc.BLANK_ID and tok != last:
            tokens.append(tok)
        last = tok
    return tokens, best


class _Greedy:
    """``ctc_greedy`` with :class:`~kospeech.runtime.ctc.PrefixBeam`'s ``advance``/``best``: the best
    path of the frames so far."""

    def __init__(self) -> None:
        self.best_ids: list[int] = []
        self.last = ctc.BLANK_ID

    def advance(self, log_probs: np.ndarray) -> None:
        tokens, best = _best_path(log_probs, self.last)
        self.best_ids = self.best_ids + tokens
        if best.size:
            self.last = int(best[-1])

    def best(self) -> list[int]:
        return list(self.best_ids)


class _CtcSegment:
    """An open segment decoded by a CTC search (:class:`_Greedy` or
    :class:`~kospeech.runtime.ctc.PrefixBeam`): it keeps the segment's decided log-probabilities,
    since its token times come from aligning the segment's best prefix to them at its end."""

    def __init__(self, search: Any) -> None:
        self.search = search
        self.frames: list[np.ndarray] = []
        self.last = ctc.BLANK_ID  # the best path's unit at the last decided frame

    def advance(self, log_probs: np.ndarray) -> np.ndarray:
        """Decide these frames; which of them are speech (their best unit is not blank)."""
        self.search.advance(log_probs)
        self.frames.append(np.asarray(log_probs, dtype=np.float32))
        best = ctc.mask_non_units(log_probs).argmax(-1)
        self.last = int(best[-1])
        return best != ctc.BLANK_ID

    def look_ahead(self, log_probs: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The partial text's tokens: the search's best prefix and the best path of the tentative
        frames after it (the beam is not advanced); and which tentative frames are speech."""
        tokens, best = _best_path(log_probs, self.last)
        return self.search.best() + tokens, best != ctc.BLANK_ID

    def best(self) -> list[int]:
        return self.search.best()

    def spans(self, tokens: list[int]) -> list[ctc.Span]:
        log_probs = np.concatenate(self.frames) if self.frames else np.zeros((0, 1), np.float32)
        return ctc.align(log_probs, tokens) or []

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self.frames)


class _TransducerSegment:
    """An open segment decoded by the incremental transducer greedy search: the prediction
    network's state carries from one call to the next, and each token's time is the frame it was
    emitted at, so no frames are kept."""

    nbytes = 0

    def __init__(self, search: transducer.Greedy) -> None:
        self.search = search

    def advance(self, frames: np.ndarray) -> np.ndarray:
        """Decide these encoder frames; which of them emitted a token."""
        return self.search.advance(frames)

    def look_ahead(self, frames: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The tokens so far and those the tentative frames add, from a copy of the search."""
        return self.search.look_ahead(frames)

    def best(self) -> list[int]:
        return self.search.best()

    def spans(self, tokens: list[int]) -> list[ctc.Span]:
        return list(self.search.spans)


def _trailing(speech: np.ndarray) -> int:
    """Frames after the last speech frame (all of them when none is speech)."""
    found = np.nonzero(speech)[0]
    return int(speech.size - 1 - found[-1]) if found.size else int(speech.size)


class Stream:
    """One audio stream being recognised (made by :meth:`kospeech.inference.driver.Driver.stream`).

    Args:
        driver: the model, a :class:`~kospeech.inference.driver.Driver` (either engine).
        search: ``ctc_prefix_beam`` (with the model's LM and hotwords when its default search has
            them) or ``ctc_greedy`` for a CTC head, ``transducer_greedy`` for a transducer; None
            takes the model's default when it is one of those, else its head's (the prefix beam,
            or the transducer's greedy search).
        step_seconds: how much new audio runs the network again (the partial text's rhythm; a
            shorter step costs more compute for the same audio).
        endpoint: when a segment closes (:class:`Endpoint`); None never closes one before
            :meth:`finish`.
        look_ahead: seconds of audio after a frame that must have arrived before the frame is
            decided; None waits for the network's whole reach, so decided frames are exactly the
            offline ones. Less lowers the latency of final text at some accuracy: the frame is
            computed as if the audio ended there.
        name: how the results name the stream.
        **options: search options (``beam_size``, ``lm``, ``lm_weight``, ``hotwords``,
            ``max_symbols_per_frame``...).
    """

    def __init__(self, driver: Any, *, search: str | Mapping[str, Any] | None = None, step_seconds: float = 0.32,
                 endpoint: Endpoint | None = Endpoint(), name: str = "<stream>", look_ahead: float | None = None,
                 **options: Any) -> None:
        engine = driver.engine
        if not hasattr(engine, "network_outputs"):
            raise ConfigError(f"the {engine.kind} engine cannot stream")
        if search is None and driver.search_cfg.get("name") not in STREAM_SEARCHES:
            search = ({"name": "transducer_greedy"} if engine.head == "transducer" else
                      {**{k: v for k, v in driver.search_cfg.items() if k in ("lm", "lm_weight", "hotwords",
                                                                                "hotword_weight")},
                       "name": "ctc_prefix_beam"})
        self.search_cfg = driver.search_config(search, **options)
        chosen = self.search_cfg.get("name")
        if chosen not in STREAM_SEARCHES:
            raise ConfigError(f"a stream decodes with {' or '.join(CTC_STREAM_SEARCHES)} (a CTC head) or "
                              f"{' or '.join(TRANSDUCER_STREAM_SEARCHES)} (a transducer), not {chosen!r}")
        self._transducer = chosen in TRANSDUCER_STREAM_SEARCHES
        head = "transducer" if self._transducer else "ctc"
        if engine.head != head:
            raise ConfigError(f"{chosen} decodes a {head.upper() if head == 'ctc' else head} head; this model's "
                              f"is {engine.head!r}")
        if step_seconds <= 0:
            raise ConfigError(f"step_seconds must be positive, got {step_seconds}")
        self.driver, self.engine, self.name, self.endpoint = driver, engine, name, endpoint
        self.sample_rate = int(engine.sample_rate)
        #: what the window's network gives: encoder frames for a transducer, else CTC log-probabilities
        self._output = "encoder_out" if self._transducer else "log_probs"
        self.reach: Reach = driver.stream_reach(self._output)
        if look_ahead is not None and look_ahead < 0:
            raise ConfigError(f"look_ahead must be >= 0 seconds, got {look_ahead}")
        full = self.reach.right
        self._look_ahead = full if look_ahead is None or full is None else min(full, int(look_ahead * self.sample_rate))
        self._lm, self._context = (driver.stream_fusion(self.search_cfg)
                                   if self.search_cfg["name"] == "ctc_prefix_beam" else (None, None))
        self._step = max(self.reach.stride, int(round(step_seconds * self.sample_rate / self.reach.stride))
                         * self.reach.stride)
        self._buffer = np.zeros(0, dtype=np.float32)  # samples from _buffer_start on
        self._buffer_start = 0
        self._received = 0
        self._run_at = 0  # samples received when the network last ran
        self._pieces: list[tuple[float, float, Decoded]] = []
        self._finals: list[Result] = []
        self._partial: list[int] = []
        self._finished = False
        self._finals_unread: list[Result] = []
        self._start_segment(0)

    # ---- the API ---------------------------------------------------------------------------
    def feed(self, samples: Any) -> str:
        """Take more audio (a 1-D float or integer PCM array at the model's rate); the text so far."""
        if self._finished:
            raise ConfigError("this stream is finished; start another with .stream()")
        wave = wave_from_array(samples, self.name) if np.size(samples) else np.zeros(0, np.float32)
        self._buffer = np.concatenate((self._buffer, wave))
        self._received += wave.size
        while self._received - self._run_at >= self._step:
            self._run(final=False)
        return self.text

    def finish(self) -> Result:
        """Decode what is left and return the whole stream's Result (text, words with times)."""
        if not self._finished:
            self._run(final=True)
            self._finished = True
        return self.driver._result(self.name, self._received / self.sample_rate, self._pieces)

    @property
    def text(self) -> str:
        """The closed segments' text and the open segment's partial text."""
        words = [r.text for r in self._finals if r.text]
        partial = self.engine.detokenize(self._partial) if self._partial else ""
        return " ".join([*words, partial] if partial else words)

    def finals(self) -> list[Result]:
        """The segments closed since the last call, each a final Result with times on the whole stream."""
        out, self._finals_unread = self._finals_unread, []
        return out

    @property
    def seconds(self) -> float:
        return self._received / self.sample_rate

    @property
    def latency(self) -> float | None:
        """Algorithmic latency of final text in seconds: the look-ahead a frame waits for plus one
        step (None when frames wait for the end of their segment)."""
        if self._look_ahead is None:
            return None
        return (self._look_ahead + self._step) / self.sample_rate

    def state_bytes(self) -> int:
        """The memory this stream holds: its audio window and its segment's decided frames."""
        return int(self._buffer.nbytes + self._segment.nbytes)

    # ---- segments --------------------------------------------------------------------------
    def _start_segment(self, at: int) -> None:
        self._segment_start = at  # absolute sample
        self._done = 0  # stable frames of the segment already in the search
        self._segment: _CtcSegment | _TransducerSegment = self._new_segment()
        self._trailing_blank = 0
        self._emitted = False
        self._partial = []

    def _new_segment(self) -> _CtcSegment | _TransducerSegment:
        """A fresh search for a segment, of the search family the stream decodes with."""
        cfg = self.search_cfg
        if self._transducer:
            return _TransducerSegment(transducer.Greedy(self.engine.predictor_step, self.engine.joint,
                                                        self.engine.predictor_state(),
                                                        int(cfg.get("max_symbols_per_frame", 3))))
        if cfg["name"] == "ctc_greedy":
            return _CtcSegment(_Greedy())
        return _CtcSegment(ctc.PrefixBeam(self._vocab_size(), int(cfg.get("beam_size", 10)), lm=self._lm,
                                          lm_weight=float(cfg.get("lm_weight") or 0.0),
                                          length_bonus=float(cfg.get("length_bonus", 0.0)), context=self._context))

    def _vocab_size(self) -> int:
        tokenizer = self.engine.tokenizer
        return int(tokenizer.vocab_size)

    def _run(self, *, final: bool) -> None:
        """Run the network on the current window; commit the stable frames; update the partial text."""
        self._run_at = self._received
        stride = self.reach.stride
        seg_len = self._received - self._segment_start
        start = self._window_start()
        window = self._samples(self._segment_start + start, self._received)
        frames_before = start // stride
        if window.size == 0:
            if final:
                self._close(self._done)
            return
        window = self.driver._pad_short(window) if window.size < self.engine.min_samples() else window
        out = self.engine.network_outputs([window], self._output)[0]
        end = frames_before + out.shape[0]
        if final:
            stable_end = end
        elif self._look_ahead is None:
            stable_end = self._done
        else:
            stable_end = min(end, max(self._done, (seg_len - self._look_ahead) // stride + 1))
        self._commit(out[self._done - frames_before : stable_end - frames_before])
        if final:
            self._close(self._done)
            return
        tentative = out[stable_end - frames_before :]
        self._partial, speech = self._segment.look_ahead(tentative)
        self._drop_old_samples()
        self._check_endpoint(tentative, speech)

    def _commit(self, frames: np.ndarray) -> None:
        if frames.shape[0] == 0:
            return
        speech = self._segment.advance(frames)
        self._done += frames.shape[0]
        if speech.any():
            self._emitted = True
            self._trailing_blank = _trailing(speech)
        else:
            self._trailing_blank += frames.shape[0]

    def _check_endpoint(self, tentative: np.ndarray, speech: np.ndarray) -> None:
        """Close or drop the segment by the endpoint rules, on its stable frames; on its frames as
        computed now (``tentative``, which of them are ``speech``) when the model's reach ahead is
        unbounded, since then no frame is stable before the segment ends, and closing commits them."""
        if self.endpoint is None:
            return
        unbounded = self.reach.right is None
        if unbounded:
            trailing, emitted, frames = _trailing(speech), bool(speech.any()), self._done + tentative.shape[0]
        else:
            trailing, emitted, frames = self._trailing_blank, self._emitted, self._done
        seconds_per_frame = self.reach.stride / self.sample_rate
        silence = trailing * seconds_per_frame
        if not emitted and silence >= self.endpoint.silence_without_speech:
            self._start_segment(self._segment_start + frames * self.reach.stride)  # nothing said: dropped
        elif ((emitted and silence >= self.endpoint.silence_after_speech)
              or frames * seconds_per_frame >= self.endpoint.max_segment):
            if unbounded:
                self._commit(tentative)
            self._close(self._done)

    def _close(self, frames: int) -> None:
        """End the segment after ``frames`` stable frames: a final Result when it said anything."""
        stride = self.reach.stride
        tokens = self._segment.best()
        if tokens:
            step = stride / self.sample_rate
            decoded = Decoded(tokens, None, [TokenSpan(self.engine.tokenizer.id_to_token(t), s * step, e * step,
                                                       round(p, 4)) for t, s, e, p in self._segment.spans(tokens)])
            start = self._segment_start / self.sample_rate
            piece = (start, start + frames * step, decoded)
            self._pieces.append(piece)
            result = self.driver._result(self.name, self._received / self.sample_rate, [piece])
            result.segments = [(piece[0], piece[1])]  # where the segment lies on the whole stream
            if result.text:  # units that spell nothing alone (an orphan jamo) make no final
                self._finals.append(result)
                self._finals_unread.append(result)
        self._start_segment(self._segment_start + frames * stride)

    # ---- audio -----------------------------------------------------------------------------
    def _samples(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    def _window_start(self) -> int:
        """Where the next window starts, in samples from the segment's start: ``left`` before the
        first undecided frame, on a frame boundary (on a chunk boundary for chunk-wise attention);
        the segment's start when the reach back is unbounded."""
        if self.reach.left is None:
            return 0
        align = self.reach.period or self.reach.stride
        return max(0, (self._done * self.reach.stride - self.reach.left) // align * align)

    def _drop_old_samples(self) -> None:
        """Forget audio no later window will read (bounded memory whatever the stream's length)."""
        keep_from = self._segment_start + self._window_start()
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :].copy()
            self._buffer_start = keep_from
