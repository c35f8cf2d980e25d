"""What a training config may hold, checked whole before any data is read.

A misspelt section (``trian:``) or data key (``data.batch_frame``) used to be ignored and
written to ``config.yaml`` as if it had been used, and a typo inside ``model:`` surfaced only
after the data had been indexed (~50 s on KsponSpeech). :func:`check_train_config` runs first:
top-level sections and ``data:`` keys against the lists below (with a did-you-mean), the
``train:`` section against :class:`kospeech.train.options.TrainOptions`, and every component
(model, optimizer, scheduler, frontend, augment, ``decode.search``) against its registered
signature, all without building anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping
from typing import Any

from kospeech.errors import ConfigError

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


@dataclasses.dataclass
class DataOptions:
    """The ``data:`` section of a training config.

    Args:
        train: feature dump (``kospeech features dump``) or Kaldi data dir of the training set.
        valid: the same for the validation set (optional: no validation CER, no best.pt).
        lang: tokenizer dir (``kospeech tokenizer train``).
        cmvn: ``cmvn.npz`` (default: ``<train>/cmvn.npz`` for a dump, computed for a data dir).
        batch_frames: padded feature frames per batch.
        max_frames: longer utterances are left out of training (counted).
        min_frames: shorter utterances are left out of training (counted); default: the fewest
            frames the model's front end accepts (7 for x4 convolution subsampling).
        num_buckets: length buckets of the batch sampler.
        sample_rate: audio sample rate when the frontend does not say.
    """

    train: str = ""
    valid: str | None = None
    lang: str = ""
    cmvn: str | None = None
    batch_frames: int = 20000
    max_frames: int | None = None
    min_frames: int | None = None
    num_buckets: int = 10
    sample_rate: int = 16000


def _did_you_mean(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_section(section: Any, cls: type, prefix: str) -> dict[str, Any]:
    """Check a mapping against a dataclass's fields and their types; unknown keys get a did-you-mean."""
    from kospeech.registry.core import _check_type, _type_name

    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"'{prefix}' must be a mapping of options, got {type(section).__name__}: {section!r}")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    for key, value in section.items():
        if key not in fields:
            raise ConfigError(
                f"unknown option '{prefix}.{key}'.{_did_you_mean(str(key), fields)} Accepted: {', '.join(fields)}"
            )
        if not _check_type(value, hints[key]):
            raise ConfigError(f"'{prefix}.{key}' = {value!r} must be a {_type_name(hints[key])}")
    return dict(section)


def check_data_section(section: Any) -> DataOptions:
    """The ``data:`` section as :class:`DataOptions`; types, ranges and the required keys checked."""
    if section is None:
        raise ConfigError("the config has no 'data' section (data.train, data.valid, data.lang, ...)")
    opts = DataOptions(**check_section(section, DataOptions, "data"))
    for key in ("train", "lang"):
        if not getattr(opts, key):
            raise ConfigError(f"'data.{key}' is required")
    for key, low in (("batch_frames", 1), ("num_buckets", 1), ("max_frames", 1), ("min_frames", 0),
                     ("sample_rate", 1)):
        value = getattr(opts, key)
        if value is not None and value < low:
            raise ConfigError(f"'data.{key}' must be >= {low}, got {value}")
    if opts.max_frames is not None and opts.min_frames is not None and opts.min_frames > opts.max_frames:
        raise ConfigError(f"'data.min_frames' ({opts.min_frames}) is larger than 'data.max_frames' ({opts.max_frames})")
    return opts


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """Every key of a training config, and every component it names, before anything is read or built."""
    from kospeech.registry import validate
    from kospeech.train.options import TrainOptions

    sections = list(SECTIONS)
    for key in cfg:
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown config section '{key}'.{_did_you_mean(str(key), sections)} Accepted: {', '.join(sections)}"
            )
    seed = cfg.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"'seed' = {seed!r} must be an int")
    check_data_section(cfg.get("data"))
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
                    f"unknown option 'decode.{key}'.{_did_you_mean(str(key), list(DECODE_KEYS))} "
                    f"Accepted: {', '.join(DECODE_KEYS)}"
                )
        if decode.get("search") is not None:
            validate("search", decode["search"], path="decode.search", provided=("model",))
