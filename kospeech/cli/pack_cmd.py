"""``kospeech pack CKPT [--search NAME] [-o KEY=VALUE]... [--lm DIR] [--hotwords FILE] [--scores DIR...] --out DIR``.

A model package: the checkpoint with the decoding to serve it with (search, options, the LM,
copied in, and a default hotword list), the scores that decoding measured (``--scores`` decode dirs, scored) and a model
card (``README.md``). Every door opens it and decodes as the recipe scored:
``kospeech transcribe DIR a.wav``, ``kospeech.load(DIR)``, ``kospeech serve DIR``, and
``kospeech export DIR --out ONNX_DIR`` for the torch-free runtime. The recipes' last stage writes
``exp/<run>/package/``. ``--out`` is replaced only when it is an earlier package (or empty).
"""

from __future__ import annotations

import argparse

from kospeech.cli import add_search_arguments


def pack(args: argparse.Namespace) -> int:
    from kospeech.cli import search_choice
    from kospeech.inference.pack import write_package

    search, options = search_choice(args)
    out = write_package(args.checkpoint, args.out, search=search, options=options, name=args.name,
                        scores=args.scores)
    print(f"wrote the package {out}: kospeech transcribe {out} a.wav")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "pack",
        parents=[parent],
        help="make a model package: checkpoint + decoding + LM + model card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint .pt (or an exp dir: its checkpoints/last.pt)")
    add_search_arguments(p)
    p.add_argument("--scores", nargs="*", default=[], metavar="DECODE_DIR",
                   help="decode dirs scored with this decoding (kospeech score): their CERs go into the card")
    p.add_argument("--name", default=None, help="the model's name (default: the run's folder name)")
    p.add_argument("--out", required=True, help="the package folder to write")
    p.set_defaults(func=pack)
