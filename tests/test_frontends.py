"""Frontends on real espeak-ng speech: backends agree, batches equal single utterances, options work."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from kospeech.data.frontends import (
    Frontend,
    build_frontend,
    frames_for_seconds,
    remove_silence,
    reverse_padded,
)
from kospeech.errors import ConfigError, DataError, RegistryError
from kospeech.registry import registry

NAMES = ["spectrogram", "mel", "fbank", "mfcc"]


def _batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.zeros(len(waves), int(lengths.max()) + 37)  # extra padding beyond the longest on purpose
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(w)
    return out, lengths


@pytest.fixture(scope="module")
def waves(korean_utterances) -> list[np.ndarray]:
    return [w for _, w in korean_utterances]


@pytest.fixture(scope="module")
def silence_padded(waves) -> list[np.ndarray]:
    """Speech with quiet noise before, a pause inside and noise after: what del_silence is for."""
    rng = np.random.default_rng(1)
    quiet = [1e-4 * rng.standard_normal(n).astype(np.float32) for n in (8000, 7000)]
    return [np.concatenate([quiet[0], w, np.zeros(5000, np.float32), w[:3000], quiet[1]]) for w in waves[:4]]


def test_registered_with_schema() -> None:
    assert set(NAMES) <= set(registry("frontend").names())
    fe = build_frontend({"name": "fbank", "n_mels": 40})
    assert isinstance(fe, Frontend) and fe.output_dim == 40
    assert fe.config["n_mels"] == 40 and fe.config["name"] == "fbank" and fe.config["window"] == "povey"
    assert build_frontend({"name": "mfcc", "n_mfcc": 13}).output_dim == 13
    assert build_frontend({"name": "spectrogram"}).output_dim == 257
    assert build_frontend().output_dim == 80  # default: 80-dim fbank


def test_bad_config_errors_say_what() -> None:
    with pytest.raises(RegistryError, match="frontend.backend"):
        build_frontend({"name": "mel", "backend": "kaldi"})
    with pytest.raises(RegistryError, match="Did you mean 'n_mels'"):
        build_frontend({"name": "mel", "n_mel": 40})
    with pytest.raises(ConfigError, match="n_mfcc <= n_mels"):
        build_frontend({"name": "mfcc", "n_mfcc": 90, "n_mels": 80})
    with pytest.raises(ConfigError, match="f_min < f_max"):
        build_frontend({"name": "mel", "f_max": 9000.0})


@pytest.mark.parametrize("name", NAMES)
def test_backends_agree(name: str, waves) -> None:
    """Same definitions in both backends: differences are FFT rounding only (bounds in the module docstring)."""
    ta = build_frontend({"name": name})
    lb = build_frontend({"name": name, "backend": "librosa"})
    diffs = []
    for w in waves:
        a, b = ta.extract(w), lb.extract(w)
        assert a.shape == b.shape == (1 + len(w) // 160, ta.output_dim)
        assert a.dtype == b.dtype == np.float32
        diffs.append(np.abs(a - b).ravel())
    diff = np.concatenate(diffs)
    assert diff.max() < 1e-2, diff.max()
    assert diff.mean() < 1e-4, diff.mean()


def test_agreement_bound_detects_real_differences(waves) -> None:
    """The tolerance is tight enough that a changed definition (window, mel scale) would fail it."""
    base = build_frontend({"name": "mel"}).extract(waves[0])
    other_window = build_frontend({"name": "mel", "window": "povey"}).extract(waves[0])
    other_scale = build_frontend({"name": "mel", "mel_scale": "htk"}).extract(waves[0])
    assert np.abs(base - other_window).mean() > 1e-2
    assert np.abs(base - other_scale).mean() > 1e-2


def test_fbank_close_to_kaldi(waves) -> None:
    """fbank is Kaldi-like: same scale of values as torchaudio.compliance.kaldi.fbank (no DC/pre-emphasis)."""
    from torchaudio.compliance.kaldi import fbank as kaldi_fbank

    w = waves[1]
    ours = build_frontend({"name": "fbank"}).extract(w)
    ref = kaldi_fbank(
        torch.from_numpy(w)[None] * 32768,
        num_mel_bins=80,
        dither=0.0,
        preemphasis_coefficient=0.0,
        remove_dc_offset=False,
        snip_edges=False,
    ).numpy()
    t = min(len(ours), len(ref))
    loud = ref[:t].mean(1) > np.median(ref[:t].mean(1))  # compare where there is speech
    assert np.median(np.abs(ours[:t][loud] - ref[:t][loud])) < 0.5


@pytest.mark.parametrize("name", ["fbank", "mfcc"])
def test_batched_equals_single_and_lengths_exact(name: str, waves) -> None:
    fe = build_frontend({"name": name})
    batch, lengths = _batch(waves)
    feats, feat_lengths = fe(batch, lengths)
    assert feat_lengths.tolist() == [1 + len(w) // 160 for w in waves]
    assert feats.shape == (len(waves), int(feat_lengths.max()), fe.output_dim)
    for i, w in enumerate(waves):
        np.testing.assert_allclose(feats[i, : feat_lengths[i]].numpy(), fe.extract(w), atol=1e-4)
        assert float(feats[i, feat_lengths[i] :].abs().sum()) == 0.0
    lb_feats, lb_lengths = build_frontend({"name": name, "backend": "librosa"})(batch, lengths)
    assert lb_lengths.tolist() == feat_lengths.tolist()
    assert float((lb_feats - feats).abs().max()) < 1e-2


def test_frames_for_seconds_matches_extraction(waves) -> None:
    fe = build_frontend({"name": "fbank"})
    for w in waves[:3]:
        assert frames_for_seconds(len(w) / 16000) == fe.extract(w).shape[0]


def test_remove_silence_matches_librosa_split(silence_padded) -> None:
    batch, lengths = _batch(silence_padded)
    out, new_lengths = remove_silence(batch, lengths, top_db=30.0)
    for i, w in enumerate(silence_padded):
        ref = np.concatenate([w[s:e] for s, e in librosa.effects.split(w, top_db=30)])
        assert int(new_lengths[i]) == len(ref) < len(w)
        np.testing.assert_array_equal(out[i, : new_lengths[i]].numpy(), ref)


@pytest.mark.parametrize(
    "opts",
    [{"normalize": True}, {"input_reverse": True}, {"del_silence": True}, {"normalize": True, "del_silence": True}],
)
def test_options_agree_across_backends(opts, silence_padded) -> None:
    batch, lengths = _batch(silence_padded)
    ta_feats, ta_len = build_frontend({"name": "fbank", **opts})(batch, lengths)
    lb_feats, lb_len = build_frontend({"name": "fbank", "backend": "librosa", **opts})(batch, lengths)
    assert ta_len.tolist() == lb_len.tolist()
    assert float((ta_feats - lb_feats).abs().max()) < 1e-2
    if opts.get("del_silence"):
        assert (ta_len < 1 + lengths // 160).all()


def test_normalize_and_reverse_semantics(waves) -> None:
    plain = build_frontend({"name": "fbank"}).extract(waves[2])
    normed = build_frontend({"name": "fbank", "normalize": True}).extract(waves[2])
    assert abs(normed.mean()) < 1e-4 and abs(normed.std() - 1) < 1e-3
    np.testing.assert_allclose(normed, (plain - plain.mean()) / plain.std(), atol=1e-4)
    rev = build_frontend({"name": "fbank", "input_reverse": True}).extract(waves[2])
    np.testing.assert_array_equal(rev, plain[::-1])


def test_reverse_padded_keeps_padding() -> None:
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([3, 5]))
    assert out[:, :, 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]


def test_dither_changes_output_only_when_enabled(waves) -> None:
    w = waves[0]
    fe = build_frontend({"name": "fbank"})
    np.testing.assert_array_equal(fe.extract(w), fe.extract(w))
    dithered = build_frontend({"name": "fbank", "dither": 1e-3})
    assert not np.array_equal(dithered.extract(w), fe.extract(w))


def test_empty_wave_is_a_data_error() -> None:
    fe = build_frontend({"name": "fbank"})
    with pytest.raises(DataError, match="non-empty mono wave"):
        fe.extract(np.zeros(0, np.float32))
    with pytest.raises(DataError, match="empty wave"):
        fe(torch.zeros(2, 100), torch.tensor([100, 0]))


def test_module_moves_with_device_and_has_no_state_in_checkpoint() -> None:
    fe = build_frontend({"name": "mfcc"})
    assert fe.state_dict() == {}  # window / filters are derived from the config, not saved
    fe = fe.to(torch.float64)
    feats, _ = fe(torch.randn(2, 1600, dtype=torch.float64), torch.tensor([1600, 800]))
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_the_fly_frontend_on_gpu_matches_cpu(waves) -> None:
    batch, lengths = _batch(waves)
    for opts in ({}, {"normalize": True, "del_silence": True, "input_reverse": True}):
        fe = build_frontend({"name": "fbank", **opts})
        cpu_feats, cpu_len = fe(batch, lengths)
        gpu_feats, gpu_len = fe.to("cuda")(batch.cuda(), lengths.cuda())
        assert gpu_feats.device.type == "cuda" and gpu_len.tolist() == cpu_len.tolist()
        assert float((gpu_feats.cpu() - cpu_feats).abs().max()) < 1e-2
