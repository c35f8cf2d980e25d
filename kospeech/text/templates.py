"""Everyday Korean sentences generated from templates, for the synthetic corpus's training side.

Why: the packaged list holds a few hundred sentences, so a model trained on them hears the same
few thousand words again and again and learns little about the sounds of words it has never
heard, which is what every test sentence is made of. Templates with slots (people, places,
food, objects, activities, times, dates, prices, counts) give thousands of new sentences with new
word sequences and new words around numbers, in KsponSpeech notation (numbers as dual
``(3시)/(세 시)``), so the phonetic form stays pure Hangul for espeak-ng.

A template is a line of ``kospeech/resources/templates_ko.yaml`` such as
``{person:랑} {place:에서} 만나기로 했어요``: ``{slot}`` is a word of that slot, and
``{slot:PARTICLE}`` attaches the particle in the form the word's last spoken syllable takes
(``을/를``, ``이/가``, ``은/는``, ``와/과``, ``이랑/랑``, ``으로/로``, ``아/야``, ``이에요/예요``,
``이야/야``). Number slots (``{time}``, ``{date}``, ``{price}``...) are made here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources

import yaml

from kospeech.errors import ConfigError

DEFAULT_TEMPLATES = "templates_ko.yaml"

_SINO_DIGITS = ["", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구"]
_NATIVE_ONES = ["", "하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉"]
_NATIVE_ONES_ATTR = ["", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉"]
_NATIVE_TENS = ["", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔"]

# particle -> (form after a final consonant, form after a vowel)
_PARTICLES: dict[str, tuple[str, str]] = {
    "을": ("을", "를"),
    "이": ("이", "가"),
    "은": ("은", "는"),
    "와": ("과", "와"),
    "랑": ("이랑", "랑"),
    "로": ("으로", "로"),
    "아": ("아", "야"),
    "이에요": ("이에요", "예요"),
    "이야": ("이야", "야"),
}


def sino_number(n: int) -> str:
    """Sino-Korean reading, one word per 10^4 group's unit: 2024 -> ``이천 이십 사``, 15000 -> ``만 오천``."""
    if n < 0:
        raise ValueError(f"no reading for negative numbers: {n}")
    if n == 0:
        return "영"
    words: list[str] = []
    man, rest = divmod(n, 10000)
    if man:
        words.append("만" if man == 1 else sino_number(man).replace(" ", "") + "만")
    for value, unit in ((1000, "천"), (100, "백"), (10, "십")):
        d, rest = divmod(rest, value)
        if d:
            words.append(("" if d == 1 else _SINO_DIGITS[d]) + unit)
    if rest:
        words.append(_SINO_DIGITS[rest])
    return " ".join(words)


def native_number(n: int, *, attributive: bool = True) -> str:
    """Native Korean reading of 1-99 (``스물 다섯``); the attributive form before a counter
    (``한``, ``두``, ``스무``) when ``attributive``."""
    if not 1 <= n <= 99:
        raise ValueError(f"native Korean numbers here cover 1-99, got {n}")
    tens, ones = divmod(n, 10)
    if attributive and n == 20:
        return "스무"
    ones_word = (_NATIVE_ONES_ATTR if attributive else _NATIVE_ONES)[ones]
    return " ".join(w for w in (_NATIVE_TENS[tens], ones_word) if w)


def has_final_consonant(syllable: str) -> bool:
    """Whether a Hangul syllable ends in a consonant (받침); non-syllables count as vowel-final."""
    code = ord(syllable) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def attach(word_spoken: str, particle: str) -> str:
    """The form of ``particle`` that follows ``word_spoken`` (its last syllable decides)."""
    if particle not in _PARTICLES:
        return particle
    last = word_spoken.rstrip()[-1:] or "가"
    with_final, after_vowel = _PARTICLES[particle]
    if particle == "로" and has_final_consonant(last) and (ord(last) - 0xAC00) % 28 == 8:  # ㄹ: 로
        return "로"
    return with_final if has_final_consonant(last) else after_vowel


def _dual(written: str, spoken: str) -> tuple[str, str]:
    return f"({written})/({spoken})", spoken


def _time(rng: random.Random) -> tuple[str, str]:
    h = rng.randint(1, 12)
    if rng.random() < 0.4:
        m = rng.choice([5, 10, 15, 20, 25, 30, 40, 45, 50])
        return f"({h}시)/({native_number(h)} 시) ({m}분)/({sino_number(m)} 분)", f"{sino_number(m)} 분"
    return _dual(f"{h}시", f"{native_number(h)} 시")


