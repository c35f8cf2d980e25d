"""Two CPU processes with gloo: DDP keeps the replicas identical and shards the data by rank."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from kospeech.registry import register

from . import test_trainer
from .test_trainer import base_config

corpus = test_trainer.corpus  # the session fixture: one espeak-ng corpus and dump for both files


@register("augment", "test_record_utts", override=True)
class RecordUtts:
    """Test plugin: appends the utterance ids of every training batch to ``<out>.rank<R>``."""

    domain = "feature"

    def __init__(self, *, out: str = "") -> None:
        self.out = out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        with open(f"{self.out}.rank{rank}", "a", encoding="utf-8") as f:
            f.write("\n".join(batch["utt_ids"]) + "\n")
        return batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, cfg: dict[str, Any], exp: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0"
    )
    from kospeech.train.distributed import DistInfo
    from kospeech.train.trainer import Trainer

    trainer = Trainer(cfg, exp, dist_info=DistInfo(rank=rank, world_size=world, local_rank=0))
    try:
        trainer.train()
        torch.save({k: v.clone() for k, v in trainer.raw_model.state_dict().items()}, f"{out}/weights.rank{rank}.pt")
    finally:
        trainer.close()


def test_two_gloo_ranks_hold_identical_weights_and_see_disjoint_halves(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.data.dataset import FeatureDataset
    from kospeech.data.sampler import BucketBatchSampler
    from kospeech.train.checkpoint import load_checkpoint

    cfg = base_config(corpus, max_epochs=1, accum_grad=2)  # accumulation exercises DDP's no_sync
    cfg["data"].update(batch_frames=400, num_buckets=2)
    cfg["augment"] = [{"name": "test_record_utts", "out": str(tmp_path / "utts")}]
    # fork: the children inherit the imported toolkit instead of importing it again (seconds each)
    args = (2, _free_port(), cfg, str(tmp_path / "exp"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=2, join=True, start_method="fork")

    w0 = torch.load(tmp_path / "weights.rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights.rank1.pt", weights_only=True)
    last = load_checkpoint(tmp_path / "exp/checkpoints/last.pt")
    assert last["epoch"] == 1 and last["step"] >= 1
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    for k, v in last["model"].items():  # rank 0 saved the weights both ranks hold
        assert torch.equal(w0[k], v), k

    # each rank read its own shard of the epoch's batch list: every other batch
    ds = FeatureDataset(corpus["train"], corpus["lang"])
    every = BucketBatchSampler(ds.lengths, batch_frames=400, seed=7, num_buckets=2).batches(0)
    every = every + every[: len(every) % 2]  # the sampler pads to a multiple of the world size
    expected = [{ds.utt_ids[i] for b in every[r::2] for i in b} for r in range(2)]
    seen = [set((tmp_path / f"utts.rank{r}").read_text(encoding="utf-8").split()) for r in range(2)]
    assert seen == expected
    assert seen[0] | seen[1] == set(ds.utt_ids)
    assert len(seen[0] & seen[1]) <= max(len(b) for b in every[:1])  # only a padding batch is read twice
    assert len(last["rng_ranks"]) == 2  # each rank's RNG streams are kept for exact resume
    assert not torch.equal(last["rng_ranks"][0]["torch"], last["rng_ranks"][1]["torch"])
    valid = [r for r in test_trainer.read_log(tmp_path / "exp") if r["kind"] == "valid"]
    assert valid[-1]["utterances"] == 4  # validation is sharded and gathered back whole


@pytest.mark.slow
def test_cli_under_torchrun_trains_two_ranks(corpus: dict[str, Path], tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m kospeech train``: the launch path the recipes use."""
    import subprocess
    import sys

    import yaml

    from kospeech.train.checkpoint import load_checkpoint

    cfg = base_config(corpus, max_epochs=1)
    cfg["data"].update(batch_frames=400, num_buckets=2)
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    port = str(_free_port())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
    train = ["train", "--config", str(tmp_path / "conf.yaml"), "--exp-dir", str(tmp_path / "exp")]
    cmd = [*torchrun, "-m", "kospeech", *train]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = load_checkpoint(tmp_path / "exp/checkpoints/last.pt")
    assert last["epoch"] == 1 and len(last["rng_ranks"]) == 2
