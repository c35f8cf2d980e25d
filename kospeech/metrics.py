"""Error rates for Korean ASR: CER/CRR, WER, space-normalised WER, alignments, confidence intervals.

All rates are percentages. Definitions:

- **CER** (character error rate): Levenshtein edits between the reference and hypothesis
  characters with all whitespace removed, over the number of reference characters. Korean word
  spacing is inconsistent even in human transcripts, so spaces are not scored as characters;
  this is the usual Korean measure (KsponSpeech paper, KoSpeech).
- **CER with spaces** (``cer_spaces=True``; ``kospeech score --cer-spaces``): whitespace runs
  collapse to one space, which is then scored as a character like any other, as ESPnet's
  ``score_cer`` does (its char tokenizer turns each space into a ``<space>`` token). ESPnet's
  published Korean CERs (KsponSpeech, Zeroth) are of this kind; they are not comparable with
  the default CER, since a spacing slip counts there and the reference is longer by a space
  per word boundary. sWER and the alignments sWER uses stay space-free.
- **CRR** = 100 - CER, the "character recognition rate" KoSpeech reports.
- **WER**: edits between whitespace-separated words, over the reference word count.
- **sWER** (space-normalised WER, Bang et al. 2020, "KsponSpeech: Korean spontaneous speech
  corpus for automatic speech recognition", Appl. Sci. 10(19) 6936; the ESPnet KsponSpeech
  recipe's ``local/get_space_normalized_hyps.py``): the hypothesis characters are aligned to
  the reference characters with spaces ignored; every hypothesis character that *matches* a
  reference character takes over the reference's spacing before it (a word boundary or none),
  while substituted and inserted characters keep the hypothesis' own spacing. WER is then
  computed between the reference and this re-spaced hypothesis, so a hypothesis whose only
  fault is spacing scores 0, while misrecognised characters still break words.

Per-utterance rates with an empty reference count every inserted unit as one error over a
length of one (instead of dividing by zero); corpus totals sum counts first, as sclite does.
"""

from __future__ import annotations

import collections
import json
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kospeech.errors import DataError

logger = logging.getLogger(__name__)

CORRECT, SUBSTITUTION, DELETION, INSERTION = "C", "S", "D", "I"
SPACE_MARK = "\u2581"  # how a scored space shows in alignments (sentencepiece's word mark)


# ---------------------------------------------------------------------------------------------
# alignment


