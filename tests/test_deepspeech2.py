"""The Deep Speech 2 CTC model on real fbank features."""

from __future__ import annotations

import pytest
import torch
import yaml

from kospeech.models.base import ASRModel
from kospeech.registry import build
from kospeech.text.special import BLANK_ID

SMALL_DS2 = """
name: deepspeech2
encoder:
  name: rnn
  rnn_type: gru
  hidden_dim: 32
  num_layers: 2
  bidirectional: true
  dropout: 0.0
  extractor: {name: deepspeech2, channels: 4}
"""


def _build(fbank_batch: dict, text: str = SMALL_DS2) -> ASRModel:
    return build("model", yaml.safe_load(text), input_dim=80, vocab_size=fbank_batch["vocab_size"])


def _batch(fb: dict) -> tuple[torch.Tensor, ...]:
    return fb["features"], fb["feature_lengths"], fb["targets"], fb["target_lengths"]


def test_default_deepspeech2_layout() -> None:
    model = build("model", {"name": "deepspeech2"}, input_dim=80, vocab_size=2038)
    assert model.has_ctc and not model.has_decoder and not model.is_transducer
    assert type(model.encoder.extractor).__name__ == "DeepSpeech2Extractor"
    assert model.encoder.extractor.output_dim == 640
    rnn = model.encoder.rnn
    assert isinstance(rnn, torch.nn.GRU) and rnn.bidirectional and rnn.num_layers == 3 and rnn.hidden_size == 512
    assert model.fc.in_features == 1024 and model.fc.out_features == 2038


def test_deepspeech2_forward_backward(fbank_batch: dict) -> None:
    model = _build(fbank_batch)
    out = model(*_batch(fbank_batch))
    assert set(out) == {"loss", "ctc"}
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 1.0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
    # the extractor halves time
    assert torch.all((enc_len - fbank_batch["feature_lengths"] // 2).abs() <= 1)
    logp = model.ctc_log_probs(enc)
    assert logp.shape == (8, enc.size(1), fbank_batch["vocab_size"])
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(8, enc.size(1)))


BATCH_NORM_DS2 = SMALL_DS2.replace("  dropout: 0.0\n", "  dropout: 0.0\n  norm: batch\n")
LAYER_NORM_DS2 = SMALL_DS2.replace("  dropout: 0.0\n", "  dropout: 0.0\n  norm: layer\n")


@pytest.mark.parametrize("text", [SMALL_DS2, BATCH_NORM_DS2, LAYER_NORM_DS2], ids=["plain", "batch", "layer"])
def test_deepspeech2_padding_invariance(fbank_batch: dict, text: str) -> None:
    model = _build(fbank_batch, text)
    model.train()
    model(*_batch(fbank_batch))  # batch-norm statistics that are not the identity
    model.eval()
    feats, flen = fbank_batch["features"], fbank_batch["feature_lengths"]
    short = int(flen.argmin())
    n = int(flen[short])
    with torch.no_grad():
        enc_b, len_b = model.encode(feats, flen)
        enc_a, len_a = model.encode(feats[short : short + 1, :n], flen[short : short + 1])
        logp_b, logp_a = model.ctc_log_probs(enc_b), model.ctc_log_probs(enc_a)
    assert int(len_a[0]) == int(len_b[short])
    torch.testing.assert_close(logp_b[short, : int(len_a[0])], logp_a[0], atol=1e-5, rtol=0)


def test_deepspeech2_with_lstm_and_three_conv_layers(fbank_batch: dict) -> None:
    text = SMALL_DS2.replace("rnn_type: gru", "rnn_type: lstm").replace("channels: 4}", "channels: 4, num_layers: 3}")
    model = _build(fbank_batch, text)
    assert isinstance(model.encoder.rnn, torch.nn.LSTM) and model.encoder.extractor.output_dim == 12 * 10
    model(*_batch(fbank_batch))["loss"].backward()


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    best = log_probs.argmax(-1)
    hyps = []
    for b in range(best.size(0)):
        seq = torch.unique_consecutive(best[b, : int(lengths[b])])
        hyps.append([int(t) for t in seq if int(t) != BLANK_ID])
    return hyps


@pytest.mark.slow
def test_deepspeech2_overfits_eight_utterances(fbank_batch: dict) -> None:
    """CTC loss per target token falls from ~40 to under 0.01 nats, so every utterance's
    reference gets probability > 0.9 summed over its alignments; a model at that point cannot
    confuse the 8 different sentences, and greedy (best-path) decoding must give back every
    transcript exactly."""
    model = _build(fbank_batch, SMALL_DS2.replace("hidden_dim: 32", "hidden_dim: 64"))
    assert_overfits(model, fbank_batch, max_grad_norm=5.0)


def assert_overfits(model: ASRModel, fbank_batch: dict, *, max_grad_norm: float | None = None) -> None:
    """Adam at 0.005 for up to 600 updates on the batch: the loss must fall from > 10 to < 0.01
    nats per token and greedy decoding must give back every transcript."""
    opt = torch.optim.Adam(model.parameters(), lr=0.005)
    batch = _batch(fbank_batch)
    losses = []
    for _ in range(600):
        out = model(*batch)
        opt.zero_grad()
        out["loss"].backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        losses.append(out["loss"].item())
        if losses[-1] < 0.01:
            break
    assert losses[0] > 10.0 and losses[-1] < 0.01, losses[::20]
    model.eval()
    with torch.no_grad():
        enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        hyps = ctc_greedy(model.ctc_log_probs(enc), enc_len)
    refs = [t[: int(n)].tolist() for t, n in zip(fbank_batch["targets"], fbank_batch["target_lengths"])]
    assert hyps == refs


@pytest.mark.parametrize("text", [BATCH_NORM_DS2, LAYER_NORM_DS2], ids=["batch", "layer"])
def test_normalised_stack_has_one_norm_per_layer_and_trains(fbank_batch: dict, text: str) -> None:
    torch.manual_seed(0)
    model = _build(fbank_batch, text)
    enc = model.encoder
    assert len(enc.layers) == 2 and len(enc.norms) == 2 and not hasattr(enc, "rnn")
    kind = torch.nn.BatchNorm1d if enc.norm == "batch" else torch.nn.LayerNorm
    assert all(isinstance(n, kind) for n in [*enc.norms, enc.out_norm])
    assert sum(p.numel() for p in enc.out_norm.parameters()) == 2 * 64
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(*_batch(fbank_batch))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0], losses


def test_batch_norm_statistics_ignore_padding(fbank_batch: dict) -> None:
    """Training-mode statistics come from real frames only: padding a batch further changes nothing."""
    torch.manual_seed(0)
    # a front end without batch norm of its own, so only the recurrent stack's statistics count
    text = BATCH_NORM_DS2.replace(
        "{name: deepspeech2, channels: 4}", "{name: conv2d_subsampling, output_dim: 32, channels: 4}"
    )
    model = _build(fbank_batch, text)
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    feats, flen = fbank_batch["features"], fbank_batch["feature_lengths"]
    longer = torch.cat([feats, torch.randn(feats.size(0), 40, feats.size(2)) * 5], dim=1)
    with torch.no_grad():
        enc_a, len_a = model.encode(feats, flen)
        enc_b, _ = model.encode(longer, flen)
    for i in range(feats.size(0)):
        n = int(len_a[i])
        torch.testing.assert_close(enc_b[i, :n], enc_a[i, :n], atol=1e-5, rtol=0)
