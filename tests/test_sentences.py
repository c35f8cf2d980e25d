"""The packaged sentence list: size, coverage, notation, speakable phonetic forms; the split."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kospeech.errors import ConfigError, DataError
from kospeech.text.normalize import normalize_kspon
from kospeech.text.sentences import load_sentences, raw_words, recombine, split_sentences

NOTATION = re.compile(r"\(.*\)/\(.*\)|(?:^|\s)[아음어]/|(?:^|\s)[bnl]/|\+|\*")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return load_sentences()


def test_count_and_uniqueness(sentences: list[str]) -> None:
    assert len(sentences) >= 400
    phonetic = [normalize_kspon(s) for s in sentences]
    assert len(set(phonetic)) == len(phonetic), "two lines are spoken the same"


def test_syllable_coverage(sentences: list[str]) -> None:
    syllables = {c for s in sentences for c in normalize_kspon(s) if "가" <= c <= "힣"}
    assert len(syllables) >= 600


def test_phonetic_forms_are_pure_hangul(sentences: list[str]) -> None:
    bad = [s for s in sentences if not re.fullmatch(r"[가-힣]+(?: [가-힣]+)*", normalize_kspon(s))]
    assert bad == []


def test_lengths_vary_from_2_to_15_words(sentences: list[str]) -> None:
    lengths = [len(normalize_kspon(s).split()) for s in sentences]
    assert min(lengths) >= 2 and max(lengths) <= 15
    assert max(lengths) >= 10 and sum(n <= 3 for n in lengths) >= 50


def test_notation_is_woven_in(sentences: list[str]) -> None:
    notated = [s for s in sentences if NOTATION.search(s)]
    assert 0.25 <= len(notated) / len(sentences) <= 0.5
    text = "\n".join(sentences)
    for mark in ["b/ ", "n/ ", "l/ ", "아/ ", "음/ ", "어/ ", "+ ", "* ", ")/("]:
        assert mark in text, mark
    # numbers and English words appear in dual notation, and the spelling form keeps them
    spelling = [normalize_kspon(s, "spelling") for s in sentences]
    assert sum(bool(re.search(r"\d", s)) for s in spelling) >= 40
    assert sum(bool(re.search(r"[A-Za-z]", s)) for s in spelling) >= 20


def test_split_is_deterministic_disjoint_and_sized(sentences: list[str]) -> None:
    train, test = split_sentences(sentences, test_fraction=0.1, seed=3)
    assert (train, test) == split_sentences(sentences, test_fraction=0.1, seed=3)
    assert (train, test) != split_sentences(sentences, test_fraction=0.1, seed=4)
    assert len(train) + len(test) == len(sentences)
    assert not set(train) & set(test)
    assert len(test) == round(0.1 * len(sentences))
    # sides keep the input order, and the split does not depend on it
    assert train == [s for s in sentences if s in set(train)]
    train_r, test_r = split_sentences(list(reversed(sentences)), test_fraction=0.1, seed=3)
    assert set(train_r) == set(train) and set(test_r) == set(test)


def test_split_groups_identical_phonetic_forms() -> None:
    lines = [f"문장 번호 {w}" for w in "가나다라마바사아자차카타파하"]
    lines += ["(3시)/(세 시)에 만나", "b/ 세 시에 만나", "세 시에 만나 n/", "b/ n/"]
    for seed in range(10):
        train, test = split_sentences(lines, test_fraction=0.3, seed=seed)
        assert "b/ n/" not in train + test  # nothing to speak: dropped
        ph_train = {normalize_kspon(s) for s in train}
        ph_test = {normalize_kspon(s) for s in test}
        assert not ph_train & ph_test
        same = {"(3시)/(세 시)에 만나", "b/ 세 시에 만나", "세 시에 만나 n/"}
        assert same <= set(train) or same <= set(test)


def test_split_errors() -> None:
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        split_sentences(["가 나", "다 라"], test_fraction=1.0, seed=0)
    with pytest.raises(DataError, match="at least 2 distinct sentences"):
        split_sentences(["가 나", "b/ 가 나"], test_fraction=0.5, seed=0)


def test_load_from_path_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("첫 문장\n\n  둘째 문장  \n", encoding="utf-8")
    assert load_sentences(path) == ["첫 문장", "둘째 문장"]
    path.write_bytes("가 나\n".encode() + "다 라\n".encode("cp949"))
    with pytest.raises(DataError, match=r"s.txt:2: not UTF-8"):
        load_sentences(path)
    with pytest.raises(DataError, match="sentence file not found"):
        load_sentences(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no sentences"):
        load_sentences(tmp_path / "empty.txt")


def test_espeak_speaks_phonetic_forms(sentences: list[str], espeak_available: bool) -> None:
    from tests.conftest import espeak_wave

    for s in [x for x in sentences if ")/(" in x][:2]:
        wave = espeak_wave(normalize_kspon(s))
        assert wave.ndim == 1 and len(wave) > 16000 * 0.5 and float(abs(wave).max()) > 0.01


def test_raw_words_keep_dual_transcriptions_whole() -> None:
    assert raw_words("(3시)/(세 시)에  b/ 만나 아/ 그래") == ["(3시)/(세 시)에", "b/", "만나", "아/", "그래"]
    assert raw_words("") == []


def test_recombine_makes_new_lines_never_a_test_sentence(sentences: list[str]) -> None:
    train, test = split_sentences(sentences, test_fraction=0.2, seed=1)
    new = recombine(train, 300, seed=3, forbidden=test)
    assert len(new) == 300
    old = {normalize_kspon(s, "phonetic") for s in [*train, *test]}
    spoken = [normalize_kspon(s, "phonetic") for s in new]
    assert all(spoken) and not old & set(spoken)
    assert len(set(spoken)) > 250  # new word sequences, not a few repeated ones
    # every word comes from the training side, notation intact
    train_words = {w for s in train for w in raw_words(s)}
    assert all(w in train_words for s in new for w in raw_words(s))
    assert recombine(train, 300, seed=3, forbidden=test) == new
    assert recombine(["하나"], 5, seed=1) == []
