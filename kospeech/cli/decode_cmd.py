"""``kospeech decode --checkpoint CKPT [CKPT ...] --data DIR --out DIR [--search NAME] [key=value ...]``.

Several checkpoints decode as an ensemble (:mod:`kospeech.inference.ensemble`), weighted by
``--weights``.
"""

from __future__ import annotations

import argparse

from kospeech.cli import positive_int


def decode(args: argparse.Namespace) -> int:
    from kospeech.decode import decode_test_set, open_test_set, search_config
    from kospeech.inference import load
    from kospeech.progress import progress_bar

    ckpts = args.checkpoint if len(args.checkpoint) > 1 else args.checkpoint[0]
    asr = load(ckpts, device=args.device, weights=args.weights, trust_plugins=args.trust_plugins)
    cfg = search_config(asr.model, asr.config, args.search[0] if args.search else None,
                        [*(args.search or [])[1:], *args.options])
    total = len(open_test_set(args.data).utt_ids)
    with progress_bar(total=total, desc=f"decode {cfg['name']}", unit="utt") as bar:
        info = decode_test_set(asr, args.data, args.out, cfg, batch_size=args.batch_size, checkpoint=args.checkpoint,
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
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="CKPT",
                   help="a checkpoint .pt from kospeech train (or average); several decode as an ensemble")
    p.add_argument("--weights", nargs="+", type=float, default=None, metavar="W",
                   help="ensemble weights, one per checkpoint (default: equal)")
    p.add_argument("--trust-plugins", action="store_true",
                   help="import the plugin folders the checkpoint recorded (runs their code: trusted files only)")
    p.add_argument("--data", required=True, help="feature dump dir (kospeech features dump) or Kaldi data dir")
    p.add_argument("--out", required=True, help="decode dir to write hyp.trn, ref.trn and decode.yaml into")
    p.add_argument(
        "--search",
        nargs="+",
        default=None,
        metavar=("NAME", "KEY=VALUE"),
        help="registered search name (kospeech registry list search), optionally followed by its options",
    )
    p.add_argument("--batch-size", type=positive_int, default=16, help="utterances per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("options", nargs="*", metavar="KEY=VALUE", help="search options")
    p.set_defaults(func=decode, extra_positionals="options")
