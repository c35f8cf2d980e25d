"""``kospeech registry list [KIND]`` and ``kospeech registry show KIND NAME``."""

from __future__ import annotations

import argparse
import inspect

from kospeech.registry import KINDS, registry
from kospeech.registry.plugins import PLUGIN_ERRORS


def _format_param(p: inspect.Parameter) -> str:
    if p.default is inspect.Parameter.empty:
        return f"{p.name} (required)"
    return f"{p.name}={p.default!r}"


def list_components(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        reg = registry(kind)
        print(f"[{kind}]")
        for name in reg.names():
            entry = reg.get(name)
            params = ", ".join(_format_param(p) for p in entry.parameters())
            print(f"  {name:<24} {entry.module}.{entry.qualname}")
            if params:
                print(f"      {params}")
    for label, tb in PLUGIN_ERRORS.items():
        print(f"\nplugin failed to load: {label}\n{tb}")
    return 0


def show_component(args: argparse.Namespace) -> int:
    entry = registry(args.kind).get(args.name)
    print(f"{args.kind} '{entry.name}': {entry.module}.{entry.qualname}\n")
    print(entry.doc())
    print("\nArguments:")
    for p in entry.parameters():
        print(f"  {_format_param(p)}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("registry", help="list and show registered components")
    rsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    lp = rsub.add_parser("list", parents=[parent], help="every registered name with its class and arguments")
    lp.add_argument("kind", nargs="?", choices=KINDS)
    lp.set_defaults(func=list_components)
    sp = rsub.add_parser("show", parents=[parent], help="one component's docstring and arguments")
    sp.add_argument("kind", choices=KINDS)
    sp.add_argument("name")
    sp.set_defaults(func=show_component)
