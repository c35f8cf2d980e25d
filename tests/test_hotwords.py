"""Hotwords (contextual biasing): the rule of :class:`kospeech.lm.context.ContextGraph`, the torch
``ctc_prefix_beam_search`` and the numpy ``kospeech.runtime.ctc.prefix_beam`` giving the same results
with it (with and without an n-gram), and ``Detokenizer.encode`` encoding hotwords as the training
tokenizer does, all without torch in the runtime."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.errors import ConfigError
from kospeech.lm.arpa import load_ngram
from kospeech.lm.context import ContextGraph
from kospeech.lm.ngram import NgramLM, train_ngram
from kospeech.models.base import ASRModel
from kospeech.registry import build
from kospeech.runtime import ctc
from kospeech.search.ctc import ctc_prefix_beam_search
from kospeech.text import train_tokenizer
from kospeech.text.special import BLANK_ID, UNK_ID
from tests.conftest import SHORT_SENTENCES
from tests.test_runtime import run_without_torch

LM_TEXTS = SHORT_SENTENCES * 3 + ["밥을 먹었어요", "밥을 주세요", "오늘 밥을 먹어요", "커피 두 잔 주세요"]
# the names are units of the tokenizer, but the LM text never holds them
TOKENIZER_TEXTS = [*LM_TEXTS, "솔담채에서 만나요", "솔단 한빛나래 비"]



@pytest.fixture(scope="module")
def lang(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lang")
    train_tokenizer("character", TOKENIZER_TEXTS, out)
    return out


@pytest.fixture(scope="module")
def char_tok(lang: Path) -> object:
    from kospeech.text import load_tokenizer

    return load_tokenizer(lang)


@pytest.fixture(scope="module")
def ngram(char_tok: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ngram")
    train_ngram(LM_TEXTS, char_tok, out, order=3, unit="token")
    return out


# ---------------------------------------------------------------------------------------------
# the graph's rule


def test_graph_tables_and_scores() -> None:
    g = ContextGraph([[5, 6, 7], [5, 8], [], [9], [5, 8]], 10, 2.0)
    assert g.sequences == ((5, 6, 7), (5, 8), (9,))  # the empty one skipped, the repeat once
    assert g.num_nodes == 6 and g.next_node.shape == (6, 10) and g.next_node.dtype == np.int32
    n5 = int(g.next_node[0, 5])
    n56 = int(g.next_node[n5, 6])
    assert g.depth[n56] == 2 and not g.is_end[n56] and g.is_end[g.next_node[n56, 7]]
    assert g.open_bonus[n56] == 4.0 and g.open_bonus[0] == 0.0
    bonus, dest = g.advance(np.array([0, n56]))
    assert bonus.shape == dest.shape == (2, 10) and bonus.dtype == np.float32
    assert bonus[0, 5] == 2.0 and dest[0, 5] == n5 and bonus[0, 4] == 0.0 and dest[0, 4] == 0
    assert bonus[1, 7] == 2.0 and dest[1, 7] == 0  # completes 5 6 7, which nothing continues: back to the root
    assert bonus[1, 4] == -4.0 and dest[1, 4] == 0  # breaks: the two tokens' bonus is taken back
    assert bonus[1, 5] == -2.0 and dest[1, 5] == n5  # breaks, and 5 starts a hotword again from the root

    assert g.score([5]) == 0.0 and g.score([5, 6]) == 0.0  # open at the end: taken back
    assert g.score([5, 6, 7]) == 6.0  # a bonus per token, kept once complete
    assert g.score([4, 5, 6, 7, 4]) == 6.0  # no word boundaries: anything may come before or after
    assert g.score([5, 6, 4]) == 0.0  # a broken partial match earns nothing
    assert g.score([5, 6, 5, 8]) == 4.0  # restarts from the root with the token that broke it
    assert g.score([5, 8, 5, 8]) == 8.0  # after a completed hotword, matching goes on from the root
    assert g.score([5, 8, 5]) == 4.0  # the completed one kept, the open one taken back
    assert g.score([9, 9]) == 4.0
    assert g.score([]) == 0.0


def test_a_hotword_inside_a_longer_one() -> None:
    g = ContextGraph([[5, 6], [5, 6, 7]], 10, 1.0)
    assert g.score([5, 6]) == 2.0
    assert g.score([5, 6, 7]) == 3.0
    assert g.score([5, 6, 8]) == 2.0  # the shorter one, complete, keeps its bonus when the longer breaks
    assert g.score([5, 6, 7, 5, 6]) == 5.0


def test_graph_errors() -> None:
    with pytest.raises(ConfigError, match="encode hotwords with the model's own tokenizer"):
        ContextGraph([[5, 10]], 10, 1.0)
    with pytest.raises(ConfigError, match=r"token ids \[0\]"):
        ContextGraph([[BLANK_ID, 5]], 10, 1.0)
    with pytest.raises(ConfigError, match="finite"):
        ContextGraph([[5]], 10, float("inf"))
    assert ContextGraph([[UNK_ID]], 10, 1.0).score([UNK_ID]) == 1.0


# ---------------------------------------------------------------------------------------------
# torch and numpy searches


def _random_posteriors(seed: int, V: int) -> np.ndarray:
    """(T, V) CTC log-probs, peaked and blank-heavy as a trained model's (those of test_runtime_lm.py)."""
    gen = torch.Generator().manual_seed(seed)
    T = int(torch.randint(40, 81, (1,), generator=gen))
    logits = torch.randn(T, V, generator=gen) * 3.0
    logits[:, BLANK_ID] += 2.5
    return torch.log_softmax(logits, -1).numpy()


