"""What a transcription returns, shared by the Python API, the CLI, the server and the runtime.

Plain dataclasses with no torch import: the torch-free runtime returns the very same objects.
A failed item is a :class:`Result` whose ``error`` says what went wrong and whose ``text`` is
empty, so a batch never fails as a whole because one item did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    """A span of the output in time: a word (eojeol) or a syllable; seconds from the file start."""

    text: str
    start: float
    end: float
    score: float | None = None


@dataclass
class Result:
    """One transcribed item.

    Attributes:
        text: the transcript (valid Hangul text, words separated by single spaces); empty on error.
        words: eojeol with start/end seconds; empty when the model gives no alignment.
        syllables: the same at syllable (character) level.
        duration: seconds of audio.
        source: the path, or ``"<array>"``/``"<bytes>"``/``"<stdin>"`` for in-memory input.
        error: None on success, else a one-line reason naming the item.
        segments: for long audio, (start, end) seconds of the pieces decoded one by one.
        tokens: the output unit ids (for scoring or re-decoding).
    """

    text: str = ""
    words: list[Word] = field(default_factory=list)
    syllables: list[Word] = field(default_factory=list)
    duration: float = 0.0
    source: str | None = None
    error: str | None = None
    segments: list[tuple[float, float]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"text", "words": [{"text","start","end","score"}], "duration", ...}``."""
        out = asdict(self)
        out["segments"] = [list(s) for s in self.segments]
        return out

    @classmethod
    def failed(cls, source: str | None, error: str) -> Result:
        return cls(source=source, error=error)
