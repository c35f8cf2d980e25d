"""KsponSpeech transcript normalisation: notation in, plain text for training and scoring out.

KsponSpeech transcribes spontaneous speech with a small markup (Bang et al., 2020, §2.2):

- dual transcription ``(spelling)/(phonetic)``, e.g. ``(70%)/(칠 십 퍼센트)``, ``(SNS)/(에스 엔 에스)``,
  also for contractions such as ``(그게)/(긍까)``;
- noise and event tags ``b/`` (breath), ``l/`` (laughter), ``o/`` (other speaker), ``n/`` (noise),
  ``u/`` (unintelligible), sometimes glued together (``n/b/``);
- a filler word ends with a slash (``아/``, ``음/``);
- ``+`` marks a repeated word (``모+ 몬``), ``*`` a word heard unclearly (``그거*``).

``normalize_kspon`` applies one small rule per notation, in a fixed order (dual notation first so
that slashes inside a pair are not taken for tags). Each rule is a public function so it can be
tested alone and reused by corpus code that needs only part of the pipeline.

Spelling form: like the original KoSpeech preprocessing (``sentence_filter`` keeps ``%`` in
spelling mode), the spelling form keeps digits, Latin letters and ``%``, and a ``.`` or ``:``
between two digits (``3.5``, ``3:30``) so that numbers stay readable; every other punctuation
mark is dropped. The phonetic form keeps letters and digits only; for well-formed KsponSpeech
lines that is pure Hangul, because every number and foreign word carries a phonetic reading.

Two named normalisations (``NORMALIZATIONS``; ``kospeech data prep --normalization``):

- ``standard``: :func:`normalize_kspon`, the rules above.
- ``kospeech``: :func:`normalize_kospeech`, the rules of the original KoSpeech's preprocessing
  (``dataset/kspon/preprocess`` there), with which its published CRR (86.98%) was measured.
  Written from their behaviour, quirks included; on these inputs the two differ:

  ===========================  ==================  ==========================================
  raw (form)                   ``standard``        ``kospeech``
  ===========================  ==================  ==========================================
  ``(100%)(백 프로)`` (phon.)   ``100 백 프로``      ``백 프로``: any two groups make a pair
  ``50%`` bare (phonetic)      ``50``              ``50퍼센트`` (``프로`` in 3 files it listed)
  ``#``                        dropped             ``샾``
  ``? ! .``                    dropped             kept
  ``~ " '`` and other marks    dropped             kept (only ``/+*-@$^&[]=:;,`` go)
  ``3.5 1,000`` (phonetic)     ``3 5 1 000``       ``3.5 1000`` (both forms; ``standard``
                                                   spelling gives the same)
  a lone ``(group)`` (phon.)   its text kept       it and the text after it, up to the next
                                                   ``(``, dropped
  ===========================  ==================  ==========================================

Noise tags, filler slashes, ``+`` and ``*`` come out the same. ``kospeech compare`` scores
against the data dir's ``text``, so prepare the eval sets with ``--normalization kospeech`` to
set a CRR beside the published one.
"""

from __future__ import annotations

import re
import unicodedata

FORMS: tuple[str, ...] = ("phonetic", "spelling")
NORMALIZATIONS: tuple[str, ...] = ("standard", "kospeech")

# innermost dual pair: "(a)/(b)" with no parentheses inside either side; spaces around "/" allowed
_DUAL = re.compile(r"\(([^()]*)\)\s*/\s*\(([^()]*)\)")
# innermost plain parenthesis group (not part of a pair); removed to expose pairs around it
_PLAIN = re.compile(r"\(([^()]*)\)")
# noise/event tag, not glued to a preceding letter or digit (so "A/S" and "아/" are not tags)
_NOISE_TAG = re.compile(r"(?<![0-9A-Za-z\u3131-\u318e\uac00-\ud7a3])[bnlou]/")
_HANGUL_OR_ALNUM = r"0-9A-Za-z\u1100-\u11ff\u3131-\u318e\uac00-\ud7a3"


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown transcript form {form!r}; use one of {', '.join(FORMS)}")


