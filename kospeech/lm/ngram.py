"""N-gram LMs for shallow fusion (kind ``lm``, name ``ngram``): estimated, written as ARPA, queried.

Why in Python: the PyPI ``kenlm`` module queries ARPA/binary models but has no ``lmplz``
builder, and Debian has no KenLM package. The estimate is interpolated modified Kneser-Ney as
``lmplz`` does it (Chen & Goodman 1998; Heafield et al. 2013): adjusted (continuation) counts
for the lower orders, except n-grams that start with ``<s>``; three discounts per order from
the counts of counts; the unigrams interpolated with the uniform distribution over the
vocabulary, so every unit of the tokenizer has a probability. The result is written in
backoff form (``lm.arpa``, readable by KenLM and SRILM) and read back for decoding by
:class:`NgramLM`, which turns a context into a log-probability vector over the tokenizer's
ids (cached per context). Reading and querying live in :mod:`kospeech.lm.arpa` (numpy only,
shared with the torch-free runtime); ``NgramLM`` is their tensor front for the searches.

Two units (``lm.yaml`` beside ``lm.arpa`` says which):

- ``token``: over the tokenizer's own units (jamo, character or subword); the ARPA words are
  the unit strings.
- ``word``: over eojeol (space-separated words), lexicon-free: the search still emits units;
  the LM walks a trie of the known words' spellings (in the tokenizer's units) while a word
  is being spelled (log-probability 0 inside a word) and scores the whole word when a boundary
  comes (the space unit, a word-initial ``▁`` piece, or ``<eos>``). A spelling that leaves the
  trie is an out-of-vocabulary word and scores as ``<unk>``. ``spellings.txt`` holds each
  word's unit ids, so decoding needs no tokenizer. A search's per-token bonus
  (``length_bonus``/``length_penalty``) offsets the LM's push towards fewer, longer words.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.lm.arpa import BOS, EOS, LOG10, UNK, NgramScorer, NgramState, NgramTable, check_unit, read_arpa
from kospeech.lm.base import FusionLM
from kospeech.lm.text import encode_sentences
from kospeech.metadata import make_metadata
from kospeech.registry import register
from kospeech.text.special import NUM_SPECIAL

logger = logging.getLogger(__name__)

__all__ = [
    "BOS", "EOS", "LOG10", "UNK", "NgramLM", "NgramTable", "estimate_kneser_ney", "ngram_perplexity", "read_arpa",
    "train_ngram", "write_arpa",
]


def _discounts(counts: Iterable[int], order: int) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts of counts of one order."""
    n = Counter(c for c in counts if c <= 4)
    n1, n2, n3, n4 = (n[i] for i in range(1, 5))
    try:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    except ZeroDivisionError:
        d = (-1.0, -1.0, -1.0)
    fallback = (0.5, 1.0, 1.5)
    if not all(0.0 < x <= i + 1 for i, x in enumerate(d)):
        # too little (or too repetitive) text for counts of counts, where lmplz refuses: the
        # invalid ones take fixed, commonly used values
        d = tuple(x if 0.0 < x <= i + 1 else fallback[i] for i, x in enumerate(d))
        logger.warning("n-gram order %d: counts of counts %s give invalid discounts; using %s",
                       order, (n1, n2, n3, n4), ", ".join(f"{x:.3f}" for x in d))
    return d


