"""Checkpoints: sealed atomic writes (over :func:`kospeech.torch_files.atomic_save`), rotation, RNG
capture, and rebuilding a model from one file.

A checkpoint is self-contained on purpose (see docs/contracts.md): next to the weights it holds
the resolved config, the CMVN statistics and the tokenizer's files inline, so ``decode`` and
``transcribe`` need nothing but the ``.pt`` file; and it holds every piece of training state
(optimizer, scheduler, grad scaler, sampler position, RNG streams) so a resumed run continues
bit for bit where the interrupted one stopped.

Everything stored is a tensor, a number, a string, bytes or a container of those, so the file
loads with ``torch.load(..., weights_only=True)``: opening a checkpoint never runs pickled code.
The metadata block holds sha256 checksums, checked once on every load (:func:`load_checkpoint`):
``checksum`` of the weights, and ``checksums``: one per top-level entry (weights, optimizer,
scheduler, scaler, sampler, RNG streams, config, tokenizer, CMVN, counters, ...), so that
every tensor and value a resume or a decode trusts is covered, not only the weights. A file
whose bytes changed after it was written is refused by name, not trained or decoded on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kospeech.errors import DataError
from kospeech.torch_files import atomic_save

logger = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
CKPT_PATTERN = re.compile(r"^ckpt_(\d+)\.pt$")
LAST = "last.pt"
BEST = "best.pt"
REQUIRED_KEYS = ("model", "config", "model_args")


# ---------------------------------------------------------------------------------------------
# files


def write_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """Seal a checkpoint (checksums of its weights and entries in its metadata block) and save it atomically."""
    return atomic_save(seal(ckpt), path)


def atomic_link(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` the same file as ``src`` (hard link, or a copy where links fail), atomically.

    ``last.pt`` and ``best.pt`` are links, so they cost no second write and survive the
    rotation that deletes their source name.
    """
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def step_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Numbered checkpoints ``ckpt_<step>.pt``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int, keep: Iterable[str | Path] = ()) -> list[Path]:
    """Delete all but the newest ``keep_last`` numbered checkpoints (0 or less keeps all) and ``keep``.

    ``keep``: checkpoints spared whatever their age (the trainer's ``keep_best``).
    """
    if keep_last <= 0:
        return []
    spared = {Path(p).name for p in keep}
    old = [p for p in list_checkpoints(ckpt_dir)[:-keep_last] if p.name not in spared]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def checkpoint_file(path: str | Path) -> Path:
    """The file a checkpoint argument names: the path itself, or an exp dir's ``last.pt``."""
    path = Path(path)
    if path.is_dir():
        for name in (LAST, f"{CKPT_DIR}/{LAST}"):
            if (path / name).is_file():
                return path / name
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint and check it is one of ours; errors say which file and what is wrong."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path} (give a .pt file or an exp dir with checkpoints/last.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated files, foreign pickles
        raise DataError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, Mapping) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, Mapping) or k not in ckpt]
        raise DataError(f"{path}: not a KoSpeech checkpoint (missing {', '.join(missing)})")
    from kospeech.metadata import check_metadata

    check_metadata(ckpt.get("metadata"), str(path))
    verify_checksum(ckpt, path)
    return dict(ckpt)


# ---------------------------------------------------------------------------------------------
# integrity: checksums of the weights and of every entry, readable-checkpoint fallback, stale temporaries


def _hash_tensor(digest: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    digest.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy())


def weights_checksum(state: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over every tensor of a state dict: name, dtype, shape and bytes, by name.

    The zip container ``torch.save`` writes has no check of its own on tensor bytes: a file with
    overwritten bytes loads, and its weights silently turn to garbage (NaN, then a run that skips
    every batch to its end). The checksum in the metadata block makes such a file an error.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if not torch.is_tensor(value):
            digest.update(f"{key}|{value!r}|".encode())
            continue
        digest.update(f"{key}|".encode())
        _hash_tensor(digest, value)
    return "sha256:" + digest.hexdigest()


def _hash_value(digest: Any, value: Any) -> None:
    """Feed one stored value to ``digest`` in a canonical form: the same for a value before
    ``torch.save`` and after ``torch.load`` (mappings by sorted key, lists and tuples alike,
    tensors by dtype, shape and bytes), and different for any changed byte of it."""
    if torch.is_tensor(value):
        digest.update(b"T")
        _hash_tensor(digest, value)
    elif isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        digest.update(f"M{len(items)}|".encode())
        for k, v in items:
            _hash_value(digest, k)
            _hash_value(digest, v)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}|".encode())
        for v in value:
            _hash_value(digest, v)
    elif isinstance(value, (bytes, bytearray)):
        digest.update(f"B{len(value)}|".encode())
        digest.update(value)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(f"S{len(data)}|".encode())
        digest.update(data)
    else:  # None, bool, int, float (repr round-trips a float exactly), anything else by its repr
        digest.update(f"{type(value).__name__}:{value!r}|".encode())


