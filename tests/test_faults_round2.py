"""Fault suite, second round (issue 26): what the new doors lost or got silently wrong.

Each test is a case of the issue as a user met it, kept small: a Kaldi ``text`` with empty
transcripts for the n-gram LM, ``average`` over two runs or two vocabularies, damaged optimizer
state under ``--resume``, the exp-dir lock after ``rm EXP/.lock`` and in a Python-built
Trainer, a stereo file whose channels cancel, and a ``.wav`` of random bytes in ``data validate``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from kospeech.cli import main
from kospeech.errors import ConfigError, DataError
from tests.conftest import SHORT_SENTENCES

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# 1. lm train --type ngram on a Kaldi text where some utterances have no transcript


def test_ngram_lm_on_a_kaldi_text_with_empty_transcripts_skips_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kospeech.lm.text import read_transcripts
    from kospeech.text import train_tokenizer

    lang = tmp_path / "lang"
    train_tokenizer("character", SHORT_SENTENCES, lang)
    lines = [f"KsponSpeech_{i:06d} {s}" for i, s in enumerate(SHORT_SENTENCES * 2)]
    lines[3] = "KsponSpeech_000003"  # utterances with an empty transcript: the id alone
    lines[9] = "KsponSpeech_000009"
    text = tmp_path / "train_text.txt"  # not named `text`, not in a data dir: told apart by its lines
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="kospeech.lm.text"):
        sentences = read_transcripts(text)
    assert len(sentences) == 14 and not any("KsponSpeech" in s for s in sentences)
    assert sentences[0] == SHORT_SENTENCES[0]
    assert "2 utterance(s) have an empty transcript and were skipped" in caplog.text

    out = tmp_path / "lm"
    args = ["lm", "train", "--type", "ngram", "--order", "2", "--unit", "word", "--text", str(text), "--lang",
            str(lang), "--out", str(out)]
    assert main(args) == 0
    arpa = (out / "lm.arpa").read_text(encoding="utf-8")
    assert "KsponSpeech" not in arpa  # the ids are not words of the LM
    assert "감사합니다" in arpa

    # a data dir's own `text` is Kaldi text whatever its ids look like (here: Hangul in them)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("", encoding="utf-8")
    (data / "text").write_text("화자1-001 밥 먹었어요\n화자1-002\n", encoding="utf-8")
    assert read_transcripts(data / "text") == ["밥 먹었어요"]
    # plain sentences stay plain, a lone non-id word included
    (tmp_path / "plain").write_text("b/ 그래\n안녕 하세요\nOK\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "plain") == ["b/ 그래", "안녕 하세요", "OK"]


# ---------------------------------------------------------------------------------------------
# 2. average over two runs, or two vocabularies


def _run_ckpt(step: int, value: float, *, seed: int = 1, vocab: int = 7, tokens: bytes = b"a\nb\n") -> dict:
    return {
        "model": {"w": torch.full((vocab,), value), "n": torch.tensor(step)},
        "config": {"seed": seed, "model": {"name": "x"}, "data": {"train": "dump/train"}},
        "model_args": {"input_dim": 4, "vocab_size": vocab},
        "tokenizer": {"tokens.txt": tokens},
        "cmvn": {"mean": torch.zeros(4), "std": torch.ones(4)},
        "optimizer": {"state": {}},
        "step": step,
    }


def test_average_refuses_other_runs_and_other_vocabularies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.train.average import average_checkpoints
    from kospeech.train.checkpoint import load_checkpoint, step_path, write_checkpoint

    exp = tmp_path / "exp"
    ckpts = exp / "checkpoints"
    first = write_checkpoint(_run_ckpt(1, 1.0, seed=1), step_path(ckpts, 1))
    other_run = write_checkpoint(_run_ckpt(2, 3.0, seed=2), step_path(ckpts, 2))  # copied in from another run

    with pytest.raises(ConfigError) as err:
        average_checkpoints([first, other_run])
    msg = str(err.value)
    assert str(first) in msg and str(other_run) in msg and "another seed (2 vs 1)" in msg
    assert "--allow-different-runs" in msg and "\n" not in msg

    assert main(["average", "--exp-dir", str(exp), "--last", "2"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "different runs" in lines[0] and "--allow-different-runs" in lines[0]
    assert not (exp / "model.pt").exists()
    # asked for, two runs are averaged (with a warning)
    assert main(["average", "--exp-dir", str(exp), "--last", "2", "--allow-different-runs"]) == 0
    assert torch.allclose(load_checkpoint(exp / "model.pt")["model"]["w"], torch.full((7,), 2.0))

    # other training data (other CMVN statistics), same seed: another run as well
    data = _run_ckpt(3, 5.0)
    data["cmvn"]["mean"] += 1.0
    with pytest.raises(ConfigError, match="other training data"):
        average_checkpoints([first, write_checkpoint(data, tmp_path / "data.pt")])

    # another vocabulary: a one-line DataError naming both files, not a RuntimeError; even when allowed
    vocab = write_checkpoint(_run_ckpt(3, 5.0, vocab=9, tokens=b"a\nb\nc\nd\n"), tmp_path / "vocab.pt")
    with pytest.raises(DataError) as err:
        average_checkpoints([first, vocab], allow_different_runs=True)
    msg = str(err.value)
    assert str(first) in msg and str(vocab) in msg and "another vocabulary (9 output units vs 7)" in msg
    # the same size of vocabulary with other units: the tokenizer tells
    tok = write_checkpoint(_run_ckpt(3, 5.0, tokens=b"x\ny\n"), tmp_path / "tok.pt")
    with pytest.raises(DataError, match=r"another tokenizer \(its tokens.txt differ"):
        average_checkpoints([first, tok], allow_different_runs=True)
    # another model config
    layout = _run_ckpt(3, 5.0)
    layout["config"]["model"]["layers"] = 3
    with pytest.raises(DataError, match=r"another model config \(model.layers: 3 vs absent\)"):
        average_checkpoints([first, write_checkpoint(layout, tmp_path / "layout.pt")], allow_different_runs=True)

    # checkpoints of one run still average, a resume's changed budget keys included
    same = _run_ckpt(4, 5.0)
    same["config"]["train"] = {"max_steps": 100}
    avg = average_checkpoints([first, write_checkpoint(same, tmp_path / "same.pt")])
    assert torch.allclose(avg["model"]["w"], torch.full((7,), 3.0))


# ---------------------------------------------------------------------------------------------
# 3. the checksum covers the optimizer state (and every other entry), not only the weights


def _trained_ckpt(step: int) -> dict:
    torch.manual_seed(step)
    model = torch.nn.Linear(32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 32)).pow(2).sum().backward()
    opt.step()
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": {"seed": 1, "model": {"name": "x"}},
        "model_args": {"input_dim": 32, "vocab_size": 32},
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(5)), None)},
        "step": step,
    }


def test_damaged_optimizer_state_is_refused_and_resume_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kospeech.torch_files import atomic_save
    from kospeech.train.checkpoint import (
        LAST,
        atomic_link,
        latest_readable_checkpoint,
        load_checkpoint,
        step_path,
        weights_checksum,
        write_checkpoint,
    )

    ckpts = tmp_path / "checkpoints"
    write_checkpoint(_trained_ckpt(1), step_path(ckpts, 1))
    newest = write_checkpoint(_trained_ckpt(2), step_path(ckpts, 2))
    atomic_link(newest, ckpts / LAST)
    saved = load_checkpoint(ckpts / LAST)
    assert saved["metadata"]["checksum"] == weights_checksum(saved["model"])  # what older readers check

    # 2,000 changed bytes inside the optimizer's exp_avg (the weights untouched)
    exp_avg = saved["optimizer"]["state"][0]["exp_avg"]
    data = bytearray(newest.read_bytes())
    at = data.find(exp_avg.numpy().tobytes()[:256])
    assert at > 0
    data[at : at + 2000] = bytes(2000)
    newest.write_bytes(bytes(data))
    assert torch.equal(torch.load(newest, weights_only=True)["model"]["weight"], saved["model"]["weight"])

    with pytest.raises(DataError) as err:
        load_checkpoint(ckpts / LAST)
    msg = str(err.value)
    assert str(ckpts / LAST) in msg and "optimizer (changed)" in msg and "do" in msg
    with caplog.at_level(logging.WARNING):
        path, ckpt = latest_readable_checkpoint(ckpts)  # what --resume does: the newest readable one
    assert path == step_path(ckpts, 1) and ckpt["step"] == 1
    assert "passing over last.pt" in caplog.text

    # other entries are covered alike: the RNG state, the config
    for key, change in (("rng", lambda c: c["rng"]["torch"].__setitem__(0, 7)),
                        ("config", lambda c: c["config"].__setitem__("seed", 2))):
        ckpt = load_checkpoint(step_path(ckpts, 1))
        change(ckpt)
        atomic_save(ckpt, tmp_path / f"{key}.pt")  # saved without sealing again, as a damaged copy is
        with pytest.raises(DataError, match=f"{key} \\(changed\\)"):
            load_checkpoint(tmp_path / f"{key}.pt")

    # a checkpoint of the older format (a checksum of the weights only) still loads, and is checked
    old = load_checkpoint(step_path(ckpts, 1))
    del old["metadata"]["checksums"]
    atomic_save(old, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["step"] == 1
    old["model"]["bias"][0] += 1.0
    atomic_save(old, tmp_path / "old_damaged.pt")
    with pytest.raises(DataError, match="the weights do not match the checksum"):
        load_checkpoint(tmp_path / "old_damaged.pt")


# ---------------------------------------------------------------------------------------------
# 4. the exp-dir lock: not bypassed by rm EXP/.lock, and taken by the Trainer itself

HOLDER = """
import sys, time
from kospeech.train.lock import ExpDirLock
ExpDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""

