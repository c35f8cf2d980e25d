"""Where one mini training update's time goes: the trainer's own steps, timed apart.

Builds the ``Trainer`` of a mini config on ``recipes/mini/data`` (run the recipe's data stages
first), skips past ``train.augment_after`` so every batch is augmented (as all but the first few
hundred updates of a budget run are), and times, per update: reading and collating the batch
(load), the input pipeline (prepare: augmentation, frontend, CMVN), the forward pass with the
loss, the backward pass, and the update (clipping, Adam, scheduler). ``--profile`` adds
torch.profiler's top operators over the same updates. Run it alone: the machine has two cores.

Run: ``PYTHONPATH=. python bench/mini_update_parts.py [--config conf/conv_ctc.yaml] [--updates 150]
[--profile]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("load", "prepare", "forward", "backward", "update")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="conf/conv_ctc.yaml", help="relative to recipes/mini")
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="torch.profiler's top operators too")
    args = parser.parse_args()

    from kospeech.config import load_config
    from kospeech.train.trainer import Trainer

    os.chdir(ROOT / "recipes" / "mini")
    if not Path("data/train").is_dir():
        sys.exit("recipes/mini/data/train is missing: run bash recipes/mini/run.sh --stop-stage 1 first")
    cfg = load_config(args.config)
    cfg["data"].update(train="data/train", valid="data/dev", lang="data/lang")
    cfg["train"]["max_minutes"] = 0
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="mini_parts_"), device="cpu")
    trainer.step = trainer.opts.augment_after  # every batch augmented
    trainer._unsynced = False
    loader = iter(trainer._loader(trainer.train_set, trainer._epoch_batches(trainer.train_sampler, 0)))
    seconds: dict[str, float] = collections.defaultdict(float)

    def run(updates: int) -> None:
        for _ in range(updates):
            t0 = time.perf_counter()
            batch = next(loader)
            batch.pop("failed", None)
            t1 = time.perf_counter()
            batch = trainer._prepare(batch, train=True)
            t2 = time.perf_counter()
            loss = trainer._forward(trainer.model, batch)["loss"]
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            trainer._contributed = 1
            trainer._update()
            t5 = time.perf_counter()
            for part, spent in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                seconds[part] += spent

    run(args.warmup)
    seconds.clear()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(args.updates)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=40))
    else:
        run(args.updates)
    total = sum(seconds.values())
    print(f"{args.config}, {args.updates} augmented updates, ms per update: "
          + ", ".join(f"{part} {seconds[part] / args.updates * 1e3:.1f}" for part in PARTS)
          + f"; total {total / args.updates * 1e3:.1f} ({args.updates / total * 60:.0f} updates/min)")
    trainer.close()


if __name__ == "__main__":
    main()
