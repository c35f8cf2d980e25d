"""``kospeech data {prep,synth,validate}``: corpora into Kaldi data dirs, synthetic corpora, checks.

kospeech data prep --corpus ksponspeech --root /db/KsponSpeech --out data [--transcript spelling]
    [--normalization kospeech] [--nj 4]
kospeech data synth --layout ksponspeech --out db/mini --hours 1 --seed 1 [--nj 2] [--max-utts 40]
kospeech data validate data/train [--fix [--force]]
kospeech data to-lhotse data/train manifests/train        (recordings.jsonl.gz + supervisions.jsonl.gz)
kospeech data from-lhotse --cuts cuts.jsonl.gz --out data/train   (or --recordings R --supervisions S)
"""

from __future__ import annotations

import argparse
import logging

from kospeech.cli import positive_int
from kospeech.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def prep(args: argparse.Namespace) -> int:
    from kospeech.registry import registry

    entry = registry("corpus").get(args.corpus)
    options: dict[str, object] = {"nj": args.nj}
    if args.transcript is not None:
        options["transcript"] = args.transcript
    if args.normalization is not None:
        if args.corpus != "ksponspeech":
            raise ConfigError(f"--normalization applies to the ksponspeech corpus only, not '{args.corpus}'")
        options["normalization"] = args.normalization
    if args.wav_scp is not None:
        if args.corpus != "ksponspeech":
            raise ConfigError(f"--wav-scp applies to the ksponspeech corpus only, not '{args.corpus}'")
        options["wav_scp"] = args.wav_scp
    corpus = entry.obj(**options)
    reports = corpus.prepare(args.root, args.out)
    for report in reports.values():
        print(report.summary())
    return 0


def synth(args: argparse.Namespace) -> int:
    from kospeech.data.corpora.synthetic import SECONDS_PER_UTT, synthesize
    from kospeech.progress import progress_bar

    total = int(round(args.hours * 3600 / SECONDS_PER_UTT))
    if args.max_utts is not None:
        total = min(total, args.max_utts) if args.hours > 0 else args.max_utts
    with progress_bar(total=total, unit="utt", desc=f"synth {args.layout}") as bar:
        report = synthesize(
            args.layout,
            args.out,
            hours=args.hours,
            seed=args.seed,
            text_file=args.text,
            nj=args.nj,
            max_utts=args.max_utts,
            progress=bar.update,
            **({} if args.made_up_voices is None else {"made_up_voices": args.made_up_voices}),
        )
    if report.skipped_work:
        print(f"{report.root}: already complete ({report.seconds / 3600:.2f} h); nothing done")
    else:
        print(
            f"{report.root}: {report.num_utts} utterances, {report.seconds / 3600:.2f} h in "
            f"{report.wall_seconds:.1f} s ({report.utts_per_second:.1f} utt/s); splits {report.per_split}"
        )
    return 0


def validate(args: argparse.Namespace) -> int:
    from kospeech.data.datadir import validate_data_dir

    report = validate_data_dir(args.dir, fix=args.fix, force=args.force)
    print(report.summary())
    if args.fix:
        after = validate_data_dir(args.dir)
        if not after.ok:
            print("after --fix, problems remain:\n" + after.summary())
            return 1
        return 0
    if not report.ok:
        raise DataError(f"{args.dir}: {len(report.problems)} problem(s); run with --fix to repair")
    return 0


def to_lhotse(args: argparse.Namespace) -> int:
    from kospeech.data.lhotse_io import data_dir_to_lhotse

    report = data_dir_to_lhotse(args.dir, args.out)
    print(report.summary())
    return 0