TRY_LOCK = """
import sys
from kospeech.errors import ConfigError
from kospeech.train.lock import ExpDirLock
try:
    ExpDirLock(sys.argv[1]).acquire()
except ConfigError:
    print("in use")
else:
    print("free")
"""

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _holder(exp: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(exp)], stdout=subprocess.PIPE, env=ENV, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _stop(holder: subprocess.Popen[str]) -> None:
    if holder.poll() is None:
        os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)


def _lock_state(exp: Path) -> str:
    """Whether another process can lock ``exp`` now."""
    return subprocess.run([sys.executable, "-c", TRY_LOCK, str(exp)], capture_output=True, text=True, env=ENV,
                          check=True).stdout.strip()


def _config(tmp_path: Path) -> dict:
    from tests.test_trainer import base_config

    return base_config({"train": tmp_path / "no-dump", "dev": tmp_path / "no-dev", "lang": tmp_path / "no-lang"})


def test_removing_the_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    from kospeech.train.lock import LOCK_FILE, ExpDirLock

    exp = tmp_path / "exp"
    holder = _holder(exp)
    try:
        (exp / LOCK_FILE).unlink()  # rm EXP/.lock while the run holds it
        with pytest.raises(ConfigError, match=f"{exp} is in use by another run"):
            ExpDirLock(exp).acquire()
        assert _lock_state(exp) == "in use"
    finally:
        _stop(holder)
    with ExpDirLock(exp) as lock:  # free again once the holder is gone
        assert lock.held


