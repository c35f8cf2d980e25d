"""Extractors on real fbank features: shapes, lengths, masking and padding invariance."""

from __future__ import annotations

import pytest
import torch
import yaml

from kospeech.errors import ConfigError
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import build

EXTRACTORS = {
    "vgg": ("name: vgg", 128 * 20, 4),
    "vgg_relu": ("{name: vgg, activation: relu}", 128 * 20, 4),
    "deepspeech2": ("name: deepspeech2", 32 * 20, 2),
    "deepspeech2_3": ("{name: deepspeech2, num_layers: 3, channels: 8}", 24 * 10, 2),
    "sub4": ("{name: conv2d_subsampling, output_dim: 48, channels: 8, subsampling: 4}", 48, 4),
    "sub6": ("{name: conv2d_subsampling, output_dim: 48, channels: 8, subsampling: 6}", 48, 6),
    "sub8": ("{name: conv2d_subsampling, output_dim: 48, channels: 8, subsampling: 8}", 48, 8),
    "none": ("name: none", 80, 1),
}


def _small_batch(fbank_batch: dict, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = fbank_batch["feature_lengths"][:n]
    return fbank_batch["features"][:n, : int(lengths.max())], lengths


@pytest.mark.parametrize("key", list(EXTRACTORS))
def test_extractor_forward_backward(key: str, fbank_batch: dict) -> None:
    text, out_dim, factor = EXTRACTORS[key]
    ext = build("extractor", yaml.safe_load(text), input_dim=80)
    assert ext.output_dim == out_dim
    x, lengths = _small_batch(fbank_batch)
    x = x.clone().requires_grad_(True)
    y, out_lengths = ext(x, lengths)
    assert y.shape == (3, y.size(1), out_dim)
    assert y.size(1) == int(out_lengths.max())
    # each length shrinks by about the subsampling factor
    assert torch.all((out_lengths - lengths // factor).abs() <= 2), (lengths, out_lengths)
    # frames past each length are exactly zero
    pad = ~lengths_to_mask(out_lengths, y.size(1))
    assert y.detach()[pad].abs().max().item() == 0.0 if pad.any() else True
    y.pow(2).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # padded input frames receive no gradient: they never reach an output
    assert x.grad[~lengths_to_mask(lengths, x.size(1))].abs().max().item() == 0.0


@pytest.mark.parametrize("key", list(EXTRACTORS))
def test_extractor_padding_invariance(key: str, fbank_batch: dict) -> None:
    ext = build("extractor", yaml.safe_load(EXTRACTORS[key][0]), input_dim=80)
    # the last four utterances (the shortest among them) keep the VGG runs cheap on CPU
    lengths = fbank_batch["feature_lengths"][4:]
    feats = fbank_batch["features"][4:, : int(lengths.max())]
    # batch-norm statistics from one training pass, so eval mode is not the identity
    ext.train()
    with torch.no_grad():
        ext(feats, lengths)
    ext.eval()
    short = int(lengths.argmin())
    n = int(lengths[short])
    noisy = feats.clone()
    noisy[short, n:] = 100.0  # garbage in the padding must not matter either
    with torch.no_grad():
        batched, blen = ext(noisy, lengths)
        alone, alen = ext(feats[short : short + 1, :n], lengths[short : short + 1])
    assert int(alen[0]) == int(blen[short])
    torch.testing.assert_close(batched[short, : alone.size(1)], alone[0], atol=1e-5, rtol=0)


def test_extractor_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="subsampling must be one of 4, 6, 8, got 5"):
        build("extractor", {"name": "conv2d_subsampling", "subsampling": 5}, input_dim=80)
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        build("extractor", {"name": "vgg", "activation": "swish"}, input_dim=80)
    with pytest.raises(ConfigError, match="num_layers must be 2 or 3"):
        build("extractor", {"name": "deepspeech2", "num_layers": 4}, input_dim=80)
    with pytest.raises(ConfigError, match="input_dim=2 is too small"):
        build("extractor", {"name": "vgg"}, input_dim=2)


def test_subsampling_rejects_too_short_input() -> None:
    ext = build("extractor", {"name": "conv2d_subsampling", "output_dim": 8, "channels": 4}, input_dim=80)
    with pytest.raises(ValueError, match="needs at least 7 frames, the batch has 5"):
        ext(torch.zeros(1, 5, 80), torch.tensor([5]))


def _zero_after_every_layer(ext: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference: the padding zeroed after every layer, every layer in its given order."""
    from kospeech.nn.extractors import _out_len

    h = x.unsqueeze(1).masked_fill(~lengths_to_mask(lengths, x.size(1))[:, None, :, None], 0.0)
    for module in ext.cnn.sequential:
        if getattr(ext.cnn, "channels_last", False):  # the same kernels, so the same roundings
            h = h.contiguous(memory_format=torch.channels_last)
        h = module(h)
        lengths = _out_len(module, lengths).clamp(min=0)
        h = h.masked_fill(~lengths_to_mask(lengths, h.size(2))[:, None, :, None], 0.0)
    return h


@pytest.mark.parametrize("key", [k for k in EXTRACTORS if k != "none"])
def test_extractor_skips_only_needless_zeroing(key: str, fbank_batch: dict) -> None:
    """MaskCNN zeroes the padding only where a later layer could read it and runs a monotone
    activation after the max pool: outputs and gradients must be exactly those of zeroing
    after every layer in the given order (training mode: batch-norm statistics included)."""
    x, lengths = _small_batch(fbank_batch)
    x = x.clone()
    x[0, int(lengths[0]):] = 7.0  # garbage in the padding
    _same_as_reference(key, x, lengths)
    shortest = int(lengths.min())  # and a batch with no padding at all (nothing is zeroed)
    _same_as_reference(key, x[:, :shortest].contiguous(), torch.full_like(lengths, shortest))


def _same_as_reference(key: str, x: torch.Tensor, lengths: torch.Tensor) -> None:
    outputs, grads = [], []
    for forward in ("planned", "reference"):
        torch.manual_seed(0)
        ext = build("extractor", yaml.safe_load(EXTRACTORS[key][0]), input_dim=80).train()
        xi = x.clone().requires_grad_(True)
        if forward == "planned":
            y = ext.cnn(xi.unsqueeze(1), lengths)[0]
        else:
            y = _zero_after_every_layer(ext, xi, lengths)
        (y * torch.linspace(-1, 1, y.size(-1))).sum().backward()
        outputs.append(y.detach())
        grads.append([xi.grad] + [p.grad for p in ext.cnn.parameters()])
    assert torch.equal(outputs[0], outputs[1])
    for planned, reference in zip(*grads):
        # float32 sums over a batch norm's frames round (the VGG's own gradients differ from a
        # float64 run by 1e-2 of their largest value); the two orders of work agree to 1e-4 of
        # it, a misplaced zeroing moves them by whole units
        assert (planned - reference).abs().max() <= 1e-4 * reference.abs().max() + 1e-7


def test_mask_cnn_keeps_order_where_it_matters(fbank_batch: dict) -> None:
    """Layers that do not commute with max pooling (batch norm with a negative scale, GELU) and a
    pool that reads across the padding keep their order and their zeroing."""
    from torch import nn

    from kospeech.nn.extractors import MaskCNN

    x, lengths = _small_batch(fbank_batch)
    outputs = []
    for forward in ("planned", "reference"):
        torch.manual_seed(0)
        seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.MaxPool2d(2),
                            nn.GELU(), nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        with torch.no_grad():
            seq[1].weight.copy_(torch.tensor([-1.0, 2.0, -0.5, 1.0]))
        cnn = MaskCNN(seq).train()
        holder = type("Holder", (), {"cnn": cnn})()
        y = cnn(x.unsqueeze(1), lengths)[0] if forward == "planned" else _zero_after_every_layer(holder, x, lengths)
        outputs.append(y.detach())
    assert torch.equal(outputs[0], outputs[1])
