"""Feature dumps from a real data dir of espeak-ng speech: contents, parallel shards, resume, CMVN, CLI."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kospeech.audio import read_audio, write_audio
from kospeech.cli import main as cli_main
from kospeech.data.cmvn import CMVNStats, GlobalCMVN, load_cmvn
from kospeech.data.datadir import write_data_dir
from kospeech.data.dump import FeatureDump, dump_features
from kospeech.data.frontends import build_frontend
from kospeech.errors import DataError
from kospeech.files import read_scp

FBANK = {"name": "fbank", "n_mels": 40}


@pytest.fixture
def data_dir(tmp_path: Path, korean_utterances) -> Path:
    """Eight utterances: six wav, one KsponSpeech-style .pcm, one corrupt .wav that must be skipped."""
    audio = tmp_path / "audio"
    wav, text, spk = {}, {}, {}
    for i, (sentence, wave) in enumerate(korean_utterances):
        utt = f"spk{i % 2}-utt{i:02d}"
        path = audio / (f"{utt}.pcm" if i == 3 else f"{utt}.wav")
        if i == 5:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"RIFF not really a wave file")
        else:
            write_audio(path, wave)
        wav[utt], text[utt], spk[utt] = str(path), sentence, f"spk{i % 2}"
    return write_data_dir(tmp_path / "data", wav=wav, text=text, utt2spk=spk, corpus="test", transcript="spelling")


def _all_features(dump: FeatureDump) -> dict[str, np.ndarray]:
    return {u: dump[u] for u in dump.keys()}


def test_dump_contents_match_the_frontend(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    stats = dump_features(data_dir, out, FBANK, nj=1)
    dump = FeatureDump(out)
    wav = read_scp(data_dir / "wav.scp")
    bad = "spk1-utt05"
    assert stats.utterances == len(dump) == 7 and stats.skipped == 1 and stats.dim == dump.dim == 40
    assert sorted(dump.keys()) == sorted(u for u in wav if u != bad) and bad not in dump
    frontend = build_frontend(FBANK)
    for utt in dump.keys():
        ref = frontend.extract(read_audio(wav[utt]))
        got = dump[utt]
        assert got.dtype == np.float32 and got.shape == ref.shape == (dump.num_frames(utt), 40)
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)  # float16 keeps ~3.3 digits
        assert dump.raw(utt).dtype == np.float16
    skipped = (out / "skipped.txt").read_text(encoding="utf-8")
    assert skipped.startswith(f"{bad}\t") and "spk1-utt05.wav" in skipped and "soundfile" in skipped
    text = read_scp(out / "text")
    assert set(text) == set(dump.keys()) and text["spk0-utt00"] == "안녕하세요"
    assert read_scp(out / "utt2spk")["spk1-utt03"] == "spk1"
    frames = {u: int(v) for u, v in read_scp(out / "utt2num_frames").items()}
    assert frames == {u: dump.num_frames(u) for u in dump.keys()}
    assert yaml.safe_load((out / "frontend.yaml").read_text())["n_mels"] == 40
    assert build_frontend(dump.frontend_config()).config == frontend.config
    info = yaml.safe_load((out / "dump.yaml").read_text())
    assert info["utterances"] == 7 and info["real_time_speedup"] > 1
    with pytest.raises(KeyError, match="not in the feature dump"):
        dump["nope"]
    clone = pickle.loads(pickle.dumps(dump))
    np.testing.assert_array_equal(clone["spk0-utt00"], dump["spk0-utt00"])


def test_parallel_shards_and_resume(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    counted: list[int] = []
    dump_features(data_dir, out, FBANK, nj=2, progress=counted.append)
    assert sum(counted) == 8  # every utterance reported once, skipped ones included
    shard_files = sorted((out / "shards").glob("feats.*.f16"))
    assert len(shard_files) == 2
    first = _all_features(FeatureDump(out))

    # interrupt: shard 1 never finished (index missing, a half-written temp left behind)
    (out / "shards" / "index.0001.tsv").unlink()
    (out / "shards" / "feats.0001.f16.tmp").write_bytes(b"\0" * 10)
    os.utime(shard_files[0], (1, 1))
    todo: list[tuple[int, int]] = []
    stats = dump_features(data_dir, out, FBANK, nj=1, total=lambda t, d: todo.append((t, d)))
    assert todo == [(4, 4)] and stats.shards_reused == 1
    assert shard_files[0].stat().st_mtime == 1  # the finished shard was not rewritten
    again = _all_features(FeatureDump(out))
    assert again.keys() == first.keys()
    for utt in first:
        np.testing.assert_array_equal(again[utt], first[utt])

    # another frontend in the same dir: stale shards are replaced, not mixed in
    dump_features(data_dir, out, {"name": "mfcc", "n_mfcc": 13}, nj=1)
    assert FeatureDump(out).dim == 13


def test_speed_perturbation_copies(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, speed_factors=[0.9, 1.0, 1.1])
    dump = FeatureDump(out)
    assert len(dump) == 21
    base = dump.num_frames("spk0-utt00")
    assert abs(dump.num_frames("sp0.9-spk0-utt00") - base / 0.9) <= 2
    assert abs(dump.num_frames("sp1.1-spk0-utt00") - base / 1.1) <= 2
    text, spk = read_scp(out / "text"), read_scp(out / "utt2spk")
    assert text["sp1.1-spk0-utt00"] == "안녕하세요" and spk["sp0.9-spk1-utt01"] == "sp0.9-spk1"
    assert "sp0.9-spk1-utt05" in (out / "skipped.txt").read_text()


def test_cmvn_over_dump_and_module(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, cmvn=True)
    mean, std = load_cmvn(out / "cmvn.npz")
    frames = np.concatenate([FeatureDump(out)[u] for u in FeatureDump(out).keys()]).astype(np.float64)
    np.testing.assert_allclose(mean, frames.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, frames.std(0), rtol=1e-4, atol=1e-5)
    assert mean.dtype == std.dtype == np.float32

    cmvn = GlobalCMVN.from_file(out / "cmvn.npz")
    assert set(cmvn.state_dict()) == {"mean", "std"}
    x = torch.from_numpy(frames[None].astype(np.float32)).repeat(2, 1, 1)
    lengths = torch.tensor([frames.shape[0], 10])
    y = cmvn(x, lengths)
    assert abs(float(y[0].mean())) < 1e-3 and abs(float(y[0].std()) - 1) < 1e-2
    assert float(y[1, 10:].abs().sum()) == 0.0
    with pytest.raises(DataError, match="40 dims but the features have 3"):
        cmvn(torch.zeros(1, 2, 3))


def test_cmvn_stats_streaming_equals_batch() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.normal(5.0, 2.0, size=(n, 4)) for n in (3, 50, 7)]
    acc_a, acc_b = CMVNStats(), CMVNStats()
    acc_a.add(chunks[0])
    acc_b.add(chunks[1])
    acc_b.add(chunks[2])
    acc_a.merge(acc_b)
    mean, std = acc_a.mean_std()
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, allx.std(0), rtol=1e-5)
    with pytest.raises(DataError, match="feature dim 5, earlier utterances had 4"):
        acc_a.add(np.zeros((2, 5)), utt_id="u9")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a finished feature dump"):
        FeatureDump(tmp_path)
    with pytest.raises(DataError, match="no wav.scp"):
        dump_features(tmp_path, tmp_path / "out", FBANK)
    with pytest.raises(DataError, match="does not exist; make it with"):
        load_cmvn(tmp_path / "cmvn.npz")


def test_cli_dump_with_config_and_cmvn(data_dir: Path, tmp_path: Path, capsys) -> None:
    conf = tmp_path / "conf.yaml"
    conf.write_text("frontend: {name: mel, n_mels: 24}\nmodel: {name: whatever}\n", encoding="utf-8")
    out = tmp_path / "dump"
    rc = cli_main(["features", "dump", "--data", str(data_dir), "--out", str(out), "--config", str(conf), "--cmvn"])
    assert rc == 0
    assert "7 utterances" in capsys.readouterr().out
    assert FeatureDump(out).dim == 24 and (out / "cmvn.npz").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: x}\n", encoding="utf-8")
    rc = cli_main(["features", "dump", "--data", str(data_dir), "--out", str(out), "--config", str(bad)])
    assert rc == 1 and "no 'frontend:' section" in capsys.readouterr().err


def _flip_byte_keeping_stamp(path: Path, at: int) -> None:
    """Damage one byte but keep size and modification time, as bit rot or a careless restore would."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_shard_checksums_are_checked_when_changed_and_on_verify(data_dir: Path, tmp_path: Path, capsys) -> None:
    import hashlib

    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, nj=2, shard_size=3)
    shards = sorted((out / "shards").glob("feats.*.f16"))
    listed = dict(line.split("\t") for line in (out / "checksums.tsv").read_text().splitlines())
    # every shard, with the sha256 of its bytes as they lie on disk (computed while writing)
    assert sorted(listed) == [f"shards/{p.name}" for p in shards] and len(shards) >= 2
    assert all(listed[f"shards/{p.name}"] == hashlib.sha256(p.read_bytes()).hexdigest() for p in shards)
    FeatureDump(out)
    assert cli_main(["features", "verify", str(out)]) == 0

    # a changed shard (new mtime: a rewrite, a copy) is hashed when the dump is opened, and refused
    victim = shards[1]
    data = bytearray(victim.read_bytes())
    data[10] ^= 0x40
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{victim.name} does not match its sha256.*features dump --out"):
        FeatureDump(out)
    # a rerun of the dump finds the damaged shard and extracts it again
    stats = dump_features(data_dir, out, FBANK, nj=1, shard_size=3)
    assert stats.shards_reused == stats.shards - 1
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == listed[f"shards/{victim.name}"]
    FeatureDump(out)

    # damage that keeps size and time is not seen at open (no hashing there), but verify finds it
    _flip_byte_keeping_stamp(shards[0], 20)
    FeatureDump(out)
    capsys.readouterr()
    assert cli_main(["features", "verify", str(out)]) == 1
    assert f"{shards[0]} does not match its sha256" in capsys.readouterr().out
