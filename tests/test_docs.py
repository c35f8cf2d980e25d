"""The documentation stays true: the README stays short, every repository path the docs name
exists, and every ``kospeech ...`` command they quote parses with today's command line.

Docs checked: the README, ``docs/*.md`` and every ``recipes/**/README.md``. Results files
(``RESULTS.md``, ``bench/README.md``) are history: they may name what has since moved.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "recipes").glob("**/README.md"))]
README_MAX_LINES = 300

# where a bare name is looked for: `las.yaml` is a recipe config, `segment.py` a module
SEARCH_DIRS = [ROOT, ROOT / "kospeech", ROOT / "recipes", *sorted(ROOT.glob("kospeech/*/")),
               *sorted(ROOT.glob("recipes/*/")),
               *sorted(ROOT.glob("recipes/*/conf/")), *sorted(ROOT.glob("recipes/*/local/")), ROOT / "bench",
               ROOT / "tests"]
REPO_TOPS = ("kospeech/", "recipes/", "bench/", "tests/", "docs/", ".ci/")
CODE_SUFFIXES = (".py", ".sh", ".md")  # a bare ``x.yaml`` may be a format's file (package.yaml), not ours


def _inline_code(text: str) -> list[str]:
    outside_fences = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", outside_fences)


def _is_repo_path(token: str) -> bool:
    """A token the docs use as a file of this repository (not an output such as ``exp/las/...``)."""
    if any(c in token for c in " <>*{}|=$[]") or token.startswith(("-", "http", "~")):
        return False
    if token.startswith(REPO_TOPS):
        return True
    if token.startswith(("data/", "exp/", "dump/", "corpus/", "onnx/", "export/", "DIR", "PKG", "EXP")):
        return False
    if "/conf/" in token or token.startswith("conf/"):
        return True
    return token.endswith(CODE_SUFFIXES) and token.count("/") <= 2 and not token[0].isupper()


def _exists(token: str, doc: Path) -> bool:
    token = token.split("::")[0].split(":")[0].rstrip("/.,")
    candidates = [doc.parent / token, *(d / token for d in SEARCH_DIRS)]
    return any(c.exists() for c in candidates)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_names_exists(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    missing = [t for t in _inline_code(text) if _is_repo_path(t) and not _exists(t, doc)]
    links = [m for m in re.findall(r"\]\(([^)#\s]+)\)", text) if not m.startswith("http")]
    missing += [f"link {m}" for m in links if not (doc.parent / m).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} names what does not exist: {missing}"


def _quoted_commands(text: str) -> list[tuple[str, bool]]:
    """``(command, runnable)``: lines of ``bash`` blocks (runnable: they must parse whole), and
    commands named in prose, inline (only their sub-command and options must exist)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("cat ") and "| kospeech " in line:
                line = line[line.index("kospeech ") :]
            if line.startswith("kospeech "):
                commands.append((re.split(r"\s+#\s", line)[0], True))
    commands += [(c, False) for c in _inline_code(text) if c.startswith("kospeech ")]
    return commands


def _as_argv(command: str) -> list[str] | None:
    """The words of a quoted command, with optional ``[...]`` groups dropped and ``a|b`` alternatives
    taken as their first; None for a fragment that is not a whole command (``kospeech decode ...``)."""
    command = re.sub(r"\[[^\[\]]*\]", "", re.sub(r"\[[^\[\]]*\]", "", command))  # nested [--fix [--force]]
    if "..." in command or command.rstrip().endswith("\\"):
        return None
    try:
        words = shlex.split(command)[1:]
    except ValueError:
        return None
    return [w.split("|")[0] if "|" in w and not w.startswith(("http", "'")) else w for w in words]


def _commands() -> list[tuple[str, str, bool]]:
    out = []
    for doc in DOCS:
        for command, runnable in _quoted_commands(doc.read_text(encoding="utf-8")):
            out.append((str(doc.relative_to(ROOT)), command, runnable))
    return out


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    from kospeech.cli import build_parser

    return build_parser()


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser of the deepest sub-command the words name, and the words it was named by."""
    path = []
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        path.append(word)
    return parser, path


def test_docs_quote_commands() -> None:
    # the checks below are only worth something while they find commands to check
    found = _commands()
    assert len(found) >= 30 and sum(runnable for *_, runnable in found) >= 15


@pytest.mark.parametrize(("doc", "command", "runnable"), _commands())
def test_every_quoted_command_parses(doc: str, command: str, runnable: bool) -> None:
    from kospeech.cli import parse_args

    words = shlex.split(re.sub(r"[\[\]]", " ", command), posix=True)[1:] if "'" not in command else command.split()[1:]
    parser, path = _subparser(_parser(), words)
    assert path, f"{doc}: `{command}` names no kospeech command"
    options = {o for a in parser._actions for o in a.option_strings}
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in options]
    assert not unknown, f"{doc}: `{command}`: `kospeech {' '.join(path)}` has no option {unknown}"
    argv = _as_argv(command)
    if runnable and argv is not None:
        try:
            parse_args(_parser(), argv)
        except SystemExit as exit_:
            pytest.fail(f"{doc}: `{command}` does not parse (exit {exit_.code})")


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines; details go to docs/, results to RESULTS.md"
