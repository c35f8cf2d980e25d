"""Rebuilding a trained model, its tokenizer and its input pipeline from one checkpoint file.

A checkpoint holds the resolved config, the weights, the tokenizer's files and the CMVN
statistics (see :mod:`kospeech.train.checkpoint`), so this is all decoding ever needs. The
input pipeline is built exactly as the trainer builds it (:class:`kospeech.data.inputs.InputPipeline`
from the config's ``frontend`` and the checkpoint's CMVN), so audio decodes as it trained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kospeech.data.inputs import InputPipeline, resolve_device
from kospeech.errors import ConfigError, DataError, RegistryError

logger = logging.getLogger(__name__)


@dataclass
class InferenceBundle:
    """Everything decoding needs, rebuilt from one checkpoint.

    ``inputs`` turns waves (or dumped features) into model input as in training; ``model`` is
    in eval mode on ``inputs.device``; ``metadata`` is the checkpoint's metadata block.
    """

    model: nn.Module
    tokenizer: Any
    inputs: InputPipeline
    config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def frontend(self) -> nn.Module | None:
        return self.inputs.frontend

    @property
    def cmvn(self) -> nn.Module | None:
        return self.inputs.cmvn

    @property
    def device(self) -> torch.device:
        return self.inputs.device


def build_model_from_checkpoint(ckpt: Mapping[str, Any]) -> nn.Module:
    """The registered model a checkpoint's config names, with the checkpoint's weights."""
    from kospeech.registry import build

    cfg = ckpt["config"]
    args = ckpt["model_args"]
    if "model" not in cfg:
        raise ConfigError("checkpoint config has no 'model' section")
    dims = {"input_dim": int(args["input_dim"]), "vocab_size": int(args["vocab_size"])}
    model = build("model", cfg["model"], path="model", **dims)
    state = {k.removeprefix("module."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    return model


def load_for_inference(
    path: str | Path, device: str | torch.device = "cpu", *, trust_plugins: bool = False
) -> InferenceBundle:
    """Rebuild model, tokenizer and input pipeline (frontend + CMVN) from a checkpoint file alone.

    ``path`` is a ``.pt`` file or an exp dir (its ``checkpoints/last.pt``). Plugin components
    the checkpoint recorded must be loaded already (``--user-dir``, entry points); with
    ``trust_plugins`` their recorded folders are imported (see
    :func:`kospeech.registry.require_plugins`).
    """
    from kospeech.data.cmvn import GlobalCMVN
    from kospeech.registry import require_plugins
    from kospeech.train.checkpoint import load_checkpoint, tokenizer_from_files

    device = resolve_device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    records = (ckpt.get("metadata") or {}).get("plugins")
    require_plugins(records, str(path), trust_plugins=trust_plugins)
    cfg = dict(ckpt["config"])
    try:
        model = build_model_from_checkpoint(ckpt).to(device).eval()
    except RegistryError as err:
        if records is not None or not str(err).startswith("unknown"):
            raise
        raise RegistryError(f"{path}: {err}. This checkpoint does not record its plugin modules: if the "
                            "component comes from a plugin, pass --user-dir PATH with the folder that defines it"
                            ) from None
    tokenizer = tokenizer_from_files(ckpt["tokenizer"]) if ckpt.get("tokenizer") else None
    if tokenizer is None:
        raise DataError(f"{path}: checkpoint carries no tokenizer files; it cannot decode on its own")
    vocab = int(ckpt["model_args"]["vocab_size"])
    if tokenizer.vocab_size != vocab:
        raise DataError(
            f"{path}: the inline tokenizer has {tokenizer.vocab_size} units but the model was built for {vocab}"
        )
    cmvn = GlobalCMVN(ckpt["cmvn"]["mean"], ckpt["cmvn"]["std"]) if ckpt.get("cmvn") else None
    inputs = InputPipeline.from_config(cfg.get("frontend"), cmvn=cmvn, device=device)
    return InferenceBundle(model=model, tokenizer=tokenizer, inputs=inputs, config=cfg,
                           metadata=dict(ckpt.get("metadata") or {}), path=str(path))
