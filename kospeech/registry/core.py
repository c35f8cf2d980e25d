"""One registry per component kind, and the `register` / `build` pair every config goes through.

Building is two passes on purpose: the whole config tree is validated against constructor
signatures first (unknown and missing arguments, types from the hints, nested components), so
a typo deep in a YAML file fails in milliseconds with its key path, before any tensor exists.
"""

from __future__ import annotations

import difflib
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from kospeech.errors import ConfigError, KoSpeechError, RegistryError

KINDS: tuple[str, ...] = (
    "extractor",
    "encoder",
    "attention",
    "decoder",
    "loss",
    "scheduler",
    "optimizer",
    "tokenizer",
    "frontend",
    "augment",
    "model",
    "search",
    "corpus",
    "lm",
)


@dataclass(frozen=True)
class SubComponent:
    """Marks a constructor argument that holds a nested component config of ``kind``.

    ``provided`` lists arguments the parent passes itself (for example the input size an
    attention learns from its decoder); the config must not set them and need not.
    """

    kind: str
    provided: tuple[str, ...] = ()


def component(kind: str, *provided: str) -> Any:
    """Type hint for an argument that is a nested ``{name: ..., **kwargs}`` config of ``kind``."""
    return Annotated[Mapping[str, Any], SubComponent(kind, tuple(provided))]


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str
    obj: Callable[..., Any]

    @property
    def module(self) -> str:
        return getattr(self.obj, "__module__", "?")

    @property
    def qualname(self) -> str:
        return getattr(self.obj, "__qualname__", repr(self.obj))

    def doc(self) -> str:
        return inspect.getdoc(self.obj) or "(no docstring)"

    def parameters(self) -> list[inspect.Parameter]:
        """Keyword parameters that make up this component's YAML schema."""
        params = []
        for p in _signature(self.obj).parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            params.append(p)
        return params


def _signature(obj: Callable[..., Any]) -> inspect.Signature:
    target = obj.__init__ if inspect.isclass(obj) else obj
    return inspect.signature(target)


def _hints(obj: Callable[..., Any]) -> dict[str, Any]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: skip type checks, keep the rest
        return {}


class Registry:
    """Names -> constructors for one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: Callable[..., Any], *, override: bool = False) -> None:
        if name in self._entries and not override:
            old = self._entries[name]
            raise RegistryError(
                f"{self.kind} '{name}' is already registered by {old.module}.{old.qualname}; "
                f"pass override=True to @register to replace it on purpose"
            )
        self._entries[name] = Entry(name, self.kind, obj)

    def names(self) -> list[str]:
        _ensure_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        _ensure_builtins()
        return name in self._entries

    def get(self, name: str, *, path: str | None = None) -> Entry:
        _ensure_builtins()
        if name in self._entries:
            return self._entries[name]
        where = f" (at '{path}.name')" if path else ""
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        known = ", ".join(self.names()) or "(none)"
        raise RegistryError(f"unknown {self.kind} '{name}'{where}.{hint} Registered {self.kind}s: {known}")


def _ensure_builtins() -> None:
    """Built-in components register on import; import them the first time a name is looked up."""
    from kospeech.registry.plugins import load_builtins

    load_builtins()


REGISTRIES: dict[str, Registry] = {kind: Registry(kind) for kind in KINDS}


def registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        close = difflib.get_close_matches(kind, KINDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RegistryError(f"unknown component kind '{kind}'.{hint} Kinds: {', '.join(KINDS)}")
    return REGISTRIES[kind]


def register(kind: str, name: str, *, override: bool = False) -> Callable[[Any], Any]:
    """Class or factory decorator: ``@register("attention", "gaussian")``."""

    def deco(obj: Any) -> Any:
        registry(kind).register(name, obj, override=override)
        return obj

    return deco


# ---------------------------------------------------------------------------------------------
# validation

# Old spellings of options, accepted for a while with a warning: a config key on the left is
# read as the one on the right by any component whose constructor takes the new name only.
RENAMED_OPTIONS: dict[str, str] = {"heads": "num_heads", "out_dim": "output_dim"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(value: Any, tp: Any) -> bool:
    """Does a YAML value fit a type hint? Unknown hint shapes are accepted, never guessed."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return _check_type(value, args[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_check_type(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(args) == len(value) and all(_check_type(v, a) for v, a in zip(value, args))
        return all(_check_type(v, args[0]) for v in value)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return isinstance(value, Mapping)
    if inspect.isclass(tp):
        return isinstance(value, tp)
    return True


