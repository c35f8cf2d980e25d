"""BucketBatchSampler properties: budget, coverage, determinism, DDP sharding, resume, padding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kospeech.data.sampler import (
    BucketBatchSampler,
    padded_fraction,
    shuffled_batches,
    shuffled_fixed_batches,
)
from kospeech.errors import ConfigError


def realistic_lengths(n: int = 5000, seed: int = 0) -> np.ndarray:
    """Frames per utterance like KsponSpeech: log-normal around 3 s, 0.5 s to 30 s."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(300), 0.6, n), 50, 3000).astype(int)


lengths_st = st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=200)


@settings(max_examples=40, deadline=None)
@given(
    lengths=lengths_st,
    batch_frames=st.integers(min_value=50, max_value=2000),
    num_buckets=st.integers(1, 12),
    seed=st.integers(0, 5),
    epoch=st.integers(0, 3),
)
def test_every_item_once_within_budget(lengths, batch_frames, num_buckets, seed, epoch) -> None:
    sampler = BucketBatchSampler(lengths, batch_frames=batch_frames, num_buckets=num_buckets, seed=seed)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) >= 1
        padded = max(lengths[i] for i in b) * len(b)
        assert padded <= batch_frames or len(b) == 1


@settings(max_examples=30, deadline=None)
@given(lengths=lengths_st, world_size=st.integers(1, 5), drop_last=st.booleans(), epoch=st.integers(0, 2))
def test_ddp_ranks_get_equal_disjoint_shares(lengths, world_size, drop_last, epoch) -> None:
    total = len(BucketBatchSampler(lengths, batch_frames=300, seed=3).batches(epoch))
    if drop_last and total < world_size:
        return  # nothing left for some rank: a configuration error covered below
    per_rank = []
    for rank in range(world_size):
        s = BucketBatchSampler(lengths, batch_frames=300, seed=3, rank=rank, world_size=world_size, drop_last=drop_last)
        s.set_epoch(epoch)
        per_rank.append([tuple(b) for b in s])
    counts = {len(r) for r in per_rank}
    assert len(counts) == 1  # the same number of batches on every rank (no DDP hang)
    n = counts.pop()
    full = BucketBatchSampler(lengths, batch_frames=300, seed=3).batches(epoch)
    everything = Counter(b for r in per_rank for b in r)
    if drop_last:
        assert n == total // world_size
        assert sum(everything.values()) == n * world_size
        assert max(everything.values()) == 1  # disjoint
    else:
        assert n == -(-total // world_size)
        expected = Counter(tuple(b) for b in full) + Counter(
            tuple(full[i % total]) for i in range(n * world_size - total)
        )
        assert everything == expected  # every batch once, plus repeats from the start as padding


def test_deterministic_per_seed_and_epoch_and_epochs_differ() -> None:
    lengths = realistic_lengths(2000)
    a = BucketBatchSampler(lengths, batch_frames=10000, seed=7)
    b = BucketBatchSampler(lengths, batch_frames=10000, seed=7)
    assert a.batches(0) == b.batches(0)
    assert a.batches(0) != a.batches(1)
    assert a.batches(0) != BucketBatchSampler(lengths, batch_frames=10000, seed=8).batches(0)
    # bucket contents are reshuffled, not just the batch order
    same = set(map(tuple, a.batches(0))) & set(map(tuple, a.batches(1)))
    assert len(same) < 0.1 * len(a.batches(0))
    fixed = BucketBatchSampler(lengths, batch_frames=10000, seed=1, shuffle=False)
    assert (
        fixed.batches(0)
        == fixed.batches(5)
        == BucketBatchSampler(lengths, batch_frames=10000, shuffle=False).batches(0)
    )


def test_resume_mid_epoch_continues_with_the_next_batch() -> None:
    lengths = realistic_lengths(1500)
    kwargs = dict(batch_frames=8000, seed=11, rank=1, world_size=2)
    ref = BucketBatchSampler(lengths, **kwargs)
    ref.set_epoch(3)
    expected = list(ref)

    first = BucketBatchSampler(lengths, **kwargs)
    first.set_epoch(3)
    it = iter(first)
    seen = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state["epoch"] == 3 and state["position"] == 5

    resumed = BucketBatchSampler(lengths, **kwargs)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a trainer calling set_epoch for the same epoch keeps the position
    rest = list(resumed)
    assert seen + rest == expected
    resumed.set_epoch(4)
    assert next(iter(resumed)) == ref.batches(4)[0]

    # consumed count given by the trainer (a DataLoader prefetches ahead of it)
    explicit = BucketBatchSampler(lengths, **kwargs)
    explicit.load_state_dict(first.state_dict(consumed=2))
    assert list(explicit) == expected[2:]


def test_epoch_end_resets_position() -> None:
    s = BucketBatchSampler([10, 20, 30, 40], batch_frames=50, shuffle=False)
    assert list(s) == list(s)  # a finished epoch iterates again from the start
    assert s.state_dict()["position"] == 0


def test_padding_much_lower_than_shuffled_batching() -> None:
    lengths = realistic_lengths(5000)
    budget = 20000
    sampler = BucketBatchSampler(lengths, batch_frames=budget, seed=0)
    ours = np.mean([sampler.padding_fraction(e) for e in range(3)])
    plain = padded_fraction(lengths, shuffled_batches(lengths, batch_frames=budget, seed=0))
    fixed = padded_fraction(lengths, shuffled_fixed_batches(lengths, batch_frames=budget, seed=0))
    assert plain > 0.4 and fixed > 0.4
    assert ours < 0.1 and ours < plain / 5, (ours, plain)
    # fewer, fuller batches for the same memory bound
    assert len(sampler) < 0.7 * len(shuffled_batches(lengths, batch_frames=budget))


def test_works_as_dataloader_batch_sampler() -> None:
    lengths = [5, 3, 8, 2, 7, 6]
    data = [torch.full((n,), float(i)) for i, n in enumerate(lengths)]
    sampler = BucketBatchSampler(lengths, batch_frames=16, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=lambda items: items)
    got = sorted(int(x[0]) for batch in loader for x in batch)
    assert got == list(range(6))


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="batch_frames must be positive"):
        BucketBatchSampler([1, 2], batch_frames=0)
    with pytest.raises(ConfigError, match="rank 2 is not in"):
        BucketBatchSampler([1, 2], batch_frames=10, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="item 1 has length 0"):
        BucketBatchSampler([3, 0], batch_frames=10)
    with pytest.raises(ConfigError, match="gets no batches"):
        len(BucketBatchSampler([3], batch_frames=10, rank=1, world_size=2, drop_last=True))
