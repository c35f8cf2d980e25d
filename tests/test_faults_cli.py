"""Fault suite, command line and config: typos caught before any data is read, one-line errors
instead of tracebacks, options and overrides in any order, one run per exp dir."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kospeech.cli import main
from kospeech.config import load_config
from kospeech.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONV_CTC = ROOT / "recipes/mini/conf/conv_ctc.yaml"


def _config(tmp_path: Path, **edits: object) -> Path:
    """The mini recipe's config pointing at data that does not exist: anything that reads data fails."""
    cfg = load_config(CONV_CTC)
    cfg["data"] = {"train": str(tmp_path / "no-dump"), "lang": str(tmp_path / "no-lang")}
    cfg.update(edits)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _train(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["train", "--config", str(_config(tmp_path)), "--exp-dir", str(tmp_path / "exp"), *extra])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trian.max_steps=1", "unknown config section 'trian'. Did you mean 'train'?"),
        ("data.batch_frame=100", "unknown option 'data.batch_frame'. Did you mean 'batch_frames'?"),
        ("data.batch_frames=abc", "'data.batch_frames' = 'abc' must be a int"),
        ("data.batch_frames=0", "'data.batch_frames' must be >= 1"),
        ("model.encoder.num_block=3", "unknown argument 'num_block'"),
        ("decode.search.name=ctc_greedyy", "decode.search"),
        ("decode.search.beam=3", "unknown argument 'beam'"),
    ],
)
def test_config_mistakes_are_one_line_errors_before_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, expected: str
) -> None:
    code, err = _train(tmp_path, capsys, override)
    assert code == 1
    assert expected in err
    assert len(err.splitlines()) == 1, err
    assert "not found" not in err  # reported before the (missing) data was looked at
    assert not (tmp_path / "exp" / "config.yaml").exists()


def test_unbuildable_values_are_one_line_config_errors() -> None:
    from kospeech.registry import build

    for override, expected in (
        ("model.encoder.dropout=1.5", "'model.encoder': encoder 'separable_conv' cannot be built with"),
        ("model.encoder.dim=0", "'model.encoder': encoder 'separable_conv' cannot be built with"),
    ):
        cfg = load_config(CONV_CTC, [override])
        with pytest.raises(ConfigError, match=expected):
            build("model", cfg["model"], path="model", input_dim=80, vocab_size=40)


def test_a_cp949_config_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes("# 한국어 설명\nseed: 3\ntrain: {max_epochs: 2}  # 에폭\n".encode("cp949"))
    assert load_config(path) == {"seed": 3, "train": {"max_epochs": 2}}


def test_options_and_overrides_mix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["config", "show", "--config", str(CONV_CTC), "seed=3", "--user-dir", str(tmp_path), "seed=4"]
    assert main(args) == 0
    assert "seed: 4\n" in capsys.readouterr().out
    assert main(["config", "show", "--config", str(CONV_CTC), "seed=3", "--verbose", "train.max_epochs=9"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["seed"] == 3 and out["train"]["max_epochs"] == 9
    with pytest.raises(SystemExit):
        main(["config", "show", "--config", str(CONV_CTC), "seed=3", "--bogus"])


def test_verbose_before_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "registry", "list", "optimizer"]) == 0
    assert "adam" in capsys.readouterr().out


def test_ctrl_c_and_full_disk_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import kospeech.cli.config_cmd as config_cmd

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    def disk_full(args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "exp/checkpoints/.ckpt_00000100.pt.x.tmp")

    monkeypatch.setattr(config_cmd, "show", interrupted)
    try:
        code = main(["config", "show", "--config", str(CONV_CTC)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C ended in a traceback")
    assert code == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted" in err and "intact" in err
    monkeypatch.setattr(config_cmd, "show", disk_full)
    try:
        code = main(["config", "show", "--config", str(CONV_CTC)])
    except OSError:
        pytest.fail("a full disk ended in a traceback")
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "intact" in err


HOLDER = """
import sys, time
from kospeech.train.lock import ExpDirLock
ExpDirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_run_per_exp_dir_and_the_lock_dies_with_its_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kospeech.train.lock import ExpDirLock

    exp = tmp_path / "exp"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(exp)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, err = _train(tmp_path, capsys)  # a second run into the held dir
        assert code == 1
        assert f"{exp} is in use by another run (pid {holder.pid} on" in err and len(err.splitlines()) == 1
        code, err = _train(tmp_path, capsys, "--resume")  # a second --resume alike
        assert code == 1 and "is in use by another run" in err
        os.kill(holder.pid, signal.SIGKILL)  # the holder dies without cleaning up
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    deadline = time.monotonic() + 10
    with ExpDirLock(exp) as lock:  # free again at once
        assert lock.held and time.monotonic() < deadline
    code, err = _train(tmp_path, capsys)
    assert code == 1 and "not found" in err and "in use" not in err  # past the lock, on to the (missing) data


@pytest.mark.parametrize("command", [["decode", "--checkpoint", "x.pt", "--data", "d", "--out", "o"],
                                     ["transcribe", "x.pt", "a.wav"]])
def test_batch_size_zero_is_a_usage_error(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--batch-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--batch-size: must be at least 1, got 0" in err and "Traceback" not in err
