"""What the driver and an engine agree on, and the small input rules every door shares.

:class:`Engine` is the interface a model offers the driver (:class:`kospeech.inference.api.TorchEngine`,
:class:`kospeech.runtime.model.OnnxEngine`); :class:`Decoded` is what it gives back. The helpers
here (hotword spelling, samples for frames, arrays as waves, input names) are used by the driver,
the streams and both engines, so they live below all of them. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kospeech.errors import DataError
from kospeech.inference.timing import TokenSpan


@dataclass
class Decoded:
    """One decoded piece: token ids, score, and token spans in seconds from the piece's start (None: no times)."""

    tokens: list[int]
    score: float | None
    spans: list[TokenSpan] | None


class Engine(Protocol):
    """What the driver needs from a model: waves in, token ids (and spans) out."""

    #: ``torch`` or ``onnx``
    kind: str
    sample_rate: int
    #: the tokenizer's word separator (``|`` for characters and jamo, ``▁`` for sentencepiece)
    space_symbol: str

    def min_samples(self) -> int:
        """The fewest samples the encoder accepts; shorter audio is padded up to it."""

    def default_search(self) -> dict[str, Any]:
        """The model's own decoding: the export's or checkpoint's ``decode.search``, else the head's best."""

    def build_search(self, cfg: Mapping[str, Any]) -> Any:
        """A ready search for ``cfg`` (LM loaded, options checked); raises ConfigError naming a bad option."""

    def decode(self, waves: Sequence[np.ndarray], search: Any, *, timestamps: bool) -> list[Decoded]:
        """A batch of waves at ``sample_rate`` -> one Decoded each, in order."""

    def detokenize(self, ids: Sequence[int]) -> str:
        """Token ids -> text."""


def encode_hotwords(cfg: Mapping[str, Any], encode: Callable[[str], list[int]]) -> dict[str, Any]:
    """``cfg`` with its ``hotwords`` (strings, as users give them) as token-id sequences, as the searches take them."""
    out = dict(cfg)
    words = out.get("hotwords")
    if words:
        if isinstance(words, str):
            words = [words]
        out["hotwords"] = [encode(w) if isinstance(w, str) else [int(i) for i in w] for w in words]
    return out


def read_hotwords(path: str | Path) -> list[str]:
    """A hotword file: one word or phrase per line (UTF-8 or CP949), blank lines and ``#`` comments skipped."""
    from kospeech.files import decode_lines

    p = Path(path)
    try:
        lines, _ = decode_lines(p.read_bytes(), p)
    except OSError as err:
        raise DataError(f"hotword file {p} cannot be read: {err.strerror or err}") from None
    words = [" ".join(line.split()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not words:
        raise DataError(f"hotword file {p} lists no words (one per line)")
    return words


def samples_for_frames(frames: int, sample_rate: int, frame_shift: float) -> int:
    """The fewest samples that give ``frames`` feature frames (the one samples-to-frames rule of both engines)."""
    hop = max(1, int(round(sample_rate * frame_shift)))
    return (int(frames) - 1) * hop + 1


def item_name(item: Any) -> str:
    """How results and errors name an input: its path, ``<stdin>``, or ``<bytes>``/``<array>``."""
    if isinstance(item, (str, Path)):
        return "<stdin>" if str(item) == "-" else str(item)
    if isinstance(item, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(item, np.ndarray) or hasattr(item, "detach"):
        return "<array>"
    return f"<{type(item).__name__}>"


def wave_from_array(item: Any, name: str) -> np.ndarray:
    """A 1-D float32 wave from a numpy or torch array: integer PCM scaled by its type's range,
    several channels down-mixed as files are (:func:`kospeech.audio.downmix`)."""
    wave = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
    if wave.dtype.kind == "i":  # signed PCM: int16 / 32768, int32 / 2**31
        wave = wave.astype(np.float64) / (np.iinfo(wave.dtype).max + 1.0)
    elif wave.dtype.kind == "u":  # unsigned PCM (8-bit WAV) is centred on half its range
        half = (np.iinfo(wave.dtype).max + 1) / 2
        wave = (wave.astype(np.float64) - half) / half
    elif wave.dtype.kind != "f":
        raise DataError(f"{name}: expected audio samples (float or integer PCM), got an array of {wave.dtype}")
    if wave.ndim == 2:  # (channels, samples) or (samples, channels): the shorter axis is the channels
        from kospeech.audio import downmix

        wave = downmix(wave.T if wave.shape[0] < wave.shape[1] else wave, name)
    if wave.ndim != 1:
        raise DataError(f"{name}: expected a 1-D wave (or channels x samples), got shape {wave.shape}")
    return np.ascontiguousarray(wave, dtype=np.float32)
