"""Resume state: what a checkpoint saves of a training run and how it is put back, exactly.

Exact resume is a design goal, not a best effort. A checkpoint is only written at an update
boundary, and it records the epoch, how many batches of that epoch were consumed, and every RNG
stream (per rank). The batches of an epoch are a pure function of ``(seed, epoch, rank)``
(the bucket sampler), the DataLoader gets its own generator so creating an iterator does not
draw from the global stream, and the RNG states are put back right before the first resumed
batch. A run of 2N updates and a run of N updates + resume + N updates therefore end with the
same weights on CPU.

:class:`ResumeState` is the part of :class:`~kospeech.train.trainer.Trainer` that owns this: the
counters a checkpoint carries, :meth:`~ResumeState.state_dict` / :meth:`~ResumeState.save_checkpoint`
and the way back (:meth:`~ResumeState.resume_latest`, then :meth:`~ResumeState.restore_rng` right
before the first batch). It reads what the assembly (:mod:`kospeech.train.assembly`) built: the
model, optimizer, scheduler, scaler, sampler, input pipeline, tokenizer and data sets.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kospeech.errors import DataError
from kospeech.files import write_atomic
from kospeech.train import distributed as D
from kospeech.train.average import check_metric, checkpoint_metric, select_best
from kospeech.train.checkpoint import (
    BEST,
    LAST,
    atomic_link,
    cmvn_stats,
    generator_states,
    latest_readable_checkpoint,
    list_checkpoints,
    model_state,
    prune_checkpoints,
    restore_generator_states,
    rng_state,
    set_rng_state,
    step_path,
    unwrap,
    write_checkpoint,
)

logger = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"
CONFIG_FILE = "config.yaml"


def weights_only_safe(obj: Any) -> Any:
    """NumPy values to Python/tensors, so the checkpoint stays loadable with weights_only=True.

    Not the export's YAML-safe copy (``kospeech.export.onnx``): this keeps tuples and turns arrays
    into tensors, which ``torch.load(weights_only=True)`` reads and YAML would not.
    """
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: weights_only_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(weights_only_safe(v) for v in obj)
    return obj


class ResumeState:
    """The trainer's checkpointed state (a mixin of :class:`~kospeech.train.trainer.Trainer`)."""

    def _init_resume_state(self) -> None:
        """The counters and state that a checkpoint carries, at the start of a run."""
        self.step = 0
        self.epoch = 0
        self.batches_done = 0
        self.skipped_batches = 0
        self.skipped_updates = 0
        self.unreadable: dict[str, str] = {}  # utterance -> why its audio could not be read
        self.best_cer = math.inf
        self.best_step = -1
        self.last_metrics: dict[str, Any] = {}
        self._pending_rng: Mapping[str, Any] | None = None
        self._pending_generators: Mapping[str, Any] | None = None
        self._saved_at: tuple[int, int, int] | None = None  # (step, epoch, batches_done) of the last save

    def resume_latest(self) -> None:
        """Continue from the newest readable checkpoint in ``exp_dir/checkpoints``, if any."""
        found = latest_readable_checkpoint(self.ckpt_dir)
        if found is not None:
            self._resume(*found)
        else:
            logger.info("--resume: no checkpoint in %s yet, starting from scratch", self.ckpt_dir)

    def restore_rng(self) -> None:
        """Put the resumed RNG streams back, right before the first resumed batch."""
        if self._pending_generators is not None:
            restore_generator_states(self._random_parts(), self._pending_generators)
            self._pending_generators = None
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

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
        return weights_only_safe(state)

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

    def _position(self) -> tuple[int, int, int]:
        return (self.step, self.epoch, self.batches_done)
