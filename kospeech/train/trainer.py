"""The training loop: AMP, gradient accumulation and clipping, DDP, checkpoints, exact resume.

One :class:`Trainer` serves a laptop CPU run and a multi-node ``torchrun`` job alike; what
changes is read from the environment (:mod:`kospeech.train.distributed`) and the config.

Exact resume is a design goal, not a best effort. A checkpoint is only written at an update
boundary, and it records the epoch, how many batches of that epoch were consumed, and every RNG
stream (per rank). The batches of an epoch are a pure function of ``(seed, epoch, rank)``
(the bucket sampler), the DataLoader gets its own generator so creating an iterator does not
draw from the global stream, and the RNG states are put back right before the first resumed
batch. A run of 2N updates and a run of N updates + resume + N updates therefore end with the
same weights on CPU.

A batch whose loss is NaN or inf is never applied: every rank agrees to skip it (a single rank
skipping its backward would hang DDP), and the skip is counted and logged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kospeech.data.inputs import (
    DUMP,
    InputPipeline,
    dump_frontend_config,
    read_meta,
    resolve_device,
    source_kind,
)
from kospeech.errors import ConfigError, DataError, TrainingError
from kospeech.files import write_atomic
from kospeech.train import distributed as D
from kospeech.train.average import check_metric, checkpoint_metric, select_best
from kospeech.train.checkpoint import (
    BEST,
    CKPT_DIR,
    LAST,
    atomic_link,
    cmvn_stats,
    generator_states,
    latest_readable_checkpoint,
    list_checkpoints,
    load_tokenizer_dir,
    model_state,
    prune_checkpoints,
    read_lang_dir,
    remove_stale_temporaries,
    restore_generator_states,
    rng_state,
    set_rng_state,
    step_path,
    unwrap,
    write_checkpoint,
)
from kospeech.train.options import DataOptions, TrainOptions, resolve_amp

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
PLOT_FILE = "train.png"
CONFIG_FILE = "config.yaml"


# ---------------------------------------------------------------------------------------------
# validation decoding and CER


def make_greedy(model: Any) -> Any:
    """``(features, lengths) -> list[list[int]]``: the registered greedy search for the model's
    cheapest head, used for validation CER."""
    from kospeech.registry import build
    from kospeech.search import default_search

    return build("search", default_search(model, greedy=True), path="valid_search", model=model).decode


def corpus_cer(refs: Mapping[str, str], hyps: Mapping[str, str]) -> float:
    """Corpus CER in percent (spaces removed), as ``kospeech score`` reports it."""
    from kospeech.metrics import score_corpus

    return float(score_corpus(dict(refs), dict(hyps)).cer)


# ---------------------------------------------------------------------------------------------
# data helpers


def _plain(obj: Any) -> Any:
    """NumPy values to Python/tensors, so the checkpoint stays loadable with weights_only=True."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Builds everything a config names and runs the loop; see the module docstring.

    Args:
        cfg: the resolved config (``kospeech.config.load_config``).
        exp_dir: where ``config.yaml``, ``checkpoints/``, ``log.jsonl`` and ``train.png`` go; rank 0 holds
            it (:class:`~kospeech.train.lock.ExpDirLock`) from construction until :meth:`close`, so a
            second run into it is refused however either was started.
        device: overrides ``train.device``.
        resume: continue from ``exp_dir/checkpoints/last.pt`` when it exists.
        progress: show a tqdm bar (the CLI sets it; library use stays quiet).
        dist_info: the rank layout; read from ``torchrun``'s environment when None.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        exp_dir: str | Path,
        *,
        device: str | None = None,
        resume: bool = False,
        progress: bool = False,
        dist_info: D.DistInfo | None = None,
    ) -> None:
        from kospeech.train.lock import ExpDirLock
        from kospeech.train.schema import check_train_config

        check_train_config(cfg)  # every key and component, before any data is read
        dist = dist_info or D.env_info()
        # One run per exp dir, however the Trainer is built (the CLI, or Python): rank 0 holds it
        # until close(). Re-entrant within a process, so under the CLI's own lock this only counts.
        self._lock: ExpDirLock | None = ExpDirLock(exp_dir).acquire() if dist.is_main else None
        try:
            self._build(cfg, exp_dir, device=device, resume=resume, progress=progress, dist_info=dist)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _build(
        self,
        cfg: Mapping[str, Any],
        exp_dir: str | Path,
        *,
        device: str | None,
        resume: bool,
        progress: bool,
        dist_info: D.DistInfo,
    ) -> None:
        """Everything ``__init__`` sets up, under the exp-dir lock."""
        self.cfg: dict[str, Any] = copy.deepcopy(dict(cfg))
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / CKPT_DIR
        if not resume and list_checkpoints(self.ckpt_dir):
            raise ConfigError(
                f"{self.exp_dir} already holds checkpoints; pass --resume to continue that run "
                f"or choose a new --exp-dir"
            )
        self.opts = TrainOptions.from_config(self.cfg.get("train"))
        # the data: section as checked options, read once: the set-up reads fields with their one
        # set of defaults (options.py), not the raw dict with defaults of its own
        self.data_opts = DataOptions.from_config(self.cfg.get("data"))
        if device is not None:
            self.opts.device = device
            self.cfg.setdefault("train", {})["device"] = device
        self.progress = progress
        self.dist = dist_info or D.env_info()
        self.device = resolve_device(self.opts.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        D.init_distributed(self.device, self.dist)
        self.seed = int(self.cfg.get("seed", 1))
        self._seed_everything(self.seed)

        # counters and state that a checkpoint carries
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self._epoch_len = 0  # batches in the current epoch, for the budget share
        self.skipped_batches = 0
        self.skipped_updates = 0
        self.unreadable: dict[str, str] = {}  # utterance -> why its audio could not be read
        self._nonfinite_run = 0  # batches/updates in a row with a non-finite loss or gradient
        self.best_cer = math.inf
        self.best_step = -1
        self.last_metrics: dict[str, Any] = {}
        self._pending_rng: Mapping[str, Any] | None = None
        self._pending_generators: Mapping[str, Any] | None = None
        self._saved_at: tuple[int, int, int] | None = None  # (step, epoch, batches_done) of the last save
        self._validated_step = -1
        self._tb: Any = None  # TensorBoardLog when train.tensorboard

        if self.dist.is_main:  # saves killed before their rename (the exp-dir lock keeps others out)
            remove_stale_temporaries(self.ckpt_dir)
        self._setup_data()
        self._setup_model()
        self._check_search()
        self._setup_batches()
        self._setup_optim()
        if resume:
            found = latest_readable_checkpoint(self.ckpt_dir)
            if found is not None:
                self._resume(*found)
            else:
                logger.info("--resume: no checkpoint in %s yet, starting from scratch", self.ckpt_dir)
        if self.dist.is_main:
            from kospeech.config import save_config

            save_config(self.cfg, self.exp_dir / CONFIG_FILE)
        if self.dist.is_main and self.opts.tensorboard:
            from kospeech.train.tensorboard import TensorBoardLog

            self._tb = TensorBoardLog(self.exp_dir, purge_step=self.step + 1 if self.step else None)
        self._reset_stats()

    # ---- set-up -------------------------------------------------------------------------
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

    # ---- checkpoints --------------------------------------------------------------------
    def _random_parts(self) -> dict[str, Any]:
        """Components that may own random generators besides the global streams."""
        return self.inputs.random_parts()

    def _plugin_records(self) -> list[dict[str, str]]:
        """The plugin modules behind the config's components and the tokenizer (metadata ``plugins``)."""
        from kospeech.registry import plugin_records, registry

        tokenizers = registry("tokenizer")
        tok = [("tokenizer", n) for n in tokenizers.names() if tokenizers.get(n).obj is type(self.tokenizer)]
        return plugin_records(self.cfg, tok)

    def state_dict(self) -> dict[str, Any]:
        """Everything docs/contracts.md lists, for this moment (an update boundary)."""
        rng = rng_state()
        ranks = D.all_gather_objects(rng) if self.dist.enabled else None
        from kospeech.metadata import make_metadata

        corpus = {"corpus": self.train_meta.get("corpus"), "transcript": self.train_meta.get("transcript"),
                  "path": str(self.data_opts.train)}
        if self.train_meta.get("normalization"):
            corpus["normalization"] = self.train_meta["normalization"]
        return {
            "metadata": make_metadata("checkpoint", training_corpus=corpus, plugins=self._plugin_records()),
            "model": model_state(self.model),
            "config": self.cfg,
            "model_args": dict(self.model_args),
            "cmvn": cmvn_stats(self.inputs.cmvn),
            "tokenizer": dict(self.lang_files),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self._sampler_state(),
            "rng": rng,
            "rng_ranks": ranks,
            "generators": D.all_gather_objects(generator_states(self._random_parts())),
            "step": self.step,
            "epoch": self.epoch,
            "metrics": {
                **self.last_metrics,
                "best_cer": None if math.isinf(self.best_cer) else self.best_cer,
                "best_step": self.best_step,
                "skipped_batches": self.skipped_batches,
                "skipped_updates": self.skipped_updates,
                "unreadable": dict(self.unreadable),
            },
        }

    def _sampler_state(self) -> dict[str, Any]:
        """The bucket sampler's state at the batches consumed (not those a DataLoader prefetched)."""
        sampler = self.train_sampler
        sampler.set_epoch(self.epoch)
        state = dict(sampler.state_dict(consumed=self.batches_done))
        state.update(epoch=self.epoch, position=self.batches_done, world_size=self.dist.world_size)
        return _plain(state)

    def save_checkpoint(self, *, is_best: bool = False) -> Path | None:
        """Write ``ckpt_<step>.pt`` atomically, link ``last.pt`` (and ``best.pt``), rotate."""
        state = self.state_dict()  # every rank joins the RNG gather
        path = None
        if self.dist.is_main:
            path = write_checkpoint(state, step_path(self.ckpt_dir, self.step))
            atomic_link(path, self.ckpt_dir / LAST)
            if is_best:
                atomic_link(path, self.ckpt_dir / BEST)
            prune_checkpoints(self.ckpt_dir, self.opts.keep_last, keep=self._best_checkpoints())
            logger.info("saved %s%s", path, " (best)" if is_best else "")
        self._saved_at = self._position()
        D.barrier()
        return path

    def _best_checkpoints(self) -> list[Path]:
        """The ``keep_best`` checkpoints best by ``keep_best_by``, which rotation spares."""
        if self.opts.keep_best <= 0 or self.opts.keep_last <= 0:
            return []
        scored = []
        for p in list_checkpoints(self.ckpt_dir):
            try:
                scored.append((p, checkpoint_metric(p, self.opts.keep_best_by)))
            except DataError:  # a damaged file is never "best"; rotation treats it by age
                logger.warning("%s cannot be read; not ranked for train.keep_best", p)
        higher = check_metric(self.opts.keep_best_by)
        return select_best(scored, self.opts.keep_best, higher_is_better=higher)

    def _resume(self, path: Path, ckpt: Mapping[str, Any]) -> None:
        args = ckpt["model_args"]
        if int(args["vocab_size"]) != self.vocab_size:
            raise DataError(
                f"{path}: the checkpoint's model has {args['vocab_size']} output units but the tokenizer in "
                f"{self.lang_dir} has {self.vocab_size}; resume with the lang dir it was trained with, "
                f"or start a new --exp-dir"
            )
        if int(args["input_dim"]) != self.input_dim:
            raise DataError(
                f"{path}: the checkpoint's model takes {args['input_dim']}-dim features but data.train gives "
                f"{self.input_dim}; resume with the same features, or start a new --exp-dir"
            )
        try:
            unwrap(self.model).load_state_dict(ckpt["model"])
        except RuntimeError as err:  # another model size or layout than the config's
            lines = [x.strip() for x in str(err).splitlines() if x.strip()]
            detail = next((x for x in lines if "size mismatch" in x or "Missing key" in x), lines[0] if lines else "")
            raise DataError(
                f"{path}: the checkpoint's model does not fit the config's ({detail.rstrip('.')}); resume with "
                f"the config it was trained with ({self.exp_dir / CONFIG_FILE}), or start a new --exp-dir"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        sampler = dict(ckpt.get("sampler") or {})
        self.step = int(ckpt["step"])
        self.epoch = int(sampler.get("epoch", ckpt["epoch"]))
        self.batches_done = int(sampler.get("position", 0))
        if sampler:
            self.train_sampler.load_state_dict(sampler)
        if int(sampler.get("world_size", self.dist.world_size)) != self.dist.world_size:
            logger.warning(
                "resuming a %s-process run with %d processes: the rest of epoch %d is re-sharded, not exact",
                sampler.get("world_size"),
                self.dist.world_size,
                self.epoch,
            )
            self.batches_done = 0
        metrics = dict(ckpt.get("metrics") or {})
        self.best_cer = math.inf if metrics.get("best_cer") is None else float(metrics["best_cer"])
        self.best_step = int(metrics.get("best_step", -1))
        self.skipped_batches = int(metrics.get("skipped_batches", 0))
        self.skipped_updates = int(metrics.get("skipped_updates", 0))
        self.unreadable = dict(metrics.get("unreadable") or {})
        if hasattr(self.train_set, "known_bad"):  # not read again; the batches stay as they were
            self.train_set.known_bad = set(self.unreadable)
        self.last_metrics = {k: metrics[k] for k in ("valid_cer", "valid_loss", "valid_step") if k in metrics}
        gens = ckpt.get("generators") or []
        if len(gens) == self.dist.world_size:
            self._pending_generators = gens[self.dist.rank]
        ranks = ckpt.get("rng_ranks")
        if ranks and len(ranks) == self.dist.world_size:
            self._pending_rng = ranks[self.dist.rank]
        else:
            self._pending_rng = ckpt["rng"]
        self._saved_at = self._position()
        if self.dist.is_main:
            self._truncate_log(self.step)
        logger.info(
            "resumed from %s: step %d, epoch %d, %d batches into it", path, self.step, self.epoch, self.batches_done
        )

    def _truncate_log(self, step: int) -> None:
        """Drop log lines a killed run wrote after its last checkpoint, so curves do not double back."""
        log = self.exp_dir / LOG_FILE
        if not log.is_file():
            return
        keep = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    keep.append(line)
            except (json.JSONDecodeError, ValueError, AttributeError):
                continue
        write_atomic(log, "".join(f"{line}\n" for line in keep))

    # ---- batches ------------------------------------------------------------------------
    def _epoch_batches(self, sampler: Any, epoch: int, skip: int = 0) -> list[list[int]]:
        """This rank's batches of ``epoch`` (a pure function of seed, epoch and rank), minus ``skip``."""
        batches = [list(b) for b in sampler.batches(epoch)]
        n = D.all_reduce_min(len(batches), self.device)  # equal step counts, or DDP waits forever
        return batches[skip:n]

    def _loader(self, dataset: Any, batches: list[list[int]]) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=self.collate,
            num_workers=self.opts.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),  # keeps the global RNG untouched
        )

    def _prepare(self, batch: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """The input pipeline; augmentation on training batches once ``train.augment_after``
        updates are done."""
        return self.inputs.prepare(batch, augment=train and self.step >= self.opts.augment_after)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _forward(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with self._autocast():
            return model(batch["features"], batch["feature_lengths"], batch["targets"], batch["target_lengths"])

    # ---- training -----------------------------------------------------------------------
    def _reset_stats(self) -> None:
        self._stats: dict[str, float] = {"loss": 0.0, "batches": 0, "audio": 0.0, "frames": 0, "padded": 0}
        self._parts: dict[str, float] = {}
        self._grad_norm = 0.0
        self._t0 = time.perf_counter()

    def _train_batch(self, batch: dict[str, Any], *, last_micro: bool) -> None:
        """Forward and backward one micro-batch; a non-finite loss is skipped on every rank."""
        self._note_unreadable(batch.pop("failed", ()))
        empty = not batch["utt_ids"]
        if D.any_true(empty, self.device) if self.dist.enabled else empty:  # every item unreadable
            self.skipped_batches += 1
            self._unsynced = self._unsynced or (self.dist.enabled and last_micro and self._contributed > 0)
            return
        batch = self._prepare(batch, train=True)
        self.model.train()
        sync_now = last_micro or not self.dist.enabled
        ctx = contextlib.nullcontext() if sync_now else self.model.no_sync()
        with ctx:
            norm_stats = self._norm_statistics()
            saved = [b.clone() for b in norm_stats]
            out = self._forward(self.model, batch)
            loss = out["loss"]
            bad = D.any_true(not bool(torch.isfinite(loss.detach()).item()), self.device)
            if bad:
                # the forward pass has already moved the normalisation layers' running statistics
                # (NaN in, NaN out): put them back, or every later evaluation would be NaN
                with torch.no_grad():
                    for buf, old in zip(norm_stats, saved):
                        buf.copy_(old)
                self.skipped_batches += 1
                logger.warning(
                    "skipped a batch with non-finite loss (%s) at step %d, utterances %s; %d skipped so far",
                    f"{float(loss):.4g}",
                    self.step,
                    ", ".join(batch["utt_ids"][:5]) + (" ..." if len(batch["utt_ids"]) > 5 else ""),
                    self.skipped_batches,
                )
                self._unsynced = self._unsynced or (self.dist.enabled and last_micro and self._contributed > 0)
                self._note_nonfinite("loss")
            else:
                scaled = loss / self.opts.accum_grad
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
                self._contributed += 1
                self._stats["loss"] += float(loss.detach())
                for k, v in out.items():
                    if k != "loss" and torch.is_tensor(v) and v.numel() == 1:
                        self._parts[k] = self._parts.get(k, 0.0) + float(v.detach())
                self._stats["batches"] += 1
        lengths = batch["feature_lengths"]
        self._stats["audio"] += self.inputs.audio_seconds(batch)
        self._stats["frames"] += int(lengths.sum())
        self._stats["padded"] += int(lengths.numel() * batch["features"].size(1))

    def _norm_statistics(self) -> list[torch.Tensor]:
        """The running statistics of the model's normalisation layers (batch norm and its masked
        kind), found once: what a training-mode forward pass changes besides the graph."""
        if getattr(self, "_norm_buffers", None) is None:
            self._norm_buffers = [b for name, b in self.raw_model.named_buffers()
                                  if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]
        return self._norm_buffers

    def _note_unreadable(self, failed: Any) -> None:
        """Count utterances whose audio could not be read (each named once in the log)."""
        for utt, why in failed:
            if utt not in self.unreadable:
                self.unreadable[utt] = why
                logger.warning("left out utterance %s (%d so far): %s", utt, len(self.unreadable), why)

    def _note_nonfinite(self, what: str) -> None:
        """One more non-finite batch or update in a row; too many and the run stops (same on every
        rank: the loss flag and the gradient norm are agreed across ranks)."""
        self._nonfinite_run += 1
        limit = self.opts.max_nonfinite
        if limit and self._nonfinite_run >= limit:
            last = self.ckpt_dir / LAST
            raise TrainingError(
                f"stopped at step {self.step}: {self._nonfinite_run} batches/updates in a row had a non-finite "
                f"{what} (train.max_nonfinite={limit}); the weights or the learning rate are broken. "
                f"Nothing after {last if last.exists() else 'the start'} was saved; lower optimizer.lr, "
                f"check the data, or resume from an earlier ckpt_*.pt"
            )

    def _sync_grads(self) -> None:
        """Average gradients by hand when the syncing micro-batch was skipped (DDP never saw it)."""
        world = self.dist.world_size
        for p in self.raw_model.parameters():
            if p.grad is not None:
                D.all_reduce_sum(p.grad)
                p.grad.div_(world)

    def _update(self) -> bool:
        """Clip and apply the accumulated gradient; False when nothing was accumulated."""
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        if self._contributed == 0:
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if self._unsynced:
            self._sync_grads()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.opts.max_grad_norm if self.opts.max_grad_norm > 0 else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        finite = bool(torch.isfinite(norm).item())
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the step itself on inf/NaN gradients
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        if not finite:
            self.skipped_updates += 1
            logger.warning("non-finite gradient norm at step %d: update skipped", self.step)
            self._note_nonfinite("gradient")
        else:
            self._nonfinite_run = 0
        if self.scheduler is not None:
            if hasattr(self.scheduler, "set_progress"):
                self.scheduler.set_progress(self._budget_spent())
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._grad_norm = float(norm) if finite else float("nan")
        self.step += 1
        return True

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        with open(self.exp_dir / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        if self._tb is not None:
            self._tb.write(record)

    def _log_train(self) -> dict[str, Any]:
        stats = self._stats
        n = max(int(stats["batches"]), 1)
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        # throughput counts every rank's audio
        audio = torch.tensor([stats["audio"]], dtype=torch.float64, device=self.device)
        D.all_reduce_sum(audio)
        record = {
            "kind": "train",
            "step": self.step,
            "epoch": self.epoch,
            "loss": stats["loss"] / n if stats["batches"] else None,
            **{k: v / n for k, v in self._parts.items()},
            "lr": self._lr(),
            "grad_norm": self._grad_norm,
            "audio_sec_per_sec": float(audio.item()) / elapsed,
            "padding": 1.0 - stats["frames"] / max(stats["padded"], 1),
            "skipped_batches": self.skipped_batches,
            "skipped_updates": self.skipped_updates,
            "unreadable_utterances": len(self.unreadable),
            "time": time.time(),
        }
        self._log(record)
        self._reset_stats()
        return record

    @torch.no_grad()
    def validate(self) -> dict[str, Any] | None:
        """Loss and greedy CER on ``data.valid`` (sharded over ranks, gathered)."""
        if self.valid_set is None:
            return None
        model = self.raw_model
        model.eval()
        decode = make_greedy(model)
        refs: dict[str, str] = {}
        hyps: dict[str, str] = {}
        loss_sum, n_batches = 0.0, 0
        for batch in self._loader(self.valid_set, self._epoch_batches(self.valid_sampler, 0)):
            self._note_unreadable(batch.pop("failed", ()))
            if not batch["utt_ids"]:
                continue
            batch = self._prepare(batch, train=False)
            out = self._forward(model, batch)
            if torch.isfinite(out["loss"]):
                loss_sum += float(out["loss"])
                n_batches += 1
            with self._autocast():
                ids = decode(batch["features"], batch["feature_lengths"])
            for utt, row, n, hyp in zip(batch["utt_ids"], batch["targets"], batch["target_lengths"], ids):
                refs[utt] = self.tokenizer.decode(row[: int(n)].tolist())
                hyps[utt] = self.tokenizer.decode(list(hyp))
        gathered = D.all_gather_objects((refs, hyps, loss_sum, n_batches))
        all_refs = {u: r for g in gathered for u, r in g[0].items()}
        all_hyps = {u: h for g in gathered for u, h in g[1].items()}
        total_loss = sum(g[2] for g in gathered)
        total_batches = sum(g[3] for g in gathered)
        cer = corpus_cer(all_refs, all_hyps)
        shown = sorted(all_refs)[:3]
        first = shown[0] if shown else None
        record = {
            "kind": "valid",
            "step": self.step,
            "epoch": self.epoch,
            "loss": total_loss / total_batches if total_batches else None,
            "cer": cer,
            "utterances": len(all_refs),
            "example": {"utt_id": first, "ref": all_refs[first], "hyp": all_hyps[first]} if first else None,
            "examples": [{"utt_id": u, "ref": all_refs[u], "hyp": all_hyps[u]} for u in shown],
            "time": time.time(),
        }
        # valid_step: a checkpoint saved later (save_every) carries these numbers but is not ranked by them
        self.last_metrics = {"valid_cer": cer, "valid_loss": record["loss"], "valid_step": self.step}
        self._validated_step = self.step
        if self.scheduler is not None and hasattr(self.scheduler, "step_metric"):
            self.scheduler.step_metric(cer)
        self._log(record)
        if self.dist.is_main and self.opts.plot:
            from kospeech.train.plot import plot_training

            try:
                plot_training(self.exp_dir / LOG_FILE, self.exp_dir / PLOT_FILE)
            except Exception:  # a plot must never stop training
                logger.exception("could not draw %s", self.exp_dir / PLOT_FILE)
        logger.info("validation at step %d: loss %s, CER %.2f%%", self.step, record["loss"], cer)
        return record

    def _validate_and_save(self) -> None:
        start = time.perf_counter()
        record = self.validate() if self._validated_step != self.step else None
        is_best = False
        if record is not None and record["cer"] < self.best_cer:
            self.best_cer, self.best_step = record["cer"], self.step
            is_best = True
        if self._saved_at != self._position() or is_best:
            self.save_checkpoint(is_best=is_best)
        self._t0 += time.perf_counter() - start  # throughput counts training time only

    def _position(self) -> tuple[int, int, int]:
        return (self.step, self.epoch, self.batches_done)

    def _budget_spent(self) -> float:
        """Share of the training budget used after this update: the nearest of max_steps,
        max_minutes (this run's clock) and max_epochs; the same value on every rank."""
        shares = [0.0]
        if self.opts.max_steps:
            shares.append((self.step + 1) / self.opts.max_steps)
        if self.opts.max_minutes > 0:
            shares.append((time.monotonic() - self._run_start) / (60.0 * self.opts.max_minutes))
        if self.opts.max_epochs and self._epoch_len:
            shares.append((self.epoch + self.batches_done / self._epoch_len) / self.opts.max_epochs)
        share = min(1.0, max(shares))
        return D.all_reduce_max_float(share, self.device) if self.dist.enabled else share

    def _done(self) -> bool:
        if self.opts.max_steps and self.step >= self.opts.max_steps:
            return True
        if self.opts.max_minutes > 0:
            out_of_time = time.monotonic() - self._run_start >= 60.0 * self.opts.max_minutes
            # every rank must stop at the same update, or DDP hangs in the next all-reduce
            return D.any_true(out_of_time, self.device) if self.dist.enabled else out_of_time
        return False

    def train(self) -> dict[str, Any]:
        """Run until ``max_epochs`` (or ``max_steps``); returns a summary of the run."""
        if self._pending_generators is not None:
            restore_generator_states(self._random_parts(), self._pending_generators)
            self._pending_generators = None
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._contributed = 0
        self._unsynced = False
        self._reset_stats()
        self._run_start = time.monotonic()
        accum = self.opts.accum_grad
        while self.epoch < self.opts.max_epochs and not self._done():
            batches = self._epoch_batches(self.train_sampler, self.epoch, self.batches_done)
            first = self.batches_done
            total = first + len(batches)
            self._epoch_len = total
            bar = None
            if self.progress and self.dist.is_main:
                from kospeech.progress import progress_bar

                bar = progress_bar(total=total, initial=first, desc=f"epoch {self.epoch + 1}", unit="batch")
            stopped = False
            for i, batch in enumerate(self._loader(self.train_set, batches), start=first):
                last_micro = (i + 1) % accum == 0 or i + 1 == total
                self._train_batch(batch, last_micro=last_micro)
                self.batches_done = i + 1
                if bar is not None:
                    bar.update(1)
                if not last_micro:
                    continue
                updated = self._update()
                self._contributed = 0
                self._unsynced = False
                if not updated:
                    continue
                if self.step % self.opts.log_every == 0:
                    rec = self._log_train()
                    if bar is not None and rec["loss"] is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", step=self.step)
                if self.opts.valid_every and self.step % self.opts.valid_every == 0:
                    self._validate_and_save()
                elif self.opts.save_every and self.step % self.opts.save_every == 0:
                    self.save_checkpoint()
                if self._done() and self.batches_done < total:
                    stopped = True
                    break
            if bar is not None:
                bar.close()
            if stopped:
                self._validate_and_save()
                break
            self.epoch += 1
            self.batches_done = 0
            self._validate_and_save()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "best_cer": None if math.isinf(self.best_cer) else self.best_cer,
            "best_step": self.best_step,
            "skipped_batches": self.skipped_batches,
            "skipped_updates": self.skipped_updates,
            "unreadable_utterances": len(self.unreadable),
            **self.last_metrics,
        }

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        D.cleanup()
        self._release_lock()