def estimate_kneser_ney(sentences: Iterable[Sequence[str]], order: int, vocab: Iterable[str] = ()) -> list[NgramTable]:
    """Interpolated modified Kneser-Ney over ``sentences`` (lists of words, without ``<s>``/``</s>``).

    ``vocab`` adds words that get only their share of the uniform mass (the tokenizer's units
    that the text lacks); ``<unk>`` always does. Returns one table per order (index 0 = unigrams)
    of log10 probability and log10 backoff weight, ready for :func:`write_arpa`.
    """
    if order < 1:
        raise ValueError(f"n-gram order must be >= 1, got {order}")
    raw: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    for words in sentences:
        s = [BOS, *words, EOS]
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                raw[k - 1][tuple(s[i : i + k])] += 1
    # adjusted counts: the top order and n-grams starting with <s> keep raw counts; the others
    # count the distinct words seen before them
    adj: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(order)]
    adj[order - 1] = Counter(raw[order - 1])
    for k in range(order - 1, 0, -1):
        for g in raw[k]:
            adj[k - 1][g[1:]] += 1
        for g, c in raw[k - 1].items():
            if g[0] == BOS:
                adj[k - 1][g] = c
    adj[0].pop((BOS,), None)
    words = {g[0] for g in raw[0]} | set(vocab) | {UNK, EOS}
    words.discard(BOS)
    for w in words:
        adj[0].setdefault((w,), 0)

    probs: list[dict[tuple[str, ...], float]] = []
    gammas: list[dict[tuple[str, ...], float]] = []
    for k in range(1, order + 1):
        table = adj[k - 1]
        d = _discounts(table.values(), k)
        denom: dict[tuple[str, ...], float] = defaultdict(float)
        mass: dict[tuple[str, ...], float] = defaultdict(float)
        for g, c in table.items():
            denom[g[:-1]] += c
            if c > 0:
                mass[g[:-1]] += d[min(c, 3) - 1]
        gamma = {h: mass[h] / denom[h] for h in denom if denom[h] > 0}
        lower = probs[-1] if probs else None
        p: dict[tuple[str, ...], float] = {}
        for g, c in table.items():
            h = g[:-1]
            own = max(c - d[min(c, 3) - 1], 0.0) / denom[h] if c > 0 else 0.0
            back = 1.0 / len(words) if lower is None else lower[g[1:]]
            p[g] = own + gamma.get(h, 1.0 if denom[h] == 0 else 0.0) * back
        probs.append(p)
        gammas.append(gamma)

    tables: list[NgramTable] = []
    for k in range(order):
        table: NgramTable = {}
        for g, pr in probs[k].items():
            bow = gammas[k + 1].get(g) if k + 1 < order else None
            table[g] = (math.log10(pr), math.log10(bow) if bow else 0.0)
        tables.append(table)
    bos_bow = gammas[1].get((BOS,)) if order > 1 else None
    tables[0][(BOS,)] = (-99.0, math.log10(bos_bow) if bos_bow else 0.0)
    return tables


def write_arpa(tables: Sequence[NgramTable], path: str | Path) -> Path:
    """The ARPA text format (log10 values; backoff weights only where one follows)."""
    from kospeech.files import write_atomic

    parts = ["\n\\data\\\n", *(f"ngram {k}={len(t)}\n" for k, t in enumerate(tables, 1))]
    for k, table in enumerate(tables, 1):
        parts.append(f"\n\\{k}-grams:\n")
        for g in sorted(table):
            lp, bow = table[g]
            parts.append(f"{lp:.7g}\t{' '.join(g)}" + (f"\t{bow:.7g}\n" if k < len(tables) else "\n"))
    parts.append("\n\\end\\\n")
    return write_atomic(path, "".join(parts))


def _contexts(state: torch.Tensor) -> list[tuple[int, ...]]:
    """Rows of a left-padded (-1) context tensor as id tuples."""
    return [tuple(x for x in row if x >= 0) for row in state.tolist()]


@register("lm", "ngram")
class NgramLM(FusionLM):
    """A backoff n-gram (an ARPA file) over the tokenizer's units or over words, for shallow fusion.

    Built by ``kospeech lm train --type ngram`` (:func:`train_ngram`) and loaded from
    ``lm.arpa`` with :meth:`load`; the constructor options are what ``lm.yaml`` records. The
    model itself is a :class:`kospeech.lm.arpa.NgramScorer` (numpy, shared with the torch-free
    runtime); this class only carries its state as tensors, the form the searches reorder:
    ``(contexts,)`` or, for words, ``(contexts, trie nodes)``, contexts left-padded with -1.

    Args:
        vocab_size: the tokenizer's vocabulary size (specials included).
        order: the n-gram order.
        unit: ``token`` (the tokenizer's units) or ``word`` (eojeol, lexicon-free).
    """

    name = "ngram"

    def __init__(self, *, vocab_size: int, order: int = 4, unit: str = "token") -> None:
        self.vocab_size = vocab_size
        self.order = order
        self.unit = check_unit(unit)
        self.scorer: NgramScorer | None = None

    # ---- loading
    @classmethod
    def load(cls, path: str | Path) -> NgramLM:
        """``lm.arpa`` and the ``lm.yaml`` (and, for words, ``spellings.txt``) beside it."""
        scorer = NgramScorer.load(path)
        lm = cls(vocab_size=scorer.vocab_size, order=scorer.order, unit=scorer.unit)
        lm.scorer = scorer
        return lm

    # ---- fusion interface
    def start(self, batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, Any]:
        scorer = self._scorer()
        logp, state = scorer.start(batch_size)
        return torch.from_numpy(logp).to(device), self._to_tensors(state, device)

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if state is None:
            return self.start(tokens.size(0), tokens.device)
        nodes = state[1].tolist() if len(state) > 1 else None
        logp, new = self._scorer().step(tokens.tolist(), NgramState(_contexts(state[0]), nodes))
        return torch.from_numpy(logp).to(tokens.device), self._to_tensors(new, state[0].device)

    def _scorer(self) -> NgramScorer:
        if self.scorer is None:
            raise ConfigError("an n-gram LM holds no n-grams until it is loaded from its file: pass the path of "
                              "lm.arpa (or its folder) from `kospeech lm train --type ngram`")
        return self.scorer

    def _to_tensors(self, state: NgramState, device: torch.device | str) -> tuple[torch.Tensor, ...]:
        width = self._scorer().width
        ctx = torch.tensor([[-1] * (width - len(c)) + list(c) for c in state.contexts], dtype=torch.long)
        ctx = ctx.view(len(state.contexts), width).to(device)
        if state.nodes is None:
            return (ctx,)
        return ctx, torch.tensor(state.nodes, dtype=torch.long, device=device)

    # ---- evaluation
    def sentence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """log P(tokens </s>) (natural log) and the number of predicted units (tokens or words)."""
        return self._scorer().sentence_logprob(tokens)