def test_the_trainer_takes_the_lock_itself_and_nests_under_the_cli(tmp_path: Path) -> None:
    from kospeech.train.lock import ExpDirLock
    from kospeech.train.trainer import Trainer

    exp = tmp_path / "exp"
    cfg = _config(tmp_path)
    holder = _holder(exp)
    try:  # a Trainer built in Python, not through the CLI, into a held dir
        with pytest.raises(ConfigError, match="is in use by another run"):
            Trainer(cfg, exp)
    finally:
        _stop(holder)

    # under a lock this process already holds (the CLI's), the Trainer nests instead of failing
    with ExpDirLock(exp) as outer:
        with pytest.raises(DataError, match="not found"):  # past the lock, on to the (missing) data
            Trainer(cfg, exp)
        assert outer.held and _lock_state(exp) == "in use"  # the failed Trainer left the CLI's lock held
    assert _lock_state(exp) == "free"
    # a Trainer that fails while being built lets its own lock go
    with pytest.raises(DataError, match="not found"):
        Trainer(cfg, exp)
    assert _lock_state(exp) == "free"


# ---------------------------------------------------------------------------------------------
# 5. a stereo file whose channels cancel


def _speechlike(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_stereo_channels_that_cancel_keep_their_speech(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kospeech.audio import read_audio, read_audio_bytes, stream_audio

    mono = _speechlike()
    path = tmp_path / "inverted.wav"
    sf.write(path, np.stack([mono, -mono], axis=1), 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="kospeech.audio"):
        wave = read_audio(path)
    assert np.allclose(wave, mono, atol=1e-6)  # not the silence of (l + r) / 2
    assert str(path) in caplog.text and "cancel out when averaged" in caplog.text
    assert np.allclose(read_audio_bytes(path.read_bytes(), "upload")[0], mono, atol=1e-6)
    _, blocks = stream_audio(path, block_seconds=0.25)
    assert np.allclose(np.concatenate(list(blocks)), mono, atol=1e-6)

    # ordinary stereo is still averaged: equal channels, and two different ones
    other = _speechlike()[::-1].copy()
    sf.write(tmp_path / "two.wav", np.stack([mono, other], axis=1), 16000, subtype="FLOAT")
    assert np.allclose(read_audio(tmp_path / "two.wav"), (mono + other) / 2, atol=1e-6)
    sf.write(tmp_path / "same.wav", np.stack([mono, mono], axis=1), 16000, subtype="FLOAT")
    assert np.allclose(read_audio(tmp_path / "same.wav"), mono, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# 6. data validate and a .wav of random bytes


def test_validate_reports_a_wav_of_random_bytes(tmp_path: Path) -> None:
    from kospeech.audio import write_audio
    from kospeech.data.datadir import read_data_dir, validate_data_dir, write_data_dir

    wav, text, spk, dur = {}, {}, {}, {}
    for i, sentence in enumerate(SHORT_SENTENCES[:4]):
        utt = f"spk0-utt{i}"
        path = tmp_path / "audio" / f"{utt}.wav"
        write_audio(path, _speechlike(0.5))
        wav[utt], text[utt], spk[utt], dur[utt] = str(path), sentence, "spk0", 0.5
    noise = Path(wav["spk0-utt2"])
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    data = write_data_dir(tmp_path / "data", wav=wav, text=text, utt2spk=spk, utt2dur=dur, corpus="t",
                          transcript="spelling")

    report = validate_data_dir(data)
    assert not report.ok
    assert any("'spk0-utt2'" in p and str(noise) in p for p in report.problems), report.problems
    assert main(["data", "validate", str(data)]) == 1
    report = validate_data_dir(data, fix=True)
    assert report.removed == {"unreadable audio": 1} and sorted(read_data_dir(data).wav) == [
        "spk0-utt0", "spk0-utt1", "spk0-utt3"]
    assert validate_data_dir(data).ok


# ---------------------------------------------------------------------------------------------
# standard input: streamed through a temporary file, checked as a path is, nothing left behind


class _RateOnly:
    """The part of an engine that opening inputs uses."""

    kind = "test"
    sample_rate = 16000

    def default_search(self) -> dict:
        return {"name": "ctc_greedy"}


def _stdin_with(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_stdin_streams_in_blocks_and_refuses_a_cut_wav_by_the_path_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import glob
    import io
    import tempfile
    import tracemalloc

    from kospeech.inference.driver import BLOCK_SECONDS, Driver

    driver = Driver(_RateOnly())
    seconds = 4 * BLOCK_SECONDS  # four blocks
    wave = (0.1 * np.sin(np.arange(int(seconds * 16000)) * 0.05)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, 16000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    leftovers = lambda: glob.glob(os.path.join(tempfile.gettempdir(), "kospeech-stdin-*"))  # noqa: E731
    before = set(leftovers())

    _stdin_with(monkeypatch, data)
    tracemalloc.start()
    name, got_seconds, blocks = driver.open("-")
    first = next(blocks())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # memory: one block of float32 samples (and its int16 read), not the whole input (bytes + samples)
    assert name == "<stdin>" and got_seconds == pytest.approx(seconds)
    assert peak < 0.5 * (len(data) + wave.nbytes), f"peak {peak} bytes for a {len(data)}-byte input"
    np.testing.assert_allclose(first, wave[: len(first)], atol=1 / 32768 + 1e-6)

    _stdin_with(monkeypatch, data)
    _, _, blocks = driver.open("-")
    np.testing.assert_allclose(np.concatenate(list(blocks())), wave, atol=1 / 32768 + 1e-6)

    _stdin_with(monkeypatch, data[: len(data) // 2])  # a copy cut short: the path's check, named <stdin>
    with pytest.raises(DataError, match=r"^<stdin> is cut short"):
        driver.open("-")
    _stdin_with(monkeypatch, b"")
    with pytest.raises(DataError, match=r"<stdin>: no audio bytes"):
        driver.open("-")
    assert set(leftovers()) == before  # read, dropped half-way or refused: the temporary file is gone
