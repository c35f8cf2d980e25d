"""Reading and querying an n-gram (``lm.arpa`` + ``lm.yaml``) in plain Python and numpy.

Why apart from :mod:`kospeech.lm.ngram`: the torch-free runtime (:mod:`kospeech.runtime`) decodes
with the same n-gram as the torch searches, so the model's logic (backoff, the word trie, the
per-step distributions) lives here, once, without torch or the registry; ``NgramLM`` in
:mod:`kospeech.lm.ngram` only converts tensors to and from what :class:`NgramScorer` takes.

The scorer steps like every fusion LM (:mod:`kospeech.lm.base`), on numpy arrays: ``start(n)``
gives the first distribution of ``n`` rows, ``step(tokens, state)`` reads one token per row and
``select(state, index)`` reorders rows. A state is an :class:`NgramState`: per row, the context
of at most ``order - 1`` ids (oldest first, ``<sos>`` included while it fits) and, for
``unit: word``, the node of the spelling trie (0: between words, 1: an out-of-vocabulary word).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.metadata import check_metadata
from kospeech.text.special import EOS_ID, NUM_SPECIAL, SOS_ID, UNK_ID

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LOG10 = math.log(10.0)
UNITS = ("token", "word")
NgramTable = dict[tuple[str, ...], tuple[float, float]]  # n-gram -> (log10 prob, log10 backoff)

#: distributions kept per model before the cache starts again (a long decode meets many contexts)
CACHE_LIMIT = 500_000


def check_unit(unit: str) -> str:
    """The n-gram's unit, refused early when ``lm.yaml`` or a caller names another."""
    if unit not in UNITS:
        raise DataError(f"n-gram unit must be 'token' or 'word', got {unit!r}")
    return unit


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


class BackoffTables:
    """Log-probability vectors over ``V`` ids of a backoff n-gram (natural log), cached per context.

    The ARPA words are mapped to ids by ``ids``; n-grams with a word outside it can never be
    asked for and are dropped. A context's vector is its backoff context's vector plus its
    backoff weight, with the n-grams it has explicitly written over it, so each context costs
    one vector copy however many n-grams it has.
    """

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
        """log P(. | ctx) over all ids (float32, shared: do not modify); ``ctx`` holds at most
        ``order - 1`` ids, oldest first."""
        vec = self.cache.get(ctx)
        if vec is None:
            vec = self.dist(ctx[1:]) + np.float32(self.bows.get(ctx, 0.0))
            hit = self.explicit.get(ctx)
            if hit is not None:
                vec = vec.copy()
                vec[hit[0]] = hit[1]
            if len(self.cache) > CACHE_LIMIT:
                self.cache = {(): self.cache[()]}
            self.cache[ctx] = vec
        return vec

    def trim(self, ctx: tuple[int, ...]) -> tuple[int, ...]:
        """The part of a context the model conditions on (its last ``order - 1`` ids)."""
        return ctx[len(ctx) - self.order + 1 :] if self.order > 1 else ()

    def logprob(self, ctx: tuple[int, ...], w: int) -> float:
        """log P(w | ctx), ``ctx`` of any length (only its last ``order - 1`` ids count)."""
        return float(self.dist(self.trim(ctx))[w])


class NgramState(NamedTuple):
    """Rows of an n-gram's decoding state: what :meth:`NgramScorer.step` needs to go on.

    ``contexts[i]`` holds row i's last ``max(order - 1, 1)`` ids (units for ``unit: token``,
    words for ``unit: word``), oldest first; ``nodes[i]`` is its node in the spelling trie
    (``unit: word`` only; None for ``unit: token``).
    """

    contexts: list[tuple[int, ...]]
    nodes: list[int] | None = None

    def take(self, index: Sequence[int] | np.ndarray) -> NgramState:
        """Rows ``index`` (in that order; a row may repeat)."""
        rows = [int(i) for i in index]
        nodes = None if self.nodes is None else [self.nodes[i] for i in rows]
        return NgramState([self.contexts[i] for i in rows], nodes)

    def put(self, rows: Sequence[int] | np.ndarray, other: NgramState) -> NgramState:
        """This state with rows ``rows`` replaced by the rows of ``other`` (one each, in order)."""
        contexts = list(self.contexts)
        nodes = None if self.nodes is None else list(self.nodes)
        for j, i in enumerate(int(r) for r in rows):
            contexts[i] = other.contexts[j]
            if nodes is not None and other.nodes is not None:
                nodes[i] = other.nodes[j]
        return NgramState(contexts, nodes)


