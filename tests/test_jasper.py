"""Jasper: the original KoSpeech's parameter counts, padding invariance, training on fbank."""

from __future__ import annotations

import pytest
import torch
import yaml

from kospeech.errors import ConfigError
from kospeech.registry import build
from tests.test_conv_encoder import assert_padding_invariant
from tests.test_deepspeech2 import assert_overfits

SMALL_JASPER = """
name: jasper
encoder:
  name: jasper
  preset: 5x3
  channels: [32, 48]
  kernel_sizes: [5, 7]
  num_sub_blocks: 2
  dropout: 0.0
  prolog_channels: 32
  prolog_kernel_size: 5
  epilog_channels: [64, 64]
  epilog_kernel_size: 5
"""


def _model(fbank_batch: dict, text: str = SMALL_JASPER) -> torch.nn.Module:
    return build("model", yaml.safe_load(text), input_dim=80, vocab_size=fbank_batch["vocab_size"])


@pytest.mark.parametrize("preset,count", [("10x5", 334_740_706), ("5x3", 111_817_442)])
def test_presets_have_the_original_parameter_counts(preset: str, count: int) -> None:
    """Counted on the meta device: the 10x5 would otherwise allocate 1.3 GB of weights."""
    with torch.device("meta"):
        model = build("model", {"name": "jasper", "encoder": {"name": "jasper", "preset": preset}},
                      input_dim=80, vocab_size=2038)
    assert sum(p.numel() for p in model.parameters()) == count
    blocks = model.encoder.blocks
    assert len(blocks) == int(preset.split("x")[0]) and len(blocks[0].layers) == int(preset.split("x")[1])
    assert [len(b.residual_convs) for b in blocks] == list(range(1, len(blocks) + 1))  # dense residuals
    assert model.encoder.output_dim == 1024 and model.encoder.prolog.conv.stride == (2,)


def test_default_is_10x5() -> None:
    with torch.device("meta"):
        model = build("model", {"name": "jasper"}, input_dim=80, vocab_size=2038)
    assert sum(p.numel() for p in model.parameters()) == 334_740_706


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_do_not_depend_on_batch_padding(fbank_batch: dict, mode: str) -> None:
    torch.manual_seed(0)
    model = _model(fbank_batch)
    enc = model.encoder
    model.train(mode == "train")
    if mode == "eval":  # non-trivial running statistics
        model.train()
        with torch.no_grad():
            enc(fbank_batch["features"], fbank_batch["feature_lengths"])
        model.eval()
    a, alen, alone, short = assert_padding_invariant(enc, fbank_batch, extra=41)  # odd: the stride-2 prolog
    assert enc.output_dim == 64
    assert alen.tolist() == [(int(n) + 1) // 2 for n in fbank_batch["feature_lengths"]]
    if mode == "eval":  # the output norm's log-probs too
        with torch.no_grad():
            torch.testing.assert_close(model.ctc_log_probs(alone)[0], model.ctc_log_probs(a)[short, : alone.size(1)],
                                       atol=1e-5, rtol=0)


def test_jasper_overfits_eight_utterances(fbank_batch: dict) -> None:
    """As the other CTC models; without the output norm (which slows sharp outputs, see the
    model's docstring: the default's loss after 600 updates is 0.1, not 0.01)."""
    torch.manual_seed(0)
    model = _model(fbank_batch, SMALL_JASPER + "output_norm: false\n")
    assert model.has_ctc and not model.has_decoder and model.out_norm is None
    assert_overfits(model, fbank_batch)


def test_output_norm_trains_and_counts(fbank_batch: dict) -> None:
    torch.manual_seed(0)
    with_norm, without = _model(fbank_batch), _model(fbank_batch, SMALL_JASPER + "output_norm: false\n")
    extra = sum(p.numel() for p in with_norm.parameters()) - sum(p.numel() for p in without.parameters())
    assert extra == 2 * fbank_batch["vocab_size"]
    opt = torch.optim.Adam(with_norm.parameters(), lr=0.005)
    losses = []
    for _ in range(30):
        loss = with_norm(fbank_batch["features"], fbank_batch["feature_lengths"],
                         fbank_batch["targets"], fbank_batch["target_lengths"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2, losses


@pytest.mark.parametrize(
    "encoder,message",
    [
        ({"preset": "7x7"}, "unknown preset '7x7'"),
        ({"channels": [32, 32], "kernel_sizes": [5]}, "one entry per block"),
        ({"kernel_sizes": [11, 12, 17, 21, 25], "preset": "5x3"}, "must be odd"),
        ({"epilog_channels": [64]}, "epilog_channels takes two numbers"),
    ],
)
def test_bad_options(encoder: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build("encoder", {"name": "jasper", **encoder}, input_dim=80)


@pytest.mark.parametrize("recipe,count", [("mini", None), ("ksponspeech", 334_740_706)])
def test_recipe_configs_build(recipe: str, count: int | None, fbank_batch: dict) -> None:
    from pathlib import Path

    from kospeech.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "recipes" / recipe / "conf" / "jasper.yaml")
    with torch.device("meta"):
        model = build("model", cfg["model"], input_dim=80, vocab_size=2038)
        params = [torch.nn.Parameter(torch.zeros(1))]
        build("optimizer", cfg["optimizer"], params=params)
    n = sum(p.numel() for p in model.parameters())
    assert n == count if count else 1_000_000 < n < 4_000_000
    if recipe == "mini":  # small enough to train on a CPU: one real update
        model = build("model", cfg["model"], input_dim=80, vocab_size=fbank_batch["vocab_size"])
        optimizer = build("optimizer", cfg["optimizer"], params=model.parameters())
        loss = model(fbank_batch["features"], fbank_batch["feature_lengths"], fbank_batch["targets"],
                     fbank_batch["target_lengths"])["loss"]
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
