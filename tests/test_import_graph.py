"""The package's import graph has no loops and its ground floor stays the ground floor.

The graph is read from the source with ``ast``, not by importing: every ``import`` and
``from ... import`` counts, at module level or inside a function (a function-local import is a
loop that only waits for its first call), relative imports are resolved, and ``from pkg import
name`` points at the submodule ``pkg.name`` where there is one, else at ``pkg`` itself.
Importing ``kospeech.a.b`` runs the ``__init__`` files above it too, but those implicit edges
are left out: they are the package layout, not a dependency of the module.

One exception is intended: the package root's lazy ``kospeech.load`` (``kospeech/__init__.py``
resolves the inference front door on first use), so edges out of the root ``kospeech`` into
``kospeech.inference*`` are dropped (:func:`allowed_edge`).

Run it alone: ``python -m pytest -q tests/test_import_graph.py``; it reads the files and imports none of them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = "kospeech"
SRC_ROOT = Path(__file__).resolve().parents[1]

KNOWN_LOOPS: list[frozenset[str]] = []
"""Loops that are known and owned elsewhere, each as the exact set of modules in it."""

GROUND_FLOOR: dict[str, frozenset[str]] = {
    "kospeech.errors": frozenset(),
    "kospeech.files": frozenset({"kospeech.errors"}),
    "kospeech.torch_files": frozenset({"kospeech.errors", "kospeech.files"}),
}
"""The lowest modules and all they may import of the package: every layer reads and writes files
through them, so one import upward would pull a higher layer (and maybe torch) into all."""


def allowed_edge(source: str, target: str) -> bool:
    """The one intended edge that may close a loop: the root's lazy ``kospeech.load`` into the
    inference front door (the root imports it on first use, never at import time)."""
    return source == PACKAGE and (target == f"{PACKAGE}.inference" or target.startswith(f"{PACKAGE}.inference."))


def find_modules(src_root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``src_root``."""
    modules = {}
    for path in sorted((src_root / package).rglob("*.py")):
        parts = path.relative_to(src_root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module that ``name`` (a module, or a name inside one) lives in: its longest known prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterable[str]:
    """The dotted names an import statement in ``module`` reaches, relative ones made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]  # level 1: this package
        up = here[: len(here) - node.level + 1]
        base = ".".join([*up, base] if base else up)
    # ``from pkg import name``: the submodule pkg.name where there is one (resolved by the caller)
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def build_graph(src_root: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its file (allowed edges dropped)."""
    modules = find_modules(src_root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):  # every node: function-local imports count
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _imported_names(node, module, is_package):
                target = _owner(name, modules)
                if target is not None and target != module and not allowed_edge(module, target):
                    graph[module].add(target)
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[frozenset[str]]:
    """The loops: components of more than one module that all reach each other (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def a_cycle(graph: Mapping[str, Iterable[str]], component: frozenset[str]) -> list[str]:
    """One concrete cycle through a loop, first module repeated at the end (what to read to fix it)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {sorted(component)}")  # pragma: no cover (a component has one)


def describe(graph: Mapping[str, Iterable[str]], loops: Iterable[frozenset[str]]) -> str:
    return "\n".join(f"  {' -> '.join(a_cycle(graph, loop))}   (loop of {len(loop)}: {sorted(loop)})"
                     for loop in loops)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return build_graph(SRC_ROOT, PACKAGE)


def test_the_graph_reads_the_package(graph: dict[str, set[str]]) -> None:
    """Edges the checks rely on are seen: module level, function-local, and ``from pkg import sub``."""
    assert len(graph) > 100
    assert "kospeech.torch_files" in graph["kospeech.lm.model"]  # module level
    assert "kospeech.registry.plugins" in graph["kospeech.registry.core"]  # inside _ensure_builtins
    assert "kospeech.lm.train" in graph["kospeech.lm.loading"]  # inside perplexity
    assert "kospeech.inference" not in graph["kospeech"]  # the lazy kospeech.load, allowed


def test_no_import_loops(graph: dict[str, set[str]]) -> None:
    new = [loop for loop in strongly_connected(graph) if loop not in KNOWN_LOOPS]
    assert not new, "import loops between modules (move what both need into a module below both):\n" + describe(
        graph, new
    )


def test_known_loops_are_still_loops(graph: dict[str, set[str]]) -> None:
    loops = strongly_connected(graph)
    gone = [sorted(known) for known in KNOWN_LOOPS if known not in loops]
    assert not gone, f"KNOWN_LOOPS entries that are no longer exactly a loop; remove (or update) them: {gone}"


@pytest.mark.parametrize("module", sorted(GROUND_FLOOR))
def test_the_ground_floor_imports_nothing_above_it(graph: dict[str, set[str]], module: str) -> None:
    upward = sorted(graph[module] - GROUND_FLOOR[module])
    allowed = sorted(GROUND_FLOOR[module]) or "nothing"
    assert not upward, f"{module} may import only {allowed} of kospeech, but imports {upward}"


def test_the_checker_finds_a_loop_and_resolves_imports(tmp_path: Path) -> None:
    """On a small package: relative imports, ``from pkg import sub``, a function-local import that
    closes a loop, a name (not a submodule) imported from a package, and the path it prints."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "sub" / "__init__.py").write_text("from .low import VALUE\n", encoding="utf-8")
    (pkg / "sub" / "low.py").write_text("VALUE = 1\n", encoding="utf-8")
    (pkg / "a.py").write_text("from toy.sub import low\nfrom . import b\n", encoding="utf-8")
    (pkg / "b.py").write_text("def f():\n    from .sub.deep import g\n", encoding="utf-8")
    (pkg / "sub" / "deep.py").write_text("def g():\n    from ..a import x\n    from toy.sub import VALUE\n",
                                         encoding="utf-8")
    toy = build_graph(tmp_path, "toy")
    assert toy == {
        "toy": set(),
        "toy.sub": {"toy.sub.low"},
        "toy.sub.low": set(),
        "toy.a": {"toy.sub.low", "toy.b"},
        "toy.b": {"toy.sub.deep"},
        "toy.sub.deep": {"toy.a", "toy.sub"},
    }
    loops = strongly_connected(toy)
    assert loops == [frozenset({"toy.a", "toy.b", "toy.sub.deep"})]
    assert a_cycle(toy, loops[0]) == ["toy.a", "toy.b", "toy.sub.deep", "toy.a"]
