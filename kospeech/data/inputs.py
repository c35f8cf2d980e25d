"""One input pipeline for training, decoding, transcription and the Python API.

Training and decoding must turn the same audio into the same numbers: a model trained on
features normalised one way and decoded on features normalised another way loses accuracy
without any error. So every path goes through :class:`InputPipeline`:

    waves (B, S) --[wave augments, training only]--> frontend --> CMVN --[feature augments]--> (B, T, D)
    feature dump (B, T, D) ---------------------------------------> CMVN --[feature augments]--> (B, T, D)

and the few facts that several callers need have one implementation here: the device choice
(:func:`resolve_device`), the data source kind (:func:`source_kind`: a feature dump or a Kaldi
data dir), the frame rate (:func:`frames_per_second`) and the frontend config a dump was made
with (:func:`dump_frontend_config`). CMVN statistics over on-the-fly features accumulate with
:class:`kospeech.data.cmvn.CMVNStats`, as ``kospeech features cmvn`` does for dumps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kospeech.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SHIFT_S = 0.01
DUMP, DATADIR = "dump", "datadir"


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` is this rank's CUDA device when one is visible, else the CPU; errors are one line."""
    if isinstance(name, torch.device):
        return name
    name = str(name or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' asked for, but no CUDA device is visible; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    if name == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    if name != "cpu":
        raise ConfigError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def frames_per_second(frontend_cfg: Mapping[str, Any] | None) -> float:
    """Feature frames per second of audio, from a frontend config (100 when it says nothing)."""
    cfg = dict(frontend_cfg or {})
    if "frame_shift_ms" in cfg:
        return 1000.0 / float(cfg["frame_shift_ms"])
    if "frame_shift" in cfg:
        shift = float(cfg["frame_shift"])
        return 1000.0 / shift if shift > 1 else 1.0 / shift
    if "hop_length" in cfg:
        return float(cfg.get("sample_rate", 16000)) / float(cfg["hop_length"])
    return 1.0 / DEFAULT_FRAME_SHIFT_S


def source_kind(path: str | Path, key: str = "data") -> str:
    """``dump`` (a finished ``kospeech features dump``: ``index.tsv``) or ``datadir`` (``wav.scp``)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(
            f"{key}: {path} does not exist; make a feature dump with `kospeech features dump` "
            f"(stage 2) or point it at a Kaldi data dir with wav.scp"
        )
    if (path / "index.tsv").is_file():
        return DUMP
    if (path / "wav.scp").is_file():
        return DATADIR
    raise DataError(
        f"{key}: {path} is neither a feature dump (no index.tsv) nor a Kaldi data dir (no wav.scp); "
        f"run `kospeech features dump` to make one"
    )


def dump_frontend_config(dump_dir: str | Path, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The frontend a dump was made with (``frontend.yaml``), which wins over the config's: the
    features already exist. A differing config is named in a warning, not silently dropped."""
    fe_file = Path(dump_dir) / "frontend.yaml"
    given = dict(given or {})
    if not fe_file.is_file():
        return given
    from kospeech.files import read_yaml

    dumped = read_yaml(fe_file)
    if isinstance(dumped.get("frontend"), Mapping):
        dumped = dict(dumped["frontend"])
    clash = sorted(k for k, v in given.items() if k in dumped and dumped[k] != v)
    if clash:
        logger.warning(
            "config 'frontend' differs from %s in %s; using the dump's (the features were made with it)",
            fe_file,
            ", ".join(clash),
        )
    return dict(dumped)


def pad_arrays(arrays: Sequence[np.ndarray], multiple: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T, ...) arrays -> zero-padded (B, T_max, ...) float32 tensor and (B,) lengths.

    ``multiple`` rounds T_max up to a multiple of it: batches then come in few distinct shapes,
    and CPU convolution kernels (oneDNN) are prepared once per shape, not once per batch.
    """
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    longest = -(-int(lengths.max()) // multiple) * multiple
    out = torch.zeros(len(arrays), longest, *arrays[0].shape[1:], dtype=torch.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out, lengths


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


class InputPipeline:
    """Waves or dumped features -> normalised (and, in training, augmented) model input.

    Args:
        frontend: the registered frontend that turns waves into features; None when the input
            is a feature dump (features exist) or the model was trained on one.
        cmvn: a :class:`~kospeech.data.cmvn.GlobalCMVN`, or None for unnormalised features.
        augments: built ``augment`` components (domain ``wave`` or ``feature``), training only.
        frame_rate: feature frames per second; taken from the frontend when there is one.
        device: where features are computed.
    """

    def __init__(
        self,
        *,
        frontend: nn.Module | None = None,
        cmvn: nn.Module | None = None,
        augments: Iterable[Any] = (),
        frame_rate: float | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.frontend = frontend.to(self.device).eval() if frontend is not None else None
        self.cmvn = cmvn.to(self.device).eval() if cmvn is not None else None
        self.augments = [a.to(self.device) if isinstance(a, nn.Module) else a for a in augments]
        self.sample_rate = int(getattr(frontend, "sample_rate", 16000) or 16000)
        hop = getattr(frontend, "hop_length", None)
        self.frame_rate = float(self.sample_rate / hop if hop else (frame_rate or 1.0 / DEFAULT_FRAME_SHIFT_S))

    @classmethod
    def from_config(
        cls,
        frontend_cfg: Mapping[str, Any] | None,
        *,
        cmvn: nn.Module | None = None,
        augments: Iterable[Any] = (),
        device: torch.device | str = "cpu",
        build_frontend: bool = True,
    ) -> InputPipeline:
        """Build the frontend a config names (``build_frontend=False`` for dumped features)."""
        frontend = None
        if build_frontend and isinstance(frontend_cfg, Mapping) and frontend_cfg.get("name"):
            from kospeech.registry import build

            frontend = build("frontend", frontend_cfg, path="frontend")
        return cls(frontend=frontend, cmvn=cmvn, augments=augments, frame_rate=frames_per_second(frontend_cfg),
                   device=device)

    # ---- facts -----------------------------------------------------------------------------
    @property
    def frame_shift(self) -> float:
        """Seconds between feature frames."""
        return 1.0 / self.frame_rate

    @property
    def output_dim(self) -> int | None:
        return int(self.frontend.output_dim) if self.frontend is not None else None

    def random_parts(self) -> dict[str, Any]:
        """Components that may own random generators (for exact resume)."""
        parts: dict[str, Any] = {f"augment[{i}]": aug for i, aug in enumerate(self.augments)}
        if self.frontend is not None:
            parts["frontend"] = self.frontend
        return parts

    def audio_seconds(self, batch: Mapping[str, Any]) -> float:
        if "wave_lengths" in batch:
            return float(batch["wave_lengths"].sum()) / self.sample_rate
        return float(batch["feature_lengths"].sum()) / self.frame_rate

    # ---- the pipeline ----------------------------------------------------------------------
    def normalise(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CMVN keeping padded frames at zero; identity without CMVN."""
        features = features.float()
        return features if self.cmvn is None else self.cmvn(features, lengths)

    @torch.no_grad()
    def frontend_features(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waves -> unnormalised (B, T, D) features and lengths."""
        if self.frontend is None:
            raise ConfigError("the config names no frontend, so audio cannot be turned into features; "
                              "decode a feature dump, or train with a frontend")
        feats, lengths = self.frontend(waves.to(self.device), wave_lengths.to(self.device))
        return feats.float(), lengths.long()

    def features(self, waves: torch.Tensor, wave_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) waves -> model input (B, T, D) and lengths: frontend, then CMVN."""
        feats, lengths = self.frontend_features(waves, wave_lengths)
        return self.normalise(feats, lengths), lengths

    def from_waves(self, waves: Sequence[np.ndarray], *, pad_seconds: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """A list of 1-D waves at ``sample_rate`` -> model input, as in training; the batch is
        padded to a multiple of ``pad_seconds`` (the lengths keep padding out of the result)."""
        w, wl = pad_arrays(waves, max(1, int(pad_seconds * self.sample_rate)))
        return self.features(w, wl)

    def from_features(self, arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """A list of dumped (T, D) feature arrays -> model input, as in training."""
        feats, lengths = pad_arrays(arrays)
        feats, lengths = feats.to(self.device), lengths.to(self.device)
        return self.normalise(feats, lengths), lengths

    def prepare(self, batch: Mapping[str, Any], *, augment: bool = False) -> dict[str, Any]:
        """A collated batch (docs/contracts.md) -> the same batch with model-ready ``features``.

        With ``augment``: wave augments before the frontend, feature augments after CMVN.
        """
        batch = to_device(batch, self.device)
        if "waves" in batch:
            if augment:
                for aug in self.augments:
                    if getattr(aug, "domain", "feature") == "wave":
                        batch = aug(batch)
            batch["features"], batch["feature_lengths"] = self.frontend_features(batch["waves"], batch["wave_lengths"])
        batch["features"] = self.normalise(batch["features"], batch["feature_lengths"])
        if augment:
            for aug in self.augments:
                if getattr(aug, "domain", "feature") == "feature":
                    batch = aug(batch)
        return batch

    @torch.no_grad()
    def estimate_cmvn(
        self, dataset: Any, collate: Callable[[list[Any]], dict[str, Any]], *, max_utts: int = 2000, chunk: int = 16
    ) -> nn.Module:
        """Global mean/std of the frontend's features over (up to) the first ``max_utts`` items."""
        from kospeech.data.cmvn import CMVNStats, GlobalCMVN

        n = min(len(dataset), max_utts)
        stats = CMVNStats()
        for start in range(0, n, chunk):
            batch = to_device(collate([dataset[i] for i in range(start, min(n, start + chunk))]), self.device)
            if "waves" not in batch:  # every item unreadable (collate lists them under "failed")
                continue
            feats, lens = self.frontend_features(batch["waves"], batch["wave_lengths"])
            for row, length in zip(feats.cpu().numpy(), lens.tolist()):
                stats.add(row[:length])
        mean, std = stats.mean_std()
        logger.info("CMVN computed over %d utterances (%d frames)", n, stats.count)
        return GlobalCMVN(mean, std)
