"""``kospeech train --config X [a.b=c ...] --exp-dir exp/NAME [--device auto|cpu|cuda] [--resume]``.

Runs the same under ``torchrun --nproc-per-node N -m kospeech train ...`` (or the console
script): every process reads its rank from the environment, rank 0 writes the experiment dir.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging

logger = logging.getLogger(__name__)


def train(args: argparse.Namespace) -> int:
    from kospeech.config import load_config
    from kospeech.train.distributed import env_info
    from kospeech.train.lock import ExpDirLock
    from kospeech.train.schema import check_train_config
    from kospeech.train.trainer import Trainer

    cfg = load_config(args.config, args.overrides)
    check_train_config(cfg)  # every key and component, before any data is read
    info = env_info()
    if not info.is_main:  # one process talks; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    # rank 0 holds the exp dir for the whole run, from before the Trainer reads anything (the Trainer takes the
    # same lock again: re-entrant within a process); the lock dies with the process, however it ends
    with ExpDirLock(args.exp_dir) if info.is_main else contextlib.nullcontext():
        trainer = Trainer(cfg, args.exp_dir, device=args.device, resume=args.resume, progress=True, dist_info=info)
        try:
            summary = trainer.train()
        finally:
            trainer.close()
    if info.is_main:
        logger.info("done: %s", json.dumps(summary, ensure_ascii=False))
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train",
        parents=[parent],
        help="train a model from a YAML config (single process, or under torchrun for DDP)",
        description="Train a model. Overrides look like train.max_epochs=3 or model.encoder.num_layers=6.",
    )
    p.add_argument("--config", required=True, help="training YAML (see docs/contracts.md)")
    p.add_argument("--exp-dir", required=True, help="experiment dir: config.yaml, checkpoints/, log.jsonl, train.png")
    p.add_argument(
        "--device", default=None, help="auto | cpu | cuda | cuda:N (default: train.device from the config, auto)"
    )
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.pt if it exists")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.set_defaults(func=train, extra_positionals="overrides")
