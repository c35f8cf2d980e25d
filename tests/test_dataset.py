"""Datasets and collate on a real dump / data dir of espeak-ng speech with a real character tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.audio import read_audio, write_audio
from kospeech.data.cmvn import load_cmvn
from kospeech.data.datadir import write_data_dir
from kospeech.data.dataset import FeatureDataset, RawAudioDataset, collate, padding_fraction
from kospeech.data.dump import dump_features
from kospeech.data.frontends import build_frontend
from kospeech.data.sampler import BucketBatchSampler
from kospeech.errors import DataError
from kospeech.files import read_scp, write_scp
from kospeech.text.special import PAD_ID
from kospeech.text.tokenizers import train_tokenizer


@pytest.fixture
def corpus(tmp_path: Path, korean_utterances) -> tuple[Path, Path, object]:
    """(data dir, dump dir with CMVN, character tokenizer) for the eight fixture utterances."""
    wav, text, spk = {}, {}, {}
    for i, (sentence, wave) in enumerate(korean_utterances):
        utt = f"u{i}"
        write_audio(tmp_path / "audio" / f"{utt}.wav", wave)
        wav[utt], text[utt], spk[utt] = str(tmp_path / "audio" / f"{utt}.wav"), sentence, "s"
    data = write_data_dir(tmp_path / "data", wav=wav, text=text, utt2spk=spk, corpus="t", transcript="spelling")
    dump = tmp_path / "dump"
    dump_features(data, dump, {"name": "fbank", "n_mels": 40}, cmvn=True)
    tok = train_tokenizer("character", text.values(), tmp_path / "lang")
    return data, dump, tok


def test_feature_dataset_items_and_drops(corpus) -> None:
    _, dump, tok = corpus
    full = FeatureDataset(dump, tok)
    assert len(full) == 8 and full.dropped == {}
    longest = max(full.lengths)
    text = read_scp(dump / "text")
    item = full[full.utt_ids.index("u1")]
    assert item["utt_id"] == "u1" and item["features"].dtype == torch.float32
    assert item["features"].shape == (full.lengths[1], 40)
    assert item["target"].tolist() == tok.encode(text["u1"])

    # one transcript empty, one missing, and the longest utterance over max_frames
    text["u2"] = ""
    del text["u3"]
    (dump / "text").write_text("".join(f"{u} {t}\n".replace(" \n", "\n") for u, t in text.items()), "utf-8")
    ds = FeatureDataset(dump, str(dump.parent / "lang"), max_frames=longest - 1)
    assert ds.dropped == {
        "with an empty target": 1,
        "without transcript": 1,
        "longer than max_frames=" + str(longest - 1): 1,
    }
    assert len(ds) == 5 and "u2" not in ds.utt_ids and "u3" not in ds.utt_ids
    assert all(n <= longest - 1 for n in ds.lengths)


def test_feature_dataset_applies_cmvn(corpus) -> None:
    _, dump, tok = corpus
    raw = FeatureDataset(dump, tok)
    normed = FeatureDataset(dump, tok, cmvn=dump / "cmvn.npz")
    mean, std = load_cmvn(dump / "cmvn.npz")
    np.testing.assert_allclose(normed[0]["features"].numpy(), (raw[0]["features"].numpy() - mean) / std, rtol=1e-5)
    allf = torch.cat([normed[i]["features"] for i in range(len(normed))])
    assert float(allf.mean(0).abs().max()) < 1e-2 and float((allf.std(0) - 1).abs().max()) < 1e-2
    with pytest.raises(DataError, match="CMVN has 3 dims"):
        FeatureDataset(dump, tok, cmvn=(np.zeros(3), np.ones(3)))


def test_collate_contract_and_padding_fraction(corpus) -> None:
    _, dump, tok = corpus
    ds = FeatureDataset(dump, tok)
    items = [ds[i] for i in (0, 3, 5)]
    batch = collate(items)
    assert batch["utt_ids"] == [it["utt_id"] for it in items]
    lengths = [it["features"].shape[0] for it in items]
    assert batch["features"].shape == (3, max(lengths), 40) and batch["features"].dtype == torch.float32
    assert batch["feature_lengths"].tolist() == lengths and batch["feature_lengths"].dtype == torch.long
    tl = [len(it["target"]) for it in items]
    assert batch["targets"].shape == (3, max(tl)) and batch["target_lengths"].tolist() == tl
    for b, it in enumerate(items):
        assert torch.equal(batch["features"][b, : lengths[b]], it["features"])
        assert float(batch["features"][b, lengths[b] :].abs().sum()) == 0
        assert batch["targets"][b, : tl[b]].tolist() == it["target"].tolist()
        assert (batch["targets"][b, tl[b] :] == PAD_ID).all()
    assert 2 not in batch["targets"][:, 0].tolist()  # no <sos> in front
    expected = 1 - sum(lengths) / (3 * max(lengths))
    assert padding_fraction(batch) == pytest.approx(expected)


def test_dataset_with_bucket_sampler_in_a_dataloader(corpus) -> None:
    _, dump, tok = corpus
    ds = FeatureDataset(dump, tok)
    budget = 2 * max(ds.lengths)
    sampler = BucketBatchSampler(ds.lengths, batch_frames=budget, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate)
    seen = []
    for batch in loader:
        assert batch["features"].shape[0] * batch["features"].shape[1] <= budget
        seen += batch["utt_ids"]
    assert sorted(seen) == sorted(ds.utt_ids)


def test_raw_audio_dataset(corpus, tmp_path: Path) -> None:
    data, _, tok = corpus
    ds = RawAudioDataset(data, tok)
    assert ds.length_unit == "samples" and len(ds) == 8
    wav = read_scp(data / "wav.scp")
    for i in (0, 4):
        item = ds[i]
        ref = read_audio(wav[item["utt_id"]])
        assert ds.lengths[i] == len(ref) and torch.equal(item["wave"], torch.from_numpy(ref))
    batch = collate([ds[0], ds[1]])
    assert batch["waves"].shape == (2, max(ds.lengths[:2])) and batch["wave_lengths"].tolist() == ds.lengths[:2]
    assert "features" not in batch
    feats, lens = build_frontend({"name": "fbank"})(batch["waves"], batch["wave_lengths"])
    assert lens.tolist() == [1 + n // 160 for n in ds.lengths[:2]]

    # a broken file: dropped at start when its header is read; when utt2dur hid it, the item
    # carries the error and collate leaves it out of its batch, naming it under "failed"
    Path(wav["u6"]).write_bytes(b"broken")
    again = RawAudioDataset(data, tok)
    assert again.dropped == {"unreadable": 1} and "u6" not in again.utt_ids
    write_scp(data / "utt2dur", {u: "1.0" for u in wav})
    trusting = RawAudioDataset(data, tok)
    bad = trusting[trusting.utt_ids.index("u6")]
    assert bad["utt_id"] == "u6" and "u6.wav" in bad["error"]
    batch = collate([trusting[0], bad])
    assert batch["utt_ids"] == [trusting.utt_ids[0]] and batch["failed"][0][0] == "u6"
