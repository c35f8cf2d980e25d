"""Fault suite, data side: ``data validate --fix`` never destroys a data dir, text files in CP949
or with a BOM read as the corpus readers read them, a mixed-encoding ``.trn`` names its line and
fails only its split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kospeech.audio import write_pcm
from kospeech.cli import main
from kospeech.data.datadir import read_data_dir, validate_data_dir, write_data_dir
from kospeech.errors import DataError
from kospeech.files import read_scp

SENTENCES = ["안녕하세요", "오늘 날씨가 좋네요", "밥 먹었어요", "지금 몇 시예요", "학교에 가요", "감사합니다"]
BACKUP_DIR = ".backup"  # where --fix keeps the originals (kospeech.data.datadir.BACKUP_DIR)
FILES = ("wav.scp", "text", "utt2spk", "utt2dur", "spk2utt")


def _tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Six utterances with audio (headerless pcm of 0.5 .. 1.0 s), absolute paths."""
    audio = tmp_path / "audio"
    wav, text, utt2spk, utt2dur = {}, {}, {}, {}
    for i, sentence in enumerate(SENTENCES):
        utt = f"spk{i % 2}-utt{i}"
        path = audio / f"{utt}.pcm"
        write_pcm(path, _tone(0.5 + 0.1 * i))
        wav[utt], text[utt], utt2spk[utt], utt2dur[utt] = str(path), sentence, f"spk{i % 2}", 0.5 + 0.1 * i
    out = tmp_path / "data"
    write_data_dir(out, wav=wav, text=text, utt2spk=utt2spk, utt2dur=utt2dur, corpus="test", transcript="phonetic")
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {name: (d / name).read_bytes() for name in FILES if (d / name).exists()}


def _utf8_text(d: Path) -> str:
    return (d / "text").read_text(encoding="utf-8")


def test_fix_keeps_a_cp949_text(data_dir: Path) -> None:
    original = _utf8_text(data_dir)
    before = _snapshot(data_dir)
    (data_dir / "text").write_bytes(original.encode("cp949"))
    assert main(["data", "validate", str(data_dir), "--fix"]) == 0
    assert _utf8_text(data_dir) == original  # rewritten as UTF-8, nothing dropped
    assert len(read_data_dir(data_dir)) == 6
    assert (data_dir / BACKUP_DIR / "text").read_bytes() == original.encode("cp949")  # the file as it was
    assert (data_dir / BACKUP_DIR / "wav.scp").read_bytes() == before["wav.scp"]


def test_fix_keeps_a_text_with_one_cp949_line(data_dir: Path) -> None:
    original = _utf8_text(data_dir)
    lines = original.splitlines(keepends=True)
    data = b"".join(line.encode("cp949" if i == 2 else "utf-8") for i, line in enumerate(lines))
    (data_dir / "text").write_bytes(data)
    report = validate_data_dir(data_dir)
    assert any("text:3: this line is CP949" in p for p in report.problems), report.problems
    report = validate_data_dir(data_dir, fix=True)
    assert report.num_utts == 6 and not report.removed
    assert _utf8_text(data_dir) == original


def test_fix_keeps_the_utterance_behind_a_bom(data_dir: Path) -> None:
    (data_dir / "text").write_bytes(b"\xef\xbb\xbf" + (data_dir / "text").read_bytes())
    assert read_scp(data_dir / "text")["spk0-utt0"] == SENTENCES[0]
    report = validate_data_dir(data_dir, fix=True)
    assert report.num_utts == 6 and not report.removed, report.summary()
    assert validate_data_dir(data_dir).ok


def test_fix_measures_a_missing_duration_instead_of_dropping(data_dir: Path) -> None:
    lines = (data_dir / "utt2dur").read_text(encoding="utf-8").splitlines()
    (data_dir / "utt2dur").write_text("\n".join(lines[:1] + lines[2:]) + "\n", encoding="utf-8")
    missing = lines[1].split()[0]
    Path(read_scp(data_dir / "wav.scp")["spk0-utt4"]).unlink()  # a broken utterance is still removed
    report = validate_data_dir(data_dir, fix=True)
    assert report.num_utts == 5 and report.removed == {"missing audio file": 1} and report.regenerated == 1
    assert read_data_dir(data_dir).utt2dur[missing] == pytest.approx(float(lines[1].split()[1]), abs=1e-3)
    assert validate_data_dir(data_dir).ok


