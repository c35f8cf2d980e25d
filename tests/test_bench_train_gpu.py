"""bench/train_gpu.py: runs where only torch and numpy are installed, one update per config on
synthetic input, and projects a 965 h epoch from the measured time (tiny model on CPU here;
the real KsponSpeech configs on CPU are ``-m slow``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kospeech.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "train_gpu.py"

TINY = """
data: {batch_frames: 600}
frontend: {name: fbank, n_mels: 40, frame_shift_ms: 10.0}
model:
  name: conformer
  head: attention
  encoder:
    name: conformer
    d_model: 32
    ff_dim: 64
    num_layers: 1
    kernel_size: 7
    extractor: {name: conv2d_subsampling, output_dim: 32, subsampling: 4, channels: 8}
    attention: {name: relative_multi_head, num_heads: 2}
  decoder: {name: transformer, d_model: 32, num_heads: 2, ff_dim: 64, num_layers: 1}
optimizer: {name: adam, lr: 0.001}
train: {max_grad_norm: 5.0}
"""


def _bench():
    spec = importlib.util.spec_from_file_location("train_gpu", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_times_one_update_and_projects_an_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY, encoding="utf-8")
    out = tmp_path / "rows.json"
    rows = _bench().main(
        ["--configs", str(cfg), "--device", "cpu", "--steps", "1", "--utt-seconds", "2", "--json", str(out)]
    )
    [row] = rows
    assert row["config"] == "tiny" and row["utts"] == 3  # 600 frames of 200-frame utterances
    assert row["audio_s"] == pytest.approx(6.0) and row["amp"] == "fp32" and row["peak_gib"] is None
    assert row["sec"] > 0 and row["audio_h_per_h"] == pytest.approx(6.0 / row["sec"])
    assert row["epoch_h"] == pytest.approx(965.0 / row["audio_h_per_h"])
    text = capsys.readouterr().out
    assert "| tiny |" in text and "CPU-h per 965 h epoch" in text
    assert json.loads(out.read_text(encoding="utf-8"))[0]["utts"] == 3
    # --batch-frames overrides the config's batch
    [small] = _bench().main(
        ["--configs", str(cfg), "--device", "cpu", "--steps", "1", "--utt-seconds", "2", "--batch-frames", "200"]
    )
    assert small["utts"] == 1


def test_config_snapshot_matches_the_yaml() -> None:
    """What the bench reads where PyYAML is missing is what the recipe configs say."""
    bench = _bench()
    snap = json.loads(bench.SNAPSHOT.read_text(encoding="utf-8"))
    assert sorted(snap) == bench.config_names(), "run: PYTHONPATH=. python bench/train_gpu.py --write-configs"
    for name, sections in snap.items():
        cfg = load_config(bench.CONF / f"{name}.yaml")
        assert sections == {k: cfg[k] for k in bench.SECTIONS if k in cfg}, (
            f"{name}: stale; run PYTHONPATH=. python bench/train_gpu.py --write-configs"
        )


BLOCKED_RUN = """
import importlib.abc, runpy, sys
BLOCK = {"yaml", "soundfile", "librosa", "sentencepiece", "torchaudio", "tqdm", "matplotlib", "scipy"}
class Block(importlib.abc.MetaPathFinder):
    # our code importing one of BLOCK fails as if it were not installed; torch probing for them passes
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in BLOCK:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        if frame is not None and ("/kospeech/" in frame.f_code.co_filename or "/bench/" in frame.f_code.co_filename):
            raise ImportError("not installed: " + name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow  # two fresh Python processes: ~25 s on a shared 2-core machine
def test_bench_runs_with_only_torch_and_numpy(tmp_path: Path) -> None:
    """A GPU machine may lack PyYAML, soundfile, sentencepiece, torchaudio: the bench needs none."""
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(yaml.safe_load(TINY)), encoding="utf-8")
    cmd = [
        sys.executable,
        "-c",
        BLOCKED_RUN,
        str(BENCH),
        "--configs",
        str(tiny),
        "--device",
        "cpu",
        "--utt-seconds",
        "2",
        "--steps",
        "1",
        "--threads",
        "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "| tiny |" in res.stdout
    # the guard is real: what needs PyYAML fails under it
    res = subprocess.run([*cmd[:4], "--write-configs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "needs PyYAML" in res.stderr


@pytest.mark.slow
def test_bench_every_ksponspeech_config_on_cpu() -> None:
    rows = _bench().main(["--device", "cpu", "--batch-frames", "400", "--utt-seconds", "3", "--steps", "1"])
    assert {r["config"] for r in rows} >= {"conformer_espnet2_12x512", "conformer_ctc_attention"}
    assert all(r["sec"] > 0 for r in rows)
