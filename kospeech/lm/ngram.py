"""N-gram LMs for shallow fusion (kind ``lm``, name ``ngram``): estimated, written as ARPA, queried.

Why in Python: the PyPI ``kenlm`` module queries ARPA/binary models but has no ``lmplz``
builder, and Debian has no KenLM package. The estimate is interpolated modified Kneser-Ney as
``lmplz`` does it (Chen & Goodman 1998; Heafield et al. 2013): adjusted (continuation) counts
for the lower orders, except n-grams that start with ``<s>``; three discounts per order from
the counts of counts; the unigrams interpolated with the uniform distribution over the
vocabulary, so every unit of the tokenizer has a probability. The result is written in
backoff form (``lm.arpa``, readable by KenLM and SRILM) and read back for decoding by
:class:`NgramLM`, which turns a context into a log-probability vector over the tokenizer's
ids (cached per context).

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

import numpy as np
import torch
import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.lm.base import FusionLM
from kospeech.metadata import check_metadata, make_metadata
from kospeech.registry import register
from kospeech.text.special import EOS_ID, NUM_SPECIAL, SOS_ID, UNK_ID

logger = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10 = math.log(10.0)
NgramTable = dict[tuple[str, ...], tuple[float, float]]  # n-gram -> (log10 prob, log10 backoff)


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
    from kospeech.data.datadir import write_atomic

    parts = ["\n\\data\\\n", *(f"ngram {k}={len(t)}\n" for k, t in enumerate(tables, 1))]
    for k, table in enumerate(tables, 1):
        parts.append(f"\n\\{k}-grams:\n")
        for g in sorted(table):
            lp, bow = table[g]
            parts.append(f"{lp:.7g}\t{' '.join(g)}" + (f"\t{bow:.7g}\n" if k < len(tables) else "\n"))
    parts.append("\n\\end\\\n")
    return write_atomic(path, "".join(parts))


def read_arpa(path: str | Path) -> list[NgramTable]:
    """Tables of an ARPA file (any writer's); a malformed line fails naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"ARPA file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason}); write the ARPA file in UTF-8") from None
    counts: dict[int, int] = {}
    tables: list[NgramTable] = []
    section = 0
    seen_data = False
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line == "\\data\\":
            seen_data = True
            continue
        if line == "\\end\\":
            break
        if line.startswith("ngram ") and section == 0 and seen_data:
            k, _, n = line[6:].partition("=")
            counts[int(k)] = int(n)
            continue
        if line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:].split("-")[0])
            while len(tables) < section:
                tables.append({})
            continue
        if section == 0:
            continue  # text before \data\ (comments) is ignored, as KenLM does
        fields = line.split()
        try:
            lp = float(fields[0])
            gram = tuple(fields[1 : 1 + section])
            bow = float(fields[1 + section]) if len(fields) > 1 + section else 0.0
        except (ValueError, IndexError):
            raise DataError(f"{path}:{no}: not an ARPA {section}-gram line: {line[:60]!r}") from None
        if len(gram) != section:
            raise DataError(f"{path}:{no}: expected {section} words in a {section}-gram line: {line[:60]!r}")
        tables[section - 1][gram] = (lp, bow)
    if not seen_data or not tables:
        raise DataError(f"{path}: no \\data\\ section or no n-grams; not an ARPA file")
    for k, n in counts.items():
        if k <= len(tables) and len(tables[k - 1]) != n:
            raise DataError(f"{path}: header says {n} {k}-grams but the file lists {len(tables[k - 1])}; "
                            f"it is truncated")
    return tables


