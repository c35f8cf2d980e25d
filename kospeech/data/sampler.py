"""Length-bucketed dynamic batching: batches bounded by padded frames, shuffled per epoch, DDP-sharded, resumable.

Why buckets: a plain shuffled batcher pads every utterance to the longest in its batch, and
on speech (lengths spread over an order of magnitude) roughly half of every batch is
padding. Sorting by length and cutting the sorted list into ``num_buckets`` equal-count
buckets keeps similar lengths together, so batches built inside a bucket are nearly
padding-free, while shuffling the items inside each bucket and then the order of all
batches keeps epochs different from each other.

Why padded frames: ``max_len * count <= batch_frames`` is what the GPU actually holds, so a
fixed ``batch_frames`` fits memory whatever the lengths, with many short or few long
utterances per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from kospeech.errors import ConfigError

logger = logging.getLogger(__name__)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose padded size (``max length * count``) stays <= ``batch_frames``.

    Args:
        lengths: frames per item (``FeatureDataset.lengths``).
        batch_frames: budget of padded frames per batch; an item longer than it forms a
            batch alone (the dataset's ``max_frames`` should prevent that).
        seed, epoch: the permutation of an epoch depends only on ``(seed, epoch)``, so
            every DDP rank computes the same global batch list without communicating.
        shuffle: shuffle bucket contents and batch order (False: sorted, for evaluation).
        num_buckets: equal-count length buckets.
        rank, world_size: DDP sharding. All ranks get the same number of batches (the global
            list is padded with batches repeated from its start; with ``drop_last`` it is
            cut instead), rank ``r`` takes every ``world_size``-th batch from ``r``.
        drop_last: cut the batch list to a multiple of ``world_size`` instead of padding.

    Resuming: ``state_dict()`` records the epoch and how many batches of it this rank has
    yielded; after ``load_state_dict`` the next iteration continues with the following batch
    of the same epoch order. A ``DataLoader`` fetches batches ahead of the training loop,
    so a trainer that knows how many it has consumed passes ``state_dict(consumed=n)``.
    """

    POOL_BATCHES = 8

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        batch_frames: int,
        seed: int = 0,
        shuffle: bool = True,
        num_buckets: int = 10,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_frames <= 0:
            raise ConfigError(f"batch_frames must be positive, got {batch_frames}")
        if num_buckets < 1:
            raise ConfigError(f"num_buckets must be >= 1, got {num_buckets}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, world_size={world_size})")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ConfigError("BucketBatchSampler needs a non-empty list of lengths")
        if (self.lengths <= 0).any():
            raise ConfigError(f"lengths must be positive; item {int(np.argmin(self.lengths))} has length 0")
        self.batch_frames = int(batch_frames)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_buckets = int(num_buckets)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded (or consumed, after a resume)
        self._cache: tuple[int, list[list[int]]] | None = None
        too_long = int((self.lengths > self.batch_frames).sum())
        if too_long:
            logger.warning(
                "%d items are longer than batch_frames=%d and will form batches of one", too_long, batch_frames
            )

    # -- the batch list of an epoch ----------------------------------------------------------------

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = np.argsort(self.lengths, kind="stable")
        batches: list[list[int]] = []
        for bucket in np.array_split(order, min(self.num_buckets, len(order))):
            if self.shuffle:
                bucket = self._shuffle_bucket(bucket, rng)
            batches.extend(pack_greedy(self.lengths, bucket, self.batch_frames))
        if self.shuffle:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        return batches

    def _shuffle_bucket(self, bucket: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shuffle, then sort within pools of ~``POOL_BATCHES`` batches' worth of items.

        A pure shuffle of a bucket packs neighbours that differ by the whole bucket's length
        range; sorting small random pools (torchtext's "pool" trick) keeps the batches'
        membership random from epoch to epoch while neighbours in a pool are close in length.
        """
        bucket = rng.permutation(bucket)
        per_batch = max(1, self.batch_frames // max(1, int(np.median(self.lengths[bucket]))))
        pool = per_batch * self.POOL_BATCHES
        pools = [bucket[i : i + pool] for i in range(0, len(bucket), pool)]
        return np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in pools])

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches for ``epoch`` (default: the current one), in iteration order."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        full = self._global_batches(epoch)
        if self.world_size > 1:
            if self.drop_last:
                full = full[: len(full) - len(full) % self.world_size]
            else:
                pad = -len(full) % self.world_size
                full = full + [full[i % len(full)] for i in range(pad)]
        mine = full[self.rank :: self.world_size]
        if not mine:
            raise ConfigError(
                f"rank {self.rank} of {self.world_size} gets no batches (only {len(full)} in total); "
                "use a smaller batch_frames or fewer ranks"
            )
        self._cache = (epoch, mine)
        return mine

    # -- Sampler protocol ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[list[int]]:
        epoch_batches = self.batches()
        while self.position < len(epoch_batches):
            batch = epoch_batches[self.position]
            self.position += 1  # counted before the yield: a state saved after using it resumes after it
            yield list(batch)
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order; a new epoch starts from its first batch (the same one keeps its position)."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.position = 0

    # -- resume --------------------------------------------------------------------------------

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position if consumed is None else int(consumed),
            "seed": self.seed,
            "num_items": int(len(self.lengths)),
            "batch_frames": self.batch_frames,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("num_items", "batch_frames", "world_size"):
            mine = int(len(self.lengths)) if key == "num_items" else getattr(self, key)
            if key in state and state[key] != mine:
                logger.warning(
                    "sampler state was saved with %s=%s, now %s: the resumed epoch order differs", key, state[key], mine
                )
        self.seed = int(state.get("seed", self.seed))
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._cache = None

    def padding_fraction(self, epoch: int | None = None) -> float:
        """Share of padded frames over this rank's batches (a quality number for logs and benchmarks)."""
        return padded_fraction(self.lengths, self.batches(epoch))


def padded_fraction(lengths: Sequence[int] | np.ndarray, batches: Sequence[Sequence[int]]) -> float:
    """1 - real frames / padded frames over ``batches`` of indices into ``lengths``."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for b in batches:
        ls = lengths[list(b)]
        real += int(ls.sum())
        padded += int(ls.max()) * len(ls)
    return 1.0 - real / padded if padded else 0.0


def pack_greedy(lengths: np.ndarray, items: np.ndarray, batch_frames: int) -> list[list[int]]:
    """Cut ``items`` (in order) into batches, adding items while running max length x count fits."""
    out: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for idx in np.asarray(items).tolist():  # a loop over items (not frames), once per epoch
        n = int(lengths[idx])
        if current and max(longest, n) * (len(current) + 1) > batch_frames:
            out.append(current)
            current, longest = [], 0
        current.append(idx)
        longest = max(longest, n)
    if current:
        out.append(current)
    return out


def shuffled_batches(lengths: Sequence[int] | np.ndarray, *, batch_frames: int, seed: int = 0) -> list[list[int]]:
    """Baseline: shuffle everything, then pack greedily under the same padded-frames budget.

    The same memory bound as :class:`BucketBatchSampler` without any length awareness.
    """
    lengths = np.asarray(lengths)
    order = np.random.default_rng(seed).permutation(len(lengths))
    return pack_greedy(lengths, order, batch_frames)


def shuffled_fixed_batches(lengths: Sequence[int] | np.ndarray, *, batch_frames: int, seed: int = 0) -> list[list[int]]:
    """Baseline: shuffle, then fixed-size batches of ``batch_frames // mean length`` items.

    Same budget on average, no length awareness: what a plain ``DataLoader(shuffle=True,
    batch_size=...)`` does, for comparisons.
    """
    lengths = np.asarray(lengths)
    size = max(1, int(batch_frames // lengths.mean()))
    order = np.random.default_rng(seed).permutation(len(lengths))
    return [order[i : i + size].tolist() for i in range(0, len(order), size)]
