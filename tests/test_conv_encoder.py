"""The convolution-only ``separable_conv`` encoder and the generic ``ctc`` model."""

from __future__ import annotations

import pytest
import torch
import yaml

from kospeech.errors import ConfigError
from kospeech.nn.mask import lengths_to_mask
from kospeech.nn.norm import MaskedBatchNorm1d
from kospeech.registry import build
from tests.test_deepspeech2 import assert_overfits

SMALL_CONV = """
name: ctc
encoder:
  name: separable_conv
  dim: 48
  num_blocks: 3
  kernel_size: 5
  dropout: 0.0
  extractor: {name: conv2d_subsampling, output_dim: 48, channels: 4}
"""


def _model(fbank_batch: dict, text: str = SMALL_CONV) -> torch.nn.Module:
    return build("model", yaml.safe_load(text), input_dim=80, vocab_size=fbank_batch["vocab_size"])


def test_masked_batch_norm_matches_batch_norm_over_real_frames() -> None:
    """Training statistics and running averages equal plain BatchNorm1d's on the real frames alone."""
    torch.manual_seed(0)
    lengths = torch.tensor([7, 3, 5])
    x = torch.randn(3, 4, 7) * 3 + 1
    mask = lengths_to_mask(lengths, 7)[:, None, :].float()
    x = x * mask + (1 - mask) * 100.0  # loud padding that must not count
    masked, plain = MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    y = masked(x, mask)
    real = torch.cat([x[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)  # (C, frames)
    expected = plain(real[None])[0]
    got = torch.cat([y[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert (y * (1 - mask)).abs().max().item() == 0.0
    masked.eval()
    plain.eval()
    torch.testing.assert_close(masked(x, mask)[0], plain(x[:1])[0])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_do_not_depend_on_batch_padding(fbank_batch: dict, mode: str) -> None:
    torch.manual_seed(0)
    enc = _model(fbank_batch).encoder
    enc.train(mode == "train")
    feats, flen = fbank_batch["features"], fbank_batch["feature_lengths"]
    longer = torch.cat([feats, torch.randn(feats.size(0), 40, feats.size(2)) * 5], dim=1)
    with torch.no_grad():
        a, alen = enc(feats, flen)
        b, blen = enc(longer, flen)
    assert torch.equal(alen, blen) and a.shape[-1] == enc.output_dim == 48
    for i in range(feats.size(0)):
        n = int(alen[i])
        torch.testing.assert_close(b[i, :n], a[i, :n], atol=1e-5, rtol=0)
    assert b[~lengths_to_mask(blen, b.size(1))].abs().max().item() == 0.0
    if mode == "eval":  # and an utterance alone gives what it gives in the batch
        short = int(flen.argmin())
        with torch.no_grad():
            alone, _ = enc(feats[short : short + 1, : int(flen[short])], flen[short : short + 1])
        torch.testing.assert_close(alone[0], a[short, : alone.size(1)], atol=1e-5, rtol=0)


def test_ctc_model_overfits_eight_utterances(fbank_batch: dict) -> None:
    """As for Deep Speech 2: loss under 0.01 nats and every transcript back from greedy decoding."""
    torch.manual_seed(0)
    model = _model(fbank_batch, SMALL_CONV.replace("dim: 48", "dim: 96").replace("output_dim: 48", "output_dim: 96"))
    assert model.has_ctc and not model.has_decoder
    assert_overfits(model, fbank_batch)


def test_defaults_and_bad_options() -> None:
    model = build("model", {"name": "ctc"}, input_dim=80, vocab_size=73)
    enc = model.encoder
    assert type(enc).__name__ == "SeparableConvEncoder" and len(enc.blocks) == 10 and enc.output_dim == 256
    assert enc.blocks[0].depthwise.kernel_size == (11,) and enc.blocks[0].depthwise.groups == 256
    plain = {"name": "separable_conv", "dim": 16, "num_blocks": 1, "extractor": None}
    no_extractor = build("encoder", plain, input_dim=80)
    out, lengths = no_extractor(torch.randn(2, 9, 80), torch.tensor([9, 4]))
    assert out.shape == (2, 9, 16) and lengths.tolist() == [9, 4]
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        build("encoder", {"name": "separable_conv", "kernel_size": 4}, input_dim=80)
    with pytest.raises(ConfigError, match="num_blocks"):
        build("encoder", {"name": "separable_conv", "num_blocks": 0}, input_dim=80)


def test_trains_under_bf16_autocast() -> None:
    """Autocast hands the norm bf16 activations; its statistics and fp32 buffers must cope."""
    torch.manual_seed(0)
    model = build("model", yaml.safe_load(SMALL_CONV), input_dim=80, vocab_size=20)
    feats, lengths = torch.randn(2, 120, 80), torch.tensor([120, 90])
    targets, target_lengths = torch.randint(5, 20, (2, 6)), torch.tensor([6, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(feats, lengths, targets, target_lengths)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    norm = model.encoder.blocks[0].norm
    assert norm.running_mean.dtype == torch.float32 and int(norm.num_batches_tracked) == 1
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
