"""``kospeech average --exp-dir exp/NAME (--last N | --best N [--metric valid_cer]) --out avg.pt``.

The mean of the last N checkpoints, or of the N best by a validation metric (ESPnet's
``valid.acc.ave_10best`` habit; keep them with ``train.keep_best``). Checkpoints of another
model or tokenizer are refused, and so are those of another run (seed, training data) unless
``--allow-different-runs``: the mean of two independently trained models is not a better model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kospeech.cli import positive_int

logger = logging.getLogger(__name__)


def average(args: argparse.Namespace) -> int:
    from kospeech.errors import ConfigError
    from kospeech.train.average import average_best, average_last, check_metric

    out = Path(args.out)
    if not out.is_absolute() and out.parent == Path("."):
        out = Path(args.exp_dir) / out  # a bare file name lands beside the checkpoints' exp dir
    if args.best is not None:
        if args.last is not None:
            raise ConfigError("give --last N or --best N, not both")
        check_metric(args.metric)
        path = average_best(args.exp_dir, args.best, out, args.metric, allow_different_runs=args.allow_different_runs)
        logger.info("wrote %s (average of the %d best checkpoints by %s)", path, args.best, args.metric)
        return 0
    last = 5 if args.last is None else args.last
    path = average_last(args.exp_dir, last, out, allow_different_runs=args.allow_different_runs)
    logger.info("wrote %s (average of the last %d checkpoints)", path, last)
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("average", parents=[parent], help="average the weights of the last or the best N checkpoints")
    p.add_argument("--exp-dir", required=True, help="experiment dir holding checkpoints/ckpt_<step>.pt")
    p.add_argument(
        "--last", type=positive_int, default=None, help="how many of the newest checkpoints to average (default 5)"
    )
    p.add_argument("--best", type=positive_int, default=None, help="average the N best checkpoints by --metric instead")
    p.add_argument(
        "--metric",
        default="valid_cer",
        help="validation metric that ranks checkpoints for --best: valid_cer (default) or valid_loss, lower is better",
    )
    p.add_argument(
        "--allow-different-runs",
        action="store_true",
        help="average checkpoints of different runs (another seed or training data) too, e.g. fine-tunes of one "
        "model; checkpoints of another model or tokenizer are refused all the same",
    )
    p.add_argument("--out", default="model.pt", help="output file; a bare name is put in EXP_DIR (default model.pt)")
    p.set_defaults(func=average)
