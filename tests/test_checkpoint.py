"""Checkpoint files: atomic writes, rotation, RNG capture, averaging, rebuilding for inference."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.cli import main as cli_main
from kospeech.errors import DataError
from kospeech.inference.loading import load_for_inference
from kospeech.torch_files import atomic_save
from kospeech.train.average import average_checkpoints, average_last, last_checkpoints
from kospeech.train.checkpoint import (
    BEST,
    LAST,
    atomic_link,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    read_lang_dir,
    rng_state,
    set_rng_state,
    step_path,
)

from .conftest import SHORT_SENTENCES

SMALL_DS2 = {
    "name": "deepspeech2",
    "encoder": {
        "name": "rnn",
        "rnn_type": "gru",
        "hidden_dim": 16,
        "num_layers": 1,
        "bidirectional": True,
        "dropout": 0.0,
        "extractor": {"name": "none"},
    },
}


@pytest.fixture()
def lang_dir(tmp_path: Path) -> Path:
    from kospeech.text.tokenizers import train_tokenizer

    train_tokenizer("character", SHORT_SENTENCES, tmp_path / "lang")
    return tmp_path / "lang"


class _Unpicklable:
    def __reduce__(self):  # noqa: D105 - a save that dies half way
        raise RuntimeError("disk on fire")


def _fake_ckpt(value: float, step: int) -> dict:
    return {
        "model": {"w": torch.full((3,), value), "n": torch.tensor(step)},
        "config": {"model": {"name": "x"}},
        "model_args": {"input_dim": 4, "vocab_size": 7},
        "optimizer": {"state": {}},
        "step": step,
    }


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "a.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)
    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_save({"model": {"w": torch.zeros(2)}, "bad": _Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.pt"]  # no temporary left behind


def test_rotation_keeps_last_n_and_links_survive(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        atomic_save(_fake_ckpt(step, step), step_path(tmp_path, step))
    atomic_link(step_path(tmp_path, 5), tmp_path / BEST)
    atomic_link(step_path(tmp_path, 20), tmp_path / LAST)
    removed = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in removed] == ["ckpt_00000005.pt", "ckpt_00000010.pt"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000015.pt", "ckpt_00000020.pt"]
    assert load_checkpoint(tmp_path / BEST)["step"] == 5  # the link outlives its source name
    assert load_checkpoint(tmp_path)["step"] == 20  # a dir means its last.pt


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.normal()  # leave a cached gaussian in NumPy's state
    atomic_save({"rng": rng_state()}, tmp_path / "r.pt")
    first = (random.random(), np.random.normal(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    second = (random.random(), np.random.normal(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


def test_average_of_the_last_checkpoints(tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "exp" / "checkpoints"
    for step, value in ((1, 100.0), (2, 1.0), (3, 2.0), (4, 6.0)):
        ckpt = _fake_ckpt(value, step)
        ckpt["model"]["w"][0] = value * 2
        atomic_save(ckpt, step_path(ckpt_dir, step))
    assert [p.name for p in last_checkpoints(tmp_path / "exp", 3)] == [
        "ckpt_00000002.pt",
        "ckpt_00000003.pt",
        "ckpt_00000004.pt",
    ]
    avg = average_checkpoints(last_checkpoints(tmp_path / "exp", 3))
    assert torch.allclose(avg["model"]["w"], torch.tensor([6.0, 3.0, 3.0]))
    assert int(avg["model"]["n"]) == 4  # integer buffers come from the newest
    assert "optimizer" not in avg and avg["step"] == 4
    # the CLI writes a loadable checkpoint
    assert cli_main(["average", "--exp-dir", str(tmp_path / "exp"), "--last", "2", "--out", "avg.pt"]) == 0
    out = load_checkpoint(tmp_path / "exp" / "avg.pt")
    assert torch.allclose(out["model"]["w"], torch.tensor([8.0, 4.0, 4.0]))


def test_average_errors_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="no checkpoints"):
        last_checkpoints(tmp_path, 2)
    atomic_save(_fake_ckpt(1.0, 1), step_path(tmp_path / "checkpoints", 1))
    with pytest.raises(DataError, match=r"last 5 checkpoints but .* holds 1 \(train.keep_last"):
        average_last(tmp_path, 5, tmp_path / "avg.pt")
    bad = _fake_ckpt(1.0, 2)
    bad["model"]["extra"] = torch.zeros(1)
    atomic_save(bad, step_path(tmp_path / "checkpoints", 2))
    with pytest.raises(DataError, match="different parameters"):
        average_last(tmp_path, 2, tmp_path / "avg.pt")
    assert cli_main(["average", "--exp-dir", str(tmp_path / "nowhere"), "--last", "2"]) == 1
    assert "no checkpoints" in capsys.readouterr().err


def test_load_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="checkpoint not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt: cannot be read as a checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(DataError, match="partial.pt: not a KoSpeech checkpoint .*config"):
        load_checkpoint(tmp_path / "partial.pt")


def test_load_for_inference_rebuilds_everything_from_one_file(
    tmp_path: Path, lang_dir: Path, fbank_batch: dict
) -> None:
    from kospeech.registry import build
    from kospeech.text.tokenizers import load_tokenizer

    tok = load_tokenizer(lang_dir)
    model = build("model", SMALL_DS2, path="model", input_dim=80, vocab_size=tok.vocab_size)
    cfg = {"model": SMALL_DS2, "frontend": {"name": "fbank", "n_mels": 80}}
    ckpt = {
        "model": model.state_dict(),
        "config": cfg,
        "model_args": {"input_dim": 80, "vocab_size": tok.vocab_size},
        "cmvn": {"mean": torch.full((80,), 2.0), "std": torch.full((80,), 4.0)},
        "tokenizer": read_lang_dir(lang_dir),
    }
    atomic_save(ckpt, tmp_path / "model.pt")
    import shutil

    shutil.rmtree(lang_dir)  # the checkpoint must not need the lang dir any more
    bundle = load_for_inference(tmp_path / "model.pt")
    assert bundle.tokenizer.vocab_size == tok.vocab_size
    assert bundle.tokenizer.decode(tok.encode("감사합니다")) == "감사합니다"
    assert bundle.frontend is not None and bundle.frontend.output_dim == 80
    assert torch.equal(bundle.cmvn.mean, torch.full((80,), 2.0))
    assert not bundle.model.training
    x, n = fbank_batch["features"][:2], fbank_batch["feature_lengths"][:2]
    model.eval()
    with torch.no_grad():
        rebuilt = bundle.model.ctc_log_probs(bundle.model.encode(x, n)[0])
        assert torch.equal(rebuilt, model.ctc_log_probs(model.encode(x, n)[0]))

    ckpt["model_args"]["vocab_size"] += 1
    atomic_save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="size mismatch|units but the model was built for"):
        load_for_inference(tmp_path / "bad.pt")
