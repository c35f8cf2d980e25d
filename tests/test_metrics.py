"""CER/CRR/WER/sWER with hand-checked values, alignments against a plain DP, bootstrap intervals."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kospeech.cli import main
from kospeech.metrics import (
    align,
    align_batch,
    bootstrap_ci,
    cer,
    crr,
    edit_matrix,
    format_alignment,
    score_corpus,
    space_normalize,
    summarise,
    swer,
    wer,
)


def _levenshtein(a, b) -> int:
    """The textbook O(nm) DP, as the reference the vectorised one must agree with."""
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[:], i
        for j in range(1, len(b) + 1):
            d[j] = min(prev[j - 1] + (a[i - 1] != b[j - 1]), prev[j] + 1, d[j - 1] + 1)
    return d[-1]


def test_align_ops() -> None:
    assert [o for o, _, _ in align("abc", "abd").ops] == ["C", "C", "S"]
    assert align("abc", "ac").ops == (("C", "a", "a"), ("D", "b", None), ("C", "c", "c"))
    assert align("ac", "abc").ops == (("C", "a", "a"), ("I", None, "b"), ("C", "c", "c"))
    a = align("kitten", "sitting")  # the classic: k->s, e->i, +g
    assert (a.substitutions, a.deletions, a.insertions, a.correct, a.ref_len) == (2, 0, 1, 4, 6)
    assert align(["오늘", "날씨"], ["오늘", "날시", "좋다"]).ops == (
        ("C", "오늘", "오늘"),
        ("S", "날씨", "날시"),
        ("I", None, "좋다"),
    )
    assert align("", "").ops == ()
    assert [o for o, _, _ in align("", "가나").ops] == ["I", "I"]
    assert [o for o, _, _ in align("가나", "").ops] == ["D", "D"]


def test_edit_matrix_by_hand() -> None:
    m = edit_matrix("ab", "b")
    assert m.tolist() == [[0, 1], [1, 1], [2, 1]]


def test_cer_crr_by_hand() -> None:
    assert cer("안녕하세요", "안녕하세요") == 0.0
    # spaces are not characters: 7 syllables, one substituted (간 -> 갔)
    assert cer("나는 학교에 간다", "나는 학교 에 갔다") == pytest.approx(100 / 7)
    assert crr("나는 학교에 간다", "나는 학교 에 갔다") == pytest.approx(100 - 100 / 7)
    assert cer("kitten", "sitting") == pytest.approx(50.0)
    assert cer("", "가나") == 200.0  # empty reference: each insertion over a length of one
    assert cer("", "") == 0.0


def test_wer_and_space_normalised_wer_by_hand() -> None:
    ref, hyp = "나는 학교에 간다", "나는 학교 에 갔다"
    # words: 나는=C, 학교에->학교 S, 간다->에 S, +갔다 I  => 3 errors over 3 words
    assert wer(ref, hyp) == pytest.approx(100.0)
    # matched characters take the reference spacing; 갔 (substituted) keeps its own word start
    assert space_normalize(ref, hyp) == "나는 학교에 갔다"
    assert swer(ref, hyp) == pytest.approx(100 / 3)
    # a hypothesis wrong only in spacing: WER 100, sWER 0, CER 0
    ref, hyp = "오늘 날씨가 좋네요", "오늘날씨가 좋 네요"
    assert (cer(ref, hyp), wer(ref, hyp), swer(ref, hyp)) == (0.0, 100.0, 0.0)


def test_space_normalize_keeps_inserted_spacing() -> None:
    # 요 is inserted with its own space before it; everything else matches the reference
    assert space_normalize("밥 먹었어", "밥먹었어 요") == "밥 먹었어 요"
    assert space_normalize("밥 먹었어", "") == ""


def test_score_corpus_totals_by_hand(caplog: pytest.LogCaptureFixture) -> None:
    refs = {"a": "안녕 하세요", "b": "밥 먹었어요", "c": "감사"}
    hyps = {"a": "안녕하세요", "b": "밥 먹어요", "x": "남는 가설"}
    with caplog.at_level(logging.WARNING, logger="kospeech.metrics"):
        s = score_corpus(refs, hyps)
    # chars: a 0/5, b 1 deletion/5 (었), c missing: 2 deletions/2  -> 3/12
    assert (s.ref_chars, s.substitutions, s.deletions, s.insertions) == (12, 0, 3, 0)
    assert s.cer == pytest.approx(25.0) and s.crr == pytest.approx(75.0)
    # words: a [안녕 하세요] vs [안녕하세요] = S+D, b 먹었어요->먹어요 = S, c = D -> 4/5
    assert (s.ref_words, s.word_substitutions, s.word_deletions, s.word_insertions) == (5, 2, 2, 0)
    assert s.wer == pytest.approx(80.0)
    # space-normalised: a is correct once re-spaced -> (0 + 1 + 1) / 5
    assert s.swer == pytest.approx(40.0)
    assert (s.n_utts, s.n_missing, s.n_extra) == (3, 1, 1)
    assert [u.utt_id for u in s.utts] == ["a", "b", "c"] and s.utts[2].missing
    assert "1 of 3 utterances have no hypothesis" in caplog.text and "(first: c)" in caplog.text
    assert "1 hypotheses have no reference" in caplog.text
    d = s.to_dict(with_utts=True)
    assert d["cer"] == pytest.approx(25.0) and "utts" not in s.to_dict()
    assert d["utts"][1]["cer"] == pytest.approx(20.0) and d["utts"][2]["hyp"] is None
    assert "CER 25.00% (CRR 75.00%)" in s.summary()


def test_format_alignment_exact() -> None:
    block = format_alignment("u1", "오늘 날씨가", "오늘 날개")
    assert block.split("\n") == [
        "id: (u1)  (#C #S #D #I) 3 1 1 0",
        "REF:  오 늘 날 씨 가",
        "HYP:  오 늘 날 개 **",
        "Eval:          S  D",
    ]
    words = format_alignment("u2", "나는 학교에", "나는 학교 에", unit="word").splitlines()
    assert words[1:] == ["REF:  나는 학교에 **", "HYP:  나는 학교   에", "Eval:      S      I"]
    assert "[no hypothesis]" in format_alignment("u3", "가", None)
    with pytest.raises(ValueError, match="unit must be 'char' or 'word'"):
        format_alignment("u", "a", "b", unit="syllable")


def test_cer_with_spaces_scores_the_space_as_espnet_does(tmp_path) -> None:
    """ESPnet's CER: the single space between words is one more character, spacing slips count."""
    ref, hyp = "나는 학교에 간다", "나는 학교 에 갔다"
    # "나는▁학교에▁간다" (9) vs "나는▁학교▁에▁갔다" (10): one inserted space, 간->갔 => 2/9
    assert cer(ref, hyp, spaces=True) == pytest.approx(200 / 9)
    assert cer(ref, hyp) == pytest.approx(100 / 7)  # the default is unchanged
    assert cer("  오늘   날씨 ", "오늘 날씨", spaces=True) == 0.0  # whitespace runs are one space
    refs, hyps = {"a": "오늘 날씨가", "b": "좋네요"}, {"a": "오늘날씨가", "b": "좋네요"}
    plain, spaced = score_corpus(refs, hyps), score_corpus(refs, hyps, cer_spaces=True)
    assert (plain.cer, plain.ref_chars) == (0.0, 8)
    assert (spaced.ref_chars, spaced.deletions) == (9, 1) and spaced.cer == pytest.approx(100 / 9)
    assert spaced.swer == plain.swer == 0.0 and spaced.wer == plain.wer  # word scores unchanged
    assert spaced.to_dict()["cer_spaces"] is True and "CER (spaces scored)" in spaced.summary()
    block = format_alignment("a", "오늘 날씨가", "오늘날씨가", spaces=True).splitlines()
    assert block[1:] == ["REF:  오 늘 ▁ 날 씨 가", "HYP:  오 늘 * 날 씨 가", "Eval:       D"]

    (tmp_path / "ref.trn").write_text("a 오늘 날씨가\nb 좋네요\n", encoding="utf-8")
    (tmp_path / "hyp.trn").write_text("a 오늘날씨가\nb 좋네요\n", encoding="utf-8")
    args = ["score", "--ref", str(tmp_path / "ref.trn"), "--hyp", str(tmp_path / "hyp.trn")]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "spaced"), "--cer-spaces"]) == 0
    plain_json = json.loads((tmp_path / "plain" / "scores.json").read_text(encoding="utf-8"))
    spaced_json = json.loads((tmp_path / "spaced" / "scores.json").read_text(encoding="utf-8"))
    assert plain_json["cer"] == 0.0 and plain_json["cer_spaces"] is False
    assert spaced_json["cer"] == pytest.approx(100 / 9) and spaced_json["cer_spaces"] is True
    assert "▁" in (tmp_path / "spaced" / "result.txt").read_text(encoding="utf-8")
    assert summarise(tmp_path / "spaced" / "scores.json", n_boot=10)["transcript"].endswith("CER scores spaces")


