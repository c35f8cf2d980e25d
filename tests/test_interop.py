"""Data dirs the field's tools write, read here (wav.scp pipes, segments, reco2dur, no meta.yaml), and
ours read there: KsponSpeech's dirs through the real lhotse, data dirs <-> lhotse manifests."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from kospeech.cli import main
from kospeech.data.kaldi_io import AudioRef, audio_items, known_durations, read_item, split_pipeline
from kospeech.errors import DataError

RATE = 16000


def _wave(seconds: float, seed: int) -> np.ndarray:
    """int16 noise shaped like speech bursts (never silent, so fbank features stay finite)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = 0.3 + 0.7 * np.abs(np.sin(np.arange(n) / RATE * 3.0 + seed))
    return np.clip(rng.normal(0, 3000, n) * envelope, -32768, 32767).astype(np.int16)


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 32768.0


def _write(path: Path, lines: dict[str, str]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(lines.items())), encoding="utf-8")


@pytest.fixture
def kaldi(tmp_path: Path) -> dict:
    """Two dirs with the same six utterances: ``files`` (one wav file each, our usual form) and
    ``kaldi`` (as a Kaldi/ESPnet user has it: pipes of several kinds, two utterances cut by
    ``segments`` from a longer recording, ``reco2dur``, and no meta.yaml)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    waves = {f"u{i}": _wave(0.6 + 0.1 * i, i) for i in range(4)}
    long = _wave(3.0, 9)
    cuts = {"u4": (0.5, 1.25), "u5": (2.0, 3.0)}
    for utt, (a, b) in cuts.items():
        waves[utt] = long[int(a * RATE) : int(b * RATE)]
    for utt, w in waves.items():
        sf.write(audio / f"{utt}.wav", w, RATE, subtype="PCM_16")
    sf.write(audio / "long.wav", long, RATE, subtype="PCM_16")
    text = {u: f"말 {i}" for i, u in enumerate(waves)}

    files = tmp_path / "files"
    files.mkdir()
    _write(files / "wav.scp", {u: str(audio / f"{u}.wav") for u in waves})
    for d in (files, tmp_path / "kaldi"):
        d.mkdir(exist_ok=True)
        _write(d / "text", text)
        _write(d / "utt2spk", {u: "spk1" for u in waves})
        _write(d / "spk2utt", {"spk1": " ".join(sorted(waves))})
    (files / "meta.yaml").write_text("corpus: test\ntranscript: spelling\nsample_rate: 16000\n", encoding="utf-8")

    kd = tmp_path / "kaldi"
    wav = {
        "u0": f"cat {audio / 'u0.wav'} |",  # read in-process
        "u1": f"cat {audio / 'u1.wav'} | cat |",  # a two-process pipeline, no shell
        "u2": f"sh -c 'cat \"$0\"' {audio / 'u2.wav'} |",  # needs a shell ($0)
        "u3": str(audio / "u3.wav"),
        "long": f"cat {audio / 'long.wav'} | cat |",
    }
    _write(kd / "wav.scp", wav)
    _write(kd / "segments", {"u0": "u0 0 -1", "u1": "u1 0 -1", "u2": "u2 0 -1", "u3": "u3 0 -1",
                             "u4": "long 0.5 1.25", "u5": "long 2.0 3.2"})  # 0.2 s past the end: clipped
    _write(kd / "reco2dur", {u: f"{len(waves[u]) / RATE:.4f}" for u in ("u0", "u1", "u2", "u3")} | {"long": "3.0"})
    return {"files": files, "kaldi": kd, "audio": audio, "waves": waves, "text": text, "root": tmp_path}


def test_split_pipeline_runs_without_a_shell_where_it_can() -> None:
    assert split_pipeline("sox a.flac -t wav - | cat") == [["sox", "a.flac", "-t", "wav", "-"], ["cat"]]
    assert split_pipeline("echo 'a | b'") == [["echo", "a | b"]]  # a quoted | is an argument
    for needs_shell in ("sox $F -t wav -", "a > b", "a; b", "a && b", "a || b", "cat *.wav"):
        assert split_pipeline(needs_shell) is None, needs_shell


def test_pipes_and_segments_read_the_same_samples_as_files(kaldi: dict) -> None:
    items = audio_items(kaldi["kaldi"])
    assert sorted(items) == sorted(kaldi["waves"])
    for utt, wave in kaldi["waves"].items():
        np.testing.assert_array_equal(read_item(items[utt]), _f32(wave), err_msg=utt)
    durations = known_durations(kaldi["kaldi"])
    assert durations["u4"] == pytest.approx(0.75) and durations["u5"] == pytest.approx(1.2)  # segments' bounds
    assert durations["u1"] == pytest.approx(len(kaldi["waves"]["u1"]) / RATE, abs=1e-3)  # reco2dur
    # a recording's pipe runs once for its segments in a row
    count = kaldi["root"] / "runs"
    pipe = f"sh -c 'echo x >> {count}; cat \"$0\"' {kaldi['audio'] / 'long.wav'} |"
    np.testing.assert_array_equal(read_item(AudioRef(pipe, 0.5, 1.25, "segments:5 'u4'")), _f32(kaldi["waves"]["u4"]))
    np.testing.assert_array_equal(read_item(AudioRef(pipe, 2.0, 3.2, "segments:6 'u5'")), _f32(kaldi["waves"]["u5"]))
    assert count.read_text() == "x\n"
    # a bare .pcm recording cut by a segment is read from a memory map
    pcm = kaldi["audio"] / "long.pcm"
    long = sf.read(kaldi["audio"] / "long.wav", dtype="int16")[0]
    long.astype("<i2").tofile(pcm)
    np.testing.assert_array_equal(read_item(AudioRef(str(pcm), 0.5, 1.25)), _f32(kaldi["waves"]["u4"]))
    # a writer that a later command stops (SIGPIPE) is no failure: `head` ends the stream here
    from kospeech.data.kaldi_io import streamed_wav_header

    (kaldi["audio"] / "h.wav").write_bytes(streamed_wav_header(RATE))
    silence = read_item(f"cat {kaldi['audio'] / 'h.wav'} /dev/zero | head -c {44 + 2 * RATE} |")  # cat: SIGPIPE
    np.testing.assert_array_equal(silence, np.zeros(RATE, np.float32))


def test_a_failing_pipe_or_segment_names_its_line(kaldi: dict) -> None:
    kd = kaldi["kaldi"]
    scp = (kd / "wav.scp").read_text(encoding="utf-8").replace(f"cat {kaldi['audio'] / 'u1.wav'} | cat |",
                                                               "sh -c 'exit 3' |")
    (kd / "wav.scp").write_text(scp, encoding="utf-8")
    line = next(n for n, s in enumerate(scp.splitlines(), 1) if s.startswith("u1 "))
    items = audio_items(kd)
    with pytest.raises(DataError, match=rf"segments:2 'u1' \(recording 'u1', .*wav.scp:{line}\).*exit 3.* status 3"):
        read_item(items["u1"])
    with pytest.raises(DataError, match=r"wav.scp:7 'x': `cat /no/such.wav` failed: /no/such.wav: No such file"):
        read_item(AudioRef("cat /no/such.wav |", where="wav.scp:7 'x'"))
    with pytest.raises(DataError, match=r"`yes \| false` failed: false exited with status 1"):  # the cause, not
        read_item(AudioRef("yes | false |", where="wav.scp:9 'w'"))  # yes's SIGPIPE
    with pytest.raises(DataError, match=r"failed: sh exited with status 3"):  # the rightmost failure, as pipefail
        read_item(AudioRef("sh -c 'exit 2' | sh -c 'exit 3' |", where="wav.scp:10 'v'"))
    with pytest.raises(DataError, match=r"'no-such-program' is not installed"):
        read_item(AudioRef("no-such-program x | cat |", where="wav.scp:8 'y'"))
    with pytest.raises(DataError, match=r"segments:9 'z'.*ends at 4.000 s but its recording lasts 3.000 s"):
        read_item(AudioRef(str(kaldi["audio"] / "long.wav"), 1.0, 4.0, where="segments:9 'z'"))


def test_a_plain_kaldi_dir_validates_without_meta_yaml(kaldi: dict, caplog: pytest.LogCaptureFixture,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO):
        assert main(["data", "validate", str(kaldi["kaldi"])]) == 0
    assert "6 utterances, 0 problem(s)" in capsys.readouterr().out
    assert "no meta.yaml: a plain Kaldi/ESPnet data dir, read with the defaults corpus unknown, transcript " \
           "spelling" in caplog.text


def test_validate_fix_with_segments_drops_what_is_broken_and_keeps_backups(kaldi: dict) -> None:
    from kospeech.data.datadir import validate_data_dir

    kd = kaldi["kaldi"]
    wav_before = (kd / "wav.scp").read_text(encoding="utf-8")
    seg_before = (kd / "segments").read_text(encoding="utf-8") + "u6 gone 0 1\n"
    (kd / "segments").write_text(seg_before, encoding="utf-8")
    (kd / "wav.scp").write_text(wav_before.replace(f"cat {kaldi['audio'] / 'u0.wav'} |", "no-such-converter x |"),
                                encoding="utf-8")
    for name in ("text", "utt2spk"):
        (kd / name).write_text((kd / name).read_text(encoding="utf-8") + "u6 x\n", encoding="utf-8")
    problems = "\n".join(validate_data_dir(kd).problems)
    assert "runs 'no-such-converter', which is not installed" in problems
    assert "'u6' is cut from recording 'gone', which wav.scp does not list" in problems
    report = validate_data_dir(kd, fix=True)
    assert report.removed == {"pipe program not installed": 1, "segment of an unlisted recording": 1}
    assert (report.backup / "segments").read_text(encoding="utf-8") == seg_before
    assert "no-such-converter" in (report.backup / "wav.scp").read_text(encoding="utf-8")
    assert (report.backup / "reco2dur").is_file()
    assert validate_data_dir(kd).ok
    assert "u0" not in (kd / "wav.scp").read_text(encoding="utf-8")  # only recordings kept segments use
    assert sorted(audio_items(kd)) == ["u1", "u2", "u3", "u4", "u5"]


def test_prep_takes_in_a_kaldi_dir_with_durations_and_meta(kaldi: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.data.datadir import read_meta, validate_data_dir

    kd = kaldi["kaldi"]
    reco2dur = [line for line in (kd / "reco2dur").read_text().splitlines() if line.split()[0] not in ("u1", "u3")]
    (kd / "reco2dur").write_text("\n".join(reco2dur) + "\n")  # u1, u3 are measured; the others are stated
    mark = kaldi["root"] / "u2-was-run"
    lines = {line.split()[0]: line for line in (kd / "wav.scp").read_text(encoding="utf-8").splitlines()}
    lines["u1"] = "u1 cat /no/such.wav |"
    lines["u2"] = f"u2 sh -c 'touch {mark}; cat \"$0\"' {kaldi['audio'] / 'u2.wav'} |"
    (kd / "wav.scp").write_text("".join(f"{v}\n" for _, v in sorted(lines.items())), encoding="utf-8")
    out = kaldi["root"] / "prepared"
    assert main(["data", "prep", "--corpus", "kaldi", "--root", str(kd), "--out", str(out)]) == 0
    assert "kaldi: 5 utterances" in capsys.readouterr().out
    d = out / "kaldi"
    assert validate_data_dir(d).ok
    assert read_meta(d) == {"corpus": "kaldi", "transcript": "spelling", "sample_rate": 16000}
    assert (d / "skipped.txt").read_text(encoding="utf-8").startswith("u1\tunreadable audio\t")
    dur = dict(line.split() for line in (d / "utt2dur").read_text(encoding="utf-8").splitlines())
    assert float(dur["u0"]) == pytest.approx(len(kaldi["waves"]["u0"]) / RATE, abs=1e-3)
    assert float(dur["u5"]) == pytest.approx(1.2)
    assert "u1" not in (d / "segments").read_text(encoding="utf-8") and "u1" not in (d / "wav.scp").read_text()
    assert not mark.exists()  # a duration the dir states is not measured (no pipe runs for it)
    np.testing.assert_array_equal(read_item(audio_items(d)["u2"]), _f32(kaldi["waves"]["u2"]))
    assert mark.exists()


def test_dump_and_training_read_pipes_and_segments_and_one_failing_pipe_costs_one_utterance(kaldi: dict) -> None:
    from kospeech.data.dataset import RawAudioDataset
    from kospeech.data.dump import FeatureDump, dump_features
    from kospeech.text import train_tokenizer

    kd = kaldi["kaldi"]
    front = {"name": "fbank", "n_mels": 40}
    dump_features(kaldi["files"], kaldi["root"] / "dump_files", front)
    scp = (kd / "wav.scp").read_text(encoding="utf-8").replace(f"cat {kaldi['audio'] / 'u1.wav'} | cat |",
                                                               f"cat {kaldi['audio'] / 'u1.wav'} | false |")
    (kd / "wav.scp").write_text(scp, encoding="utf-8")
    stats = dump_features(kd, kaldi["root"] / "dump_kaldi", front, nj=2, shard_size=2)
    assert stats.utterances == 5 and stats.skipped == 1
    skipped = (kaldi["root"] / "dump_kaldi" / "skipped.txt").read_text(encoding="utf-8")
    assert skipped.startswith("u1\t") and "segments:2 'u1'" in skipped and "false exited with status 1" in skipped
    ref, got = FeatureDump(kaldi["root"] / "dump_files"), FeatureDump(kaldi["root"] / "dump_kaldi")
    for utt in ("u0", "u2", "u3", "u4", "u5"):
        np.testing.assert_array_equal(got[utt], ref[utt], err_msg=utt)

    lang = kaldi["root"] / "lang"
    train_tokenizer("character", list(kaldi["text"].values()), lang)
    ds = RawAudioDataset(kd, lang)
    assert ds.lengths[ds.utt_ids.index("u5")] == int(1.2 * RATE)  # from the segment, nothing decoded
    items = {ds.utt_ids[i]: ds[i] for i in range(len(ds))}
    assert "segments:2 'u1'" in items["u1"]["error"] and "false exited with status 1" in items["u1"]["error"]
    np.testing.assert_array_equal(items["u4"]["wave"].numpy(), _f32(kaldi["waves"]["u4"]))


def test_decode_a_plain_kaldi_dir(kaldi: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.data.cmvn import load_cmvn
    from kospeech.data.dump import dump_features
    from kospeech.text import train_tokenizer

    from .test_decode_cli import FRONTEND, MODEL, _save_checkpoint

    root = kaldi["root"]
    dump_features(kaldi["files"], root / "dump", FRONTEND, cmvn=True)
    lang = root / "lang"
    train_tokenizer("character", ["안녕하세요 오늘 날씨가 좋네요 말"], lang)
    ckpt = _save_checkpoint(root / "model.pt", MODEL, lang, load_cmvn(root / "dump" / "cmvn.npz"))
    assert main(["decode", str(ckpt), "--data", str(kaldi["files"]), "--out", str(root / "d_files"),
                 "--batch-size", "1"]) == 0
    kd = kaldi["kaldi"]
    assert not (kd / "meta.yaml").exists()
    lines = (kd / "wav.scp").read_text(encoding="utf-8").splitlines()
    lines = ["u2 cat /no/such.wav | cat |" if line.startswith("u2 ") else line for line in lines]
    (kd / "wav.scp").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["decode", str(ckpt), "--data", str(kd), "--out", str(root / "d_kaldi"), "--batch-size", "1"]) == 1
    assert "1 utterance(s) failed" in capsys.readouterr().err
    hyp_files = (root / "d_files" / "hyp.trn").read_text(encoding="utf-8").splitlines()
    hyp_kaldi = (root / "d_kaldi" / "hyp.trn").read_text(encoding="utf-8").splitlines()
    assert [h for h in hyp_kaldi if not h.startswith("u2")] == [h for h in hyp_files if not h.startswith("u2")]
    assert any(h.split()[1:] for h in hyp_files)  # the untrained model says something, so equality means something
    info = yaml.safe_load((root / "d_kaldi" / "decode.yaml").read_text(encoding="utf-8"))
    assert info["test_set"]["transcript"] == "spelling" and info["test_set"]["corpus"] is None  # the stated defaults
    assert list(info["failed"]) == ["u2"] and "/no/such.wav" in info["failed"]["u2"]
    assert "segments:3 'u2'" in info["failed"]["u2"]


# ---------------------------------------------------------------------------------------------
# KsponSpeech's dirs through the real lhotse


@pytest.fixture
def kspon(tmp_path: Path) -> dict:
    """A hand-made KsponSpeech layout (two speaker folders, walk mode) prepared with the default wav.scp."""
    from kospeech.data.corpora.ksponspeech import KsponSpeech

    root = tmp_path / "db"
    pcm = {}
    for spk in (1, 2):
        folder = root / "KsponSpeech_01" / f"KsponSpeech_{spk:04d}"
        folder.mkdir(parents=True)
        for k in range(2):
            utt = f"KsponSpeech_{spk * 10 + k:06d}"
            pcm[utt] = _wave(0.5 + 0.25 * k + 0.1 * spk, spk * 10 + k)
            pcm[utt].astype("<i2").tofile(folder / f"{utt}.pcm")
            (folder / f"{utt}.txt").write_text("b/ 안녕하세요 오늘 날씨가 좋네요\n", encoding="cp949")
    KsponSpeech(dev_fraction=0.3).prepare(root, tmp_path / "data")
    return {"data": tmp_path / "data", "pcm": pcm, "root": tmp_path}


def test_the_pcm_header_is_what_kaldi_reads_as_a_stream(kspon: dict) -> None:
    """Kaldi's wave reader (feat/wave-reader.cc) reads to the end of the stream only when the RIFF
    and data sizes are both 0 or both 0xFFFFFFFF, and checks byte rate and block align; this
    checks the header against those rules, since Kaldi itself is not installed here."""
    import struct

    from kospeech.data.kaldi_io import headed_pcm

    header = (kspon["data"] / "train" / "pcm_header.wav").read_bytes()
    riff, size, wave, fmt, fmt_size, codec, channels, rate, byte_rate, align, bits, data, data_size = struct.unpack(
        "<4sI4s4sIHHIIHH4sI", header)
    assert (riff, wave, fmt, data) == (b"RIFF", b"WAVE", b"fmt ", b"data") and len(header) == 44
    assert size == data_size == 0xFFFFFFFF
    assert (fmt_size, codec, channels, rate, bits) == (16, 1, 1, 16000, 16)
    assert byte_rate == rate * bits // 8 * channels and align == channels * bits // 8
    value = (kspon["data"] / "train" / "wav.scp").read_text(encoding="utf-8").splitlines()[0].split(maxsplit=1)[1]
    assert headed_pcm(value) == (shlex.split(value)[2], 16000)  # read here as the .pcm it is, no process
    utt = Path(shlex.split(value)[2]).stem
    np.testing.assert_array_equal(read_item(value), _f32(kspon["pcm"][utt]))
    np.testing.assert_array_equal(read_item(AudioRef(value, 0.1, 0.3)), _f32(kspon["pcm"][utt][1600:4800]))


def test_validate_checks_the_pcm_behind_ksponspeech_pipes(kspon: dict) -> None:
    from kospeech.data.datadir import validate_data_dir

    d = kspon["data"] / "train"
    assert validate_data_dir(d).ok
    value = (d / "wav.scp").read_text(encoding="utf-8").splitlines()[1].split(maxsplit=1)[1]
    pcm = Path(shlex.split(value)[2])
    pcm.write_bytes(pcm.read_bytes()[:-1])
    assert any("is truncated" in p and "odd" in p for p in validate_data_dir(d).problems)
    report = validate_data_dir(d, fix=True, force=True)
    assert report.removed == {"truncated pcm": 1} and validate_data_dir(d).ok
    assert (report.backup / "reco2dur").is_file() and (report.backup / "wav.scp").read_text(encoding="utf-8").count(
        "\n") == report.num_utts + 1


def test_ksponspeech_dirs_import_into_lhotse_with_every_cut_loading(kspon: dict) -> None:
    kaldi = pytest.importorskip("lhotse.kaldi")
    seen = 0
    for split in ("train", "dev"):
        d = kspon["data"] / split
        utt2dur = {k: float(v) for k, v in (line.split() for line in (d / "utt2dur").read_text().splitlines())}
        for line in (d / "wav.scp").read_text(encoding="utf-8").splitlines():
            utt, value = line.split(maxsplit=1)
            assert shlex.split(value)[:2] == ["cat", str((d / "pcm_header.wav").resolve())], value  # cat alone
        recordings, supervisions, _ = kaldi.load_kaldi_data_dir(d, 16000)
        assert sorted(recordings.ids) == sorted(utt2dur)
        for rec in recordings:
            audio = rec.load_audio()
            assert audio.shape == (1, len(kspon["pcm"][rec.id]))
            np.testing.assert_array_equal(audio[0], _f32(kspon["pcm"][rec.id]))
            assert rec.duration == pytest.approx(utt2dur[rec.id], abs=1e-3)
            seen += 1
    assert seen == len(kspon["pcm"])


def test_data_dir_to_lhotse_and_back(kaldi: dict, kspon: dict, capsys: pytest.CaptureFixture[str]) -> None:
    lhotse = pytest.importorskip("lhotse")
    from kospeech.data.datadir import validate_data_dir

    out = kaldi["root"] / "manifests"
    assert main(["data", "to-lhotse", str(kaldi["kaldi"]), str(out)]) == 0
    recs = lhotse.load_manifest(out / "recordings.jsonl.gz")
    sups = lhotse.load_manifest(out / "supervisions.jsonl.gz")
    assert sorted(recs.ids) == ["long", "u0", "u1", "u2", "u3"] and len(sups) == 6
    cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(keep_overlapping=False)
    for cut in cuts:
        utt = cut.supervisions[0].id
        np.testing.assert_allclose(cut.load_audio()[0], _f32(kaldi["waves"][utt]), atol=1e-6, err_msg=utt)
        assert cut.supervisions[0].text == kaldi["text"][utt]
    # and the KsponSpeech dir with bare .pcm paths (the older form) goes out through cat + a header
    pcm_dir = kspon["root"] / "pcm_data"
    from kospeech.data.corpora.ksponspeech import KsponSpeech

    KsponSpeech(dev_fraction=0.3, wav_scp="pcm").prepare(kspon["root"] / "db", pcm_dir)
    assert main(["data", "to-lhotse", str(pcm_dir / "train"), str(kspon["root"] / "m_pcm")]) == 0
    for rec in lhotse.load_manifest(kspon["root"] / "m_pcm" / "recordings.jsonl.gz"):
        np.testing.assert_array_equal(rec.load_audio()[0], _f32(kspon["pcm"][rec.id]))

    # back: supervisions + recordings, and a CutSet, as a data dir read here
    back = kaldi["root"] / "back"
    assert main(["data", "from-lhotse", "--recordings", str(out / "recordings.jsonl.gz"), "--supervisions",
                 str(out / "supervisions.jsonl.gz"), "--out", str(back)]) == 0
    assert validate_data_dir(back).ok
    items = audio_items(back)
    for utt, wave in kaldi["waves"].items():
        np.testing.assert_array_equal(read_item(items[utt]), _f32(wave), err_msg=utt)
    cuts_path = kaldi["root"] / "cuts.jsonl.gz"
    url = lhotse.Recording(id="remote", sources=[lhotse.AudioSource(type="url", channels=[0], source="https://x/y.wav")],
                           sampling_rate=RATE, num_samples=RATE, duration=1.0)
    extra = lhotse.SupervisionSegment(id="remote-1", recording_id="remote", start=0, duration=1.0, text="저기")
    lhotse.CutSet.from_manifests(recordings=recs + lhotse.RecordingSet.from_recordings([url]),
                                 supervisions=sups + lhotse.SupervisionSet.from_segments([extra])
                                 ).trim_to_supervisions(keep_overlapping=False).to_file(cuts_path)
    from_cuts = kaldi["root"] / "from_cuts"
    assert main(["data", "from-lhotse", "--cuts", str(cuts_path), "--out", str(from_cuts)]) == 0
    assert "left out 2" in capsys.readouterr().out  # the url recording and its cut, named in skipped.txt
    assert "'url' audio source" in (from_cuts / "skipped.txt").read_text(encoding="utf-8")
    assert validate_data_dir(from_cuts).ok
    items = audio_items(from_cuts)
    text = dict(line.split(maxsplit=1) for line in (from_cuts / "text").read_text(encoding="utf-8").splitlines())
    assert len(items) == 6
    for cut_id, item in items.items():
        utt = next(u for u, t in kaldi["text"].items() if t == text[cut_id])
        np.testing.assert_array_equal(read_item(item), _f32(kaldi["waves"][utt]), err_msg=cut_id)
