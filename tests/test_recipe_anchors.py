"""The configs that set up the best published KsponSpeech and Zeroth results (issue 16): each
builds, on the meta device (no memory, no time), to the parameter count reported beside its
anchor in recipes/README.md, and carries the anchor's recipe where our options can say it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kospeech.config import load_config
from kospeech.registry import build
from kospeech.train.options import TrainOptions

RECIPES = Path(__file__).resolve().parents[1] / "recipes"



def _espnet_transformer_params(*, idim: int, d: int, ff: int, enc_layers: int, dec_layers: int, vocab: int) -> int:
    """ESPnet's Transformer ASR model (conv2d subsampling x4, pre-norm blocks, CTC head), counted
    by hand from its layers, not from our code: the independent expectation of the Zeroth anchor,
    whose parameter count ESPnet does not publish.

    - Conv2dSubsampling: Conv2d(1, d, 3, stride 2) 9d + d, Conv2d(d, d, 3, stride 2) 9d^2 + d,
      then Linear(d * f, d) with f = ((idim - 1) // 2 - 1) // 2 frequency bins left (19 of 80).
    - multi-head attention: 4 linears d x d with bias = 4 (d^2 + d).
    - feed-forward: Linear(d, ff) + Linear(ff, d) = 2 d ff + ff + d.
    - layer norm: 2 d (weight and bias).
    - encoder block: attention + feed-forward + 2 norms; after the last block one more norm.
    - decoder: embedding vocab x d; block: self-attention + source attention + feed-forward +
      3 norms; a final norm; output Linear(d, vocab) with bias.
    - CTC: Linear(d, vocab) with bias.
    """
    f = ((idim - 1) // 2 - 1) // 2
    subsampling = (9 * d + d) + (9 * d * d + d) + (d * f * d + d)
    attention = 4 * (d * d + d)
    feed_forward = 2 * d * ff + ff + d
    norm = 2 * d
    encoder = subsampling + enc_layers * (attention + feed_forward + 2 * norm) + norm
    decoder = vocab * d + dec_layers * (2 * attention + feed_forward + 3 * norm) + norm + (d * vocab + vocab)
    ctc = d * vocab + vocab
    return encoder + decoder + ctc


# 12 x 256 encoder, 6 x 256 decoder, 4 heads (heads split d, they add no parameters), FF 2048,
# 80 filter banks, 5000 units: 1,838,080 (subsampling) + 12 x 1,315,072 + 512 (encoder)
# + 1,280,000 + 6 x 1,578,752 + 512 + 1,285,000 (decoder) + 1,285,000 (CTC) = 30,942,480
ZEROTH_BY_HAND = _espnet_transformer_params(idim=80, d=256, ff=2048, enc_layers=12, dec_layers=6, vocab=5000)

# config -> (vocabulary of the anchor's units, our parameter count, the anchor's, where it is from)
ANCHORS = {
    "ksponspeech/conf/conformer_espnet2_12x512.yaml": (2309, 112_007_178, 112.01e6, "ESPnet ksponspeech README"),
    "zeroth/conf/transformer_espnet_12x256.yaml": (5000, 30_942_480, ZEROTH_BY_HAND, "ESPnet's layers, by hand"),
}


def _build(rel: str, vocab: int) -> tuple[dict, torch.nn.Module, object]:
    cfg = load_config(RECIPES / rel)
    frontend = build("frontend", cfg["frontend"], path="frontend")
    for i, spec in enumerate(cfg["augment"]):
        build("augment", spec, path=f"augment[{i}]")
    with torch.device("meta"):
        model = build("model", cfg["model"], path="model", input_dim=frontend.output_dim, vocab_size=vocab)
    return cfg, model, frontend


def _peak_lr(cfg: dict) -> tuple[float, float]:
    """(rate at the end of warm-up, rate 4x later) of the config's scheduler."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build("optimizer", cfg["optimizer"], path="optimizer", params=[param])
    scheduler = build("scheduler", cfg["scheduler"], path="scheduler", optimizer=optimizer)
    warm = cfg["scheduler"]["warmup_steps"]
    return scheduler.lr_for(warm, 0.0), scheduler.lr_for(4 * warm, 0.0)


@pytest.mark.parametrize("rel", list(ANCHORS))
def test_anchor_config_builds_to_its_parameter_count(rel: str) -> None:
    vocab, ours, theirs, _ = ANCHORS[rel]
    cfg, model, _ = _build(rel, vocab)
    assert all(p.is_meta for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    if isinstance(theirs, int):  # counted by hand from the architecture: exactly
        assert n == theirs, f"{rel}: {n} parameters, {theirs} counted by hand from ESPnet's layers"
    else:
        assert abs(n - theirs) / theirs < 1e-3  # the same architecture, to the anchor's rounding
    assert n == ours, f"{rel}: {n} parameters; update recipes/README.md and this test together"
    header = (RECIPES / rel).read_text(encoding="utf-8").split("\nextends:")[0]
    assert "Remaining differences" in header and "--cer-spaces" in header
    build("search", cfg["decode"]["search"], path="decode.search", model=model)
    opts = TrainOptions.from_config(cfg["train"])  # keep_best / keep_best_by are real options
    assert opts.keep_best == 10 and opts.keep_best_by == "valid_cer"


def test_ksponspeech_anchor_is_espnet2s_conformer_recipe() -> None:
    cfg, model, frontend = _build("ksponspeech/conf/conformer_espnet2_12x512.yaml", 2309)
    enc = cfg["model"]["encoder"]
    assert (enc["d_model"], enc["ff_dim"], enc["num_layers"], enc["kernel_size"]) == (512, 2048, 12, 31)
    assert enc["attention"]["name"] == "relative_multi_head" and enc["attention"]["num_heads"] == 8
    assert enc["conv_norm"] == "batch_norm"
    assert (cfg["model"]["ctc_weight"], cfg["model"]["label_smoothing"]) == (0.3, 0.1)
    # n_fft 512 / hop 256 at 16 kHz
    assert (frontend.win_length, frontend.hop_length, frontend.n_fft) == (512, 256, 512)
    [spec] = cfg["augment"]
    # ESPnet's [0, 30) and [0, 40) frames: our widths include their upper end
    assert (spec["time_warp"], spec["freq_mask_width"], spec["time_mask_width"]) == (5, 29, 39)
    peak, later = _peak_lr(cfg)
    assert peak == pytest.approx(2e-4, rel=1e-3) and later == pytest.approx(1e-4, rel=1e-3)  # 1/sqrt(step)
    assert cfg["train"]["max_epochs"] == 35 and cfg["train"]["keep_best"] == 10


def test_zeroth_anchor_is_espnets_transformer_recipe() -> None:
    cfg, model, frontend = _build("zeroth/conf/transformer_espnet_12x256.yaml", 5000)
    enc, dec = cfg["model"]["encoder"], cfg["model"]["decoder"]
    assert (enc["d_model"], enc["num_heads"], enc["ff_dim"], enc["num_layers"]) == (256, 4, 2048, 12)
    assert (dec["d_model"], dec["num_heads"], dec["ff_dim"], dec["num_layers"]) == (256, 4, 2048, 6)
    assert cfg["augment"] == []  # ESPnet's Zeroth transformer trains without SpecAugment
    assert cfg["model"]["init"] == "xavier_uniform"
    assert enc["attention_dropout"] == dec["attention_dropout"] == 0.0 and enc["dropout"] == 0.1
    assert frontend.output_dim == 80 and frontend.hop_length == 160
    peak, _ = _peak_lr(cfg)
    assert peak == pytest.approx(5e-3, rel=1e-3)
    assert cfg["train"]["max_epochs"] == 100 and cfg["train"]["keep_best"] == 10
