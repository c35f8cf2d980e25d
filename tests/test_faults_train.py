"""Fault suite, training: damaged and missing checkpoints, runs of non-finite updates, short and
unreadable utterances, another model size on resume, file modes, a full disk during a save.

Real path on real espeak-ng speech: the corpus and small model of tests/test_trainer.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from kospeech.cli import main
from kospeech.errors import ConfigError, DataError, KoSpeechError
from kospeech.registry import register
from tests.test_trainer import base_config, make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, korean_utterances: list) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("faults_corpus"), korean_utterances)


@register("augment", "test_all_nan", override=True)
class AllNan:
    """Test plugin: every feature NaN, as after weights or inputs went bad for good."""

    domain = "feature"

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch["features"] = torch.full_like(batch["features"], float("nan"))
        return batch


def _trainer(cfg: dict[str, Any], exp: Path, **kw: Any) -> Any:
    from kospeech.train.trainer import Trainer

    return Trainer(cfg, exp, **kw)


def _damage(path: Path) -> None:
    """Overwrite 64 bytes inside the largest weight, leaving the zip container readable."""
    state = torch.load(path, weights_only=True)["model"]
    big = max(state.values(), key=lambda t: t.numel())
    data = bytearray(path.read_bytes())
    at = data.find(big.numpy().tobytes()[:256])
    assert at > 0
    data[at + 64 : at + 128] = b"\xff" * 64
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_and_resume_falls_back(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.checkpoint import load_checkpoint

    exp = tmp_path / "exp"
    _trainer(base_config(corpus, max_steps=4, save_every=2, keep_last=5, max_epochs=5), exp).train()
    ckpts = exp / "checkpoints"
    _damage(ckpts / "ckpt_00000004.pt")  # last.pt is the same file (a hard link)
    with pytest.raises(DataError, match="do not match the checksum"):
        load_checkpoint(ckpts / "last.pt")
    assert load_checkpoint(ckpts / "ckpt_00000002.pt")["metadata"]["checksum"].startswith("sha256:")
    stale = ckpts / ".ckpt_00000006.pt.4242.deadbeef.tmp"  # a save killed before its rename
    stale.write_bytes(b"half a checkpoint")
    resumed = _trainer(base_config(corpus, max_steps=6, save_every=2, keep_last=5, max_epochs=5), exp, resume=True)
    assert resumed.step == 2  # the newest readable one, not a fresh start
    assert not stale.exists()
    resumed.train()
    assert load_checkpoint(ckpts / "last.pt")["step"] == 6


def test_resume_without_last_pt_continues_from_the_newest_checkpoint(corpus: dict[str, Path], tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    _trainer(base_config(corpus, max_steps=4, save_every=2, max_epochs=5), exp).train()
    (exp / "checkpoints" / "last.pt").unlink()
    resumed = _trainer(base_config(corpus, max_steps=6, save_every=2, max_epochs=5), exp, resume=True)
    assert resumed.step == 4
    from kospeech.train.checkpoint import load_checkpoint

    assert main(["average", "--exp-dir", str(exp), "--last", "2", "--out", str(tmp_path / "avg.pt")]) == 0
    assert load_checkpoint(tmp_path / "avg.pt")["metadata"]["checksum"]  # sealed again: new weights, new sum
    for p in (exp / "checkpoints").glob("ckpt_*.pt"):
        _damage(p)
    with pytest.raises(DataError, match="none can be read"):
        _trainer(base_config(corpus, max_steps=6, max_epochs=5), exp, resume=True)


def test_a_run_of_non_finite_updates_stops_training(corpus: dict[str, Path], tmp_path: Path) -> None:
    cfg = base_config(corpus, max_epochs=50, max_nonfinite=3)
    cfg["augment"] = [{"name": "test_all_nan"}]
    trainer = _trainer(cfg, tmp_path / "exp")
    with pytest.raises(KoSpeechError, match=r"3 batches/updates in a row had a non-finite loss"):
        trainer.train()
    assert trainer.epoch == 0 and trainer.skipped_batches == 3


def test_resume_with_another_model_size_is_one_line(corpus: dict[str, Path], tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    _trainer(base_config(corpus, max_steps=2, max_epochs=5), exp).train()
    cfg = base_config(corpus, max_steps=4, max_epochs=5)
    cfg["model"]["encoder"]["hidden_dim"] = 24
    with pytest.raises(DataError, match=r"does not fit the config's \(size mismatch for .*config.yaml"):
        _trainer(cfg, exp, resume=True)


def test_checkpoints_follow_the_umask(corpus: dict[str, Path], tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        exp = tmp_path / "exp"
        _trainer(base_config(corpus, max_steps=2, max_epochs=5), exp).train()
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [exp / "config.yaml", *(exp / "checkpoints").iterdir()]}
    assert set(modes.values()) == {0o644}, modes


def test_decode_search_is_checked_when_training_starts(corpus: dict[str, Path], tmp_path: Path) -> None:
    cfg = base_config(corpus, max_steps=2)
    cfg["decode"] = {"search": {"name": "beam", "beam_size": 3}}  # the model has no attention decoder
    with pytest.raises(ConfigError, match="decode.search|attention decoder"):
        _trainer(cfg, tmp_path / "exp")
    assert not (tmp_path / "exp" / "checkpoints").exists()


def test_short_utterances_are_left_out_and_counted(
    tmp_path_factory: pytest.TempPathFactory, korean_utterances: list, tmp_path: Path
) -> None:
    tiny = [("가", np.zeros(480, dtype=np.float32) + 0.01 * i) for i in range(1, 4)]  # 30 ms: 4 frames
    small = make_corpus(tmp_path_factory.mktemp("short_corpus"), [*korean_utterances, *tiny])
    cfg = base_config(small, max_epochs=1)
    cfg["model"]["encoder"]["extractor"] = {"name": "conv2d_subsampling", "output_dim": 16, "subsampling": 4,
                                            "channels": 4}
    trainer = _trainer(cfg, tmp_path / "exp")
    assert trainer.train_set.dropped["shorter than data.min_frames=7"] == 3
    summary = trainer.train()
    assert summary["epoch"] == 1 and summary["skipped_batches"] == 0


def test_an_unreadable_training_file_is_left_out_and_counted(corpus: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(corpus["root"] / "data/train", data)
    wav = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text(encoding="utf-8").splitlines())
    victim = sorted(wav)[5]
    audio = tmp_path / "audio"
    audio.mkdir()
    for path in wav.values():  # our own copies, one of them broken after utt2dur was written
        shutil.copy(path, audio / Path(path).name)
    (data / "wav.scp").write_text("".join(f"{u} {audio / Path(p).name}\n" for u, p in sorted(wav.items())))
    (audio / Path(wav[victim]).name).write_bytes(b"RIFF broken")
    cfg = base_config(corpus, max_epochs=1, max_steps=0)
    cfg["data"]["train"] = str(data)
    cfg["data"].pop("valid")
    trainer = _trainer(cfg, tmp_path / "exp")
    summary = trainer.train()
    assert summary["epoch"] == 1 and summary["unreadable_utterances"] == 1 and victim in trainer.unreadable
    resumed = _trainer({**cfg, "train": {**cfg["train"], "max_epochs": 2}}, tmp_path / "exp", resume=True)
    assert resumed.train_set.known_bad == {victim}
    assert resumed.train()["unreadable_utterances"] == 1


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_checkpoints(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kospeech.train.checkpoint as checkpoint

    real_save = torch.save
    calls = {"n": 0}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint runs out of space half way
            f.write(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump(base_config(corpus, max_steps=4, save_every=1, max_epochs=5)), encoding="utf-8")
    exp = tmp_path / "exp"
    assert main(["train", "--config", str(conf), "--exp-dir", str(exp)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kospeech train:")]  # (besides the bar)
    assert "Traceback" not in err and len(errors) == 1
    assert "No space left on device" in errors[0] and "intact" in errors[0]
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert checkpoint.load_checkpoint(exp / "checkpoints" / "last.pt")["step"] == 1
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == ["ckpt_00000001.pt", "last.pt"]