class NgramScorer:
    """A backoff n-gram over the tokenizer's units or over words, stepped on numpy arrays.

    Built from ``lm.arpa`` with :meth:`load` (or :func:`load_ngram`). Log-probabilities are
    natural logs in float32 vectors over the tokenizer's ``vocab_size`` ids; ids the model can
    never predict (``<blank>``, ``<pad>``, ``<sos>``) are ``-inf`` for ``unit: token``.

    For ``unit: word`` the searches still emit units: the scorer walks a trie of the known
    words' spellings while a word is being spelled (log-probability 0 inside a word) and scores
    the whole word when a boundary comes (a space unit, a word-initial piece, or ``<eos>``). A
    spelling that leaves the trie is an out-of-vocabulary word and scores as ``<unk>``.

    Args:
        model: the backoff tables (over units, or over ``NUM_SPECIAL + len(spellings)`` word ids).
        vocab_size: the tokenizer's vocabulary size (specials included).
        unit: ``token`` or ``word``.
        spellings: (``word``) each word's unit ids; word i has id ``NUM_SPECIAL + i`` in ``model``.
        space_ids: (``word``) units that end a word (the space of character and jamo tokenizers).
        word_start_ids: (``word``) units that end the previous word and begin a new one (``▁`` pieces).
    """

    def __init__(
        self,
        model: BackoffTables,
        *,
        vocab_size: int,
        unit: str = "token",
        spellings: Sequence[Sequence[int]] = (),
        space_ids: Sequence[int] = (),
        word_start_ids: Sequence[int] = (),
    ) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.order = model.order
        self.unit = check_unit(unit)
        self.width = max(self.order - 1, 1)
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
        self.space_ids = {int(i) for i in space_ids}
        self.word_start_ids = {int(i) for i in word_start_ids}
        self.boundary = np.array(sorted(self.space_ids | self.word_start_ids), dtype=np.int64)

    # ---- loading
    @classmethod
    def load(cls, path: str | Path) -> NgramScorer:
        """``lm.arpa`` and the ``lm.yaml`` (and, for words, ``spellings.txt``) beside it."""
        path = Path(path)
        meta_path = path.with_name("lm.yaml")
        if not meta_path.is_file():
            raise DataError(f"{path}: no lm.yaml beside it (it names the units and the vocabulary); "
                            f"build the n-gram with `kospeech lm train --type ngram`")
        info = yaml.safe_load(meta_path.read_text(encoding="utf-8")) or {}
        check_metadata(info.get("metadata"), str(meta_path))
        try:
            vocab_size = int(info["vocab_size"])
            int(info["order"])  # recorded by every writer; the ARPA file's own order is the one used
            unit = check_unit(str(info.get("unit", "token")))
            tables = read_arpa(path)
            if unit == "token":
                units = list(info["units"])
                ids = {u: i for i, u in enumerate(units) if i >= NUM_SPECIAL}
                ids.update({BOS: SOS_ID, EOS: EOS_ID, UNK: UNK_ID})
                return cls(BackoffTables(tables, ids, vocab_size, str(path)), vocab_size=vocab_size)
            words, spellings = _read_spellings(path.with_name("spellings.txt"), path)
            ids = {w: NUM_SPECIAL + i for i, w in enumerate(words)}
            ids.update({BOS: SOS_ID, EOS: EOS_ID, UNK: UNK_ID})
            model = BackoffTables(tables, ids, NUM_SPECIAL + len(words), str(path))
            return cls(model, vocab_size=vocab_size, unit=unit, spellings=spellings,
                       space_ids=info.get("space_ids", []), word_start_ids=info.get("word_start_ids", []))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{meta_path}: missing or bad field ({err}); "
                            f"rebuild with `kospeech lm train --type ngram`") from None

    # ---- stepping
    def start(self, n: int) -> tuple[np.ndarray, NgramState]:
        """The distribution of the first unit (after ``<sos>``) for ``n`` rows, and their state."""
        contexts = [(SOS_ID,)] * n
        if self.unit == "token":
            return self._dists(contexts), NgramState(contexts)
        nodes = [0] * n
        return self._word_dists(contexts, nodes), NgramState(contexts, nodes)

    def step(self, tokens: Sequence[int] | np.ndarray, state: NgramState) -> tuple[np.ndarray, NgramState]:
        """Each row reads one unit (``tokens[i]``): the next distributions (len(tokens), V) and state."""
        toks = [int(t) for t in tokens]
        if self.unit == "token":
            contexts = [(*c, t)[-self.width :] for c, t in zip(state.contexts, toks)]
            return self._dists(contexts), NgramState(contexts)
        assert state.nodes is not None, "a word n-gram's state has trie nodes"
        contexts, nodes = self._advance_words(toks, state.contexts, state.nodes)
        return self._word_dists(contexts, nodes), NgramState(contexts, nodes)

    def select(self, state: NgramState, index: Sequence[int] | np.ndarray) -> NgramState:
        """Rows ``index`` of a state (beam reordering)."""
        return state.take(index)

    def _dists(self, contexts: Sequence[tuple[int, ...]]) -> np.ndarray:
        return np.stack([self.model.dist(self.model.trim(c)) for c in contexts])

    def _advance_words(
        self, tokens: Sequence[int], contexts: Sequence[tuple[int, ...]], nodes: Sequence[int]
    ) -> tuple[list[tuple[int, ...]], list[int]]:
        """A boundary unit closes the word being spelled (into the context) and may open the next."""
        new_ctx, new_node = list(contexts), list(nodes)
        for i, (t, n) in enumerate(zip(tokens, nodes)):
            if t in self.space_ids or t in self.word_start_ids:
                if n != 0:
                    new_ctx[i] = (*new_ctx[i], self.node_word[n])[-self.width :]
                new_node[i] = self.children.get((0, t), 1) if t in self.word_start_ids else 0
            else:
                new_node[i] = 1 if n == 1 else self.children.get((n, t), 1)
        return new_ctx, new_node

    def _word_dists(self, contexts: Sequence[tuple[int, ...]], nodes: Sequence[int]) -> np.ndarray:
        """0 inside a word; the finished word's log-prob at a boundary; that plus ``</s>`` at ``<eos>``."""
        at_boundary, at_eos = [], []
        for c, n in zip(contexts, nodes):
            c = self.model.trim(c)
            if n == 0:
                at_boundary.append(0.0)
                at_eos.append(self.model.logprob(c, EOS_ID))
            else:
                w = self.node_word[n]
                lp = self.model.logprob(c, w)
                at_boundary.append(lp)
                at_eos.append(lp + self.model.logprob((*c, w), EOS_ID))
        out = np.zeros((len(at_eos), self.vocab_size), dtype=np.float32)
        out[:, self.boundary] = np.array(at_boundary, dtype=np.float32)[:, None]
        out[:, EOS_ID] = np.array(at_eos, dtype=np.float32)
        return out

    # ---- evaluation
    def sentence_logprob(self, tokens: Sequence[int]) -> tuple[float, int]:
        """log P(tokens </s>) (natural log) and the number of predicted units (tokens or words)."""
        logp, state = self.start(1)
        total = 0.0
        for t in tokens:
            total += float(logp[0, t])
            logp, state = self.step([t], state)
        total += float(logp[0, EOS_ID])
        if self.unit == "token":
            return total, len(tokens) + 1
        words = sum(1 for t in tokens if t in self.word_start_ids) or 1
        spaces = sum(1 for t in tokens if t in self.space_ids)
        return total, (words if self.word_start_ids else spaces + 1) + 1


def _read_spellings(spell_path: Path, path: Path) -> tuple[list[str], list[list[int]]]:
    """``spellings.txt``: one ``word id id ...`` line per word of a word n-gram."""
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
    return words, spellings


def load_ngram(path: str | Path) -> NgramScorer:
    """The n-gram that ``kospeech lm train --type ngram`` wrote: its folder, or ``lm.arpa`` (or ``lm.yaml``) in it."""
    path = Path(path)
    if path.is_dir():
        if not (path / "lm.arpa").is_file():
            raise ConfigError(f"LM folder {path} holds no lm.arpa; build one with `kospeech lm train --type ngram`")
        path = path / "lm.arpa"
    elif path.suffix == ".yaml":
        path = path.with_name("lm.arpa")
    return NgramScorer.load(path)

