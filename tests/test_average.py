"""Best-N checkpoint selection by a validation metric and its average (``kospeech average --best``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kospeech.cli import main as cli_main
from kospeech.errors import ConfigError, DataError
from kospeech.torch_files import atomic_save
from kospeech.train.average import average_best, best_checkpoints, checkpoint_metric, select_best
from kospeech.train.checkpoint import load_checkpoint, step_path

from .test_checkpoint import _fake_ckpt


def _ckpt(step: int, weight: float, metrics: dict) -> dict:
    return {**_fake_ckpt(weight, step), "metrics": metrics}


def test_select_best_ranks_by_value_keeps_order_and_skips_missing() -> None:
    scored = [("a", 5.0), ("b", 1.0), ("c", None), ("d", 3.0), ("e", float("nan")), ("f", 1.0)]
    assert select_best(scored, 2) == ["b", "f"]  # lowest two, oldest first
    assert select_best(scored, 3) == ["b", "d", "f"]
    assert select_best(scored, 1) == ["f"]  # a tie goes to the newer
    assert select_best(scored, 2, higher_is_better=True) == ["a", "d"]
    assert select_best(scored, 10) == ["a", "b", "d", "f"]  # None and NaN are never chosen
    assert select_best(scored, 0) == []


def test_average_of_the_best_checkpoints_by_validation_cer(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    # step: (weight, valid CER); the best two by CER are steps 2 and 4, not the last two
    runs = {1: (10.0, 40.0), 2: (2.0, 12.0), 3: (30.0, 25.0), 4: (4.0, 11.0), 5: (50.0, 30.0)}
    for step, (w, cer) in runs.items():
        atomic_save(
            _ckpt(step, w, {"valid_cer": cer, "valid_loss": 100.0 - step, "valid_step": step}),
            step_path(exp / "checkpoints", step),
        )
    # a checkpoint written between validations, carrying step 5's numbers: never ranked
    atomic_save(_ckpt(6, 99.0, {"valid_cer": 1.0, "valid_step": 5}), step_path(exp / "checkpoints", 6))
    assert checkpoint_metric(step_path(exp / "checkpoints", 6), "valid_cer") is None
    assert checkpoint_metric(step_path(exp / "checkpoints", 2), "valid_cer") == 12.0

    assert [p.name for p in best_checkpoints(exp, 2)] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert [p.name for p in best_checkpoints(exp, 2, "valid_loss")] == ["ckpt_00000004.pt", "ckpt_00000005.pt"]
    avg = load_checkpoint(average_best(exp, 2, tmp_path / "avg.pt"))
    assert torch.allclose(avg["model"]["w"], torch.full((3,), 3.0))  # mean of 2.0 and 4.0
    assert avg["averaged_by"] == "valid_cer" and "optimizer" not in avg
    assert [Path(p).name for p in avg["averaged_from"]] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]

    assert cli_main(["average", "--exp-dir", str(exp), "--best", "3", "--out", "best3.pt"]) == 0
    out = load_checkpoint(exp / "best3.pt")
    assert torch.allclose(out["model"]["w"], torch.full((3,), 12.0))  # steps 2, 3, 4: (2 + 30 + 4) / 3
    # --last still averages the newest, whatever their metrics
    assert cli_main(["average", "--exp-dir", str(exp), "--last", "2", "--out", "last2.pt"]) == 0
    assert torch.allclose(load_checkpoint(exp / "last2.pt")["model"]["w"], torch.full((3,), 74.5))


def test_best_errors_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp"
    atomic_save(_ckpt(1, 1.0, {"valid_cer": 3.0}), step_path(exp / "checkpoints", 1))
    atomic_save(_ckpt(2, 1.0, {}), step_path(exp / "checkpoints", 2))  # no validation
    with pytest.raises(DataError, match=r"2 best checkpoints by valid_cer but only 1 of the 2"):
        best_checkpoints(exp, 2)
    with pytest.raises(ConfigError, match="valid_cer, valid_loss"):
        best_checkpoints(exp, 1, "valid_acc")
    assert cli_main(["average", "--exp-dir", str(exp), "--best", "1", "--last", "1"]) == 1
    assert "not both" in capsys.readouterr().err
    assert cli_main(["average", "--exp-dir", str(exp), "--best", "1", "--metric", "wer"]) == 1
    assert "can be ranked by" in capsys.readouterr().err
