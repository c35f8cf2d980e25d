"""Carve a validation set out of Zeroth-Korean's train split, by speaker.

Zeroth ships only ``train`` and ``test``; training needs a dev set to pick ``best.pt`` and to
drive the LR schedule, and scoring on ``test`` must stay untouched. Whole speakers are held
out (so the dev CER is measured on unseen voices, as the test CER is), chosen by a seeded
shuffle of the sorted speaker list: the same input always gives the same split. The source
dir is left as it is and both outputs are rewritten from it, so rerunning stage 1 is safe.

    python local/make_dev.py --src data/train --train data/train_nodev --dev data/dev
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
from pathlib import Path

from kospeech.data.datadir import DataDir, filter_ids, read_data_dir, write_data_dir
from kospeech.errors import DataError

logger = logging.getLogger("make_dev")


def pick_dev_speakers(speakers: list[str], *, fraction: float, min_speakers: int, seed: int) -> list[str]:
    """``fraction`` of the speakers (at least ``min_speakers``, at most all but one), deterministically."""
    ordered = sorted(set(speakers))
    if len(ordered) < 2:
        raise DataError(
            f"cannot hold out speakers for dev: the train set has {len(ordered)} speaker(s); "
            f"give a dev set of your own instead"
        )
    count = max(min_speakers, round(fraction * len(ordered)))
    count = min(count, len(ordered) - 1)
    return sorted(random.Random(seed).sample(ordered, count))


def _write_split(src: DataDir, out: Path, utts: set[str]) -> None:
    """Write the subset atomically: into ``out.tmp``, then swap it in."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_data_dir(
        tmp,
        wav=filter_ids(src.wav, utts),
        text=filter_ids(src.text, utts),
        utt2spk=filter_ids(src.utt2spk, utts),
        utt2dur=filter_ids(src.utt2dur, utts) if src.utt2dur else None,
        corpus=str(src.meta.get("corpus", "zeroth")),
        transcript=str(src.meta.get("transcript", "spelling")),
        sample_rate=int(src.meta.get("sample_rate", 16000)),
    )
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def make_dev(src_dir: Path, train_dir: Path, dev_dir: Path, *, fraction: float, min_speakers: int, seed: int) -> None:
    src = read_data_dir(src_dir)
    speakers = list(src.utt2spk.values())
    dev_spk = set(pick_dev_speakers(speakers, fraction=fraction, min_speakers=min_speakers, seed=seed))
    dev_utts = {u for u, s in src.utt2spk.items() if s in dev_spk}
    train_utts = set(src.wav) - dev_utts
    _write_split(src, train_dir, train_utts)
    _write_split(src, dev_dir, dev_utts)
    logger.info(
        "%s: %d speakers, %d utterances -> %s; %d speakers (%s), %d utterances -> %s",
        src_dir,
        len(set(src.utt2spk.values())) - len(dev_spk),
        len(train_utts),
        train_dir,
        len(dev_spk),
        " ".join(sorted(dev_spk)),
        len(dev_utts),
        dev_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, required=True, help="data dir to split (left unchanged)")
    parser.add_argument("--train", type=Path, required=True, help="data dir for the remaining speakers")
    parser.add_argument("--dev", type=Path, required=True, help="data dir for the held-out speakers")
    parser.add_argument("--fraction", type=float, default=0.03, help="share of speakers held out (default 0.03)")
    parser.add_argument("--min-speakers", type=int, default=1, help="hold out at least this many speakers")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    try:
        make_dev(args.src, args.train, args.dev, fraction=args.fraction, min_speakers=args.min_speakers, seed=args.seed)
    except DataError as err:
        print(f"make_dev: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
