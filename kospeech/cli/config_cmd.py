"""``kospeech config show --config X [a.b=c ...]``: the config a run would use, resolved."""

from __future__ import annotations

import argparse

from kospeech.config import dump_config, load_config


def show(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", help="show a resolved config")
    csub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sp = csub.add_parser("show", parents=[parent], help="print the config after extends: and overrides")
    sp.add_argument("--config", required=True)
    sp.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    sp.set_defaults(func=show, extra_positionals="overrides")