def entry_checksums(ckpt: Mapping[str, Any]) -> dict[str, str]:
    """``{entry: "sha256:<hex>"}`` for every top-level entry but the metadata block.

    ``model`` is :func:`weights_checksum` (the same value as ``metadata.checksum``, so the
    weights are hashed once). The metadata block is left out: it describes the file (writer's
    versions, time, corpus, plugin records) and is read for messages, never for the weights or
    the training state, and it is where the checksums themselves live.
    """
    out: dict[str, str] = {}
    for key in sorted(k for k in ckpt if k != "metadata"):
        if key == "model" and isinstance(ckpt[key], Mapping):
            out[key] = weights_checksum(ckpt[key])
            continue
        digest = hashlib.sha256()
        _hash_value(digest, ckpt[key])
        out[key] = "sha256:" + digest.hexdigest()
    return out


def seal(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Put the checksums into the checkpoint's metadata block (making the block if absent).

    ``checksum`` (the weights) stays for readers that know no other; ``checksums`` covers every
    entry, the optimizer state, RNG streams and sampler position included, so a resume cannot
    continue from a file whose training state was damaged.
    """
    from kospeech.metadata import make_metadata

    sums = entry_checksums(ckpt)
    checksum = sums.get("model") or weights_checksum(ckpt["model"])
    meta = ckpt.get("metadata")
    if not isinstance(meta, Mapping):
        meta = make_metadata("checkpoint")
    ckpt["metadata"] = {**meta, "checksum": checksum, "checksums": sums}
    return ckpt


def verify_checksum(ckpt: Mapping[str, Any], source: str | Path) -> None:
    """A DataError when the weights, or any other entry, do not match the checksums they were saved with.

    Each entry is hashed once. Files written before ``checksums`` existed are checked on their
    weights alone; files written before checksums existed at all pass unchecked.
    """
    meta = ckpt.get("metadata")
    if not isinstance(meta, Mapping):
        return
    expected = meta.get("checksum")
    sums = meta.get("checksums")
    if not expected and not isinstance(sums, Mapping):
        return
    actual = entry_checksums(ckpt) if isinstance(sums, Mapping) else {"model": weights_checksum(ckpt["model"])}
    if (expected and actual.get("model") != expected) or (
        isinstance(sums, Mapping) and "model" in sums and actual.get("model") != sums["model"]
    ):
        raise DataError(
            f"{source}: the weights do not match the checksum they were saved with: the file was damaged "
            f"after it was written; use another checkpoint (an earlier ckpt_*.pt) or retrain"
        )
    if not isinstance(sums, Mapping):
        return
    changed = sorted(k for k in set(sums) | set(actual) if sums.get(k) != actual.get(k))
    if changed:
        what = ", ".join(
            f"{k} ({'added' if k not in sums else 'missing' if k not in actual else 'changed'})" for k in changed
        )
        raise DataError(
            f"{source}: its {'entry' if len(changed) == 1 else 'entries'} {what} "
            f"{'does' if len(changed) == 1 else 'do'} not match the checksums it was saved with: the file was "
            f"damaged after it was written; use another checkpoint (an earlier ckpt_*.pt) or retrain"
        )


def remove_stale_temporaries(ckpt_dir: str | Path) -> list[Path]:
    """Delete the temporaries of saves that were killed before their rename (``.ckpt_*.pt.*.tmp``,
    ``.last.pt.*.tmp``). Only safe while no save runs: the trainer calls it under the exp-dir lock."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    stale = [p for p in ckpt_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary file(s) of interrupted saves from %s", len(stale), ckpt_dir)
    return stale