def _word_boundaries(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Ids of the space unit (character/jamo) and of word-initial ``▁`` pieces (SentencePiece)."""
    space = getattr(tokenizer, "space_symbol", None)
    space_ids, starts = [], []
    for i in range(NUM_SPECIAL, tokenizer.vocab_size):
        tok = tokenizer.id_to_token(i)
        if space is not None and tok == space:
            space_ids.append(i)
        elif tok.startswith("\u2581"):
            starts.append(i)
    return space_ids, starts


def train_ngram(
    texts: Sequence[str],
    tokenizer: Any,
    out_dir: str | Path,
    *,
    order: int = 4,
    unit: str = "token",
    valid_texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Estimate an n-gram on ``texts`` and write ``lm.arpa``, ``lm.yaml`` (and ``spellings.txt``).

    ``valid_texts`` (when given) are scored for the perplexity the CLI reports: per token for
    ``unit: token``, per word (``</s>`` included) for ``unit: word``.
    """
    import time

    from kospeech.files import write_atomic

    if unit not in ("token", "word"):
        raise DataError(f"--unit must be 'token' or 'word', got {unit!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"name": "ngram", "order": order, "unit": unit, "vocab_size": tokenizer.vocab_size}
    if unit == "token":
        seqs = encode_sentences(texts, tokenizer)
        units = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        bad = [u for u in units[NUM_SPECIAL:] if not u or any(ch.isspace() for ch in u)]
        if bad:
            raise DataError(f"the tokenizer has units with white space ({bad[:3]}), which ARPA cannot hold")
        sentences: list[list[str]] = [[units[i] for i in s] for s in seqs]
        tables = estimate_kneser_ney(sentences, order, units[NUM_SPECIAL:])
        info["units"] = units
    else:
        sentences = [t.split() for t in texts if t.split()]
        if not sentences:
            raise DataError("no words in the LM text")
        tables = estimate_kneser_ney(sentences, order)
        vocab = sorted(g[0] for g in tables[0] if g[0] not in (BOS, EOS, UNK))
        space_ids, starts = _word_boundaries(tokenizer)
        if not space_ids and not starts:
            raise DataError("the tokenizer marks no word boundaries (no space unit, no ▁ pieces); use --unit token")
        lines = [f"{w} {' '.join(map(str, tokenizer.encode(w)))}\n" for w in vocab]
        write_atomic(out / "spellings.txt", "".join(ln for ln in lines if len(ln.split()) > 1))
        info.update(space_ids=space_ids, word_start_ids=starts)
    arpa = write_arpa(tables, out / "lm.arpa")
    info["metadata"] = make_metadata("lm")
    write_atomic(out / "lm.yaml", yaml.safe_dump(info, allow_unicode=True, sort_keys=False))
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"path": str(arpa), "order": order, "unit": unit, "seconds": seconds,
                              "ngrams": [len(t) for t in tables], "vocab_size": tokenizer.vocab_size}
    if valid_texts:
        lm = NgramLM.load(arpa)
        result["valid_ppl"] = ngram_perplexity(lm, encode_sentences(valid_texts, tokenizer))
    return result


def ngram_perplexity(lm: NgramLM, seqs: Sequence[list[int]]) -> float:
    """exp(mean negative log-likelihood per predicted unit, ``</s>`` included)."""
    total, count = 0.0, 0
    for s in seqs:
        lp, n = lm.sentence_logprob(s)
        total += lp
        count += n
    return math.exp(-total / max(count, 1))
