"""YAML configs: inheritance through ``extends:``, dotted CLI overrides, and saving what ran.

A config may name a base file (or a list of them) under ``extends:``; paths are relative to
the file that names them. Bases merge first, in order, then the file itself, then the
command-line overrides ``a.b.c=value`` (values typed by YAML rules: ``3`` is an int, ``true``
a bool, ``[1, 2]`` a list, ``null`` None). Mappings merge key by key; any other value
replaces; a mapping with ``_replace_: true`` inside replaces its base's mapping whole (to
swap, say, one attention for another without inheriting the old one's arguments).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from kospeech.errors import ConfigError
from kospeech.files import read_yaml, yaml_load

EXTENDS_KEY = "extends"
REPLACE_KEY = "_replace_"


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, everything else in ``update`` wins."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and value.get(REPLACE_KEY):
            out[key] = {k: copy.deepcopy(v) for k, v in value.items() if k != REPLACE_KEY}
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(path: str | Path, overrides: Iterable[str] = (), *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load ``path`` with its ``extends:`` bases resolved, then apply dotted overrides."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"config inheritance cycle: {cycle}")
    data = read_yaml(path)
    bases = data.pop(EXTENDS_KEY, None) or []
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: '{EXTENDS_KEY}' must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge(merged, load_config(path.parent / base, _chain=(*_chain, path)))
    merged = merge(merged, data)
    return apply_overrides(merged, overrides)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.path=value (for example train.max_epochs=3)")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override '{text}': empty key in '{key}'")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML: {err}") from None
    return keys, value


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(cfg))
    for text in overrides:
        keys, value = parse_override(text)
        node: dict[str, Any] = out
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            elif not isinstance(nxt, dict):
                where = ".".join(keys[: i + 1])
                raise ConfigError(f"override '{text}': '{where}' is a {type(nxt).__name__}, not a mapping")
            node = nxt
        node[keys[-1]] = value
    return out


def dump_config(cfg: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(cfg), allow_unicode=True, sort_keys=False)


def save_config(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write the resolved config atomically, so a crash never leaves half a file beside a model."""
    from kospeech.files import write_atomic

    return write_atomic(path, dump_config(cfg))


def get_path(cfg: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for k in dotted.split("."):
        if not isinstance(node, Mapping) or k not in node:
            return default
        node = node[k]
    return node
