"""The training loop: AMP, gradient accumulation and clipping, DDP, validation, logging.

One :class:`Trainer` serves a laptop CPU run and a multi-node ``torchrun`` job alike; what
changes is read from the environment (:mod:`kospeech.train.distributed`) and the config.
The Trainer is three jobs in three modules: the assembly of everything a config names
(:mod:`kospeech.train.assembly`), the resume state a checkpoint carries and puts back exactly
(:mod:`kospeech.train.resume`), and the loop here.

A batch whose loss is NaN or inf is never applied: every rank agrees to skip it (a single rank
skipping its backward would hang DDP), and the skip is counted and logged.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kospeech.data.inputs import resolve_device
from kospeech.errors import ConfigError, TrainingError
from kospeech.train import distributed as D
from kospeech.train.assembly import Assembly
from kospeech.train.checkpoint import CKPT_DIR, LAST, list_checkpoints, remove_stale_temporaries
from kospeech.train.options import DataOptions, TrainOptions
from kospeech.train.resume import CONFIG_FILE, LOG_FILE, ResumeState

logger = logging.getLogger(__name__)

PLOT_FILE = "train.png"


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
# the trainer


class Trainer(Assembly, ResumeState):
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

        self._init_resume_state()  # the counters and state that a checkpoint carries
        self._epoch_len = 0  # batches in the current epoch, for the budget share
        self._nonfinite_run = 0  # batches/updates in a row with a non-finite loss or gradient
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
            self.resume_latest()
        if self.dist.is_main:
            from kospeech.config import save_config

            save_config(self.cfg, self.exp_dir / CONFIG_FILE)
        if self.dist.is_main and self.opts.tensorboard:
            from kospeech.train.tensorboard import TensorBoardLog

            self._tb = TensorBoardLog(self.exp_dir, purge_step=self.step + 1 if self.step else None)
        self._reset_stats()

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
        self.restore_rng()
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