def resolve_dual(text: str, form: str = "phonetic") -> str:
    """Replace every ``(spelling)/(phonetic)`` pair by the chosen side.

    Pairs are resolved innermost first; a plain parenthesis group that is not part of a pair
    (``((70)%)/(칠 십 퍼센트)``) loses its parentheses so the pair around it can be resolved.
    A line that ends inside the phonetic side (``(70%)/(칠십``, a real annotation slip) is closed.
    """
    _check_form(form)
    side = 1 if form == "spelling" else 2
    if text.count("(") == text.count(")") + 1 and re.search(r"\)\s*/\s*\([^()]*$", text):
        text += ")"  # a pair whose phonetic side lost its closing parenthesis at the end of the line
    while "(" in text:
        new = _DUAL.sub(lambda m: m.group(side).strip(), text)
        if new == text:
            new = _strip_one_plain_group(text)
            if new == text:
                break
        text = new
    return text


def _strip_one_plain_group(text: str) -> str:
    for m in _PLAIN.finditer(text):
        before, after = text[: m.start()], text[m.end() :]
        if re.match(r"\s*/\s*\(", after) or re.search(r"\)\s*/\s*$", before):
            continue  # a side of a pair that still has nested groups: handle the inner ones first
        return before + m.group(1) + after
    # no removable group: drop the innermost unmatched parentheses characters altogether
    return text.replace("(", " ", 1) if text.count("(") != text.count(")") else text


def remove_noise_tags(text: str) -> str:
    """Drop ``b/ l/ o/ n/ u/`` tags, also when several are glued (``n/b/``)."""
    prev = None
    while prev != text:
        prev, text = text, _NOISE_TAG.sub(" ", text)
    return text


def remove_filler_slash(text: str) -> str:
    """``아/`` -> ``아``: the filler word stays, its slash goes.

    Any slash left at this point is a filler mark; between two Latin letters or digits
    (``A/S`` in a spelling form) it simply disappears, elsewhere it becomes a word boundary.
    """
    text = re.sub(r"(?<=[0-9A-Za-z])/(?=[0-9A-Za-z])", "", text)
    return text.replace("/", " ")


def remove_disfluency_marks(text: str) -> str:
    """Drop ``+`` (repetition, ends a word: ``모+ 몬``) and ``*`` (unclear word), keeping the words."""
    text = text.replace("+", " ")
    return text.replace("*", "")


def remove_punctuation(text: str, form: str = "phonetic") -> str:
    """Drop punctuation; the spelling form keeps ``%``, ``.``/``:`` between digits, and ``1,000`` -> ``1000``."""
    _check_form(form)
    if form == "spelling":
        # a "." or ":" between digits (3.5, 3:30) is part of the number, not punctuation;
        # a thousands separator (1,000) is dropped so the number stays one token
        text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
        return re.sub(rf"(?!(?<=\d)[.:](?=\d))[^{_HANGUL_OR_ALNUM}\s%]", " ", text)
    return re.sub(rf"[^{_HANGUL_OR_ALNUM}\s]", " ", text)


def collapse_whitespace(text: str) -> str:
    """One ASCII space between words, none at the ends."""
    return " ".join(text.split())


def normalize_kspon(raw: str, form: str = "phonetic") -> str:
    """Turn one raw KsponSpeech transcript into plain text in the chosen ``form``.

    >>> normalize_kspon("b/ 아/ 모+ 몬 소리야 (70%)/(칠 십 퍼센트) 확률이라니 n/")
    '아 모 몬 소리야 칠 십 퍼센트 확률이라니'
    >>> normalize_kspon("b/ 아/ 모+ 몬 소리야 (70%)/(칠 십 퍼센트) 확률이라니 n/", "spelling")
    '아 모 몬 소리야 70% 확률이라니'
    """
    _check_form(form)
    text = unicodedata.normalize("NFC", raw)
    text = resolve_dual(text, form)
    text = remove_noise_tags(text)
    text = remove_filler_slash(text)
    text = remove_disfluency_marks(text)
    text = remove_punctuation(text, form)
    return collapse_whitespace(text)


