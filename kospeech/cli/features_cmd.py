"""``kospeech features dump|cmvn|verify``: stage 2, a data dir's audio into a feature dump (+ CMVN stats, checksums)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kospeech.cli import positive_int
from kospeech.errors import ConfigError

logger = logging.getLogger(__name__)


def _frontend_cfg(args: argparse.Namespace) -> dict:
    if args.config and args.frontend:
        raise ConfigError("give either --config (its frontend: section) or --frontend NAME, not both")
    if args.config:
        from kospeech.config import load_config

        cfg = load_config(args.config).get("frontend")
        if not cfg:
            raise ConfigError(f"{args.config} has no 'frontend:' section; add one or pass --frontend NAME")
        return dict(cfg)
    return {"name": args.frontend or "fbank"}


def _speed_factors(text: str | None) -> list[float]:
    if not text:
        return [1.0]
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--speed-perturb expects comma-separated factors like 0.9,1.0,1.1, got {text!r}") from None


def dump(args: argparse.Namespace) -> int:
    from kospeech.data.dump import dump_features
    from kospeech.progress import progress_bar

    bar = progress_bar(unit="utt", desc=f"dump {Path(args.data).name}")

    def total(todo: int, done: int) -> None:
        bar.reset(total=todo)
        if done:
            bar.set_postfix_str(f"{done} done earlier")

    try:
        stats = dump_features(
            args.data,
            args.out,
            _frontend_cfg(args),
            nj=args.nj,
            cmvn=args.cmvn,
            speed_factors=_speed_factors(args.speed_perturb),
            progress=bar.update,
            total=total,
        )
    finally:
        bar.close()
    print(
        f"{args.out}: {stats.utterances} utterances, {stats.frames} frames x {stats.dim}, "
        f"{stats.skipped} skipped, {stats.audio_seconds:.1f} s audio in {stats.wall_seconds:.1f} s "
        f"({stats.real_time_speedup:.0f}x real time)"
    )
    return 0


def cmvn(args: argparse.Namespace) -> int:
    from kospeech.data.cmvn import CMVNStats
    from kospeech.data.dump import FeatureDump

    acc = CMVNStats()
    for rows in FeatureDump(args.dump).shard_arrays():
        acc.add(rows)
    out = acc.save(Path(args.out) if args.out else Path(args.dump) / "cmvn.npz")
    print(f"{out}: mean/std over {acc.count} frames")
    return 0


def verify(args: argparse.Namespace) -> int:
    """Hash every shard of a dump against ``checksums.tsv``; exit 1 naming the damaged ones."""
    from kospeech.data.dump import CHECKSUM_FILE, FeatureDump, read_checksums, verify_dump
    from kospeech.progress import progress_bar

    dump_dir = Path(args.dump)
    FeatureDump(dump_dir, verify=False)  # a clear error when it is not a finished dump
    checksums = read_checksums(dump_dir)
    if not checksums:
        print(f"{dump_dir}: no {CHECKSUM_FILE} (a dump made before checksums); rerun `kospeech features dump "
              f"--out {dump_dir}` to add them")
        return 1
    total = sum((dump_dir / name).stat().st_size for name in checksums if (dump_dir / name).exists())
    with progress_bar(total=total, unit="B", unit_scale=True, desc=f"verify {dump_dir.name}") as bar:
        bad = verify_dump(dump_dir, everything=True, progress=bar.update)
    for problem in bad:
        print(problem)
    if bad:
        print(f"{dump_dir}: {len(bad)} of {len(checksums)} shards damaged; rerun `kospeech features dump "
              f"--out {dump_dir}` (it redoes them)")
        return 1
    print(f"{dump_dir}: {len(checksums)} shards match their sha256 ({total / 1e6:.0f} MB)")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("features", help="extract features into dumps; CMVN statistics")
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    dp = fsub.add_parser("dump", parents=[parent], help="extract a data dir's features into float16 shards")
    dp.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, text, utt2spk)")
    dp.add_argument("--out", required=True, help="dump dir to write (an unfinished one is resumed)")
    dp.add_argument("--config", help="YAML whose frontend: section defines the features")
    dp.add_argument("--frontend", help="frontend name with default options (fbank, mel, mfcc, spectrogram)")
    dp.add_argument("--nj", type=positive_int, default=1, help="parallel worker processes (default 1)")
    dp.add_argument("--cmvn", action="store_true", help="also compute global mean/std into DUMP/cmvn.npz")
    dp.add_argument("--speed-perturb", metavar="F,F,...", help="speed factors, e.g. 0.9,1.0,1.1 (ids sp0.9-UTT)")
    dp.set_defaults(func=dump)
    cp = fsub.add_parser("cmvn", parents=[parent], help="global mean/std of a finished dump")
    cp.add_argument("--dump", required=True)
    cp.add_argument("--out", help="output file (default DUMP/cmvn.npz)")
    cp.set_defaults(func=cmvn)
    vp = fsub.add_parser("verify", parents=[parent],
                         help="hash every shard against its sha256 (opening a dump hashes only changed shards)")
    vp.add_argument("dump", help="a finished dump dir")
    vp.set_defaults(func=verify)