def test_fix_refuses_relative_paths_read_from_elsewhere(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = read_scp(data_dir / "wav.scp")
    rel = {u: os.path.relpath(p, tmp_path) for u, p in wav.items()}
    (data_dir / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in sorted(rel.items())), encoding="utf-8")
    before = _snapshot(data_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["data", "validate", str(data_dir), "--fix"]) == 1
    err = capsys.readouterr().err
    assert "would remove 6 of 6 utterances" in err and "relative paths" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(data_dir) == before  # untouched
    assert not (data_dir / BACKUP_DIR).exists()
    monkeypatch.chdir(tmp_path)  # from the right directory the same dir is fine
    assert main(["data", "validate", str(data_dir), "--fix"]) == 0
    assert len(read_data_dir(data_dir)) == 6


def test_fix_force_removes_and_backs_up(data_dir: Path) -> None:
    before = _snapshot(data_dir)
    for p in read_scp(data_dir / "wav.scp").values():
        Path(p).unlink()  # the audio disk is gone
    with pytest.raises(DataError, match="is the disk holding the audio mounted"):
        validate_data_dir(data_dir, fix=True)
    assert _snapshot(data_dir) == before
    report = validate_data_dir(data_dir, fix=True, force=True)
    assert report.num_utts == 0 and report.removed["missing audio file"] == 6
    assert {n: (report.backup / n).read_bytes() for n in FILES} == before
    # a second fix keeps the first backup (the originals) and backs up into .backup/2
    (data_dir / "text").write_text("x 텍스트\n", encoding="utf-8")
    second = validate_data_dir(data_dir, fix=True, force=True)
    assert second.backup == data_dir / BACKUP_DIR / "2"
    assert (data_dir / BACKUP_DIR / "text").read_bytes() == before["text"]


def test_lists_read_cp949_and_name_the_mixed_line(tmp_path: Path) -> None:
    p = tmp_path / "text"
    p.write_bytes("a 한국어\nb 음성 인식\n".encode("cp949"))
    assert read_scp(p) == {"a": "한국어", "b": "음성 인식"}
    p.write_bytes("a 한국어\n".encode() + "b 음성 인식\n".encode("cp949") + "c 문장\n".encode())
    with pytest.raises(DataError, match=r"text:2: this line is CP949 but the file is otherwise UTF-8"):
        read_scp(p)
    p.write_bytes(b"a \xff\xfe\n")
    with pytest.raises(DataError, match=r"text:1: neither UTF-8 nor CP949"):
        read_scp(p)


def test_tokenizer_train_on_a_cp949_text(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_bytes("".join(f"u{i} {s}\n" for i, s in enumerate(SENTENCES)).encode("cp949"))
    lang = tmp_path / "lang"
    assert main(["tokenizer", "train", "--name", "character", "--text", str(text), "--out", str(lang)]) == 0
    from kospeech.text import load_tokenizer

    tok = load_tokenizer(lang)
    assert tok.decode(tok.encode("감사합니다")) == "감사합니다"


def test_mixed_encoding_trn_names_the_line_and_fails_only_its_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "KsponSpeech"
    scripts = root / "KsponSpeech_scripts"
    scripts.mkdir(parents=True)
    trn: dict[str, list[str]] = {"train": [], "dev": []}
    for i, sentence in enumerate(SENTENCES):
        split = "dev" if i >= 4 else "train"
        rel = f"KsponSpeech_01/KsponSpeech_000{i // 2}/KsponSpeech_{i:06d}.pcm"
        write_pcm(root / rel, _tone(0.6))
        trn[split].append(f"{rel} :: {sentence}\n")
    (scripts / "dev.trn").write_bytes("".join(trn["dev"]).encode("cp949"))
    train = [line.encode("cp949") for line in trn["train"]]
    train[2] = trn["train"][2].encode("utf-8")  # one line in UTF-8 in a CP949 list
    (scripts / "train.trn").write_bytes(b"".join(train))
    out = tmp_path / "data"
    code = main(["data", "prep", "--corpus", "ksponspeech", "--root", str(root), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "train.trn:3: this line is UTF-8 but the file is otherwise CP949" in err
    assert "split 'train' not prepared" in err and "prepared dev" in err
    assert read_data_dir(out / "dev").text == {"KsponSpeech_000004": SENTENCES[4], "KsponSpeech_000005": SENTENCES[5]}
    assert not (out / "train").exists()
