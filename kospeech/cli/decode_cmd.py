"""``kospeech decode MODEL [MODEL ...] --data DIR --out DIR [--search NAME] [-o KEY=VALUE]... [--lm DIR]``.

MODEL is what ``kospeech.load`` opens (a package decodes with its own search and LM); several
checkpoints decode as an ensemble (:mod:`kospeech.inference.ensemble`), weighted by
``--weights``. The older spellings ``--checkpoint CKPT`` and ``--search NAME k=v`` still work.
"""

from __future__ import annotations

import argparse
import logging

from kospeech.cli import add_chunk_size_argument, add_search_arguments, positive_int

logger = logging.getLogger(__name__)


def decode(args: argparse.Namespace) -> int:
    from kospeech.cli import search_choice
    from kospeech.decode import decode_test_set, open_test_set
    from kospeech.errors import ConfigError
    from kospeech.inference import load
    from kospeech.progress import progress_bar

    models = [a for a in args.options if "=" not in a]
    if args.checkpoint:
        logger.warning("--checkpoint is deprecated: name the model first (kospeech decode MODEL --data ... --out ...)")
        models = [*args.checkpoint, *models]
    if not models:
        raise ConfigError("no model given: kospeech decode MODEL [MODEL ...] --data DIR --out DIR")
    search, options = search_choice(args, [a for a in args.options if "=" in a])
    asr = load(models if len(models) > 1 else models[0], device=args.device, weights=args.weights,
               trust_plugins=args.trust_plugins, chunk_size=args.chunk_size)
    cfg = asr.search_config(search, **options)
    total = len(open_test_set(args.data).utt_ids)
    with progress_bar(total=total, desc=f"decode {cfg['name']}", unit="utt") as bar:
        info = decode_test_set(asr, args.data, args.out, cfg, batch_size=args.batch_size, checkpoint=models,
                               progress=bar.update)
    timing = info["timing"]
    rtf = timing["real_time_factor"]
    print(
        f"decoded {info['test_set']['utterances']} utterances of {info['test_set']['name']} with "
        f"{cfg['name']} in {timing['wall_seconds']:.1f} s (RTF {rtf if rtf is not None else 'n/a'}); "
        f"wrote {args.out}/hyp.trn, ref.trn, decode.yaml"
    )
    if info["failed"]:
        import sys

        print(f"kospeech decode: {len(info['failed'])} utterance(s) failed (empty in hyp.trn, listed in "
              f"decode.yaml): {', '.join(sorted(info['failed'])[:5])}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "decode",
        parents=[parent],
        help="decode a feature dump or data dir with a checkpoint into hyp.trn / ref.trn",
        description="Search options follow as key=value (beam_size=10 lm=exp/lm/lm.pt lm_weight=0.3). "
        "Without --search, the checkpoint's decode.search is used, else a default for the model's heads. "
        "An utterance that cannot be read is reported, left empty in hyp.trn, and makes the exit status 1.",
    )
    p.add_argument("--checkpoint", nargs="+", default=None, metavar="CKPT",
                   help="deprecated spelling of the positional MODEL")
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="ensemble weights, one per checkpoint (default: equal)")
    p.add_argument("--trust-plugins", action="store_true",
                   help="import the plugin folders the checkpoint recorded (runs their code: trusted files only)")
    p.add_argument("--data", required=True, help="feature dump dir (kospeech features dump) or Kaldi data dir")
    p.add_argument("--out", required=True, help="decode dir to write hyp.trn, ref.trn and decode.yaml into")
    add_search_arguments(p, search_takes_options=True)
    add_chunk_size_argument(p)
    p.add_argument("--batch-size", type=positive_int, default=16, help="utterances per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("options", nargs="*", metavar="MODEL | KEY=VALUE",
                   help="the model(s): a package, export dir, checkpoint or exp dir; KEY=VALUE words: search options")
    p.set_defaults(func=decode, extra_positionals="options")