class _Backoff:
    """Log-probability vectors over ``V`` ids of a backoff n-gram (natural log), cached per context."""

    def __init__(self, tables: Sequence[NgramTable], ids: dict[str, int], V: int, source: str) -> None:
        self.order = len(tables)
        self.V = V
        unk = tables[0].get((UNK,))
        uni = np.full(V, -np.inf, dtype=np.float32)
        if unk is not None:
            uni[NUM_SPECIAL:] = unk[0] * LOG10  # units the ARPA lacks score as <unk>
        self.bows: dict[tuple[int, ...], float] = {}
        grouped: dict[tuple[int, ...], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for k, table in enumerate(tables, 1):
            for g, (lp, bow) in table.items():
                try:
                    key = tuple(ids[w] for w in g)
                except KeyError:
                    continue  # a word outside the vocabulary can never be asked for
                if bow:
                    self.bows[key] = bow * LOG10
                if k == 1:
                    if key[0] != SOS_ID:
                        uni[key[0]] = lp * LOG10
                else:
                    ws, lps = grouped[key[:-1]]
                    ws.append(key[-1])
                    lps.append(lp * LOG10)
        if not np.isfinite(uni[EOS_ID]):
            raise DataError(f"{source}: the ARPA model has no </s> unigram")
        self.explicit = {
            h: (np.array(w, dtype=np.int64), np.array(p, dtype=np.float32)) for h, (w, p) in grouped.items()
        }
        self.cache: dict[tuple[int, ...], np.ndarray] = {(): uni}

    def dist(self, ctx: tuple[int, ...]) -> np.ndarray:
        """log P(. | ctx) over all ids; ``ctx`` holds at most ``order - 1`` ids, oldest first."""
        vec = self.cache.get(ctx)
        if vec is None:
            vec = self.dist(ctx[1:]) + np.float32(self.bows.get(ctx, 0.0))
            hit = self.explicit.get(ctx)
            if hit is not None:
                vec = vec.copy()
                vec[hit[0]] = hit[1]
            if len(self.cache) > 500_000:
                self.cache = {(): self.cache[()]}
            self.cache[ctx] = vec
        return vec

    def logprob(self, ctx: tuple[int, ...], w: int) -> float:
        return float(self.dist(ctx[len(ctx) - self.order + 1 :] if self.order > 1 else ())[w])


def _contexts(state: torch.Tensor) -> list[tuple[int, ...]]:
    """Rows of a left-padded (-1) context tensor as id tuples."""
    return [tuple(x for x in row if x >= 0) for row in state.tolist()]


@register("lm", "ngram")
class NgramLM(FusionLM):
    """A backoff n-gram (an ARPA file) over the tokenizer's units or over words, for shallow fusion.

    Built by ``kospeech lm train --type ngram`` (:func:`train_ngram`) and loaded from
    ``lm.arpa`` with :meth:`load`; the constructor options are what ``lm.yaml`` records.

    Args:
        vocab_size: the tokenizer's vocabulary size (specials included).
        order: the n-gram order.
        unit: ``token`` (the tokenizer's units) or ``word`` (eojeol, lexicon-free).
    """

    name = "ngram"

    def __init__(self, *, vocab_size: int, order: int = 4, unit: str = "token") -> None:
        if unit not in ("token", "word"):
            raise DataError(f"n-gram unit must be 'token' or 'word', got {unit!r}")
        self.vocab_size = vocab_size
        self.order = order
        self.unit = unit
        self.model: _Backoff | None = None

    # ---- loading
    @classmethod
    def load(cls, path: str | Path) -> NgramLM:
        """``lm.arpa`` and the ``lm.yaml`` (and, for words, ``spellings.txt``) beside it."""
        path = Path(path)
        meta_path = path.with_name("lm.yaml")
        if not meta_path.is_file():
            raise DataError(f"{path}: no lm.yaml beside it (it names the units and the vocabulary); "
                            f"build the n-gram with `kospeech lm train --type ngram`")
        info = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
        check_metadata(info.get("metadata"), str(meta_path))
        try:
            lm = cls(vocab_size=int(info["vocab_size"]), order=int(info["order"]),
                     unit=str(info.get("unit", "token")))
            tables = read_arpa(path)
            if lm.unit == "token":
                units = list(info["units"])
                ids = {u: i for i, u in enumerate(units) if i >= NUM_SPECIAL}
                ids.update({BOS: SOS_ID, EOS: EOS_ID, UNK: UNK_ID})
                lm.model = _Backoff(tables, ids, lm.vocab_size, str(path))
            else:
                lm._load_words(tables, info, path.with_name("spellings.txt"), path)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{meta_path}: missing or bad field ({err}); "
                            f"rebuild with `kospeech lm train --type ngram`") from None
        lm.order = len(tables)
        return lm

    def _load_words(self, tables: Sequence[NgramTable], info: dict[str, Any], spell_path: Path, path: Path) -> None:
        words: list[str] = []
        spellings: list[list[int]] = []
        try:
            for no, line in enumerate(spell_path.read_text(encoding="utf-8").splitlines(), 1):
                fields = line.split()
                if len(fields) < 2:
                    raise DataError(f"{spell_path}:{no}: expected 'word id id ...', got {line[:60]!r}")
                words.append(fields[0])
                spellings.append([int(x) for x in fields[1:]])
        except FileNotFoundError:
            raise DataError(f"{path}: a word n-gram needs spellings.txt beside it; "
                            f"rebuild with `kospeech lm train`") from None
        ids = {w: NUM_SPECIAL + i for i, w in enumerate(words)}
        ids.update({BOS: SOS_ID, EOS: EOS_ID, UNK: UNK_ID})
        self.model = _Backoff(tables, ids, NUM_SPECIAL + len(words), str(path))
        # trie over spellings: node 0 = root (no partial word), node 1 = out of vocabulary
        self.children: dict[tuple[int, int], int] = {}
        self.node_word: list[int] = [UNK_ID, UNK_ID]
        for i, spelling in enumerate(spellings):
            node = 0
            for u in spelling:
                nxt = self.children.get((node, u))
                if nxt is None:
                    nxt = len(self.node_word)
                    self.children[(node, u)] = nxt
                    self.node_word.append(UNK_ID)
                node = nxt
            self.node_word[node] = NUM_SPECIAL + i
        self.space_ids = set(info.get("space_ids", []))
        self.word_start_ids = set(info.get("word_start_ids", []))
        self.boundary = torch.tensor(sorted(self.space_ids | self.word_start_ids), dtype=torch.long)

    # ---- fusion interface
    def start(self, batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, Any]:
        if self.model is None:
            raise ConfigError("an n-gram LM holds no n-grams until it is loaded from its file: pass the path of "
                              "lm.arpa (or its folder) from `kospeech lm train --type ngram`")
        width = max(self.order - 1, 1)
        ctx = torch.full((batch_size, width), -1, dtype=torch.long, device=device)
        ctx[:, -1] = SOS_ID
        if self.unit == "token":
            return self._dists(ctx), (ctx,)
        node = torch.zeros(batch_size, dtype=torch.long, device=device)
        return self._word_dists(ctx, node), (ctx, node)

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        if state is None:
            return self.start(tokens.size(0), tokens.device)
        if self.unit == "token":
            ctx = torch.cat([state[0][:, 1:], tokens.unsqueeze(1)], 1)
            return self._dists(ctx), (ctx,)
        ctx, node = self._advance_words(tokens, state[0], state[1])
        return self._word_dists(ctx, node), (ctx, node)

    def _trim(self, ctx: tuple[int, ...]) -> tuple[int, ...]:
        return ctx[len(ctx) - self.order + 1 :] if self.order > 1 else ()

    def _dists(self, ctx: torch.Tensor) -> torch.Tensor:
        assert self.model is not None
        rows = [self.model.dist(self._trim(c)) for c in _contexts(ctx)]
        return torch.from_numpy(np.stack(rows)).to(ctx.device)

    def _advance_words(
        self, tokens: torch.Tensor, ctx: torch.Tensor, node: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new_ctx, new_node = ctx.tolist(), node.tolist()
        for i, (t, n) in enumerate(zip(tokens.tolist(), new_node)):
            if t in self.space_ids or t in self.word_start_ids:
                if n != 0:
                    new_ctx[i] = [*new_ctx[i][1:], self.node_word[n]]
                new_node[i] = self.children.get((0, t), 1) if t in self.word_start_ids else 0
            else:
                new_node[i] = 1 if n == 1 else self.children.get((n, t), 1)
        return torch.tensor(new_ctx, device=ctx.device), torch.tensor(new_node, device=ctx.device)

    def _word_dists(self, ctx: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """0 inside a word; the finished word's log-prob at a boundary; that plus ``</s>`` at ``<eos>``."""
        assert self.model is not None
        at_boundary, at_eos = [], []
        for c, n in zip(_contexts(ctx), node.tolist()):
            c = self._trim(c)
            if n == 0:
                at_boundary.append(0.0)
                at_eos.append(self.model.logprob(c, EOS_ID))
            else:
                w = self.node_word[n]
                lp = self.model.logprob(c, w)
                at_boundary.append(lp)
                at_eos.append(lp + self.model.logprob((*c, w), EOS_ID))
        out = torch.zeros(ctx.size(0), self.vocab_size)
        out[:, self.boundary] = torch.tensor(at_boundary).unsqueeze(1)
        out[:, EOS_ID] = torch.tensor(at_eos)
        return out.to(ctx.device)

    # ---- evaluation
    def sentence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """log P(tokens </s>) (natural log) and the number of predicted units (tokens or words)."""
        logp, state = self.start(1, "cpu")
        total = 0.0
        for t in tokens:
            total += float(logp[0, t])
            logp, state = self.step(torch.tensor([t]), state)
        total += float(logp[0, EOS_ID])
        if self.unit == "token":
            return total, len(tokens) + 1
        words = sum(1 for t in tokens if t in self.word_start_ids) or 1
        spaces = sum(1 for t in tokens if t in self.space_ids)
        return total, (words if self.word_start_ids else spaces + 1) + 1


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

    from kospeech.data.datadir import write_atomic
    from kospeech.lm.train import encode_sentences

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