def _hotwords_near(lp: np.ndarray, seed: int) -> list[list[int]]:
    """Hotwords the search can meet: windows of the acoustics' runners-up, and one that breaks off."""
    rng = np.random.default_rng(seed)
    out = []
    for tokens, _ in ctc.prefix_beam(lp, 6)[1:4]:
        if len(tokens) < 3:
            continue
        n = int(rng.integers(2, min(4, len(tokens)) + 1))
        i = int(rng.integers(0, len(tokens) - n + 1))
        out.append(tokens[i : i + n])
    best = ctc.prefix_beam(lp, 6)[0][0]
    if len(best) >= 3:
        out.append([*best[:2], int(rng.integers(5, lp.shape[1]))])
    return out


@pytest.mark.parametrize("with_lm", [False, True], ids=["no-lm", "ngram"])
def test_numpy_hotwords_match_torch(with_lm: bool, char_tok: object, ngram: Path) -> None:
    V = char_tok.vocab_size
    torch_lm = NgramLM.load(ngram / "lm.arpa") if with_lm else None
    scorer = load_ngram(ngram) if with_lm else None
    lm_weight, length_bonus = (0.5, 1.0) if with_lm else (0.0, 0.0)
    seeds = range(4)
    posteriors = [_random_posteriors(seed, V) for seed in seeds]
    # the torch search decodes all utterances in one padded batch (the shorter ones stop early)
    T = max(lp.shape[0] for lp in posteriors)
    batch = torch.zeros(len(posteriors), T, V)
    for b, lp in enumerate(posteriors):
        batch[b, : lp.shape[0]] = torch.from_numpy(lp)
    lengths = torch.tensor([lp.shape[0] for lp in posteriors])
    changed = 0
    for weight in (1.0, 3.0):
        for beam in (4, 10):
            hotwords = [h for seed, lp in zip(seeds, posteriors) for h in _hotwords_near(lp, seed)]
            graph = ContextGraph(hotwords, V, weight)
            ref = ctc_prefix_beam_search(batch, lengths, beam, lm=torch_lm, lm_weight=lm_weight,
                                         length_bonus=length_bonus, context=graph)
            for b, lp in enumerate(posteriors):
                plain = ctc.prefix_beam(lp, beam, lm=scorer, lm_weight=lm_weight, length_bonus=length_bonus)
                got = ctc.prefix_beam(lp, beam, lm=scorer, lm_weight=lm_weight, length_bonus=length_bonus,
                                      context=graph)
                case = (b, weight, beam)
                assert got[0][0] == ref[b][0].tokens, case
                assert got[0][1] == pytest.approx(ref[b][0].score, abs=1e-4), case
                assert len(got) == len(ref[b]), case
                assert ref[b][0].parts["context"] == pytest.approx(graph.score(ref[b][0].tokens), abs=1e-4), case
                changed += got[0][0] != plain[0][0]
    assert changed > 0  # the grid exercises the hotwords, not only the acoustics


