"""Kaldi data dirs: atomic sorted writers, strict readers, and validate / --fix like validate_data_dir.sh."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kospeech.audio import write_pcm
from kospeech.cli import main
from kospeech.data.datadir import (
    read_data_dir,
    read_scp,
    utt2spk_to_spk2utt,
    validate_data_dir,
    write_data_dir,
)
from kospeech.errors import DataError


@pytest.fixture
def data_dir(tmp_path: Path, korean_utterances: list[tuple[str, np.ndarray]]) -> Path:
    """A valid data dir of six real utterances (pcm), written out of order on purpose."""
    audio = tmp_path / "audio"
    wav, text, utt2spk, utt2dur = {}, {}, {}, {}
    for i, (sentence, wave) in reversed(list(enumerate(korean_utterances[:6]))):
        utt = f"spk{i % 2}-utt{i}"
        path = audio / f"{utt}.pcm"
        write_pcm(path, wave)
        wav[utt], text[utt], utt2spk[utt], utt2dur[utt] = str(path), sentence, f"spk{i % 2}", len(wave) / 16000
    out = tmp_path / "data"
    write_data_dir(out, wav=wav, text=text, utt2spk=utt2spk, utt2dur=utt2dur, corpus="test", transcript="phonetic")
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_writer_sorts_and_round_trips(data_dir: Path) -> None:
    for name in ("wav.scp", "text", "utt2spk", "utt2dur", "spk2utt"):
        keys = [line.split()[0] for line in _lines(data_dir / name)]
        assert keys == sorted(keys), name
    assert _lines(data_dir / "spk2utt") == ["spk0 spk0-utt0 spk0-utt2 spk0-utt4", "spk1 spk1-utt1 spk1-utt3 spk1-utt5"]
    d = read_data_dir(data_dir)
    assert len(d) == 6 and d.meta == {"corpus": "test", "transcript": "phonetic", "sample_rate": 16000}
    assert d.text["spk1-utt1"] == "오늘 날씨가 좋네요"
    assert d.total_seconds > 3
    assert not list(data_dir.glob(".*tmp*"))  # no temporary files left behind
    report = validate_data_dir(data_dir)
    assert report.ok, report.summary()
    assert report.num_utts == 6


def test_read_scp_errors_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "text"
    p.write_text("a x\nb y\na z\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"text:3: duplicate id 'a'"):
        read_scp(p)
    p.write_text("a x\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"text:2: 'b' has no value"):
        read_scp(p)
    p.write_bytes("a 한국어\n".encode() + "b 한국어\n".encode("cp949"))
    with pytest.raises(DataError, match=r"text:2: this line is CP949"):
        read_scp(p)


def test_writer_rejects_mismatched_ids_and_empty_text(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="wav.scp and text disagree on ids"):
        write_data_dir(
            tmp_path, wav={"a": "/x.pcm"}, text={"b": "t"}, utt2spk={"a": "s"}, corpus="c", transcript="phonetic"
        )
    with pytest.raises(DataError, match="'a' has an empty transcript"):
        write_data_dir(
            tmp_path, wav={"a": "/x.pcm"}, text={"a": " "}, utt2spk={"a": "s"}, corpus="c", transcript="phonetic"
        )


def test_spk2utt_inversion() -> None:
    assert utt2spk_to_spk2utt({"b": "s1", "a": "s1", "c": "s2"}) == {"s1": ["a", "b"], "s2": ["c"]}


def _break(data_dir: Path) -> None:
    """Unsorted text, a duplicate, a missing audio file, an empty transcript, an id in one list only."""
    text = _lines(data_dir / "text")
    text[0], text[1] = text[1], text[0]  # unsorted
    text.append(text[-1].split()[0] + " 다른 문장")  # duplicate id (later line is dropped by --fix)
    text = [t if not t.startswith("spk1-utt3") else "spk1-utt3" for t in text]  # empty transcript
    (data_dir / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    wav = _lines(data_dir / "wav.scp")
    Path(wav[0].split()[1]).unlink()  # spk0-utt0: audio missing
    wav.append(f"zzz-only-in-wav {wav[1].split()[1]}")  # in wav.scp only
    (data_dir / "wav.scp").write_text("\n".join(wav) + "\n", encoding="utf-8")


def test_validate_reports_each_problem_with_file_and_line(data_dir: Path) -> None:
    _break(data_dir)
    report = validate_data_dir(data_dir)
    assert not report.ok
    problems = "\n".join(report.problems)
    assert f"{data_dir / 'text'}:2: not sorted by id" in problems
    assert f"{data_dir / 'text'}:7: duplicate id 'spk1-utt5'" in problems
    assert "'spk0-utt0': audio file" in problems and "does not exist" in problems
    assert "'spk1-utt3' has an empty transcript" in problems
    assert f"{data_dir / 'text'}: lacks 1 utterance(s)" in problems and "zzz-only-in-wav" in problems
    assert report.removed == {}  # nothing changed without --fix
    assert len(_lines(data_dir / "text")) == 7


def test_fix_repairs_and_counts(data_dir: Path) -> None:
    _break(data_dir)
    report = validate_data_dir(data_dir, fix=True)
    assert report.fixed
    assert report.removed["missing audio file"] == 1
    assert report.removed["empty transcript"] == 1
    assert report.removed["not in text"] == 1
    assert report.removed["duplicate line in text"] == 1
    assert report.num_utts == 4
    assert "removed 4 utterance(s); kept 4" in report.summary()
    after = validate_data_dir(data_dir)
    assert after.ok, after.summary()
    d = read_data_dir(data_dir)
    assert sorted(d.wav) == ["spk0-utt2", "spk0-utt4", "spk1-utt1", "spk1-utt5"]
    assert d.text["spk1-utt5"] != "다른 문장"  # the first occurrence won
    assert _lines(data_dir / "spk2utt") == ["spk0 spk0-utt2 spk0-utt4", "spk1 spk1-utt1 spk1-utt5"]


def test_validate_spk2utt_pipes_and_truncated_pcm(data_dir: Path) -> None:
    (data_dir / "spk2utt").write_text("spk0 spk0-utt0\nspk1 spk1-utt1 spk1-utt3 spk1-utt5\n", encoding="utf-8")
    wav = _lines(data_dir / "wav.scp")
    odd = Path(wav[2].split()[1])
    odd.write_bytes(odd.read_bytes()[:-1])
    # pipes are read now (kospeech/data/kaldi_io.py); one whose program is not installed is still a problem
    wav[3] = wav[3].split()[0] + " no-such-converter in.wav -t wav - |"
    (data_dir / "wav.scp").write_text("\n".join(wav) + "\n", encoding="utf-8")
    problems = "\n".join(validate_data_dir(data_dir).problems)
    assert "spk2utt: not consistent with utt2spk" in problems
    assert "runs 'no-such-converter', which is not installed" in problems
    assert "is truncated" in problems and "odd" in problems
    report = validate_data_dir(data_dir, fix=True)
    assert report.removed["pipe program not installed"] == 1 and report.removed["truncated pcm"] == 1
    assert validate_data_dir(data_dir).ok


def test_cli_validate_exit_codes(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "validate", str(data_dir)]) == 0
    lines = _lines(data_dir / "utt2spk")
    (data_dir / "utt2spk").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    assert main(["data", "validate", str(data_dir)]) == 1
    err = capsys.readouterr()
    assert "utt2spk:2: not sorted by id" in err.out
    assert "run with --fix to repair" in err.err
    assert main(["data", "validate", str(data_dir), "--fix"]) == 0
    assert main(["data", "validate", str(data_dir)]) == 0
    assert main(["data", "validate", str(data_dir.parent / "nope")]) == 1


def test_write_atomic_text_bytes_mode_and_no_leftovers(tmp_path: Path) -> None:
    """Text is UTF-8, bytes pass through, the mode follows the umask, and a failed write
    leaves the old file and no temporary behind."""
    from kospeech.files import write_atomic

    target = tmp_path / "sub" / "f.txt"
    assert write_atomic(target, "안녕\n") == target
    assert target.read_bytes() == "안녕\n".encode()
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(TypeError):
        write_atomic(target, 3)  # type: ignore[arg-type]
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]