def _date(rng: random.Random) -> tuple[str, str]:
    month = rng.randint(1, 12)
    day = rng.randint(1, 31 if month != 2 else 28)
    month_spoken = {6: "유", 10: "시"}.get(month, sino_number(month))
    return f"({month})/({month_spoken}) 월 ({day})/({sino_number(day)}) 일", f"{sino_number(day)} 일"


def _price(rng: random.Random) -> tuple[str, str]:
    won = rng.choice([500, 1000, 1500, 2000, 3000, 4500, 5000, 7000, 8000, 9900, 12000, 15000, 25000, 30000, 50000])
    won = won if rng.random() < 0.7 else rng.randint(1, 99) * 1000
    return _dual(f"{won}원", f"{sino_number(won)} 원")


def _counted(counters: Sequence[str], native: bool, lo: int, hi: int) -> Callable[[random.Random], tuple[str, str]]:
    def make(rng: random.Random) -> tuple[str, str]:
        n = rng.randint(lo, hi)
        reading = native_number(n) if native else sino_number(n)
        counter = rng.choice(counters)
        return _dual(f"{n}{counter}", f"{reading} {counter}")

    return make


def _phone(rng: random.Random) -> tuple[str, str]:
    digits = "010" + "".join(str(rng.randint(0, 9)) for _ in range(4))
    spoken = " ".join("공" if d == "0" else _SINO_DIGITS[int(d)] for d in digits)
    return _dual(f"{digits[:3]}-{digits[3:]}", spoken)


def _year(rng: random.Random) -> tuple[str, str]:
    y = rng.randint(1980, 2030)
    return _dual(f"{y}년", f"{sino_number(y)} 년")


NUMBER_SLOTS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "time": _time,
    "date": _date,
    "price": _price,
    "year": _year,
    "phone": _phone,
    "items": _counted(["개", "장", "병", "권", "마리", "대"], True, 1, 12),
    "people": _counted(["명"], True, 1, 12),
    "cups": _counted(["잔"], True, 1, 5),
    "times": _counted(["번"], True, 1, 10),
    "age": _counted(["살"], True, 3, 89),
    "hours": _counted(["시간"], True, 1, 10),
    "minutes": _counted(["분"], False, 2, 50),
    "days": _counted(["일", "주", "개월", "년"], False, 2, 30),
    "floor": _counted(["층"], False, 1, 30),
    "exit": _counted(["번 출구"], False, 1, 12),
    "line": _counted(["호선"], False, 1, 9),
    "bus": _counted(["번 버스"], False, 1, 9999),
    "room": _counted(["호"], False, 101, 1510),
    "percent": _counted(["퍼센트"], False, 5, 90),
    "degrees": _counted(["도"], False, 2, 38),
}


@cache
def load_templates() -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """(slots, templates) of the packaged ``templates_ko.yaml``."""
    text = resources.files("kospeech").joinpath("resources").joinpath(DEFAULT_TEMPLATES).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    slots = {k: tuple(str(w) for w in v) for k, v in data["slots"].items()}
    templates = tuple(str(t) for t in data["templates"])
    for t in templates:
        for name in _slot_names(t):
            if name not in slots and name not in NUMBER_SLOTS:
                raise ConfigError(f"{DEFAULT_TEMPLATES}: template {t!r} uses unknown slot {{{name}}}")
    return slots, templates


def _slot_names(template: str) -> list[str]:
    out = []
    for part in template.split("{")[1:]:
        out.append(part.split("}", 1)[0].split(":", 1)[0])
    return out


def fill(template: str, slots: dict[str, Sequence[str]], rng: random.Random) -> str:
    """One notated sentence from ``template`` (words and particles as the module docstring says)."""
    out: list[str] = []
    rest = template
    while "{" in rest:
        before, _, tail = rest.partition("{")
        spec, _, rest = tail.partition("}")
        name, _, particle = spec.partition(":")
        if name in NUMBER_SLOTS:
            raw, spoken = NUMBER_SLOTS[name](rng)
        else:
            raw = spoken = rng.choice(slots[name])
        out.append(before + raw + (attach(spoken, particle) if particle else ""))
    out.append(rest)
    return " ".join("".join(out).split())


def generate_sentences(n: int, *, seed: int) -> list[str]:
    """``n`` notated sentences drawn from the packaged templates (repeats possible, rare)."""
    slots, templates = load_templates()
    rng = random.Random(seed)
    prefixes = slots.get("prefix", ())
    out = []
    for _ in range(n):
        line = fill(rng.choice(templates), slots, rng)
        if prefixes and rng.random() < 0.25:
            line = f"{rng.choice(prefixes)} {line}"
        out.append(line)
    return out
