"""Checkpoint provenance: which plugin modules built a model's components, and what decoding
that model needs loaded.

A checkpoint records its plugin components (:func:`plugin_records`, the metadata block's
``plugins``) so that decoding can say exactly what to load when one is missing
(:func:`require_plugins`). A recorded folder is imported only on an explicit opt-in
(``trust_plugins``): a shared checkpoint must never run code by itself.

Apart from discovery (:mod:`kospeech.registry.plugins`) because it reads the registries
(:mod:`kospeech.registry.core`) while the registries call discovery on their first look-up:
in one module the two made an import loop; here both are below it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kospeech.errors import ConfigError
from kospeech.registry.core import KINDS, REGISTRIES
from kospeech.registry.plugins import PLUGIN_ORIGINS, load_plugins, load_user_dir, record_failure

logger = logging.getLogger(__name__)

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
                    record_failure(f"package {r['package']}")
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
