"""The ``kospeech`` console script: one sub-command per module.

Each sub-command lives in ``kospeech/cli/<name>.py`` and defines ``add_parser(subparsers,
parent)`` which registers itself and sets ``func``. Only modules that exist are offered,
so ``--help`` never lists a command that does not work.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from kospeech.errors import KoSpeechError

COMMANDS: tuple[str, ...] = (
    "registry",
    "config",
    "data",
    "tokenizer",
    "features",
    "train",
    "average",
    "lm",
    "decode",
    "score",
    "compare",
    "transcribe",
)


def common_parser() -> argparse.ArgumentParser:
    """Options every sub-command takes: plugin folders and verbosity."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--user-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of .py files (or a package) that register extra components; repeatable",
    )
    parent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kospeech", description="Korean end-to-end speech recognition")
    from kospeech import __version__

    parser.add_argument("--version", action="version", version=f"kospeech {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = common_parser()
    for name in COMMANDS:
        mod_name = f"kospeech.cli.{name}_cmd"
        if importlib.util.find_spec(mod_name) is None:
            continue
        importlib.import_module(mod_name).add_parser(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # positionals after an option (`transcribe CKPT a.wav --search beam beam_size=4`) join the
    # command's trailing positional list, as a user expects; anything else is still an error
    target = getattr(args, "extra_positionals", None)
    if extra and target and not any(e.startswith("-") and e != "-" for e in extra):
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from kospeech.registry import load_plugins

    try:
        load_plugins(args.user_dir)
        return int(args.func(args) or 0)
    except (KoSpeechError, FileNotFoundError) as err:
        print(f"kospeech {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
