"""Token times -> syllable and word (eojeol) times, for every tokenizer kind, without torch.

A CTC forced alignment (or a transducer's emission frames) gives each output unit a span of
frames. Korean readers want spans of what they read: syllables and eojeol. Jamo units group
into syllables the way :func:`kospeech.text.hangul.to_valid_text` composes them (a lead starts
a syllable, vowel and tail join it; what cannot compose is dropped);
characters are syllables already; a sentencepiece piece spreads its span evenly over its
characters. The space unit (``|``) and sentencepiece's ``▁`` mark word boundaries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kospeech.inference.result import Result, Word
from kospeech.text import hangul

SPM_SPACE = "\u2581"


@dataclass(frozen=True)
class TokenSpan:
    """One output unit in time: its text (as the tokenizer spells it), seconds, and a score."""

    token: str
    start: float
    end: float
    score: float | None = None


def _is_lead(ch: str) -> bool:
    return 0 <= ord(ch) - hangul.LBASE < hangul.LCOUNT


def _joins_previous(ch: str, prev: str | None) -> bool:
    """A vowel after a lead, or a tail after a vowel, continues the syllable being built."""
    if prev is None:
        return False
    is_vowel = 0 <= ord(ch) - hangul.VBASE < hangul.VCOUNT
    is_tail = 0 < ord(ch) - hangul.TBASE < hangul.TCOUNT
    prev_vowel = 0 <= ord(prev) - hangul.VBASE < hangul.VCOUNT
    return (is_vowel and _is_lead(prev)) or (is_tail and prev_vowel)


def _mean(scores: list[float | None]) -> float | None:
    vals = [s for s in scores if s is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def syllables_and_words(spans: Sequence[TokenSpan], space_symbol: str = "|") -> tuple[list[Word], list[Word]]:
    """Group unit spans into (syllables, words); each word's text is its syllables joined."""
    # 1. characters (jamo still separate) with their times and a word-boundary flag before each
    chars: list[tuple[str, float, float, float | None, bool]] = []
    boundary = False
    for span in spans:
        text = span.token
        if text == space_symbol or text == SPM_SPACE or not text.strip():
            boundary = True
            continue
        if text.startswith(SPM_SPACE):
            boundary, text = True, text[len(SPM_SPACE):]
        step = (span.end - span.start) / len(text)
        for k, ch in enumerate(text):
            chars.append((ch, span.start + k * step, span.start + (k + 1) * step, span.score, boundary and k == 0))
        boundary = False
    # 2. syllables: jamo grouped as hangul.to_valid_text composes them; orphans vanish there too
    groups: list[list[tuple[str, float, float, float | None, bool]]] = []
    prev: str | None = None
    for item in chars:
        ch = item[0]
        if groups and not item[4] and hangul.is_conjoining_jamo(ch) and _joins_previous(ch, prev):
            groups[-1].append(item)
        else:
            groups.append([item])
        prev = ch
    syllables: list[Word] = []
    starts_word: list[bool] = []
    for group in groups:
        text = hangul.to_valid_text("".join(g[0] for g in group))
        if not text:
            if group[0][4] and starts_word:  # a dropped orphan still ends the word before it
                starts_word.append(True)
                syllables.append(Word("", group[0][1], group[-1][2]))
            continue
        syllables.append(Word(text, round(group[0][1], 3), round(group[-1][2], 3), _mean([g[3] for g in group])))
        starts_word.append(group[0][4])
    # 3. words: runs of syllables between boundaries
    words: list[Word] = []
    current: list[Word] = []
    for syl, new_word in zip(syllables, starts_word):
        if new_word and current:
            words.append(_join(current))
            current = []
        if syl.text:
            current.append(syl)
    if current:
        words.append(_join(current))
    return [s for s in syllables if s.text], words


def _join(parts: list[Word]) -> Word:
    return Word("".join(p.text for p in parts), parts[0].start, parts[-1].end, _mean([p.score for p in parts]))


def shift(words: Sequence[Word], offset: float, limit: float) -> list[Word]:
    """Times moved by ``offset`` seconds (a piece's start within the whole file) and kept at or
    before ``limit`` (the piece's end: the encoder's last frame may reach into the padding)."""
    out = []
    for w in words:
        start, end = min(w.start + offset, limit), min(w.end + offset, limit)
        out.append(Word(w.text, round(start, 3), round(end, 3), w.score))
    return out


#: one decoded piece of an item: start and end seconds in the item, token ids, token spans
#: (seconds from the piece's start; None when the model gives no alignment)
Piece = tuple[float, float, Sequence[int], Sequence[TokenSpan] | None]


def assemble(
    pieces: Sequence[Piece],
    decode: Callable[[Sequence[int]], str],
    *,
    space_symbol: str = "|",
    seconds: float,
    source: str | None,
) -> Result:
    """The :class:`Result` of one item from its decoded pieces: texts joined, word and syllable
    times put on the item's clock, ``segments`` when it was cut. Shared by the PyTorch API and
    the torch-free runtime, so both give the same result for the same tokens and spans."""
    texts: list[str] = []
    words: list[Word] = []
    syllables: list[Word] = []
    tokens: list[int] = []
    for start, end, ids, spans in pieces:
        text = decode(ids)
        if text:
            texts.append(text)
        tokens.extend(int(i) for i in ids)
        if spans:
            syl, wrd = syllables_and_words(spans, space_symbol)
            syllables.extend(shift(syl, start, end))
            words.extend(shift(wrd, start, end))
    segments = [(round(a, 3), round(b, 3)) for a, b, _, _ in pieces] if len(pieces) > 1 else []
    return Result(text=" ".join(texts), words=words, syllables=syllables, duration=round(seconds, 3), source=source,
                  segments=segments, tokens=tokens)
