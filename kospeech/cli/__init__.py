"""The ``kospeech`` console script: one sub-command per module.

Each sub-command lives in ``kospeech/cli/<name>.py`` and defines ``add_parser(subparsers,
parent)`` which registers itself and sets ``func``. Only modules that exist are offered,
so ``--help`` never lists a command that does not work.

Start-up imports neither torch nor torchaudio nor librosa (a command module imports them in its
``func``), so the light install (``pip install kospeech``: the torch-free runtime) runs
``kospeech transcribe EXPORT_DIR``; a command that needs a package of an extra which is missing
says in one line what to install (:func:`missing_extra`).
"""

from __future__ import annotations

import argparse
import errno
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
    "pack",
    "export",
    "serve",
)

#: top-level module -> (what to call it, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "train"),
    "torchaudio": ("torchaudio", "train"),
    "librosa": ("librosa", "train"),
    "matplotlib": ("matplotlib", "train"),
    "onnx": ("onnx", "export"),
    "flask": ("Flask", "serve"),
    "werkzeug": ("Flask", "serve"),
    "kenlm": ("KenLM", "lm"),
    "tensorboard": ("TensorBoard", "tensorboard"),
    "pytorch_optimizer": ("pytorch-optimizer", "optim"),
}


def missing_extra(err: ImportError, command: str) -> str | None:
    """One line for a package of an extra that is not installed (None for any other import error):
    ``kospeech train needs PyTorch: pip install 'kospeech[train]'``."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    if not isinstance(err, ModuleNotFoundError) or name not in EXTRAS:
        return None
    what, extra = EXTRAS[name]
    if command == "export" and extra == "train":
        extra = "export"  # [export] holds [train] and onnx: one install, not two
    hint = ""
    if extra == "train" and command == "transcribe":
        hint = " (an export dir, `kospeech export`, decodes without it)"
    return f"kospeech {command} needs {what}: pip install 'kospeech[{extra}]'{hint}"


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (``--batch-size 0`` was a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_chunk_size_argument(p: argparse.ArgumentParser) -> None:
    """``--chunk-size FRAMES``, one text for decode, transcribe and serve (``kospeech.load(..., chunk_size=)``)."""
    p.add_argument("--chunk-size", type=int, default=None, metavar="FRAMES",
                   help="decode a Conformer with chunk-wise attention of FRAMES encoder frames (16 at 40 ms: "
                   "640 ms; 0: full context) instead of its model.encoder.decode_chunk_size")


def add_vad_arguments(p: argparse.ArgumentParser) -> None:
    """``--vad`` and ``--vad-model``, one text for transcribe and serve (``transcribe(vad=, vad_model=)``)."""
    p.add_argument("--vad", choices=("energy", "silero"), default=None,
                   help="how long audio is cut: energy (default: at quiet stretches) or silero (its VAD network's "
                   "speech regions; needs pip install 'kospeech[vad]')")
    p.add_argument("--vad-model", default=None, metavar="ONNX",
                   help="a silero v5+ VAD .onnx file instead of the installed one (implies --vad silero)")


def add_search_arguments(p: argparse.ArgumentParser, *, search_takes_options: bool = False) -> None:
    """The one CLI shape for a decoding, shared by transcribe, decode, serve and pack:
    ``--search NAME``, ``-o KEY=VALUE`` (repeatable) and ``--lm DIR``."""
    if search_takes_options:  # decode's older spelling: --search NAME k=v ...
        p.add_argument("--search", nargs="+", default=None, metavar=("NAME", "KEY=VALUE"),
                       help="registered search (kospeech registry list search), optionally followed by its options")
    else:
        p.add_argument("--search", default=None, metavar="NAME",
                       help="registered search name (default: the model's own decoding: a package's, the "
                       "checkpoint's decode.search, else the best for the model's heads)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="search option, e.g. -o beam_size=10 -o lm_weight=0.8; repeatable")
    p.add_argument("--lm", default=None, metavar="PATH",
                   help="language model for shallow fusion (lm.arpa, lm.pt or their folder); a greedy search "
                   "becomes its beam search, and without -o lm_weight=W the weight is 0.5")
    p.add_argument("--hotwords", default=None, metavar="FILE",
                   help="words and names to favour (one per line; CTC prefix beam), weight -o hotword_weight=W "
                   "per token (default 1.0); replaces a package's list")


def search_choice(args: argparse.Namespace, extra: Sequence[str] = ()) -> tuple[str | None, dict[str, object]]:
    """(search name or None, options) from :func:`add_search_arguments`'s options and ``key=value`` words."""
    from kospeech.config import parse_override
    from kospeech.errors import ConfigError

    search = args.search
    words = list(extra) + list(args.option)
    if isinstance(search, list):
        search, words = search[0], [*search[1:], *words]
    options: dict[str, object] = {}
    for text in words:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ConfigError(f"search option '{text}' must be a plain key=value (for example beam_size=10)")
        if keys[0] == "name":
            raise ConfigError(f"search option '{text}': choose the search with --search NAME")
        options[keys[0]] = value
    if args.lm:
        options["lm"] = args.lm
    if getattr(args, "hotwords", None):
        from kospeech.inference.engine import read_hotwords

        options["hotwords"] = read_hotwords(args.hotwords)
    return search, options


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
    # the common options are also taken before the command (`kospeech -v registry list`); their own
    # dests, because a sub-command's defaults would overwrite what the top level parsed
    parser.add_argument("-v", "--verbose", dest="top_verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--user-dir", dest="top_user_dir", action="append", default=[], metavar="DIR", help="plugin folder; repeatable"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parent = common_parser()
    for name in COMMANDS:
        mod_name = f"kospeech.cli.{name}_cmd"
        if importlib.util.find_spec(mod_name) is None:
            continue
        importlib.import_module(mod_name).add_parser(sub, parent)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args`` where a command's trailing positionals may sit between options.

    argparse fills a ``nargs="*"`` positional from one run of words only, so
    ``train --config c.yaml seed=3 --exp-dir e seed=4`` left ``seed=4`` unrecognised; a command
    that names its list in ``set_defaults(extra_positionals=DEST)`` gets such words appended, in
    order (`transcribe CKPT a.wav --search beam beam_size=4` alike). Anything else that looks like
    an option is still an error. ``-v``/``--user-dir`` count before the command too.
    """
    args, extra = parser.parse_known_args(argv)
    target = getattr(args, "extra_positionals", None)
    if extra and target and not any(e.startswith("-") and e != "-" for e in extra):
        setattr(args, target, [*getattr(args, target), *extra])
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.verbose = bool(getattr(args, "verbose", False) or args.top_verbose)
    args.user_dir = [*args.top_user_dir, *getattr(args, "user_dir", [])]
    return args


def _os_error(err: OSError) -> str:
    """One line for a failed file operation; a full disk says that finished files are intact."""
    where = f": {err.filename}" if err.filename else ""
    text = f"{err.strerror or err}{where}"
    if err.errno == errno.ENOSPC:
        text += "; files written before are intact (every output goes to a temporary name first): free space and rerun"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from kospeech.registry import load_plugins

    name = f"kospeech {args.command}"
    try:
        try:
            load_plugins(args.user_dir)
        except ModuleNotFoundError as err:
            # the light install: the built-in components need torch, an export dir does not; a
            # command that needs them fails below with the line that says what to install
            if missing_extra(err, args.command) is None:
                raise
            log = logging.getLogger(__name__)
            (log.warning if args.user_dir else log.debug)("plugins not loaded (%s is not installed)", err.name)
        return int(args.func(args) or 0)
    except ModuleNotFoundError as err:
        line = missing_extra(err, args.command)
        if line is None:
            raise
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(line, file=sys.stderr)
        return 1
    except (KoSpeechError, FileNotFoundError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        logging.getLogger(__name__).debug("traceback", exc_info=True)
        print(f"{name}: error: {_os_error(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resume = " (`--resume` continues from the last one)" if args.command == "train" else ""
        print(
            f"{name}: interrupted; files already written are intact: every output, checkpoints included, "
            f"is written to a temporary name and renamed{resume}",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