def from_lhotse(args: argparse.Namespace) -> int:
    from kospeech.data.lhotse_io import lhotse_to_data_dir

    report = lhotse_to_data_dir(args.out, recordings=args.recordings, supervisions=args.supervisions, cuts=args.cuts,
                                corpus=args.corpus, transcript=args.transcript)
    print(report.summary())
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", help="prepare corpora into data dirs, synthesise a corpus, validate data dirs")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    pp = dsub.add_parser("prep", parents=[parent], help="a corpus as released -> Kaldi data dirs under --out")
    pp.add_argument("--corpus", required=True,
                    help="registered corpus name: ksponspeech, zeroth, synthetic, kaldi (an existing Kaldi/ESPnet dir)")
    pp.add_argument("--root", required=True, help="the folder the corpus was unpacked into")
    pp.add_argument("--out", required=True, help="parent of the data dirs to write (one per split)")
    pp.add_argument(
        "--transcript",
        choices=("phonetic", "spelling"),
        default=None,
        help="KsponSpeech form kept from each (spelling)/(phonetic) pair (default phonetic)",
    )
    pp.add_argument(
        "--normalization",
        choices=("standard", "kospeech"),
        default=None,
        help="KsponSpeech transcript rules: standard (default) or kospeech, the original KoSpeech's "
        "preprocessing, to compare a CRR with its published numbers",
    )
    pp.add_argument(
        "--wav-scp",
        choices=("pipe", "pcm"),
        default=None,
        help="KsponSpeech's wav.scp: pipe (default: 'cat pcm_header.wav x.pcm |', which Kaldi, ESPnet and lhotse "
        "read; nothing is copied) or pcm (the bare .pcm paths, readable by this toolkit only)",
    )
    pp.add_argument("--nj", type=positive_int, default=1, help="worker processes")
    pp.set_defaults(func=prep)

    sp = dsub.add_parser("synth", parents=[parent], help="speak Korean sentences with espeak-ng in a real layout")
    sp.add_argument("--layout", choices=("ksponspeech", "zeroth"), default="ksponspeech")
    sp.add_argument("--out", required=True, help="corpus root to create")
    sp.add_argument("--hours", type=float, default=1.0, help="audio to make (about 2.75 s per utterance)")
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--text", default=None, metavar="FILE", help="raw notated sentences, one per line")
    sp.add_argument("--nj", type=positive_int, default=1, help="worker processes")
    sp.add_argument("--max-utts", type=positive_int, default=None, help="cap on the number of utterances")
    sp.add_argument(
        "--made-up-voices",
        type=float,
        default=None,
        metavar="SHARE",
        help="share of the training speakers given a made-up espeak-ng voice (default 0.4)",
    )
    sp.set_defaults(func=synth)

    vp = dsub.add_parser("validate", parents=[parent], help="check a data dir like Kaldi's validate_data_dir.sh")
    vp.add_argument("dir")
    vp.add_argument(
        "--fix",
        action="store_true",
        help="sort, drop broken utterances, keep the ids all lists share (the originals go to DIR/.backup/)",
    )
    vp.add_argument(
        "--force",
        action="store_true",
        help="with --fix: rewrite even when one reason would remove most utterances (refused otherwise)",
    )
    vp.set_defaults(func=validate)

    tp = dsub.add_parser("to-lhotse", parents=[parent],
                         help="a data dir -> lhotse recordings.jsonl.gz + supervisions.jsonl.gz (needs lhotse)")
    tp.add_argument("dir", help="the data dir (wav.scp paths or pipes, segments, text, utt2spk)")
    tp.add_argument("out", help="folder to write the manifests into")
    tp.set_defaults(func=to_lhotse)

    fp = dsub.add_parser("from-lhotse", parents=[parent],
                         help="lhotse manifests (a CutSet, or recordings + supervisions) -> a data dir (needs lhotse)")
    fp.add_argument("--cuts", default=None, help="a CutSet manifest (cuts.jsonl.gz): one utterance per cut")
    fp.add_argument("--recordings", default=None, help="a RecordingSet manifest")
    fp.add_argument("--supervisions", default=None, help="a SupervisionSet manifest: one utterance per supervision")
    fp.add_argument("--out", required=True, help="the data dir to write")
    fp.add_argument("--corpus", default="lhotse", help="corpus name recorded in meta.yaml")
    fp.add_argument("--transcript", choices=("phonetic", "spelling"), default="spelling",
                    help="the form the supervisions' text is in (KsponSpeech's phonetic or spelling; default spelling)")
    fp.set_defaults(func=from_lhotse)
