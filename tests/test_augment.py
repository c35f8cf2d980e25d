"""Augmentations on real speech features and waves: masks inside lengths, SNR, speed, determinism."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.audio import write_audio
from kospeech.data.augment import NoiseAugment, SpecAugment, SpeedPerturb, build_augments, speed_perturb_wave
from kospeech.errors import ConfigError
from kospeech.registry import build


@pytest.fixture
def feature_batch(fbank_batch) -> dict:
    """fbank_batch with a sentinel in the padding, to see that nothing touches it."""
    feats = fbank_batch["features"].clone()
    lengths = fbank_batch["feature_lengths"]
    pad = torch.arange(feats.size(1))[None, :] >= lengths[:, None]
    feats[pad] = 7.0
    return {"features": feats, "feature_lengths": lengths.clone()}


@pytest.fixture
def wave_batch(korean_utterances) -> dict:
    waves = [torch.from_numpy(w) for _, w in korean_utterances[:4]]
    lengths = torch.tensor([w.numel() for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        out[i, : w.numel()] = w
    return {"waves": out, "wave_lengths": lengths}


def test_registered_with_domains() -> None:
    augs = build_augments([{"name": "spec_augment", "time_warp": 3}, {"name": "noise"}, {"name": "speed"}])
    assert [type(a) for a in augs] == [SpecAugment, NoiseAugment, SpeedPerturb]
    assert [a.domain for a in augs] == ["feature", "wave", "wave"]


def test_spec_augment_masks_inside_lengths(feature_batch) -> None:
    aug = SpecAugment(freq_mask_width=10, num_freq_masks=2, time_mask_ratio=0.1, num_time_masks=3, seed=1)
    before = feature_batch["features"].clone()
    out = aug(feature_batch)["features"]
    assert torch.equal(feature_batch["features"], before)  # the input batch is not modified in place
    lengths = feature_batch["feature_lengths"]
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, n:] == 7.0).all()  # padding untouched
        masked = (out[b, :n] == 0) & (before[b, :n] != 0)
        freq_rows = masked.all(dim=0)  # frequency bins masked over the whole utterance
        time_cols = masked.all(dim=1)
        assert int(freq_rows.sum()) <= 2 * 10
        assert int(time_cols.sum()) <= 3 * math.floor(0.1 * n)
        assert bool(masked.any())
        # every masked cell is explained by a frequency or a time mask
        assert torch.equal(masked, freq_rows[None, :] | time_cols[:, None])


def test_spec_augment_is_seeded_and_training_only(feature_batch) -> None:
    a = SpecAugment(seed=3)(dict(feature_batch))["features"]
    b = SpecAugment(seed=3)(dict(feature_batch))["features"]
    c = SpecAugment(seed=4)(dict(feature_batch))["features"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    aug = SpecAugment(seed=3)
    first, second = aug(dict(feature_batch))["features"], aug(dict(feature_batch))["features"]
    assert not torch.equal(first, second)  # the generator advances from batch to batch
    aug.eval()
    assert aug(feature_batch) is feature_batch
    torch.manual_seed(5)
    d = SpecAugment()(dict(feature_batch))["features"]
    torch.manual_seed(5)
    assert torch.equal(d, SpecAugment()(dict(feature_batch))["features"])  # seed null: from torch's RNG


def test_absolute_time_mask_width_is_frames_not_a_share_of_the_length() -> None:
    """ESPnet's T=40 frames: a long and a short utterance get masks of the same largest width,
    which a ratio cannot do; widths reach the bound, never pass it, and stay inside the length."""
    lengths = torch.tensor([1000, 120, 30])
    feats = torch.ones(3, 1000, 8)
    aug = SpecAugment(num_freq_masks=0, num_time_masks=1, time_mask_width=40, seed=0)
    widest = {b: 0 for b in range(3)}
    for _ in range(200):
        out = aug({"features": feats.clone(), "feature_lengths": lengths})["features"]
        for b, n in enumerate(lengths.tolist()):
            masked = out[b, :, 0] == 0
            assert not bool(masked[n:].any())
            idx = masked.nonzero().flatten()
            if idx.numel():  # one mask: a contiguous run
                assert int(idx[-1] - idx[0] + 1) == idx.numel()
            widest[b] = max(widest[b], int(masked.sum()))
    assert widest[0] == 40 and widest[1] == 40  # 4% and 33% of the lengths: the same frames
    assert widest[2] == 30  # capped by a 30-frame utterance
    ratio = SpecAugment(num_freq_masks=0, num_time_masks=1, time_mask_ratio=0.04, seed=0)
    short = max(int((ratio({"features": feats.clone(), "feature_lengths": lengths})["features"][1, :, 0] == 0).sum())
                for _ in range(200))
    assert short <= 4  # the ratio gives the 120-frame utterance masks of at most 4 frames
    with pytest.raises(ConfigError, match="time_mask_width"):
        SpecAugment(time_mask_width=-1)


def test_time_warp_keeps_shape_and_order() -> None:
    lengths = torch.tensor([50, 30, 8])
    ramp = torch.arange(50, dtype=torch.float32)[None, :, None].repeat(3, 1, 4)
    ramp[1, 30:] = -1.0
    ramp[2, 8:] = -1.0
    aug = SpecAugment(num_freq_masks=0, num_time_masks=0, time_warp=5, seed=0)
    changed = False
    for _ in range(5):
        out = aug({"features": ramp.clone(), "feature_lengths": lengths})["features"]
        assert out.shape == ramp.shape
        for b, n in enumerate(lengths.tolist()):
            seq = out[b, :n, 0]
            assert float(seq[0]) == 0.0 and float(seq[-1]) >= n - 2
            assert bool((seq[1:] >= seq[:-1]).all())  # a warp, not a shuffle
            assert torch.equal(out[b, n:], ramp[b, n:])
        changed |= not torch.equal(out, ramp)
    assert changed
    assert torch.equal(out[2], ramp[2])  # 8 frames: too short for W=5, left alone


@pytest.mark.parametrize("noise_type", ["white", "pink", "babble"])
def test_noise_at_requested_snr(wave_batch, noise_type: str) -> None:
    aug = NoiseAugment(prob=1.0, snr_db=[10.0, 10.0], noise_type=noise_type, seed=0)
    out = aug(dict(wave_batch))
    clean, noisy, lengths = wave_batch["waves"], out["waves"], wave_batch["wave_lengths"]
    for b, n in enumerate(lengths.tolist()):
        noise = noisy[b, :n] - clean[b, :n]
        snr = 10 * math.log10(float(clean[b, :n].square().mean()) / float(noise.square().mean()))
        assert abs(snr - 10.0) < 0.05
        assert float(noisy[b, n:].abs().sum()) == 0.0
    if noise_type == "pink":
        spec = torch.fft.rfft(noisy[0] - clean[0]).abs().square()
        assert float(spec[50:500].mean()) > 10 * float(spec[-5000:].mean())
    if noise_type == "babble":  # the noise is the other utterances of the batch, shifted and summed
        added = (noisy[0] - clean[0]).double()
        assert float(added.abs().max()) > 0
        # a sum of the other utterances: speech-shaped (most energy below 4 kHz), unlike white noise
        spec = torch.fft.rfft(added).abs().square()
        freqs = torch.fft.rfftfreq(added.numel(), 1 / 16000)
        assert float(spec[freqs < 4000].sum()) > 0.8 * float(spec.sum())


@pytest.mark.parametrize("noise_type", ["pink", "babble"])
def test_noise_only_on_the_chosen_utterances(wave_batch, noise_type: str) -> None:
    """Noise is made for the chosen rows alone; the others stay bit-identical and the chosen
    ones still get the requested SNR."""
    aug = NoiseAugment(prob=0.5, snr_db=[10.0, 10.0], noise_type=noise_type, seed=3)
    clean, lengths = wave_batch["waves"], wave_batch["wave_lengths"]
    seen = set()
    for _ in range(6):
        noisy = aug(dict(wave_batch))["waves"]
        for b, n in enumerate(lengths.tolist()):
            if torch.equal(noisy[b], clean[b]):
                seen.add("clean")
                continue
            seen.add("noisy")
            noise = noisy[b, :n] - clean[b, :n]
            snr = 10 * math.log10(float(clean[b, :n].square().mean()) / float(noise.square().mean()))
            assert abs(snr - 10.0) < 0.05
            assert float(noisy[b, n:].abs().sum()) == 0.0
    assert seen == {"clean", "noisy"}


def test_noise_fraction_and_files(wave_batch, korean_utterances, tmp_path: Path) -> None:
    untouched = NoiseAugment(prob=0.0, seed=0)(dict(wave_batch))
    assert torch.equal(untouched["waves"], wave_batch["waves"])
    rng = np.random.default_rng(0)
    write_audio(tmp_path / "n1.wav", 0.1 * rng.standard_normal(4000).astype(np.float32))
    write_audio(tmp_path / "n2.wav", korean_utterances[6][1])  # babble-like: other speech
    (tmp_path / "noise.list").write_text(f"a {tmp_path / 'n1.wav'}\nb {tmp_path / 'n2.wav'}\n", encoding="utf-8")
    aug = build(
        "augment",
        {"name": "noise", "noise_files": str(tmp_path / "noise.list"), "prob": 0.5, "snr_db": [0.0, 20.0], "seed": 2},
    )
    hits = 0
    for _ in range(10):
        out = aug(dict(wave_batch))
        diff = (out["waves"] - wave_batch["waves"]).abs().sum(dim=1)
        hits += int((diff > 0).sum())
    assert 8 <= hits <= 32  # about half of 40 utterances got noise
    with pytest.raises(Exception, match="does not exist"):
        NoiseAugment(noise_files=str(tmp_path / "missing.list"))


def test_speed_batched_equals_single_and_lengths(wave_batch) -> None:
    out = SpeedPerturb(factors=[0.9], seed=0)(dict(wave_batch))
    for b, n in enumerate(wave_batch["wave_lengths"].tolist()):
        ref = speed_perturb_wave(wave_batch["waves"][b, :n].numpy(), 0.9)
        assert int(out["wave_lengths"][b]) == len(ref) == math.ceil(n / 0.9)
        np.testing.assert_allclose(out["waves"][b, : len(ref)].numpy(), ref, atol=1e-5)
        assert float(out["waves"][b, len(ref) :].abs().sum()) == 0.0
    mixed = SpeedPerturb(factors=[0.9, 1.0, 1.1], seed=4)
    seen: set[float] = set()
    for _ in range(4):
        res = mixed(dict(wave_batch))
        for b, n in enumerate(wave_batch["wave_lengths"].tolist()):
            f = float(res["speed_factors"][b])
            seen.add(round(f, 1))
            assert abs(int(res["wave_lengths"][b]) - n / f) <= 1
    assert seen == {0.9, 1.0, 1.1}


def test_wrong_batch_kind_is_explained(feature_batch, wave_batch) -> None:
    with pytest.raises(ConfigError, match="raw-audio mode"):
        SpeedPerturb()(feature_batch)
    with pytest.raises(ConfigError, match=r"needs batch keys \['features', 'feature_lengths'\]"):
        SpecAugment()(wave_batch)
    with pytest.raises(ConfigError, match="time_mask_ratio"):
        SpecAugment(time_mask_ratio=2.0)


def test_trim_edges_cuts_the_silence_around_the_speech() -> None:
    """Speech (a tone) between 0.3 s and 0.5 s of silence (digital zero, or noise 50 dB down): the
    trimmed utterance starts within max_seconds + one 10 ms frame of the speech and keeps all of it."""
    from kospeech.data.augment import TrimEdges

    rate = 16000
    t = torch.arange(rate) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 220 * t)
    quiet = 0.5 * 10 ** (-50 / 20) * torch.randn(rate, generator=torch.Generator().manual_seed(0))
    rows = [torch.cat([torch.zeros(4800), tone, torch.zeros(8000)]), torch.cat([quiet[:4800], tone, quiet[:8000]]),
            torch.zeros(6000)]  # all silence: left alone
    lengths = torch.tensor([len(r) for r in rows])
    waves = torch.zeros(3, int(lengths.max()))
    for i, r in enumerate(rows):
        waves[i, : len(r)] = r
    aug = TrimEdges(prob=1.0, max_seconds=0.02, seed=0)
    out = aug({"waves": waves.clone(), "wave_lengths": lengths.clone()})
    new = out["wave_lengths"]
    for i in (0, 1):
        w = out["waves"][i, : int(new[i])]
        assert rate <= int(new[i]) <= rate + 2 * (320 + 160)  # the tone, plus at most 20 ms + a frame at each end
        onset = int(torch.nonzero(w.abs() > 0.01)[0])
        assert onset <= 320 + 160
        assert float(w.square().sum()) == pytest.approx(float(tone.square().sum()), rel=1e-3)  # all the speech kept
    assert int(new[2]) == 6000 and torch.equal(out["waves"][2, :6000], waves[2, :6000])
    assert float(out["waves"][0, int(new[0]) :].abs().sum()) == 0.0
    untouched = TrimEdges(prob=0.0, seed=0)({"waves": waves.clone(), "wave_lengths": lengths.clone()})
    assert torch.equal(untouched["waves"], waves) and torch.equal(untouched["wave_lengths"], lengths)