def _sub_component(hint: Any) -> SubComponent | None:
    if typing.get_origin(hint) is Annotated:
        for meta in typing.get_args(hint)[1:]:
            if isinstance(meta, SubComponent):
                return meta
    return None


def _renamed(cfg: Mapping[str, Any], params: Mapping[str, inspect.Parameter], path: str) -> dict[str, Any]:
    """``cfg`` with the old spellings of :data:`RENAMED_OPTIONS` replaced, each with a warning."""
    out = dict(cfg)
    for old, new in RENAMED_OPTIONS.items():
        if old not in out or old in params or new not in params:
            continue
        if new in out:
            raise RegistryError(f"'{path}' sets both '{old}' and '{new}'; '{old}' is the old spelling, remove it")
        warnings.warn(f"{path}.{old} is deprecated; write {new}", FutureWarning, stacklevel=2)
        out = {(new if k == old else k): v for k, v in out.items()}
    return out


def validate(
    kind: str, cfg: Mapping[str, Any], *, path: str = "", provided: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check a component config (and every nested one) without constructing anything.

    Returns the config with old option spellings (:data:`RENAMED_OPTIONS`) renamed, nested
    configs included; each old spelling is reported once, by its key path.
    """
    path = path or kind
    if not isinstance(cfg, Mapping):
        raise RegistryError(f"'{path}' must be a mapping with a 'name' key, got {type(cfg).__name__}: {cfg!r}")
    if "name" not in cfg:
        raise RegistryError(
            f"'{path}' has no 'name'; choose one of the registered {kind}s: {', '.join(registry(kind).names())}"
        )
    entry = registry(kind).get(str(cfg["name"]), path=path)
    params = {p.name: p for p in entry.parameters()}
    cfg = _renamed(cfg, params, path)
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in _signature(entry.obj).parameters.values())
    hints = _hints(entry.obj)
    label = f"{kind} '{entry.name}' ({entry.module}.{entry.qualname})"
    for key, value in cfg.items():
        if key == "name":
            continue
        key_path = f"{path}.{key}"
        if key in provided:
            raise RegistryError(
                f"'{key_path}': {label} gets '{key}' from its parent component; remove it from the config"
            )
        if key not in params:
            if accepts_kwargs:
                continue
            close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"unknown argument '{key}' for {label} at '{key_path}'.{hint} "
                f"Accepted: {', '.join(params) or '(none)'}"
            )
        hint_tp = hints.get(key, params[key].annotation)
        sub = _sub_component(hint_tp)
        if sub is not None:
            if value is not None:
                cfg[key] = validate(sub.kind, value, path=key_path, provided=sub.provided)
            continue
        if not _check_type(value, hint_tp):
            raise RegistryError(
                f"'{key_path}' = {value!r} ({type(value).__name__}) does not match the type "
                f"{_type_name(hint_tp)} that {label} expects for '{key}'"
            )
    missing = [
        n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in cfg and n not in provided
    ]
    if missing:
        raise RegistryError(
            f"{label} at '{path}' is missing required argument(s): "
            + ", ".join(f"'{path}.{m}'" for m in missing)
        )
    # defaults that are nested components are validated too, so a bad default fails early
    for name, p in params.items():
        sub = _sub_component(hints.get(name, p.annotation))
        if sub is not None and name not in cfg and isinstance(p.default, Mapping):
            validate(sub.kind, p.default, path=f"{path}.{name}", provided=sub.provided)
    return cfg


def build(kind: str, cfg: Mapping[str, Any], *, path: str = "", **provided: Any) -> Any:
    """Validate ``cfg`` (recursively) and construct the component.

    ``provided`` are arguments the caller supplies from code (dimensions known only at run
    time); nested component configs are passed through as mappings, for the parent to build
    with its own ``provided`` values.
    """
    path = path or kind
    cfg = validate(kind, cfg, path=path, provided=tuple(provided))
    entry = registry(kind).get(str(cfg["name"]), path=path)
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    kwargs.update(provided)
    try:
        return entry.obj(**kwargs)
    except KoSpeechError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:
        # a value of the right type that the component cannot use (dropout 1.5, a zero width):
        # one line naming the config path, not a traceback from deep inside torch
        given = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k != "name" and not isinstance(v, Mapping))
        raise ConfigError(
            f"'{path}': {kind} '{entry.name}' cannot be built with {given or 'its defaults'}: {err}"
        ) from None
