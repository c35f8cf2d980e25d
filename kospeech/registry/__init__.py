"""The central registry: every component is found by ``(kind, name)``.

>>> from kospeech.registry import register, build
>>> @register("attention", "gaussian")
... class GaussianAttention(torch.nn.Module): ...
"""

from kospeech.registry.core import (
    KINDS,
    REGISTRIES,
    Entry,
    Registry,
    SubComponent,
    build,
    component,
    register,
    registry,
    validate,
)
from kospeech.registry.plugins import (
    PLUGIN_ERRORS,
    load_builtins,
    load_plugins,
    load_user_dir,
)
from kospeech.registry.provenance import plugin_records, require_plugins

__all__ = [
    "KINDS",
    "REGISTRIES",
    "PLUGIN_ERRORS",
    "Entry",
    "Registry",
    "SubComponent",
    "build",
    "component",
    "load_builtins",
    "load_plugins",
    "load_user_dir",
    "plugin_records",
    "require_plugins",
    "register",
    "registry",
    "validate",
]