def is_empty_after_normalization(raw: str, form: str = "phonetic") -> bool:
    """True for transcripts that hold only tags or marks (``b/ n/``); corpus code skips and counts them."""
    return normalize_kspon(raw, form) == ""


# ---- the original KoSpeech's rules -----------------------------------------------------------

#: the original's reading of a "%" left outside a dual pair, per training file (the number in
#: KsponSpeech_NNNNNN); any other such "%" is read 퍼센트 here (the original stopped there)
KOSPEECH_PERCENT_READINGS: dict[str, str] = {
    "087797": "퍼센트", "215401": "퍼센트", "284574": "퍼센트", "397184": "퍼센트",
    "501006": "프로", "502173": "프로", "542363": "프로", "581483": "퍼센트",
}
_KOSPEECH_DROPPED = frozenset("/+*-@$^&[]=:;,")
_KOSPEECH_NOISE = frozenset("onubl")


def _kospeech_brackets(text: str, form: str) -> str:
    """Keep one side of every two parenthesis groups, counting groups rather than matching pairs.

    Phonetic: an opening parenthesis starts skipping, the next one stops it (so the first group
    and whatever lies between the two groups, the "/" included, are dropped); spelling: a closing
    parenthesis starts skipping, the next one stops it. Parentheses themselves never survive.
    """
    out: list[str] = []
    if form == "phonetic":
        skipping = False
        for ch in text:
            if ch == "(":
                skipping = not skipping
            elif ch != ")" and not skipping:
                out.append(ch)
    else:
        keeping = True
        for ch in text:
            if ch == ")":
                keeping = not keeping
            elif ch != "(" and keeping:
                out.append(ch)
    return "".join(out)


def normalize_kospeech(raw: str, form: str = "phonetic", *, utt_id: str | None = None) -> str:
    """One raw KsponSpeech transcript by the original KoSpeech's rules (see the module's table).

    ``utt_id`` (``KsponSpeech_501006``) selects the original's reading of a bare ``%`` for the
    files it listed.

    >>> normalize_kspon("(100%)(백 프로) 할인? #1"), normalize_kospeech("(100%)(백 프로) 할인? #1")
    ('100 백 프로 할인 1', '백 프로 할인? 샾1')
    """
    _check_form(form)
    text = _kospeech_brackets(unicodedata.normalize("NFC", raw), form)
    number = (utt_id or "").rpartition("_")[2]
    percent = "%" if form == "spelling" else KOSPEECH_PERCENT_READINGS.get(number, "퍼센트")
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch in _KOSPEECH_NOISE and text[i + 1 : i + 2] == "/":
            continue  # a noise tag's letter; its slash goes with the dropped marks
        if ch == "#":
            out.append("샾")
        elif ch == "%":
            out.append(percent)
        elif ch not in _KOSPEECH_DROPPED:
            out.append(ch)
    # the original collapses runs of two or more whitespace characters, then strips the ends
    return re.sub(r"\s\s+", " ", "".join(out).strip())


def normalize(raw: str, form: str = "phonetic", normalization: str = "standard", *, utt_id: str | None = None) -> str:
    """``raw`` by the named normalisation (``standard`` or ``kospeech``) in the chosen form."""
    if normalization == "kospeech":
        return normalize_kospeech(raw, form, utt_id=utt_id)
    if normalization != "standard":
        raise ValueError(f"unknown normalization {normalization!r}; use one of {', '.join(NORMALIZATIONS)}")
    return normalize_kspon(raw, form)
