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
    with torch.no_grad():  # a scale and shift that are not the identity
        for norm in (masked, plain):
            norm.weight.copy_(torch.tensor([0.5, -2.0, 1.5, 3.0]))
            norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 1.0]))
    x = x.requires_grad_(True)
    y = masked(x, mask)
    real = torch.cat([x[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1).detach().requires_grad_(True)
    expected = plain(real[None])[0]
    got = torch.cat([y[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # gradients too: the hand-written backward against autograd through plain batch norm
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    real_upstream = torch.cat([upstream[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    (expected * real_upstream).sum().backward()
    got_grad = torch.cat([x.grad[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)
    torch.testing.assert_close(got_grad, real.grad, atol=1e-5, rtol=1e-4)
    assert (x.grad * (1 - mask)).abs().max().item() == 0.0  # padding gets no gradient
    torch.testing.assert_close(masked.weight.grad, plain.weight.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masked.bias.grad, plain.bias.grad, atol=1e-5, rtol=1e-4)
    x = x.detach()
    y = y.detach()
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    assert (y * (1 - mask)).abs().max().item() == 0.0
    masked.eval()
    plain.eval()
    torch.testing.assert_close(masked(x, mask)[0], plain(x[:1])[0])


def assert_padding_invariant(enc: torch.nn.Module, fbank_batch: dict, extra: int = 40) -> tuple[torch.Tensor, ...]:
    """Each utterance's output is the same with ``extra`` loud padding frames, and zero past its
    length; in eval mode the shortest utterance alone gives what it gives in the batch.
    Returns the batch output, its lengths, the shortest utterance's own output and its index."""
    feats, flen = fbank_batch["features"], fbank_batch["feature_lengths"]
    longer = torch.cat([feats, torch.randn(feats.size(0), extra, feats.size(2)) * 5], dim=1)
    with torch.no_grad():
        a, alen = enc(feats, flen)
        b, blen = enc(longer, flen)
    assert torch.equal(alen, blen) and a.shape[-1] == enc.output_dim
    for i in range(feats.size(0)):
        n = int(alen[i])
        torch.testing.assert_close(b[i, :n], a[i, :n], atol=1e-5, rtol=0)
    assert b[~lengths_to_mask(blen, b.size(1))].abs().max().item() == 0.0
    short = int(flen.argmin())
    alone = None
    if not enc.training:
        with torch.no_grad():
            alone, _ = enc(feats[short : short + 1, : int(flen[short])], flen[short : short + 1])
        torch.testing.assert_close(alone[0], a[short, : alone.size(1)], atol=1e-5, rtol=0)
    return a, alen, alone, short


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_do_not_depend_on_batch_padding(fbank_batch: dict, mode: str) -> None:
    torch.manual_seed(0)
    enc = _model(fbank_batch).encoder
    enc.train(mode == "train")
    assert_padding_invariant(enc, fbank_batch)
    assert enc.output_dim == 48


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


def test_masked_batch_norm_channels_last_is_the_same_norm() -> None:
    """(B, T, C) with ``channels_last`` gives the (B, C, T) layout's outputs, gradients and running
    statistics, in training and in eval."""
    torch.manual_seed(0)
    lengths = torch.tensor([9, 4, 6])
    x = torch.randn(3, 5, 9) * 2 + 1
    mask = lengths_to_mask(lengths, 9)[:, None, :].float()
    first, last = MaskedBatchNorm1d(5), MaskedBatchNorm1d(5)
    with torch.no_grad():
        for norm in (first, last):
            norm.weight.copy_(torch.tensor([0.5, -2.0, 1.5, 3.0, 1.0]))
            norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 1.0, 0.0]))
    upstream = torch.randn(3, 5, 9)
    xa, xb = x.clone().requires_grad_(True), x.transpose(1, 2).contiguous().requires_grad_(True)
    ya, yb = first(xa, mask), last(xb, mask.transpose(1, 2), channels_last=True)
    torch.testing.assert_close(yb.transpose(1, 2), ya, atol=1e-6, rtol=1e-5)
    (ya * upstream).sum().backward()
    (yb * upstream.transpose(1, 2)).sum().backward()
    torch.testing.assert_close(xb.grad.transpose(1, 2), xa.grad, atol=1e-6, rtol=1e-5)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(last, name).grad, getattr(first, name).grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(last.running_mean, first.running_mean)
    torch.testing.assert_close(last.running_var, first.running_var)
    first.eval(), last.eval()
    with torch.no_grad():
        torch.testing.assert_close(last(xb, mask.transpose(1, 2), channels_last=True).transpose(1, 2),
                                   first(xa, mask), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("look_ahead", [None, 1])
@pytest.mark.parametrize("gathered", [False, True])
def test_block_computes_the_convolutions_of_its_checkpoint(look_ahead: int | None, gathered: bool) -> None:
    """The (B, T, C) block is the (B, C, T) stack its parameters describe: ``nn.Conv1d``'s
    depthwise (padded for its look-ahead) and pointwise convolutions, the masked norm, ReLU,
    plus the input; outputs, every gradient and the norm's running statistics agree, with the
    frame-wise layers on the whole padded batch or on its real frames gathered (training)."""
    import copy

    from kospeech.nn.conv_encoder import SeparableConvBlock

    torch.manual_seed(0)
    block = SeparableConvBlock(6, 5, dropout=0.0, look_ahead=look_ahead).train()
    reference_block = copy.deepcopy(block)
    lengths = torch.tensor([11, 7])
    mask = lengths_to_mask(lengths, 11)[:, :, None].float()
    x = (torch.randn(2, 11, 6) * mask).requires_grad_(True)
    upstream = torch.randn(2, 11, 6)
    real = mask.view(-1).nonzero().squeeze(1) if gathered else None
    out = block(x, mask, real)
    (out * upstream).sum().backward()
    got = [out.detach(), x.grad] + [p.grad for p in block.parameters()]
    reference = x.detach().clone().requires_grad_(True)
    left, right = (2, 2) if look_ahead is None else (3, 1)
    rb = reference_block
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(reference.transpose(1, 2), (left, right)),
                                      rb.depthwise.weight, rb.depthwise.bias, groups=6)
    h = rb.norm(torch.nn.functional.conv1d(conv, rb.pointwise.weight), mask.transpose(1, 2))
    y = reference + torch.relu(h).transpose(1, 2)
    (y * upstream).sum().backward()
    expected = [y.detach(), reference.grad] + [p.grad for p in rb.parameters()]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(block.norm.running_mean, rb.norm.running_mean)
    torch.testing.assert_close(block.norm.running_var, rb.norm.running_var)
    assert out.detach()[~lengths_to_mask(lengths, 11)].abs().max() == 0.0  # padding stays zero


def test_relu_dropout_is_relu_then_dropout() -> None:
    """The fused ReLU and dropout of the blocks: negatives give 0, a share p of the positives
    is dropped, the rest scaled by 1 / (1 - p); the gradient passes where the output does;
    eval mode is ReLU alone."""
    from kospeech.nn.dropout import relu_dropout

    torch.manual_seed(0)
    x = torch.randn(400, 1000, requires_grad=True)
    y = relu_dropout(x, 0.1, training=True)
    positive = x.detach() > 0
    assert (y[~positive] == 0).all()
    dropped = (y[positive] == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003
    kept = y != 0
    torch.testing.assert_close(y[kept], x.detach()[kept] / 0.9)
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.9)
    assert torch.equal(relu_dropout(x, 0.1, training=False), torch.relu(x))
    assert not torch.equal(relu_dropout(x, 0.1, training=True), y)  # a fresh mask per call


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


SELF_CONDITIONED = SMALL_CONV + "inter_ctc_after: [1, 2]\ninter_ctc_weight: 0.4\nself_condition: true\n"


def test_intermediate_ctc_loss_is_the_weighted_mean_of_the_taps(fbank_batch: dict) -> None:
    torch.manual_seed(0)
    model = _model(fbank_batch, SMALL_CONV + "inter_ctc_after: [1, 2]\ninter_ctc_weight: 0.4\n")
    batch = (fbank_batch[k] for k in ("features", "feature_lengths", "targets", "target_lengths"))
    feats, flen, targets, tlen = batch
    model.train()
    torch.manual_seed(1)
    out = model(feats, flen, targets, tlen)
    # the same forward by hand: the shared output layer after blocks 1 and 2, then at the top
    taps: list[torch.Tensor] = []
    torch.manual_seed(1)
    enc = model.encoder
    x, lengths = enc.extractor(feats, flen)
    mask = lengths_to_mask(lengths, x.size(1))[:, :, None].to(x.dtype)
    y = enc.project(x) * mask
    for block in enc.blocks:
        y = block(y, mask)
        taps.append(model.ctc_log_probs(y))
    ctc = torch.nn.functional.ctc_loss
    losses = [ctc(lp.transpose(0, 1), targets, lengths, tlen, zero_infinity=True) for lp in taps]
    expected = 0.6 * losses[2] + 0.4 * (losses[0] + losses[1]) / 2
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["ctc"], losses[2].detach())
    assert "inter_ctc" in out and model._inter is None


def test_self_conditioning_feeds_the_taps_back_in_decoding_too(fbank_batch: dict) -> None:
    torch.manual_seed(0)
    model = _model(fbank_batch, SELF_CONDITIONED).eval()
    feats, flen = fbank_batch["features"], fbank_batch["feature_lengths"]
    with torch.no_grad():
        a, alen = model.encode(feats, flen)
        model.condition.weight.mul_(2.0)
        b, _ = model.encode(feats, flen)
        plain, _ = model.encoder(feats, flen)
    assert not torch.allclose(a, b) and not torch.allclose(a, plain)
    assert a[~lengths_to_mask(alen, a.size(1))].abs().max().item() == 0.0  # padding stays zero
    short = int(flen.argmin())
    with torch.no_grad():
        alone, _ = model.encode(feats[short : short + 1, : int(flen[short])], flen[short : short + 1])
    torch.testing.assert_close(alone[0], b[short, : alone.size(1)], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_self_conditioned_ctc_overfits_eight_utterances(fbank_batch: dict) -> None:
    torch.manual_seed(0)
    wide = SELF_CONDITIONED.replace("dim: 48", "dim: 96").replace("output_dim: 48", "output_dim: 96")
    assert_overfits(_model(fbank_batch, wide), fbank_batch)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("inter_ctc_after: [3]\n", "not between 1 and 2"),
        ("inter_ctc_after: [1]\ninter_ctc_weight: 1.0\n", "inter_ctc_weight"),
        ("self_condition: true\n", "needs inter_ctc_after"),
    ],
)
def test_intermediate_ctc_bad_options(fbank_batch: dict, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _model(fbank_batch, SMALL_CONV + extra)


@pytest.mark.parametrize("look_ahead", [None, 0, 2])
def test_look_ahead_bounds_what_a_frame_hears_of_the_future(look_ahead: int | None) -> None:
    """Frame j depends on inputs up to j + blocks * look_ahead and back to j - blocks * (k - 1 - look_ahead):
    changing input frame t changes exactly the outputs t - blocks * look_ahead ... t + blocks * back."""
    blocks, kernel = 3, 5
    enc = build("encoder", {"name": "separable_conv", "dim": 8, "num_blocks": blocks, "kernel_size": kernel,
                            "dropout": 0.0, "extractor": None, "look_ahead": look_ahead}, input_dim=4).eval()
    ahead = kernel // 2 if look_ahead is None else look_ahead
    back = kernel - 1 - ahead
    x = torch.randn(1, 40, 4)
    lengths = torch.tensor([40])
    with torch.no_grad():
        base, _ = enc(x, lengths)
        x2 = x.clone()
        x2[0, 20] += 1.0
        changed, _ = enc(x2, lengths)
    moved = ((changed - base).abs().amax(-1)[0] > 0).nonzero().flatten().tolist()
    assert moved == list(range(20 - blocks * ahead, 20 + blocks * back + 1))
    with pytest.raises(ConfigError, match="look_ahead"):
        build("encoder", {"name": "separable_conv", "kernel_size": 5, "look_ahead": 5, "extractor": None}, input_dim=4)
