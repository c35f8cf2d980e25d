"""Plugin discovery: built-in modules, ``kospeech.plugins`` entry points, ``--user-dir`` folders.

A plugin that fails to import is logged by name with its traceback and recorded in
``PLUGIN_ERRORS``; the built-ins and the other plugins stay usable.

Each loaded plugin module's origin (its ``--user-dir`` folder, or its package) is kept in
``PLUGIN_ORIGINS``; what a checkpoint records of them and checks at load lives in
:mod:`kospeech.registry.provenance`. This module only finds and imports: it needs nothing of
the registry itself, so :mod:`kospeech.registry.core` can call :func:`load_builtins` on the
first look-up without an import loop.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kospeech.plugins"
USER_DIR_ENV = "KOSPEECH_USER_DIR"

# Packages whose modules register built-in components; every module under them is imported.
BUILTIN_PACKAGES: tuple[str, ...] = (
    "kospeech.nn",
    "kospeech.models",
    "kospeech.optim",
    "kospeech.text",
    "kospeech.data",
    "kospeech.search",
    "kospeech.lm",
)

PLUGIN_ERRORS: dict[str, str] = {}
#: plugin module (or package) name -> {"user_dir": folder} or {"package": distribution, "entry_point": name}
PLUGIN_ORIGINS: dict[str, dict[str, str]] = {}
_loaded_user_dirs: set[Path] = set()
_builtins_loaded = False
_entry_points_loaded = False


def record_failure(label: str) -> None:
    """Log a plugin that failed to import, with its traceback, and keep it in ``PLUGIN_ERRORS``."""
    tb = traceback.format_exc()
    PLUGIN_ERRORS[label] = tb
    logger.error("plugin %s failed to import and was skipped:\n%s", label, tb)


def load_builtins(only: Iterable[str] | None = None) -> None:
    """Import every module of the built-in packages so their ``@register`` calls run.

    ``only``: import just these packages (e.g. ``("kospeech.nn", "kospeech.models",
    "kospeech.optim")``) and count the built-ins as loaded, for a script that builds models
    where the data and text dependencies (YAML, soundfile) may be missing: bench/train_gpu.py,
    after a full load failed. A load that fails is not counted, so it can be retried that way.
    """
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # first: a module that looks a name up while being imported must not recurse
    try:
        for pkg_name in BUILTIN_PACKAGES if only is None else tuple(only):
            if importlib.util.find_spec(pkg_name) is None:
                continue
            pkg = importlib.import_module(pkg_name)
            for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
                importlib.import_module(info.name)
    except BaseException:
        _builtins_loaded = False
        raise


def load_entry_points(*, force: bool = False) -> None:
    """Import every ``kospeech.plugins`` entry point once (``force`` re-scans, for tests)."""
    global _entry_points_loaded
    if _entry_points_loaded and not force:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
            top = ep.value.split(":")[0].strip()
            dist = getattr(getattr(ep, "dist", None), "name", None) or top.split(".")[0]
            PLUGIN_ORIGINS[top] = {"package": dist, "entry_point": ep.name}
        except Exception:
            record_failure(f"entry point '{ep.name}' ({ep.value})")


def load_user_dir(path: str | os.PathLike[str]) -> None:
    """Import a folder of .py files, or a package folder (one with ``__init__.py``)."""
    folder = Path(path).expanduser().resolve()
    if folder in _loaded_user_dirs:
        return
    if not folder.is_dir():
        raise FileNotFoundError(f"--user-dir {path}: no such folder")
    _loaded_user_dirs.add(folder)
    if (folder / "__init__.py").exists():
        parent = str(folder.parent)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        try:
            PLUGIN_ORIGINS[folder.name] = {"user_dir": str(folder)}
            importlib.import_module(folder.name)
        except Exception:
            record_failure(f"user dir package {folder}")
        return
    for py in sorted(folder.glob("*.py")):
        mod_name = f"kospeech_user_{abs(hash(str(folder)))}_{py.stem}"
        try:
            spec = importlib.util.spec_from_file_location(mod_name, py)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            PLUGIN_ORIGINS[mod_name] = {"user_dir": str(folder)}
            spec.loader.exec_module(module)
        except Exception:
            sys.modules.pop(mod_name, None)
            record_failure(f"user dir file {py}")


def load_plugins(user_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Load built-ins, entry points, ``KOSPEECH_USER_DIR`` and the given user dirs, once each."""
    load_builtins()
    load_entry_points()
    env_dirs = [d for d in os.environ.get(USER_DIR_ENV, "").split(os.pathsep) if d]
    for d in [*env_dirs, *user_dirs]:
        load_user_dir(d)