def latest_readable_checkpoint(ckpt_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """``last.pt``, or else the newest numbered checkpoint that loads and matches its checksum.

    Whatever is passed over is logged with the reason. None when the dir holds no checkpoint at
    all; a DataError when it holds some and none can be read (resuming from scratch there would
    let rotation delete the old run's checkpoints and mix two runs in one dir).
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = ([ckpt_dir / LAST] if (ckpt_dir / LAST).exists() else []) + list_checkpoints(ckpt_dir)[::-1]
    failures: list[str] = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
        except DataError as err:
            logger.warning("--resume: passing over %s: %s", path.name, err)
            failures.append(f"{path.name}: {err}")
            continue
        if failures or path.name != LAST:
            why = "; ".join(failures) if failures else f"{LAST} is missing"
            logger.warning("--resume: continuing from %s (%s)", path, why)
        return path, ckpt
    if failures:
        raise DataError(
            f"{ckpt_dir}: --resume found {len(failures)} checkpoint(s) and none can be read "
            f"({failures[0]}); move them away to start over, or choose a new --exp-dir"
        )
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (or torch.compile) wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    orig = getattr(model, "_orig_mod", None)
    return orig if isinstance(orig, nn.Module) else model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}


# ---------------------------------------------------------------------------------------------
# tokenizer files inline


def read_lang_dir(lang_dir: str | Path) -> dict[str, bytes]:
    """The tokenizer lang dir's files by name, so a checkpoint carries them inline."""
    from kospeech.text.tokenizers import read_lang_dir as _read

    if not Path(lang_dir).is_dir():
        raise DataError(f"tokenizer dir not found: {lang_dir} (set data.lang to a dir made by `kospeech tokenizer`)")
    return _read(lang_dir)


def load_tokenizer_dir(lang_dir: str | Path) -> Any:
    from kospeech.text.tokenizers import load_tokenizer

    return load_tokenizer(lang_dir)


def tokenizer_from_files(files: Mapping[str, bytes]) -> Any:
    """Rebuild a tokenizer from the files a checkpoint holds (no temporary dir needed)."""
    from kospeech.text.tokenizers import load_tokenizer_from_files

    return load_tokenizer_from_files(files)


# ---------------------------------------------------------------------------------------------
# CMVN


def cmvn_stats(cmvn: nn.Module | None) -> dict[str, torch.Tensor] | None:
    if cmvn is None:
        return None
    return {"mean": cmvn.mean.detach().float().cpu().clone(), "std": cmvn.std.detach().float().cpu().clone()}


# ---------------------------------------------------------------------------------------------
# RNG streams


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and every CUDA device's generator state, in loadable form."""
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npd = state["numpy"]
    key = np.asarray(npd["key"].numpy() if torch.is_tensor(npd["key"]) else npd["key"], dtype=np.uint32)
    np.random.set_state(("MT19937", key, int(npd["pos"]), int(npd["has_gauss"]), float(npd["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
        else:
            logger.warning(
                "checkpoint has %d CUDA RNG states but %d devices are visible; CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )


def generator_states(objects: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """States of the private ``torch.Generator`` attributes of ``objects`` (and their submodules).

    Augmentations draw from generators of their own, outside the global streams; an exact
    resume must put those back too. Nothing is created or drawn here, so saving a checkpoint
    never changes what the run does next.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, obj in objects.items():
        subs = obj.named_modules() if isinstance(obj, nn.Module) else [("", obj)]
        for sub_name, sub in subs:
            for attr, value in vars(sub).items():
                if isinstance(value, torch.Generator):
                    name = f"{sub_name}.{attr}" if sub_name else attr
                    out.setdefault(key, {})[name] = {"state": value.get_state(), "device": str(value.device)}
    return out


def restore_generator_states(objects: dict[str, Any], states: Mapping[str, Mapping[str, Any]]) -> None:
    """Put back what :func:`generator_states` saved (a fresh generator per attribute)."""
    for key, saved in states.items():
        if key not in objects:
            logger.warning("checkpoint has generator state for %s, which this run does not have", key)
            continue
        obj = objects[key]
        for name, entry in saved.items():
            *path, attr = name.split(".")
            owner = obj.get_submodule(".".join(path)) if path and isinstance(obj, nn.Module) else obj
            gen = torch.Generator(device=entry.get("device", "cpu"))
            gen.set_state(entry["state"])
            setattr(owner, attr, gen)