def test_no_hotwords_change_nothing() -> None:
    lp = _random_posteriors(11, 20)
    lengths = torch.tensor([lp.shape[0]])
    empty = ContextGraph([], 20, 2.0)
    plain = ctc_prefix_beam_search(torch.from_numpy(lp)[None], lengths, 6)[0]
    with_empty = ctc_prefix_beam_search(torch.from_numpy(lp)[None], lengths, 6, context=empty)[0]
    assert [(h.tokens, h.score) for h in with_empty] == [(h.tokens, h.score) for h in plain]
    assert ctc.prefix_beam(lp, 6, context=empty) == ctc.prefix_beam(lp, 6)
    with pytest.raises(ConfigError, match="built for 21 tokens"):
        ctc.prefix_beam(lp, 6, context=ContextGraph([[5]], 21, 1.0))
    with pytest.raises(ConfigError, match="built for 21 tokens"):
        ctc_prefix_beam_search(torch.from_numpy(lp)[None], lengths, 6, context=ContextGraph([[5]], 21, 1.0))


def _confusable_posteriors(tok: object, text: str, at: int, other: str, p: float, floor: float) -> np.ndarray:
    """One frame per unit of ``text`` then a blank frame; unit ``at`` loses ``p`` to ``other``."""
    V = tok.vocab_size
    frames = []
    for i, u in enumerate(tok.encode(text)):
        row = np.full(V, floor)
        row[u] = 1.0
        if i == at:
            row[u], row[tok.encode(other)[0]] = 1.0 - p, p
        blank = np.full(V, floor)
        blank[BLANK_ID] = 1.0
        frames += [row, blank]
    lp = np.log(np.stack(frames))
    return (lp - np.logaddexp.reduce(lp, axis=-1, keepdims=True)).astype(np.float32)


class LogProbsModel(ASRModel):
    """A CTC "model" whose encoder output is already the CTC log-probabilities."""

    has_ctc = True

    def ctc_log_probs(self, encoder_out: torch.Tensor) -> torch.Tensor:
        return encoder_out


def _decode_all(tok: object, lp: np.ndarray, hotwords: list[str], weight: float, ngram: Path | None) -> set[str]:
    """The best text of the numpy search, the torch search and the registered search (all must agree)."""
    ids = [tok.encode(h) for h in hotwords]
    graph = ContextGraph(ids, tok.vocab_size, weight)
    lm_opts = {"lm_weight": 0.5, "length_bonus": 1.0} if ngram is not None else {}
    np_best = ctc.prefix_beam(lp, 8, lm=load_ngram(ngram) if ngram else None, context=graph, **lm_opts)[0][0]
    x, lengths = torch.from_numpy(lp)[None], torch.tensor([lp.shape[0]])
    torch_lm = NgramLM.load(ngram / "lm.arpa") if ngram else None
    torch_best = ctc_prefix_beam_search(x, lengths, 8, lm=torch_lm, context=graph, **lm_opts)[0][0].tokens
    cfg = {"name": "ctc_prefix_beam", "beam_size": 8, "hotwords": ids, "hotword_weight": weight, **lm_opts}
    if ngram is not None:
        cfg["lm"] = str(ngram / "lm.arpa")
    hyp = build("search", cfg, model=LogProbsModel())(x, lengths)[0][0]
    assert ("context" in hyp.parts) == bool(hotwords)
    return {tok.decode(np_best), tok.decode(torch_best), tok.decode(hyp.tokens)}


