"""What a training config may hold, checked whole before any data is read.

A misspelt section (``trian:``) or data key (``data.batch_frame``) used to be ignored and
written to ``config.yaml`` as if it had been used, and a typo inside ``model:`` surfaced only
after the data had been indexed (~50 s on KsponSpeech). :func:`check_train_config` runs first:
top-level sections against the list below (with a did-you-mean), the ``data:`` and ``train:``
sections against :class:`kospeech.train.options.DataOptions` and
:class:`~kospeech.train.options.TrainOptions`, and every component
(model, optimizer, scheduler, frontend, augment, ``decode.search``) against its registered
signature, all without building anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kospeech.errors import ConfigError
from kospeech.train.options import DataOptions, TrainOptions, did_you_mean

SECTIONS: dict[str, str] = {
    "seed": "random seed of the run (int)",
    "data": "training data, tokenizer and batching (DataOptions)",
    "frontend": "waveform -> features component",
    "augment": "list of augmentation components",
    "model": "the model component",
    "optimizer": "the optimizer component",
    "scheduler": "the learning-rate scheduler component",
    "train": "the training loop (TrainOptions)",
    "decode": "the search decode uses by default ({search: {name: ...}})",
}
"""Top-level keys of a training config; a plugin that reads a section of its own adds it here."""

DECODE_KEYS: tuple[str, ...] = ("search",)


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Every key of a training config, and every component it names, before anything is read or built."""
    from kospeech.registry import validate

    sections = list(SECTIONS)
    for key in cfg:
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown config section '{key}'.{did_you_mean(str(key), sections)} Accepted: {', '.join(sections)}"
            )
    seed = cfg.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"'seed' = {seed!r} must be an int")
    DataOptions.from_config(cfg.get("data"))
    TrainOptions.from_config(cfg.get("train"))
    for key in ("model", "optimizer"):
        if not isinstance(cfg.get(key), Mapping):
            raise ConfigError(f"the config has no '{key}' section ({{name: ..., ...}})")
    validate("model", cfg["model"], path="model", provided=("input_dim", "vocab_size"))
    validate("optimizer", cfg["optimizer"], path="optimizer", provided=("params",))
    if cfg.get("scheduler"):
        validate("scheduler", cfg["scheduler"], path="scheduler", provided=("optimizer",))
    if cfg.get("frontend"):
        validate("frontend", cfg["frontend"], path="frontend")
    augment = cfg.get("augment") or []
    if not isinstance(augment, list):
        raise ConfigError("'augment' must be a list of {name: ...} mappings")
    for i, spec in enumerate(augment):
        validate("augment", spec, path=f"augment[{i}]")
    decode = cfg.get("decode")
    if decode is not None:
        if not isinstance(decode, Mapping):
            raise ConfigError(f"'decode' must be a mapping ({{search: {{name: ...}}}}), got {decode!r}")
        for key in decode:
            if key not in DECODE_KEYS:
                raise ConfigError(
                    f"unknown option 'decode.{key}'.{did_you_mean(str(key), list(DECODE_KEYS))} "
                    f"Accepted: {', '.join(DECODE_KEYS)}"
                )
        if decode.get("search") is not None:
            validate("search", decode["search"], path="decode.search", provided=("model",))
