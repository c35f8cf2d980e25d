"""Writing results as text, JSON lines, SRT, WebVTT or CTM (torch-free, shared with the runtime).

Subtitles cut a cue at a pause between words, or when a cue would pass ``MAX_CUE_SECONDS`` or
``MAX_CUE_CHARS``, so a cue stays readable on screen; without word times a cue spans the item.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from kospeech.inference.result import Result, Word

FORMATS = ("text", "json", "srt", "vtt", "ctm")
MAX_CUE_SECONDS = 6.0
MAX_CUE_CHARS = 40
PAUSE_SECONDS = 0.8


def cues(result: Result) -> list[tuple[float, float, str]]:
    """(start, end, text) subtitle cues of one result."""
    if not result.words:
        return [(0.0, result.duration, result.text)] if result.text else []
    out: list[tuple[float, float, str]] = []
    group: list[Word] = []
    for w in result.words:
        if group:
            text_len = sum(len(g.text) + 1 for g in group) + len(w.text)
            if (w.start - group[-1].end > PAUSE_SECONDS or w.end - group[0].start > MAX_CUE_SECONDS
                    or text_len > MAX_CUE_CHARS):
                out.append((group[0].start, group[-1].end, " ".join(g.text for g in group)))
                group = []
        group.append(w)
    out.append((group[0].start, group[-1].end, " ".join(g.text for g in group)))
    return out


def _clock(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(result: Result) -> str:
    return "".join(
        f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n\n" for i, (a, b, text) in enumerate(cues(result), 1)
    )


def to_vtt(result: Result) -> str:
    body = "".join(f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n\n" for a, b, text in cues(result))
    return "WEBVTT\n\n" + body


def to_ctm(result: Result, utterance: str | None = None) -> str:
    """NIST CTM: ``utt channel start duration word confidence`` per word."""
    utt = (utterance or result.source or "utt").replace(" ", "_")
    return "".join(
        f"{utt} 1 {w.start:.3f} {max(w.end - w.start, 0.0):.3f} {w.text} {1.0 if w.score is None else w.score:.4f}\n"
        for w in result.words
    )


def render(results: Sequence[Result], fmt: str, names: Sequence[str] | None = None) -> str:
    """All results in one of ``FORMATS``; failed items are left out (their errors go to stderr)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    names = list(names) if names is not None else [r.source or f"item{i}" for i, r in enumerate(results)]
    parts: list[str] = []
    for name, r in zip(names, results):
        if fmt == "json":
            parts.append(json.dumps({"path": name, **r.to_dict()}, ensure_ascii=False) + "\n")
        elif not r.ok:
            continue
        elif fmt == "text":
            parts.append(f"{name}\t{r.text}\n" if len(results) > 1 else f"{r.text}\n")
        elif fmt == "srt":
            parts.append(to_srt(r))
        elif fmt == "vtt":
            parts.append(to_vtt(r) if not parts else to_vtt(r).removeprefix("WEBVTT\n\n"))
        else:
            parts.append(to_ctm(r, name))
    return "".join(parts)
