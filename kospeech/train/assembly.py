"""Assembly: the model, optimizer, data and input pipeline a training config names, built.

:class:`Assembly` is the part of :class:`~kospeech.train.trainer.Trainer` that reads the config
(``data:`` through :class:`~kospeech.train.options.DataOptions`, ``frontend``, ``augment``,
``model``, ``decode.search``, ``optimizer``, ``scheduler``) and sets up what the loop runs on:
``tokenizer``, ``train_set`` / ``valid_set``, ``inputs`` (the :class:`~kospeech.data.inputs.InputPipeline`),
``model`` / ``raw_model`` (DDP-wrapped when distributed), the AMP dtype and scaler, the bucket
samplers, ``optimizer`` and ``scheduler``. The order of the steps (and of the seeding between
them) is part of exact resume: :meth:`~kospeech.train.trainer.Trainer._build` keeps it.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kospeech.data.datadir import read_meta
from kospeech.data.inputs import (
    DUMP,
    InputPipeline,
    dump_frontend_config,
    source_kind,
)
from kospeech.errors import ConfigError, DataError
from kospeech.train.checkpoint import load_tokenizer_dir, read_lang_dir
from kospeech.train.options import resolve_amp

logger = logging.getLogger(__name__)


class Assembly:
    """Building what the config names (a mixin of :class:`~kospeech.train.trainer.Trainer`)."""

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _setup_data(self) -> None:
        data = self.data_opts
        self.lang_dir = Path(data.lang)
        self.lang_files = read_lang_dir(self.lang_dir)
        self.tokenizer = load_tokenizer_dir(self.lang_dir)
        self.vocab_size = int(self.tokenizer.vocab_size)

        from kospeech.data.dataset import FeatureDataset, RawAudioDataset, collate

        self.collate = collate
        train_dir = Path(data.train)
        self.mode = source_kind(train_dir, "data.train")
        valid_dir = Path(data.valid) if data.valid else None
        if valid_dir is not None and source_kind(valid_dir, "data.valid") != self.mode:
            raise DataError(f"data.valid: {valid_dir} must be the same kind as data.train ({self.mode})")
        self.train_meta = read_meta(train_dir)
        max_frames = data.max_frames
        cmvn_file = Path(data.cmvn) if data.cmvn else None
        if self.mode == DUMP:
            self.cfg["frontend"] = dump_frontend_config(train_dir, self.cfg.get("frontend"))
            if cmvn_file is None and (train_dir / "cmvn.npz").is_file():
                cmvn_file = train_dir / "cmvn.npz"
            if cmvn_file is None:
                logger.warning("no CMVN statistics (%s missing): features are used unnormalised",
                               train_dir / "cmvn.npz")
        elif not isinstance(self.cfg.get("frontend"), Mapping):
            raise ConfigError(f"data.train {train_dir} is a raw-audio data dir: the config needs a 'frontend'")
        from kospeech.data.cmvn import GlobalCMVN

        self.inputs = InputPipeline.from_config(
            self.cfg.get("frontend"),
            cmvn=GlobalCMVN.from_file(cmvn_file) if cmvn_file is not None else None,
            augments=self._build_augments(),
            device=self.device,
            build_frontend=self.mode != DUMP,
        )
        if self.mode == DUMP:
            self.train_set = FeatureDataset(train_dir, self.tokenizer, max_frames=max_frames)
            self.valid_set = FeatureDataset(valid_dir, self.tokenizer) if valid_dir else None
        else:
            rate = self.inputs.sample_rate
            max_seconds = float(max_frames) / self.inputs.frame_rate if max_frames else None
            self.train_set = RawAudioDataset(train_dir, self.tokenizer, sample_rate=rate, max_seconds=max_seconds)
            self.valid_set = RawAudioDataset(valid_dir, self.tokenizer, sample_rate=rate) if valid_dir else None
        if len(self.train_set) == 0:
            raise DataError(f"data.train: {train_dir} has no usable utterances (max_frames={max_frames})")
        if self.mode == DUMP:
            self.input_dim = int(self.train_set[0]["features"].shape[-1])
        else:
            self.input_dim = int(self.inputs.output_dim)
            if self.inputs.cmvn is None:
                self.inputs.cmvn = self.inputs.estimate_cmvn(self.train_set, self.collate).to(self.device)
        if self.valid_set is None:
            logger.warning("no data.valid: no validation CER, and no best.pt")

    def _setup_batches(self) -> None:
        """Leave out utterances shorter than the model accepts (``data.min_frames``, counted), then
        the length-bucketed batch samplers."""
        from kospeech.data.dataset import keep_at_least
        from kospeech.data.sampler import BucketBatchSampler
        from kospeech.models.base import min_input_frames

        data = self.data_opts
        min_frames = data.min_frames
        if min_frames is None:
            min_frames = min_input_frames(self.raw_model, self.input_dim, self.device)
        reason = f"shorter than data.min_frames={min_frames}"
        for dataset in (self.train_set, self.valid_set):
            if dataset is None or min_frames <= 1:
                continue
            if getattr(dataset, "length_unit", "samples") == "samples":  # centred frames: 1 + samples // hop
                need = int(math.ceil((min_frames - 1) * self.inputs.sample_rate / self.inputs.frame_rate))
            else:
                need = min_frames
            keep_at_least(dataset, need, reason)
        if len(self.train_set) == 0:
            raise DataError(f"data.train: {data.train} has no utterance of at least {min_frames} frames")
        self.batch_frames = int(data.batch_frames)
        num_buckets = int(data.num_buckets)

        def sampler(dataset: Any, shuffle: bool) -> BucketBatchSampler:
            return BucketBatchSampler(
                self._sampler_lengths(dataset),
                batch_frames=self.batch_frames,
                seed=self.seed,
                shuffle=shuffle,
                num_buckets=num_buckets,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
            )

        self.train_sampler = sampler(self.train_set, True)
        self.valid_sampler = sampler(self.valid_set, False) if self.valid_set is not None else None

    def _sampler_lengths(self, dataset: Any) -> list[int]:
        """Lengths in feature frames, so ``batch_frames`` means the same in both modes."""
        lengths = list(dataset.lengths)
        if getattr(dataset, "length_unit", "samples") == "samples":
            per_frame = self.inputs.sample_rate / self.inputs.frame_rate
            lengths = [max(1, int(n // per_frame)) for n in lengths]
        return lengths

    def _build_augments(self) -> list[Any]:
        from kospeech.registry import build

        specs = self.cfg.get("augment") or []
        if not isinstance(specs, list):
            raise ConfigError("'augment' must be a list of {name: ...} mappings")
        augments = []
        for i, spec in enumerate(specs):
            aug = build("augment", spec, path=f"augment[{i}]")
            domain = getattr(aug, "domain", "feature")
            if domain not in ("feature", "wave"):
                raise ConfigError(f"augment[{i}] '{spec.get('name')}' has domain {domain!r}; expected feature or wave")
            if domain == "wave" and self.mode == DUMP:
                raise ConfigError(
                    f"augment[{i}] '{spec.get('name')}' works on waveforms, but data.train is a feature dump; "
                    f"train from a Kaldi data dir (wav.scp) for on-the-fly features, or drop it"
                )
            augments.append(aug)
        return augments

    def _setup_model(self) -> None:
        from kospeech.registry import build

        if not isinstance(self.cfg.get("model"), Mapping):
            raise ConfigError("the config has no 'model' section ({name: ..., ...})")
        self.model_args = {"input_dim": self.input_dim, "vocab_size": self.vocab_size}
        model = build("model", self.cfg["model"], path="model", **self.model_args).to(self.device)
        self.raw_model = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model: nn.Module = DDP(
                model, device_ids=ids, find_unused_parameters=self.opts.find_unused_parameters
            )
        else:
            self.model = model
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("model %s: %.2fM parameters", self.cfg["model"].get("name"), n_params / 1e6)
        self.amp_dtype = resolve_amp(self.opts.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        # each rank gets its own random stream for dropout and augmentation after a shared init
        self._seed_everything(self.seed + 1000 * self.dist.rank)

    def _check_search(self) -> None:
        """Build ``decode.search`` against the model now, so a search the model cannot run (a beam
        over an attention decoder the model lacks) fails before training, not after it. The
        ``lm`` option is left out: the LM is often trained later."""
        from kospeech.config import get_path
        from kospeech.registry import build

        search = get_path(self.cfg, "decode.search")
        if isinstance(search, Mapping) and search.get("name"):
            cfg = {k: v for k, v in search.items() if k != "lm"}
            build("search", cfg, path="decode.search", model=self.raw_model)

    def _setup_optim(self) -> None:
        from kospeech.registry import build

        if not isinstance(self.cfg.get("optimizer"), Mapping):
            raise ConfigError("the config has no 'optimizer' section ({name: adam, lr: ...})")
        self.optimizer = build("optimizer", self.cfg["optimizer"], path="optimizer", params=self.raw_model.parameters())
        sched_cfg = self.cfg.get("scheduler")
        self.scheduler = (
            build("scheduler", sched_cfg, path="scheduler", optimizer=self.optimizer) if sched_cfg else None
        )
