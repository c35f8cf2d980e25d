"""Hangul jamo round trips and the three tokenizers: ids, round trips, lang dirs, the CLI."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kospeech.cli import main
from kospeech.errors import ConfigError, DataError
from kospeech.files import read_utt_text
from kospeech.registry import build, registry
from kospeech.text import load_tokenizer, load_tokenizer_from_files, read_lang_dir, train_tokenizer
from kospeech.text.hangul import MODERN_JAMO, compose, decompose, decompose_syllable, is_syllable
from kospeech.text.special import BLANK_ID, EOS_ID, NUM_SPECIAL, PAD_ID, SOS_ID, SPECIAL_TOKENS, UNK_ID

TEXTS = [
    "안녕하세요 오늘 날씨가 좋네요",
    "밥 먹었어요",
    "지금 몇 시예요",
    "학교에 가요",
    "커피 한 잔 주세요",
    "감사합니다",
    "내일 만나요",
    "케이 티 엑스 타고 세 시에 와요",
] * 3

# ---------------------------------------------------------------------------------------------
# hangul


def test_decompose_known_syllables() -> None:
    assert decompose_syllable("각") == "\u1100\u1161\u11a8"
    assert decompose_syllable("가") == "\u1100\u1161"
    assert decompose_syllable("힣") == "\u1112\u1175\u11c2"
    assert decompose("a각!") == "a\u1100\u1161\u11a8!"
    assert decompose("ㅋㅋ") == "ㅋㅋ"  # compatibility jamo pass through
    assert is_syllable("가") and not is_syllable("ㄱ") and not is_syllable("a")
    assert len(MODERN_JAMO) == 67 and len(set(MODERN_JAMO)) == 67


def test_decompose_matches_unicode_nfd() -> None:
    text = "오늘 날씨가 좋네요 뷁 똠방각하"
    assert decompose(text) == unicodedata.normalize("NFD", text)


_ALPHABET = st.one_of(
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # syllables
    st.characters(min_codepoint=0x1100, max_codepoint=0x11FF),  # conjoining jamo, incl. archaic
    st.characters(min_codepoint=0x3131, max_codepoint=0x318E),  # compatibility jamo
    st.characters(),
)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
def test_compose_inverts_decompose_for_any_nfc_text(text: str) -> None:
    text = unicodedata.normalize("NFC", text)
    assert compose(decompose(text)) == text


def test_stray_jamo_survive() -> None:
    for text in ["ㅋㅋㅋ 웃겨", "\u1100 가", "\u1161\u11a8", "가\u11ff", "ᄀ"]:
        text = unicodedata.normalize("NFC", text)
        assert compose(decompose(text)) == text


# ---------------------------------------------------------------------------------------------
# tokenizers

NAMES = ["character", "jamo", "sentencepiece"]


def _train(name: str):
    cls = registry("tokenizer").get(name).obj
    options = {"vocab_size": 60} if name == "sentencepiece" else {}
    return cls.train(TEXTS, **options)


@pytest.mark.parametrize("name", NAMES)
def test_special_ids_and_round_trip(name: str) -> None:
    tok = _train(name)
    assert [tok.id_to_token(i) for i in range(NUM_SPECIAL)] == list(SPECIAL_TOKENS)
    for text in TEXTS[:8]:
        ids = tok.encode(text)
        assert ids and all(NUM_SPECIAL <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # specials are dropped on decode, wherever they appear
    ids = tok.encode("밥 먹었어요")
    assert tok.decode([SOS_ID, BLANK_ID, *ids[:2], PAD_ID, *ids[2:], EOS_ID, UNK_ID]) == "밥 먹었어요"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_equal(name: str, tmp_path: Path) -> None:
    tok = _train(name)
    tok.save(tmp_path / "lang")
    again = load_tokenizer(tmp_path / "lang")
    assert type(again) is type(tok) and again == tok
    assert again.vocab_size == tok.vocab_size
    assert [again.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    inline = load_tokenizer_from_files(read_lang_dir(tmp_path / "lang"))
    assert inline == tok
    assert not list((tmp_path / "lang").glob(".*"))  # no temporary files left


def test_character_units_and_unknown() -> None:
    tok = _train("character")
    assert tok.id_to_token(NUM_SPECIAL) == "|"  # the space unit comes first
    assert tok.encode("밥 밥") == [tok.encode("밥")[0], NUM_SPECIAL, tok.encode("밥")[0]]
    assert tok.encode("뷁") == [UNK_ID]
    assert tok.decode(tok.encode("밥 뷁 밥")) == "밥 밥"
    n_chars = len({c for t in TEXTS for c in t if c != " "})
    assert tok.vocab_size == NUM_SPECIAL + 1 + n_chars


def test_character_min_freq() -> None:
    tok = build("tokenizer", {"name": "character", "min_freq": 2})
    tok.fit(["가가 나", "가 다다"])
    assert [tok.id_to_token(i) for i in range(NUM_SPECIAL, tok.vocab_size)] == ["|", "가", "다"]
    assert tok.encode("나") == [UNK_ID]


def test_jamo_never_unknown_for_hangul() -> None:
    tok = _train("jamo")
    assert tok.vocab_size == NUM_SPECIAL + 1 + 67 + 0  # texts hold Hangul and spaces only
    ids = tok.encode("뷁 똠방각하")
    assert UNK_ID not in ids
    assert tok.decode(ids) == "뷁 똠방각하"
    assert tok.encode("x") == [UNK_ID]
    assert [tok.id_to_token(i) for i in tok.encode("각")] == ["\u1100", "\u1161", "\u11a8"]


def test_sentencepiece_bpe_and_unknown(tmp_path: Path) -> None:
    tok = train_tokenizer("sentencepiece", TEXTS, tmp_path / "lang", vocab_size=70, model_type="bpe")
    assert (tmp_path / "lang" / "spm.model").is_file()
    assert tok.options()["model_type"] == "bpe"
    assert tok.decode(tok.encode("커피 한 잔 주세요")) == "커피 한 잔 주세요"
    assert UNK_ID in tok.encode("뷁")
    assert load_tokenizer(tmp_path / "lang") == tok


def test_sentencepiece_vocab_too_small() -> None:
    n_chars = len({c for t in TEXTS for c in t})
    with pytest.raises(ConfigError, match=f"vocab_size=20 cannot hold the {n_chars} distinct characters"):
        _train_sp(vocab_size=20)


def _train_sp(**options):
    return registry("tokenizer").get("sentencepiece").obj.train(TEXTS, **options)


def test_whitespace_is_normalised() -> None:
    tok = _train("character")
    assert tok.encode("  밥   먹었어요 ") == tok.encode("밥 먹었어요")


def test_untrained_tokenizer_error() -> None:
    tok = build("tokenizer", {"name": "character"})
    with pytest.raises(ConfigError, match="has no units yet"):
        tok.encode("가")


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="unknown argument 'vocab_size'"):
        train_tokenizer("jamo", TEXTS, "unused", vocab_size=10)
    with pytest.raises(ConfigError, match="min_freq must be >= 1"):
        build("tokenizer", {"name": "character", "min_freq": 0})
    with pytest.raises(ConfigError, match="unknown tokenizer 'charakter'.*Did you mean 'character'"):
        train_tokenizer("charakter", TEXTS, "unused")


def test_missing_lang_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a lang dir"):
        load_tokenizer(tmp_path)


# ---------------------------------------------------------------------------------------------
# Kaldi text and the CLI


def _write_text(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_read_kaldi_text(tmp_path: Path) -> None:
    text = _write_text(tmp_path / "text", ["u1 안녕 하세요", "u2   밥  먹었어요", ""])
    assert read_utt_text(text, allow_empty=False) == {"u1": "안녕 하세요", "u2": "밥  먹었어요"}
    _write_text(text, ["u1 안녕", "u2", "u3 밥"])
    with pytest.raises(DataError, match=r"text:2: utterance 'u2' has an empty transcript"):
        read_utt_text(text, allow_empty=False)
    _write_text(text, ["u1 안녕", "u1 밥"])
    with pytest.raises(DataError, match=r"text:2: utterance 'u1' appears twice"):
        read_utt_text(text, allow_empty=False)
    text.write_bytes("u1 안녕\n\nu2\n".encode("cp949"))  # CP949, a blank line, an id alone: a .trn's empty hyp
    assert read_utt_text(text) == {"u1": "안녕", "u2": ""}


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("jamo", []),
        ("character", ["--min-freq", "2"]),
        ("sentencepiece", ["--vocab-size", "60", "--model-type", "bpe"]),
    ],
)
def test_cli_train(name: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _write_text(tmp_path / "text", [f"utt{i:03d} {t}" for i, t in enumerate(TEXTS)])
    out = tmp_path / "lang"
    assert main(["tokenizer", "train", "--name", name, "--text", str(text), "--out", str(out), *extra]) == 0
    tok = load_tokenizer(out)
    assert tok.name == name
    assert f"{tok.vocab_size} units from {len(TEXTS)} transcripts" in capsys.readouterr().out
    assert tok.decode(tok.encode(TEXTS[0])) == TEXTS[0]
    assert main(["tokenizer", "show", str(out), "밥 먹었어요"]) == 0
    assert "units:" in capsys.readouterr().out


def test_cli_empty_transcript_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _write_text(tmp_path / "text", ["u1 안녕", "u2 ", "u3 밥"])
    rc = main(["tokenizer", "train", "--name", "character", "--text", str(text), "--out", str(tmp_path / "lang")])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{text}:2: utterance 'u2' has an empty transcript" in err
    assert not (tmp_path / "lang").exists()
