"""Corpus on disk -> batch, through the real CLI stages, for both corpus layouts.

synth (espeak-ng, real on-disk layout) -> corpus prep -> tokenizer -> features dump (+CMVN)
-> FeatureDataset -> BucketBatchSampler -> collate: a padded batch a model can eat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kospeech.cli import main
from kospeech.text.special import NUM_SPECIAL, PAD_ID


def _batch_from(data_dir: Path, tmp_path: Path) -> tuple[dict, object]:
    lang = tmp_path / "lang"
    dump = tmp_path / "dump"
    assert main(["tokenizer", "train", "--name", "jamo", "--text", str(data_dir / "text"), "--out", str(lang)]) == 0
    assert main(["features", "dump", "--data", str(data_dir), "--out", str(dump), "--frontend", "fbank",
                 "--nj", "2", "--cmvn"]) == 0
    from kospeech.data.dataset import FeatureDataset, collate
    from kospeech.data.sampler import BucketBatchSampler
    from kospeech.text import load_tokenizer

    tokenizer = load_tokenizer(lang)
    dataset = FeatureDataset(dump, tokenizer, cmvn=dump / "cmvn.npz")
    n_utts = sum(1 for _ in open(data_dir / "text", encoding="utf-8"))
    assert len(dataset) == n_utts  # nothing silently lost between prep and dataset
    sampler = BucketBatchSampler(dataset.lengths, batch_frames=4000, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(dataset)))
    batch = collate([dataset[i] for i in batches[0]])
    return batch, tokenizer


def _check_batch(batch: dict, tokenizer, data_dir: Path) -> None:
    B, T, D = batch["features"].shape
    assert D == 80 and B == len(batch["utt_ids"])
    assert int(batch["feature_lengths"].max()) == T
    assert B * T <= 4000
    for b in range(B):
        n = int(batch["feature_lengths"][b])
        real = batch["features"][b, :n]
        assert torch.isfinite(real).all()
        assert (batch["features"][b, n:] == 0).all()
        L = int(batch["target_lengths"][b])
        assert (batch["targets"][b, :L] >= NUM_SPECIAL).all()
        assert (batch["targets"][b, L:] == PAD_ID).all()
    texts = dict(line.rstrip("\n").split(" ", 1) for line in open(data_dir / "text", encoding="utf-8"))
    utt = batch["utt_ids"][0]
    L = int(batch["target_lengths"][0])
    assert tokenizer.decode(batch["targets"][0, :L].tolist()) == texts[utt]


def test_ksponspeech_layout_to_batch(kspon_data: Path, tmp_path: Path) -> None:
    data_dir = kspon_data / "train"
    batch, tokenizer = _batch_from(data_dir, tmp_path)
    _check_batch(batch, tokenizer, data_dir)
    # CMVN makes the training features roughly standard normal per dimension
    from kospeech.data.dump import FeatureDump

    stats = np.load(tmp_path / "dump" / "cmvn.npz")
    feats = np.concatenate([FeatureDump(tmp_path / "dump")[u] for u in FeatureDump(tmp_path / "dump").keys()])
    normed = (feats - stats["mean"]) / stats["std"]
    assert np.abs(normed.mean(0)).max() < 0.05
    assert np.abs(normed.std(0) - 1).max() < 0.05


def test_zeroth_layout_to_batch(zeroth_data: Path, tmp_path: Path) -> None:
    data_dir = zeroth_data / "train"
    batch, tokenizer = _batch_from(data_dir, tmp_path)
    _check_batch(batch, tokenizer, data_dir)


def test_dump_carries_the_transcript_form(kspon_data: Path, tmp_path: Path) -> None:
    import yaml

    dump = tmp_path / "dump"
    assert main(["features", "dump", "--data", str(kspon_data / "dev"), "--out", str(dump), "--frontend", "fbank"]) == 0
    meta = yaml.safe_load((dump / "meta.yaml").read_text(encoding="utf-8"))
    assert meta["transcript"] == "phonetic"
    assert meta["corpus"] == "ksponspeech"
