"""Shallow fusion of an n-gram in the torch-free runtime: ``kospeech.runtime.ctc.prefix_beam`` with a
:class:`kospeech.lm.arpa.NgramScorer` decodes as the torch ``ctc_prefix_beam_search`` with ``NgramLM``
does, for token and word n-grams, and neither module needs torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.errors import ConfigError, DataError
from kospeech.lm.arpa import NgramScorer, load_ngram
from kospeech.lm.ngram import NgramLM, train_ngram
from kospeech.runtime import ctc
from kospeech.search.ctc import ctc_prefix_beam_search
from kospeech.text import train_tokenizer
from kospeech.text.special import BLANK_ID
from tests.conftest import SHORT_SENTENCES
from tests.test_runtime import run_without_torch

TEXTS = SHORT_SENTENCES * 3 + ["밥을 먹었어요", "밥을 주세요", "오늘 밥을 먹어요", "커피 두 잔 주세요"]



@pytest.fixture(scope="module")
def char_tok(tmp_path_factory: pytest.TempPathFactory) -> object:
    return train_tokenizer("character", [*TEXTS, "밤을"], tmp_path_factory.mktemp("lang"))


@pytest.fixture(scope="module")
def ngrams(char_tok: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A token and a word 3-gram over the same text, each in its own folder."""
    out = {}
    for unit in ("token", "word"):
        out[unit] = tmp_path_factory.mktemp(f"ngram_{unit}")
        train_ngram(TEXTS, char_tok, out[unit], order=3, unit=unit)
    return out


def _random_posteriors(seed: int, V: int) -> np.ndarray:
    """(T, V) CTC log-probs, peaked and blank-heavy as a trained model's, yet close enough between
    units that the LM changes some choices."""
    gen = torch.Generator().manual_seed(seed)
    T = int(torch.randint(40, 81, (1,), generator=gen))
    logits = torch.randn(T, V, generator=gen) * 3.0
    logits[:, BLANK_ID] += 2.5
    return torch.log_softmax(logits, -1).numpy()


@pytest.mark.parametrize("unit", ["token", "word"])
def test_numpy_fusion_matches_torch(unit: str, char_tok: object, ngrams: dict[str, Path]) -> None:
    torch_lm = NgramLM.load(ngrams[unit] / "lm.arpa")
    scorer = load_ngram(ngrams[unit])
    assert scorer.unit == unit and scorer.vocab_size == char_tok.vocab_size
    changed = 0
    for seed in range(3):
        lp = _random_posteriors(seed, char_tok.vocab_size)
        lengths = torch.tensor([lp.shape[0]])
        for beam in (4, 10):
            plain = ctc.prefix_beam(lp, beam)[0][0]
            for lm_weight in (0.5, 1.0):
                for length_bonus in (0.0, 1.5):
                    ref = ctc_prefix_beam_search(torch.from_numpy(lp)[None], lengths, beam, lm=torch_lm,
                                                 lm_weight=lm_weight, length_bonus=length_bonus)[0]
                    got = ctc.prefix_beam(lp, beam, lm=scorer, lm_weight=lm_weight, length_bonus=length_bonus)
                    case = (seed, beam, lm_weight, length_bonus)
                    assert got[0][0] == ref[0].tokens, case
                    assert got[0][1] == pytest.approx(ref[0].score, abs=1e-4), case
                    assert len(got) == len(ref), case
                    changed += got[0][0] != plain
    assert changed > 0  # the grid exercises the fusion, not only the acoustics


def _confusable_posteriors(tok: object, text: str, at: int, other: str, p: float) -> np.ndarray:
    """One frame per unit of ``text`` then a blank frame; unit ``at`` loses ``p`` to ``other``."""
    V = tok.vocab_size
    frames = []
    for i, u in enumerate(tok.encode(text)):
        row = np.full(V, 1e-6)
        row[u] = 1.0
        if i == at:
            row[u], row[tok.encode(other)[0]] = 1.0 - p, p
        blank = np.full(V, 1e-6)
        blank[BLANK_ID] = 1.0
        frames += [row, blank]
    lp = np.log(np.stack(frames))
    return (lp - np.logaddexp.reduce(lp, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("unit", ["token", "word"])
def test_the_ngram_changes_the_numpy_best_path(unit: str, char_tok: object, ngrams: dict[str, Path]) -> None:
    # the acoustics prefer "밤을" (night) to "밥을" (rice) at 0.6 : 0.4; the LM text only knows rice
    lp = _confusable_posteriors(char_tok, "오늘 밥을 먹어요", 3, "밤", 0.6)
    assert char_tok.decode(ctc.prefix_beam(lp, 8)[0][0]) == "오늘 밤을 먹어요"
    scorer = load_ngram(ngrams[unit] / "lm.arpa")
    tokens, score = ctc.prefix_beam(lp, 8, lm=scorer, lm_weight=0.5)[0]
    assert char_tok.decode(tokens) == "오늘 밥을 먹어요"
    acoustic = ctc.prefix_beam(lp, 8)
    ctc_part = dict((tuple(t), s) for t, s in acoustic)[tuple(tokens)]
    assert score == pytest.approx(ctc_part + 0.5 * scorer.sentence_logprob(tokens)[0], abs=1e-3)
    # a zero weight leaves the LM out, as the torch searches do
    assert ctc.prefix_beam(lp, 8, lm=scorer, lm_weight=0.0) == ctc.prefix_beam(lp, 8)


def test_scorer_loading_and_its_errors(char_tok: object, ngrams: dict[str, Path], tmp_path: Path) -> None:
    tokens = char_tok.encode("오늘 밥을 먹어요")
    for unit, folder in ngrams.items():
        by_file = NgramScorer.load(folder / "lm.arpa")
        assert by_file.sentence_logprob(tokens) == NgramLM.load(folder / "lm.arpa").sentence_logprob(tokens), unit
        assert load_ngram(folder / "lm.yaml").sentence_logprob(tokens) == by_file.sentence_logprob(tokens)
    (tmp_path / "lm.arpa").write_bytes((ngrams["token"] / "lm.arpa").read_bytes())
    with pytest.raises(DataError, match="no lm.yaml beside it"):
        load_ngram(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no lm.arpa"):
        load_ngram(tmp_path / "empty")
    lp = _random_posteriors(0, char_tok.vocab_size + 1)
    with pytest.raises(ConfigError, match="tokens but the model outputs"):
        ctc.prefix_beam(lp, 4, lm=load_ngram(ngrams["token"]), lm_weight=0.5)


def test_fusion_in_a_process_without_torch(char_tok: object, ngrams: dict[str, Path], tmp_path: Path) -> None:
    lp = _random_posteriors(7, char_tok.vocab_size)
    np.save(tmp_path / "lp.npy", lp)
    out = run_without_torch(
        f"""
        import numpy as np
        from kospeech.lm.arpa import load_ngram
        from kospeech.runtime.ctc import prefix_beam
        lp = np.load({str(tmp_path / "lp.npy")!r})
        out = {{"best": {{unit: prefix_beam(lp, 4, lm=load_ngram(path), lm_weight=1.0, length_bonus=1.5)[0][0]
                         for unit, path in {({u: str(p) for u, p in ngrams.items()})!r}.items()}}}}
        """
    )
    assert out["modules"] == []
    for unit, folder in ngrams.items():
        ref = ctc_prefix_beam_search(torch.from_numpy(lp)[None], torch.tensor([lp.shape[0]]), 4,
                                     lm=NgramLM.load(folder / "lm.arpa"), lm_weight=1.0, length_bonus=1.5)[0]
        assert out["best"][unit] == ref[0].tokens, unit
