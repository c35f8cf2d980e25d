"""Hangul syllables <-> jamo, exactly invertible.

We decompose into **conjoining** jamo (U+1100 leading consonants, U+1161 vowels, U+11A8 trailing
consonants), not compatibility jamo (U+3131..). Compatibility jamo do not say whether a consonant
is an onset or a coda (ㄱ in 가 and in 악 is the same code point), so recomposition would have to
guess, and stray compatibility jamo in real text (ㅋㅋ, ㅠㅠ) would be swallowed into syllables.
Conjoining jamo keep the position, and compatibility jamo in the input pass through untouched.

Round trip: ``compose(decompose(s)) == s`` for every string in NFC (the form
``kospeech.text.normalize`` produces). Composition follows the Unicode canonical composition of
modern Hangul, so for NFC text it never merges jamo that were not one syllable before.
"""

from __future__ import annotations

SBASE, LBASE, VBASE, TBASE = 0xAC00, 0x1100, 0x1161, 0x11A7
LCOUNT, VCOUNT, TCOUNT = 19, 21, 28
NCOUNT = VCOUNT * TCOUNT
SCOUNT = LCOUNT * NCOUNT

LEADING: tuple[str, ...] = tuple(chr(LBASE + i) for i in range(LCOUNT))
VOWELS: tuple[str, ...] = tuple(chr(VBASE + i) for i in range(VCOUNT))
TRAILING: tuple[str, ...] = tuple(chr(TBASE + i) for i in range(1, TCOUNT))
#: every modern conjoining jamo (19 + 21 + 27), the closed unit inventory of a jamo tokenizer
MODERN_JAMO: tuple[str, ...] = LEADING + VOWELS + TRAILING


def is_syllable(ch: str) -> bool:
    """A precomposed modern Hangul syllable (가..힣)."""
    return 0 <= ord(ch) - SBASE < SCOUNT


def decompose_syllable(ch: str) -> str:
    """``'각'`` -> ``'\\u1100\\u1161\\u11a8'``; any other character is returned unchanged."""
    s = ord(ch) - SBASE
    if not 0 <= s < SCOUNT:
        return ch
    lead, rest = divmod(s, NCOUNT)
    vowel, tail = divmod(rest, TCOUNT)
    out = chr(LBASE + lead) + chr(VBASE + vowel)
    return out + chr(TBASE + tail) if tail else out


def decompose(text: str) -> str:
    """Every syllable of ``text`` as conjoining jamo; other characters pass through."""
    return "".join(decompose_syllable(ch) for ch in text)


def compose(text: str) -> str:
    """Inverse of :func:`decompose`: leading + vowel (+ trailing) conjoining jamo -> one syllable."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        lead = ord(text[i]) - LBASE
        vowel = ord(text[i + 1]) - VBASE if i + 1 < n else -1
        if 0 <= lead < LCOUNT and 0 <= vowel < VCOUNT:
            code = SBASE + (lead * VCOUNT + vowel) * TCOUNT
            tail = ord(text[i + 2]) - TBASE if i + 2 < n else 0
            if 0 < tail < TCOUNT:
                out.append(chr(code + tail))
                i += 3
            else:
                out.append(chr(code))
                i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def is_conjoining_jamo(ch: str) -> bool:
    """A character of the Hangul Jamo block (U+1100..U+11FF), which is not text on its own."""
    return 0x1100 <= ord(ch) <= 0x11FF


def to_valid_text(text: str) -> str:
    """Compose jamo into syllables and drop what cannot compose, deterministically.

    A CTC or attention search over jamo may emit a sequence that is no syllable: a vowel with
    no onset (``ᅡᆫ녕``) or a consonant with no vowel (``ᄋ물``). Printed as is, these are orphan
    conjoining jamo that fonts render as boxes and that no Korean reader or downstream tool
    accepts. They are dropped: on the mini recipe's test sets that scored better than giving a
    lone vowel the silent onset ᄋ, at the start of a word or everywhere (README, "Use a trained
    model from Python"): most orphans are a stretched vowel or a stray consonant, not a missed
    syllable. Compatibility jamo (ㅋㅋ, U+3131..) are text and pass through untouched.
    Idempotent, and the identity on composed NFC text.
    """
    if not any(is_conjoining_jamo(ch) for ch in text):
        return text
    return "".join(ch for ch in compose(text) if not is_conjoining_jamo(ch))