_text = st.text(alphabet="가나다라 ab", max_size=25)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=12))
def test_batched_alignment_matches_plain_dp(pairs: list[tuple[str, str]]) -> None:
    # a tiny max_cells forces many chunks of different shapes
    for (ref, hyp), a in zip(pairs, align_batch(pairs, max_cells=64)):
        assert a.errors == _levenshtein(ref, hyp)
        assert "".join(r for o, r, _ in a.ops if o != "I") == ref
        assert "".join(h for o, _, h in a.ops if o != "D") == hyp
        assert all((r == h) == (o == "C") for o, r, h in a.ops if o in "CS")


def test_bootstrap_ci() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 30, size=400)
    errors = rng.binomial(lengths, 0.1)
    point = 100 * errors.sum() / lengths.sum()
    low, high = bootstrap_ci(errors, lengths, n=1000, seed=0)
    assert low < point < high
    assert 0.5 < high - low < 6.0  # about 2 * 1.96 * sqrt(p(1-p)/N) * 100 with N ~ 7000 chars
    assert bootstrap_ci(errors, lengths, n=1000, seed=0) == (low, high)
    assert bootstrap_ci(errors, lengths, n=1000, seed=1) != (low, high)
    small = bootstrap_ci(errors[:20], lengths[:20], n=1000, seed=0)
    assert small[1] - small[0] > high - low  # fewer utterances, wider interval
    assert bootstrap_ci([1, 1, 1], [10, 10, 10]) == (10.0, 10.0)


def test_bootstrap_ci_errors() -> None:
    with pytest.raises(ValueError, match="equal in length"):
        bootstrap_ci([1, 2], [3])
    with pytest.raises(ValueError, match="at least one utterance"):
        bootstrap_ci([], [])
