"""The n-gram LM: modified Kneser-Ney estimate, ARPA out and in, distributions, word-level fusion, CLI.

The exact fusion of the n-gram in every search (against brute force) is in test_lm.py, with
the other LMs; here are the parts only the n-gram has.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kospeech.cli import main
from kospeech.errors import DataError
from kospeech.lm.loading import load_lm
from kospeech.lm.ngram import NgramLM, estimate_kneser_ney, read_arpa, train_ngram, write_arpa
from kospeech.search.ctc import ctc_prefix_beam_search
from kospeech.text import train_tokenizer
from kospeech.text.special import BLANK_ID, EOS_ID, NUM_SPECIAL, SOS_ID
from tests.conftest import SHORT_SENTENCES

TEXTS = SHORT_SENTENCES * 3 + ["밥을 먹었어요", "밥을 주세요", "오늘 밥을 먹어요", "커피 두 잔 주세요"]


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory: pytest.TempPathFactory) -> object:
    return train_tokenizer("character", [*TEXTS, "밤을"], tmp_path_factory.mktemp("lang"))


def test_arpa_round_trip(tmp_path: Path) -> None:
    sentences = [t.split() for t in TEXTS]
    tables = estimate_kneser_ney(sentences, 3)
    back = read_arpa(write_arpa(tables, tmp_path / "lm.arpa"))
    assert len(back) == 3
    for k in range(3):
        assert back[k].keys() == tables[k].keys()
        for g, (lp, bow) in tables[k].items():
            assert back[k][g][0] == pytest.approx(lp, abs=1e-6)
            assert back[k][g][1] == pytest.approx(bow if k < 2 else 0.0, abs=1e-6)


@pytest.mark.parametrize("order", [1, 2, 4, 6])
def test_distributions_sum_to_one_over_the_vocabulary(order: int, char_tok: object, tmp_path: Path) -> None:
    train_ngram(TEXTS, char_tok, tmp_path, order=order)
    lm = load_lm(tmp_path)
    assert isinstance(lm, NgramLM) and lm.vocab_size == char_tok.vocab_size
    seen = char_tok.encode("밥을 먹었어요")
    unseen = char_tok.encode("밤을 했다")  # contexts the text never had (and units it lacks)
    logp, state = lm.start(2, "cpu")
    for a, b in zip(seen, unseen):
        assert torch.exp(logp.double()).sum(-1).tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
        assert torch.isinf(logp[:, [BLANK_ID, SOS_ID]]).all()
        logp, state = lm.step(torch.tensor([a, b]), state)


def test_kneser_ney_prefers_the_text(char_tok: object, tmp_path: Path) -> None:
    train_ngram(TEXTS, char_tok, tmp_path, order=4)
    lm = load_lm(tmp_path / "lm.arpa")
    seen, _ = lm.sentence_logprob(char_tok.encode("밥을 먹었어요"))
    scrambled, _ = lm.sentence_logprob(char_tok.encode("요어었먹 을밥"))
    assert seen > scrambled + 10


def test_kenlm_reads_our_arpa_and_agrees(char_tok: object, tmp_path: Path) -> None:
    kenlm = pytest.importorskip("kenlm")
    train_ngram(TEXTS, char_tok, tmp_path, order=3)
    ours = load_lm(tmp_path)
    model = kenlm.Model(str(tmp_path / "lm.arpa"))
    assert model.order == 3
    for text in ["밥을 먹었어요", "오늘 날씨가 좋네요", "밤을 했다"]:
        ids = char_tok.encode(text)
        theirs = model.score(" ".join(char_tok.id_to_token(i) for i in ids), bos=True, eos=True)
        mine, _ = ours.sentence_logprob(ids)
        assert mine / math.log(10) == pytest.approx(theirs, abs=1e-4)


def _ctc_posteriors(tok: object, text: str, confusions: dict[int, tuple[str, float]]) -> torch.Tensor:
    """One frame per unit of ``text`` then a blank frame; frame i puts ``p`` on another unit."""
    ids = tok.encode(text)
    V = tok.vocab_size
    frames = []
    for i, u in enumerate(ids):
        row = torch.full((V,), 1e-6)
        if i in confusions:
            other, p = confusions[i]
            row[tok.encode(other)[0]] = p
            row[u] = 1.0 - p
        else:
            row[u] = 1.0
        frames += [row, torch.full((V,), 1e-6).index_fill(0, torch.tensor([BLANK_ID]), 1.0)]
    return torch.stack(frames).log().log_softmax(-1).unsqueeze(0)


@pytest.mark.parametrize("unit", ["token", "word"])
def test_ngram_fusion_changes_the_best_path(unit: str, char_tok: object, tmp_path: Path) -> None:
    # the acoustics prefer "밤을" (night) to "밥을" (rice) at 0.6 : 0.4; the text only knows rice
    logp = _ctc_posteriors(char_tok, "오늘 밥을 먹어요", {3: ("밤", 0.6)})
    lengths = torch.tensor([logp.size(1)])
    plain = ctc_prefix_beam_search(logp, lengths, 8)[0][0].tokens
    assert char_tok.decode(plain) == "오늘 밤을 먹어요"
    train_ngram(TEXTS, char_tok, tmp_path, order=3, unit=unit)
    lm = load_lm(tmp_path)
    fused = ctc_prefix_beam_search(logp, lengths, 8, lm=lm, lm_weight=0.5)[0][0]
    assert char_tok.decode(fused.tokens) == "오늘 밥을 먹어요"
    assert fused.parts["lm"] == pytest.approx(lm.sentence_logprob(fused.tokens)[0], abs=1e-4)


def test_word_ngram_scores_whole_words_only(char_tok: object, tmp_path: Path) -> None:
    train_ngram(TEXTS, char_tok, tmp_path, order=2, unit="word")
    lm = load_lm(tmp_path)
    space = char_tok.encode("밥 을")[1]
    logp, state = lm.start(1, "cpu")
    assert float(logp[0, space]) == 0.0 and float(logp[0, EOS_ID]) < 0  # no word yet: an empty sentence costs </s>
    for u in char_tok.encode("밥을")[:-1]:
        logp, state = lm.step(torch.tensor([u]), state)
        inside = logp[0, NUM_SPECIAL:].clone()
        inside[space - NUM_SPECIAL] = 0.0
        assert (inside == 0).all()  # inside a word: free
    logp, state = lm.step(torch.tensor([char_tok.encode("을")[0]]), state)
    known = float(logp[0, space])
    oov_logp, _ = lm.step(torch.tensor([char_tok.encode("밤")[0]]), lm.start(1, "cpu")[1])
    oov_logp, _ = lm.step(torch.tensor([char_tok.encode("을")[0]]), _)
    assert known < 0 and float(oov_logp[0, space]) < known  # "밤을" is <unk>, "밥을" a known word


def test_lm_train_ngram_cli_and_ppl(char_tok: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lang = tmp_path / "lang"
    char_tok.save(lang)
    text = tmp_path / "text"
    text.write_text("".join(f"utt{i:03d} {t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    for unit in ("token", "word"):
        out = tmp_path / unit
        rc = main(["lm", "train", "--type", "ngram", "--order", "3", "--unit", unit, "--text", str(text),
                   "--lang", str(lang), "--out", str(out)])
        assert rc == 0
        printed = capsys.readouterr().out
        assert "n-gram LM saved" in printed and f"per {unit}" in printed
        assert (out / "lm.arpa").is_file() and (out / "lm.yaml").is_file()
        assert (out / "spellings.txt").is_file() == (unit == "word")
    rc = main(["lm", "ppl", "--lm", str(tmp_path / "token"), "--text", str(text), "--lang", str(lang)])
    assert rc == 0
    ppl = float(capsys.readouterr().out.split('"ppl": ')[1].rstrip("}\n"))
    assert 1.0 < ppl < char_tok.vocab_size / 3


def test_lm_train_reads_several_text_files(char_tok: object, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lang = tmp_path / "lang"
    char_tok.save(lang)
    kaldi = tmp_path / "text"
    kaldi.write_text("".join(f"utt{i:03d} {t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    notated = tmp_path / "more.txt"
    notated.write_text("".join(f"아/ {t}\n" for t in TEXTS), encoding="utf-8")
    args = ["lm", "train", "--type", "ngram", "--order", "2", "--lang", str(lang), "--valid-text", str(kaldi)]
    assert main([*args, "--text", str(kaldi), "--out", str(tmp_path / "one")]) == 0
    one = capsys.readouterr().out
    assert main([*args, "--text", str(kaldi), str(notated), "--transcript", "phonetic",
                 "--out", str(tmp_path / "two")]) == 0
    two = capsys.readouterr().out
    assert f"{len(TEXTS)} sentences" in one
    assert f"{2 * len(TEXTS)} sentences" in two
    assert "아/" not in (tmp_path / "two" / "lm.arpa").read_text(encoding="utf-8")


def test_bad_arpa_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "lm.arpa").write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t</s>\nnot-a-number <s>\n\\end\\\n")
    with pytest.raises(DataError, match=r"lm.arpa:6: not an ARPA 1-gram line"):
        read_arpa(tmp_path / "lm.arpa")
    write_arpa(estimate_kneser_ney([["a"]], 2), tmp_path / "lm.arpa")
    with pytest.raises(DataError, match="no lm.yaml beside it"):
        load_lm(tmp_path / "lm.arpa")


@pytest.mark.parametrize("tokenizer", ["character", "jamo", "sentencepiece"])
def test_word_ngram_through_units_equals_the_word_model(tokenizer: str, tmp_path: Path) -> None:
    """Spelled out in any tokenizer's units (space unit or word-initial ▁ pieces), the
    lexicon-free fusion scores a sentence exactly as the word n-gram scores its words."""
    from kospeech.lm.ngram import BOS, EOS, UNK

    options = {"vocab_size": 60} if tokenizer == "sentencepiece" else {}
    tok = train_tokenizer(tokenizer, TEXTS, tmp_path / "lang", **options)
    train_ngram(TEXTS, tok, tmp_path / "lm", order=3, unit="word")
    lm = load_lm(tmp_path / "lm")
    tables = read_arpa(tmp_path / "lm" / "lm.arpa")

    def word_logprob(words: list[str]) -> float:  # backoff by hand, natural log
        def p(ctx: tuple[str, ...], w: str) -> float:
            if (*ctx, w) in tables[len(ctx)]:
                return tables[len(ctx)][(*ctx, w)][0]
            bow = tables[len(ctx) - 1][ctx][1] if ctx in tables[len(ctx) - 1] else 0.0
            return bow + p(ctx[1:], w)

        vocab = {g[0] for g in tables[0]}
        seq = [BOS, *(w if w in vocab else UNK for w in words), EOS]
        return sum(p(tuple(seq[max(0, i - 2) : i]), seq[i]) for i in range(1, len(seq))) * math.log(10)

    for text in ["밥을 먹었어요", "오늘 밥을 먹어요", "커피 두 잔 주세요", "밤을 먹었어요"]:
        mine, n = lm.sentence_logprob(tok.encode(text))
        assert mine == pytest.approx(word_logprob(text.split()), abs=1e-4), text
        assert n == len(text.split()) + 1
