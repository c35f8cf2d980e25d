"""Plugin discovery: built-in modules, ``kospeech.plugins`` entry points, ``--user-dir`` folders.

A plugin that fails to import is logged by name with its traceback and recorded in
``PLUGIN_ERRORS``; the built-ins and the other plugins stay usable.

Each loaded plugin module's origin (its ``--user-dir`` folder, or its package) is kept in
``PLUGIN_ORIGINS``, so that a checkpoint can record which plugin modules built its components
(:func:`plugin_records`, the metadata block's ``plugins``) and decoding can say exactly what to
load when one is missing (:func:`require_plugins`). A recorded folder is imported only on an
explicit opt-in (``trust_plugins``): a shared checkpoint must never run code by itself.
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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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


def _record_failure(label: str) -> None:
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
            _record_failure(f"entry point '{ep.name}' ({ep.value})")


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
            _record_failure(f"user dir package {folder}")
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
            _record_failure(f"user dir file {py}")


def load_plugins(user_dirs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Load built-ins, entry points, ``KOSPEECH_USER_DIR`` and the given user dirs, once each."""
    load_builtins()
    load_entry_points()
    env_dirs = [d for d in os.environ.get(USER_DIR_ENV, "").split(os.pathsep) if d]
    for d in [*env_dirs, *user_dirs]:
        load_user_dir(d)


# ---- what built a checkpoint, and what decoding it needs -----------------------------------

#: config keys whose component kind is not the key itself
_KEY_KINDS = {"predictor": "decoder"}


def _is_builtin(module: str) -> bool:
    return module == "kospeech" or module.startswith("kospeech.")


def plugin_origin(module: str) -> dict[str, str]:
    """Where a plugin module came from: its --user-dir folder, or the package to install."""
    for name, origin in PLUGIN_ORIGINS.items():
        if module == name or module.startswith(name + "."):
            return dict(origin)
    return {"package": module.split(".")[0]}  # imported by the user's own code: its top package


def plugin_records(config: Any, extra: Iterable[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """One ``{kind, name, module, user_dir | package}`` per plugin component that ``config``
    (a resolved training config) or ``extra`` ``(kind, name)`` pairs name; built-ins are left out.

    A component is a mapping with a ``name`` under a key that is its kind (``attention``,
    ``encoder``, ``model``, ...; list items under ``augment``); a name under another key is
    looked up in every kind.
    """
    from kospeech.registry.core import KINDS, REGISTRIES

    found: dict[tuple[str, str], dict[str, str]] = {}

    def note(kind: str, name: str) -> None:
        reg = REGISTRIES.get(kind)
        if reg is None or name not in reg:
            return
        entry = reg.get(name)
        if not _is_builtin(entry.module):
            found[(kind, name)] = {"kind": kind, "name": name, "module": entry.module, **plugin_origin(entry.module)}

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, Mapping):
            name = node.get("name")
            if isinstance(name, str) and key is not None:
                kind = _KEY_KINDS.get(key, key)
                for k in [kind] if kind in KINDS else KINDS:
                    note(k, name)
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item, key)

    walk(config, None)
    for kind, name in extra:
        note(kind, name)
    return sorted(found.values(), key=lambda r: (r["kind"], r["name"]))


def require_plugins(records: Any, source: str, *, trust_plugins: bool = False) -> None:
    """Make sure every plugin component a checkpoint recorded is registered, else say what to load.

    Entry points and ``KOSPEECH_USER_DIR`` are loaded first (as the CLI does). With
    ``trust_plugins`` a recorded ``--user-dir`` folder (or package) is imported; without it
    nothing is, and a missing component is a ConfigError naming the component, its module and
    the exact ``--user-dir PATH`` (or package) to pass.
    """
    from kospeech.errors import ConfigError
    from kospeech.registry.core import REGISTRIES

    load_plugins()
    if not isinstance(records, list):
        return
    records = [r for r in records if isinstance(r, Mapping) and r.get("kind") in REGISTRIES and r.get("name")]

    def missing() -> list[Mapping[str, Any]]:
        return [r for r in records if r["name"] not in REGISTRIES[r["kind"]]]

    if missing() and trust_plugins:
        for r in missing():
            folder = r.get("user_dir")
            if folder and Path(folder).is_dir():
                logger.warning("%s: --trust-plugins: importing the recorded plugin folder %s", source, folder)
                load_user_dir(folder)
            elif not folder and r.get("package"):
                logger.warning("%s: --trust-plugins: importing the recorded plugin package %s", source, r["package"])
                try:
                    importlib.import_module(str(r["package"]))
                except Exception:
                    _record_failure(f"package {r['package']}")
    lacking = missing()
    if not lacking:
        return
    r = lacking[0]
    what = f"{source}: the model's {r['kind']} '{r['name']}' comes from the plugin module {r.get('module', '?')}"
    folder = r.get("user_dir")
    if folder:
        if trust_plugins:
            raise ConfigError(f"{what}, recorded in the folder {folder}, which does not exist here (or failed to "
                              "import, see above): pass --user-dir PATH with where that plugin lives now")
        raise ConfigError(f"{what}, which is not loaded: pass --user-dir {folder} (Python: "
                          f"kospeech.load(..., user_dirs=['{folder}'])), or --trust-plugins (trust_plugins=True) "
                          "to import the recorded folder, only if you trust this checkpoint's origin")
    package = r.get("package", "?")
    raise ConfigError(f"{what}, which is not loaded: install the package that provides it (pip install {package}) "
                      f"or pass --user-dir PATH with its source folder; --trust-plugins (trust_plugins=True) "
                      f"imports the package '{package}' if it is installed but not registered as a kospeech plugin")
