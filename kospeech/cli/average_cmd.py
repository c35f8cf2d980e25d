"""``kospeech average --exp-dir exp/NAME --last N --out avg.pt``: mean of the last N checkpoints."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kospeech.cli import positive_int

logger = logging.getLogger(__name__)


def average(args: argparse.Namespace) -> int:
    from kospeech.train.average import average_last

    out = Path(args.out)
    if not out.is_absolute() and out.parent == Path("."):
        out = Path(args.exp_dir) / out  # a bare file name lands beside the checkpoints' exp dir
    path = average_last(args.exp_dir, args.last, out)
    logger.info("wrote %s (average of the last %d checkpoints)", path, args.last)
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("average", parents=[parent], help="average the weights of the last N checkpoints")
    p.add_argument("--exp-dir", required=True, help="experiment dir holding checkpoints/ckpt_<step>.pt")
    p.add_argument(
        "--last", type=positive_int, default=5, help="how many of the newest checkpoints to average (default 5)"
    )
    p.add_argument("--out", default="model.pt", help="output file; a bare name is put in EXP_DIR (default model.pt)")
    p.set_defaults(func=average)