def _codes(ref: Sequence[str], hyp: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Map tokens to integers so the DP compares arrays, not strings."""
    if isinstance(ref, str) and isinstance(hyp, str):
        return (
            np.frombuffer(ref.encode("utf-32-le"), dtype=np.uint32),
            np.frombuffer(hyp.encode("utf-32-le"), dtype=np.uint32),
        )
    table: dict[str, int] = {}
    r = np.fromiter((table.setdefault(t, len(table)) for t in ref), dtype=np.int64, count=len(ref))
    h = np.fromiter((table.setdefault(t, len(table)) for t in hyp), dtype=np.int64, count=len(hyp))
    return r, h


def _batch_matrices(codes: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Levenshtein cost matrices of several pairs at once, shape (B, N+1, M+1), padded.

    The DP runs one vectorised numpy step per reference position for the whole batch. Within a
    row, the insertion recurrence ``D[i, j] = min(D[i, j], D[i, j-1] + 1)`` is a running minimum,
    ``D[i, j] = j + min_{k<=j}(T[k] - k)`` (``np.minimum.accumulate``). Padding never leaks into
    a pair's own ``[:n+1, :m+1]`` block, since every cell depends only on cells above and left.
    """
    B = len(codes)
    N = max(len(r) for r, _ in codes)
    M = max(len(h) for _, h in codes)
    R = np.full((B, N), -1, dtype=np.int64)
    H = np.full((B, M), -2, dtype=np.int64)
    for b, (r, h) in enumerate(codes):
        R[b, : len(r)] = r
        H[b, : len(h)] = h
    cols = np.arange(M + 1, dtype=np.int32)
    cost = np.empty((B, N + 1, M + 1), dtype=np.int32)
    cost[:, 0] = cols
    row = np.empty((B, M + 1), dtype=np.int32)
    for i in range(1, N + 1):
        prev = cost[:, i - 1]
        row[:, 0] = i
        np.minimum(prev[:, :-1] + (H != R[:, i - 1 : i]), prev[:, 1:] + 1, out=row[:, 1:])
        cost[:, i] = np.minimum.accumulate(row - cols, axis=1) + cols
    return cost


def edit_matrix(ref: Sequence[str], hyp: Sequence[str]) -> np.ndarray:
    """The (len(ref)+1, len(hyp)+1) Levenshtein cost matrix of one pair."""
    r, h = _codes(ref, hyp)
    return _batch_matrices([(r, h)])[0, : len(r) + 1, : len(h) + 1]


@dataclass(frozen=True)
class Alignment:
    """An optimal edit path: ``ops`` holds ``(op, ref_token, hyp_token)`` with op in C/S/D/I."""

    ops: tuple[tuple[str, str | None, str | None], ...]

    @cached_property
    def _counts(self) -> collections.Counter[str]:
        return collections.Counter(o for o, _, _ in self.ops)

    def count(self, op: str) -> int:
        return self._counts[op]

    @property
    def correct(self) -> int:
        return self.count(CORRECT)

    @property
    def substitutions(self) -> int:
        return self.count(SUBSTITUTION)

    @property
    def deletions(self) -> int:
        return self.count(DELETION)

    @property
    def insertions(self) -> int:
        return self.count(INSERTION)

    @property
    def errors(self) -> int:
        return len(self.ops) - self.correct

    @property
    def ref_len(self) -> int:
        return len(self.ops) - self.insertions


def _traceback(cost: list[list[int]], r: list[int], h: list[int], ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    ops: list[tuple[str, str | None, str | None]] = []
    i, j = len(r), len(h)
    while i > 0 or j > 0:
        c = cost[i][j]
        if i > 0 and j > 0 and r[i - 1] == h[j - 1] and c == cost[i - 1][j - 1]:
            ops.append((CORRECT, ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and c == cost[i - 1][j] + 1:
            ops.append((DELETION, ref[i - 1], None))
            i -= 1
        elif j > 0 and c == cost[i][j - 1] + 1:
            ops.append((INSERTION, None, hyp[j - 1]))
            j -= 1
        else:
            ops.append((SUBSTITUTION, ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
    ops.reverse()
    return Alignment(tuple(ops))


def align_batch(pairs: Sequence[tuple[Sequence[str], Sequence[str]]], *, max_cells: int = 2_000_000) -> list[Alignment]:
    """Alignments of many ``(ref, hyp)`` pairs; the DP is batched over pairs of similar length.

    Pairs are sorted by length and cut into chunks of at most ``max_cells`` matrix cells, so a
    corpus of thousands of utterances costs a few hundred numpy steps, not one per cell.
    """
    out: list[Alignment | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda k: (len(pairs[k][0]), len(pairs[k][1])))
    codes = [_codes(*pairs[k]) for k in order]
    start = 0
    while start < len(order):
        stop, n_max, m_max = start, 0, 0
        while stop < len(order):
            n2, m2 = max(n_max, len(codes[stop][0])), max(m_max, len(codes[stop][1]))
            if stop > start and (stop - start + 1) * (n2 + 1) * (m2 + 1) > max_cells:
                break
            n_max, m_max, stop = n2, m2, stop + 1
        cost = _batch_matrices(codes[start:stop])
        for b, k in enumerate(order[start:stop]):
            r, h = codes[start + b]
            block = cost[b, : len(r) + 1, : len(h) + 1].tolist()
            out[k] = _traceback(block, r.tolist(), h.tolist(), *pairs[k])
        start = stop
    return out  # type: ignore[return-value]


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Levenshtein alignment of two token sequences (a ``str`` is a sequence of characters).

    Among equally cheap paths, the walk back from the end takes a match first, then a
    deletion, an insertion, and a substitution last, so surplus or missing tokens at the end of
    a hypothesis (a common decoder failure) show as insertions or deletions there.
    """
    return align_batch([(ref, hyp)])[0]


def chars(text: str, *, spaces: bool = False) -> str:
    """The characters CER scores: NFC, whitespace removed (``spaces``: one space kept between words)."""
    return (" " if spaces else "").join(unicodedata.normalize("NFC", text).split())


def words(text: str) -> list[str]:
    return unicodedata.normalize("NFC", text).split()


def _rate(errors: int, length: int) -> float:
    return 100.0 * errors / max(length, 1)


def cer(ref: str, hyp: str, *, spaces: bool = False) -> float:
    """Character error rate in percent, spaces removed (``spaces``: scored as characters, ESPnet's CER)."""
    a = align(chars(ref, spaces=spaces), chars(hyp, spaces=spaces))
    return _rate(a.errors, a.ref_len)


def crr(ref: str, hyp: str) -> float:
    """Character recognition rate, 100 - CER, clamped at 0 (a CER past 100% from insertions
    recognises no character, it does not recognise a negative number of them)."""
    return max(0.0, 100.0 - cer(ref, hyp))


def wer(ref: str, hyp: str) -> float:
    """Word error rate in percent on whitespace-separated words."""
    a = align(words(ref), words(hyp))
    return _rate(a.errors, a.ref_len)


def space_normalize(ref: str, hyp: str, char_alignment: Alignment | None = None) -> str:
    """``hyp`` re-spaced after ``ref`` wherever its characters match (see the module docstring).

    ``char_alignment`` is ``align(chars(ref), chars(hyp))`` when the caller already has it.
    """
    ref_words, hyp_words = words(ref), words(hyp)
    ref_starts = [k == 0 for w in ref_words for k in range(len(w))]
    hyp_starts = [k == 0 for w in hyp_words for k in range(len(w))]
    a = char_alignment if char_alignment is not None else align("".join(ref_words), "".join(hyp_words))
    out: list[str] = []
    ri = hi = 0
    for op, _, h in a.ops:
        if op == DELETION:
            ri += 1
            continue
        starts = ref_starts[ri] if op == CORRECT else hyp_starts[hi]
        if starts and out:
            out.append(" ")
        out.append(h or "")
        hi += 1
        if op != INSERTION:
            ri += 1
    return "".join(out)


def swer(ref: str, hyp: str) -> float:
    """Space-normalised word error rate in percent (KsponSpeech paper)."""
    return wer(ref, space_normalize(ref, hyp))


# ---------------------------------------------------------------------------------------------
# corpus scores


@dataclass(frozen=True)
class Counts:
    """Edit counts of one unit type (characters or words) for one utterance."""

    substitutions: int
    deletions: int
    insertions: int
    ref_len: int

    @classmethod
    def of(cls, a: Alignment) -> Counts:
        return cls(a.substitutions, a.deletions, a.insertions, a.ref_len)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        return _rate(self.errors, self.ref_len)


@dataclass(frozen=True)
class UttScore:
    """One utterance: its texts and character, word and space-normalised word counts."""

    utt_id: str
    ref: str
    hyp: str | None
    char: Counts
    word: Counts
    sword: Counts

    @property
    def missing(self) -> bool:
        return self.hyp is None


@dataclass
class CorpusScore:
    """Totals over a test set (percentages) plus the per-utterance scores they are summed from.

    ``substitutions``, ``deletions`` and ``insertions`` are character counts (those behind CER);
    ``word_*`` are the word counts behind WER. ``n_missing`` utterances had no hypothesis and
    count as all deletions; ``n_extra`` hypotheses had no reference and were ignored.
    ``cer_spaces``: the character counts score the space between words as a character.
    """

    cer: float
    crr: float
    wer: float
    swer: float
    substitutions: int
    deletions: int
    insertions: int
    ref_chars: int
    word_substitutions: int
    word_deletions: int
    word_insertions: int
    ref_words: int
    n_utts: int
    n_missing: int
    n_extra: int
    cer_spaces: bool = False
    utts: list[UttScore] = field(default_factory=list, repr=False)

    def to_dict(self, *, with_utts: bool = False) -> dict[str, Any]:
        """JSON-ready totals (and per-utterance rows if asked), for ``scores.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "utts"}
        if with_utts:
            out["utts"] = [
                {
                    "utt_id": u.utt_id,
                    "ref": u.ref,
                    "hyp": u.hyp,
                    "cer": u.char.rate,
                    "wer": u.word.rate,
                    "swer": u.sword.rate,
                    "char": asdict(u.char),
                    "word": asdict(u.word),
                }
                for u in self.utts
            ]
        return out

    def summary(self) -> str:
        cer = "CER (spaces scored)" if self.cer_spaces else "CER"
        return (
            f"{cer} {self.cer:.2f}% (CRR {self.crr:.2f}%)  WER {self.wer:.2f}%  sWER {self.swer:.2f}%  "
            f"[{self.n_utts} utts, {self.ref_chars} chars: S={self.substitutions} D={self.deletions} "
            f"I={self.insertions}; {self.n_missing} missing]"
        )

    def per_utt_char_errors(self) -> tuple[np.ndarray, np.ndarray]:
        """(errors, ref lengths) per utterance, the inputs of :func:`bootstrap_ci` for CER."""
        return (
            np.array([u.char.errors for u in self.utts], dtype=np.int64),
            np.array([u.char.ref_len for u in self.utts], dtype=np.int64),
        )


def score_utterances(items: Sequence[tuple[str, str, str | None]], *, cer_spaces: bool = False) -> list[UttScore]:
    """Scores of ``(utt_id, ref, hyp)`` triples; ``hyp=None`` (missing) scores as an empty hypothesis.

    ``cer_spaces``: the character counts score spaces (ESPnet's CER); sWER is unchanged.
    """
    refs = [ref for _, ref, _ in items]
    hyps = [hyp or "" for _, _, hyp in items]
    char_al = align_batch([(chars(r), chars(h)) for r, h in zip(refs, hyps)])
    word_al = align_batch([(words(r), words(h)) for r, h in zip(refs, hyps)])
    spaced = [space_normalize(r, h, a) for r, h, a in zip(refs, hyps, char_al)]
    sword_al = align_batch([(words(r), words(h)) for r, h in zip(refs, spaced)])
    if cer_spaces:
        char_al = align_batch([(chars(r, spaces=True), chars(h, spaces=True)) for r, h in zip(refs, hyps)])
    return [
        UttScore(utt_id, ref, hyp, Counts.of(c), Counts.of(w), Counts.of(sw))
        for (utt_id, ref, hyp), c, w, sw in zip(items, char_al, word_al, sword_al)
    ]


def score_corpus(refs: Mapping[str, str], hyps: Mapping[str, str], *, cer_spaces: bool = False) -> CorpusScore:
    """Score every reference utterance; a missing hypothesis counts as all deletions (logged).

    ``cer_spaces``: CER scores the space between words as a character (ESPnet's CER).
    """
    missing = [u for u in refs if u not in hyps]
    extra = [u for u in hyps if u not in refs]
    if missing:
        logger.warning(
            "%d of %d utterances have no hypothesis and count as all deletions (first: %s)",
            len(missing),
            len(refs),
            ", ".join(missing[:5]),
        )
    if extra:
        logger.warning("%d hypotheses have no reference and are ignored (first: %s)", len(extra), ", ".join(extra[:5]))
    utts = score_utterances([(u, ref, hyps.get(u)) for u, ref in refs.items()], cer_spaces=cer_spaces)

    def total(attr: str, part: str) -> int:
        return sum(getattr(getattr(u, part), attr) for u in utts)

    ref_chars, ref_words = total("ref_len", "char"), total("ref_len", "word")
    char_err, word_err, sword_err = total("errors", "char"), total("errors", "word"), total("errors", "sword")
    c = _rate(char_err, ref_chars)
    return CorpusScore(
        cer=c,
        crr=max(0.0, 100.0 - c),
        wer=_rate(word_err, ref_words),
        swer=_rate(sword_err, ref_words),
        substitutions=total("substitutions", "char"),
        deletions=total("deletions", "char"),
        insertions=total("insertions", "char"),
        ref_chars=ref_chars,
        word_substitutions=total("substitutions", "word"),
        word_deletions=total("deletions", "word"),
        word_insertions=total("insertions", "word"),
        ref_words=ref_words,
        n_utts=len(utts),
        n_missing=len(missing),
        n_extra=len(extra),
        cer_spaces=cer_spaces,
        utts=utts,
    )


# ---------------------------------------------------------------------------------------------
# sclite-like alignment text


def _width(text: str) -> int:
    """Terminal columns: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def format_alignment(utt_id: str, ref: str, hyp: str | None, *, unit: str = "char", spaces: bool = False) -> str:
    """An sclite-like block: an ``id:`` line, then REF / HYP / Eval lines in aligned columns.

    ``unit`` is ``char`` (spaces removed, as CER counts; ``spaces``: kept and shown as ``▁``)
    or ``word``. Gaps are ``*``; the Eval
    line marks each column S, D or I (blank when correct)::

        id: (utt1)  (#C #S #D #I) 4 1 1 0
        REF:  오 늘 날 씨 가
        HYP:  오 늘 날 ** 개
        Eval:          D  S
    """
    if unit not in ("char", "word"):
        raise ValueError(f"unit must be 'char' or 'word', got {unit!r}")
    if unit == "char":
        a = align(chars(ref, spaces=spaces), chars(hyp or "", spaces=spaces))
    else:
        a = align(words(ref), words(hyp or ""))
    ref_cols, hyp_cols, eval_cols = [], [], []
    for op, r, h in a.ops:
        r, h = (SPACE_MARK if r == " " else r), (SPACE_MARK if h == " " else h)
        w = max(_width(r or ""), _width(h or ""), 1)
        ref_cols.append(_pad(r, w) if r is not None else "*" * w)
        hyp_cols.append(_pad(h, w) if h is not None else "*" * w)
        eval_cols.append(_pad("" if op == CORRECT else op, w))
    head = f"id: ({utt_id})  (#C #S #D #I) {a.correct} {a.substitutions} {a.deletions} {a.insertions}"
    if hyp is None:
        head += "  [no hypothesis]"
    lines = [head, "REF:  " + " ".join(ref_cols), "HYP:  " + " ".join(hyp_cols), "Eval: " + " ".join(eval_cols)]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------
# confidence intervals


def bootstrap_ci(
    per_utt_errors: Sequence[int] | np.ndarray,
    per_utt_lengths: Sequence[int] | np.ndarray,
    n: int = 1000,
    seed: int = 0,
    *,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus error rate (percent), resampling utterances.

    Each of ``n`` resamples draws utterances with replacement and computes
    ``100 * sum(errors) / sum(lengths)``; the interval is the central ``level`` share of those.
    Vectorised: resamples are drawn as index matrices in chunks that keep memory bounded.
    """
    errors = np.asarray(per_utt_errors, dtype=np.float64)
    lengths = np.asarray(per_utt_lengths, dtype=np.float64)
    if errors.shape != lengths.shape or errors.ndim != 1:
        raise ValueError(f"errors and lengths must be 1-D and equal in length, got {errors.shape} and {lengths.shape}")
    if errors.size == 0:
        raise ValueError("bootstrap_ci needs at least one utterance")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    k = errors.size
    chunk = max(1, 4_000_000 // k)
    rates = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        idx = rng.integers(0, k, size=(stop - start, k))
        rates[start:stop] = 100.0 * errors[idx].sum(1) / np.maximum(lengths[idx].sum(1), 1.0)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(rates, [tail, 100.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# scores.json, read back


def summarise(path: Path, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """One table row from a scores.json, with bootstrap intervals when per-utterance data is there."""
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if "cer" not in s:
        raise DataError(f"{path}: has no 'cer'; is it a scores.json written by `kospeech score`?")
    decode_dir = path.parent
    row = {
        "run": decode_dir.parent.name,
        "run_path": str(decode_dir.parent.resolve()),
        "trained_on": _trained_on(s.get("training_corpus")),
        "model": s.get("model") or "?",
        "corpus": s.get("corpus") or "?",
        "test_set": s.get("test_set") or decode_dir.name,
        # a CER that scores spaces (ESPnet's) is not comparable with one that does not: say so
        "transcript": (s.get("transcript") or "?") + ("; CER scores spaces" if s.get("cer_spaces") else ""),
        "search": s.get("search") or "?",
        "utts": s.get("n_utts"),
        "cer": float(s["cer"]),
        "crr": max(0.0, float(s.get("crr", 100.0 - float(s["cer"])))),
        "cer_lo": None,
        "cer_hi": None,
        "path": str(path),
    }
    per = s.get("per_utt") or {}
    if per.get("char_errors") and sum(per.get("char_lengths", [])) > 0:
        lo, hi = bootstrap_ci(per["char_errors"], per["char_lengths"], n=n_boot, seed=seed)
        row["cer_lo"], row["cer_hi"] = lo, hi
    return row


def _trained_on(record: Any) -> str:
    """``ksponspeech`` from a training_corpus record (``a+b`` for an ensemble's several)."""
    records = record if isinstance(record, list) else [record]
    names = [r.get("corpus") or "?" for r in records if isinstance(r, dict)]
    return "+".join(dict.fromkeys(names)) or "?"