@pytest.mark.parametrize("with_lm", [False, True], ids=["no-lm", "ngram"])
def test_a_hotword_flips_a_confusable_name(with_lm: bool, char_tok: object, ngram: Path) -> None:
    # the acoustics prefer 솔단채 to 솔담채 at 0.6 : 0.4; the particle 에서 follows the name
    lp = _confusable_posteriors(char_tok, "솔담채에서 만나요", 1, "단", 0.6, 1e-4)
    assert char_tok.decode(ctc.prefix_beam(lp, 8)[0][0]) == "솔단채에서 만나요"
    lm = ngram if with_lm else None
    assert _decode_all(char_tok, lp, ["한빛나래"], 2.0, lm) == {"솔단채에서 만나요"}
    assert _decode_all(char_tok, lp, ["솔담채", "한빛나래"], 2.0, lm) == {"솔담채에서 만나요"}


@pytest.mark.parametrize("with_lm", [False, True], ids=["no-lm", "ngram"])
def test_a_hotword_not_spoken_is_not_inserted(with_lm: bool, char_tok: object, ngram: Path) -> None:
    lm = ngram if with_lm else None
    lp = _confusable_posteriors(char_tok, "오늘 밥을 먹어요", 3, "밤", 0.1, 1e-2)
    assert _decode_all(char_tok, lp, [], 2.0, lm) == {"오늘 밥을 먹어요"}
    assert _decode_all(char_tok, lp, ["한빛나래", "솔담채"], 2.0, lm) == {"오늘 밥을 먹어요"}


# ---------------------------------------------------------------------------------------------
# the runtime: text -> ids, and no torch


ENCODE_TEXTS = [
    "오늘 날씨가 좋네요",
    "  커피   2 잔 주세요 ",
    "지금 몇 시예요 ☃",
    unicodedata.normalize("NFD", "밥 먹었어요"),
    "솔담채에서 3시에 만나요",
    "",
]


@pytest.mark.parametrize("name,options", [("character", {}), ("jamo", {}), ("sentencepiece", {"vocab_size": 60})])
def test_detokenizer_encodes_as_the_tokenizer(name: str, options: dict, tmp_path: Path) -> None:
    from kospeech.runtime.tokens import Detokenizer

    tok = train_tokenizer(name, SHORT_SENTENCES, tmp_path / "lang", **options)
    ours = Detokenizer(tmp_path / "lang")
    for text in ENCODE_TEXTS:
        assert ours.encode(text) == tok.encode(text), text
    assert UNK_ID in ours.encode("지금 몇 시예요 ☃")
    if name != "sentencepiece":  # a space is the space unit, after 커피's 2 characters or 4 jamo
        assert ours.id_to_token(ours.encode("커피 한")[2 if name == "character" else 4]) == ours.space_symbol


def test_hotwords_in_a_process_without_torch(lang: Path, char_tok: object, tmp_path: Path) -> None:
    lp = _confusable_posteriors(char_tok, "솔담채에서 만나요", 1, "단", 0.6, 1e-4)
    np.save(tmp_path / "lp.npy", lp)
    out = run_without_torch(
        f"""
        import numpy as np
        from kospeech.lm.context import ContextGraph
        from kospeech.runtime.ctc import prefix_beam
        from kospeech.runtime.tokens import Detokenizer
        tok = Detokenizer({str(lang)!r})
        graph = ContextGraph([tok.encode("솔담채")], tok.vocab_size, 2.0)
        lp = np.load({str(tmp_path / "lp.npy")!r})
        out = {{"plain": tok.decode(prefix_beam(lp, 8)[0][0]),
               "hot": tok.decode(prefix_beam(lp, 8, context=graph)[0][0])}}
        """
    )
    assert out == {"plain": "솔단채에서 만나요", "hot": "솔담채에서 만나요", "modules": []}
