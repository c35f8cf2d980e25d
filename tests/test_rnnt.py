"""Transducer parts (prediction network, joiner) and the ``rnnt`` model with LSTM and Conformer encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from kospeech.nn.transducer import Joiner
from kospeech.text.special import BLANK_ID
from tests.test_conformer import TINY_CONFORMER_ENCODER, TINY_PREDICTOR
from tests.test_transformer import (
    ATOL,
    TINY_EXTRACTOR,
    build_yaml,
    check_padding_invariance,
    greedy_transducer,
    model_args,
    references,
    train_steps,
    transducer_logprobs_by_steps,
)

TINY_LSTM_ENCODER = (
    f"{{name: rnn, rnn_type: lstm, extractor: {TINY_EXTRACTOR}, hidden_dim: 64, num_layers: 1, dropout: 0.0}}"
)
RNNT_CONFIGS = {
    "lstm": f"{{name: rnnt, encoder: {TINY_LSTM_ENCODER}, predictor: {TINY_PREDICTOR}, joint_dim: 64}}",
    "conformer": f"{{name: rnnt, encoder: {TINY_CONFORMER_ENCODER}, predictor: {TINY_PREDICTOR}, joint_dim: 64}}",
}


def test_prediction_network_steps_match_teacher_forcing(fbank_batch):
    pred = build_yaml(
        "decoder",
        "{name: transducer, embed_dim: 16, hidden_dim: 24, num_layers: 2, dropout: 0.2}",
        vocab_size=fbank_batch["vocab_size"],
    ).eval()
    targets = fbank_batch["targets"]
    with torch.no_grad():
        full = pred(targets)
        state = pred.init_state(8, torch.device("cpu"))
        assert state[0].shape == (8, 2, 24)  # batch first, for select_state
        tokens = torch.full((8,), BLANK_ID)
        outs = []
        for u in range(targets.size(1) + 1):
            out, state = pred.step(tokens, state)
            outs.append(out)
            if u < targets.size(1):
                tokens = targets[:, u]
    assert full.shape == (8, targets.size(1) + 1, 24) and pred.output_dim == 24
    torch.testing.assert_close(torch.stack(outs, 1), full, atol=ATOL, rtol=0)


def test_joiner_broadcasts_frames_and_tokens():
    torch.manual_seed(0)
    joiner = Joiner(encoder_dim=6, predictor_dim=5, joint_dim=7, vocab_size=11)
    enc, pred = torch.randn(2, 4, 6), torch.randn(2, 3, 5)
    logits = joiner(enc, pred)
    assert logits.shape == (2, 4, 3, 11)
    torch.testing.assert_close(logits[1, 2, 0], joiner.step(enc[1, 2][None], pred[1, 0][None])[0])


@pytest.mark.parametrize("encoder", list(RNNT_CONFIGS))
def test_model_forward_backward(fbank_batch, encoder):
    model = build_yaml("model", RNNT_CONFIGS[encoder], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    assert model.is_transducer and not model.has_ctc and not model.has_decoder
    out = model(*model_args(fbank_batch))
    assert set(out) == {"loss", "transducer"}
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_model_loss_is_torchaudio_rnnt_per_token(fbank_batch):
    model = build_yaml("model", RNNT_CONFIGS["lstm"], input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
    with torch.no_grad():
        enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        logits = model.transducer.logits(enc, fbank_batch["targets"])
        per_utt = AF.rnnt_loss(
            logits,
            fbank_batch["targets"].int(),
            enc_len.int(),
            fbank_batch["target_lengths"].int(),
            blank=BLANK_ID,
            reduction="none",
        )
        out = model(*model_args(fbank_batch))
    torch.testing.assert_close(out["loss"], per_utt.sum() / fbank_batch["target_lengths"].sum())


@pytest.mark.parametrize("encoder", list(RNNT_CONFIGS))
def test_model_padding_invariance(fbank_batch, encoder):
    model = build_yaml("model", RNNT_CONFIGS[encoder], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    check_padding_invariance(model, fbank_batch)


def test_model_hooks_match_training_logits(fbank_batch):
    model = build_yaml("model", RNNT_CONFIGS["lstm"], input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
    with torch.no_grad():
        enc, _ = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        stepped = transducer_logprobs_by_steps(model, enc, fbank_batch["targets"])
        full = F.log_softmax(model.transducer.logits(enc, fbank_batch["targets"]), dim=-1)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)


def test_select_state_picks_hypotheses(fbank_batch):
    model = build_yaml("model", RNNT_CONFIGS["lstm"], input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
    with torch.no_grad():
        state = model.predictor_init_state(4, torch.device("cpu"))
        out, state = model.predictor_step(torch.tensor([7, 8, 9, 10]), state)
        index = torch.tensor([2, 2, 0])
        picked_out, _ = model.predictor_step(torch.tensor([11, 11, 11]), model.select_state(state, index))
        all_out, _ = model.predictor_step(torch.full((4,), 11), state)
    torch.testing.assert_close(picked_out, all_out[index])


@pytest.mark.slow
def test_conformer_rnnt_overfits_eight_utterances(fbank_batch):
    """At initialisation the transducer loss is ~22 nats per token (it pays for every blank too);
    after 200 full-batch steps it must be below 0.3 and greedy transducer decoding through the
    hooks must give every training transcript exactly."""
    torch.manual_seed(0)
    model = build_yaml("model", RNNT_CONFIGS["conformer"], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    losses = train_steps(model, fbank_batch, steps=200)
    assert losses[-1] < 0.3, losses[::20]
    model.eval()
    with torch.no_grad():
        enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        assert greedy_transducer(model, enc, enc_len) == references(fbank_batch)


@pytest.mark.slow
def test_lstm_rnnt_leaves_the_blank_plateau(fbank_batch):
    """An LSTM-encoder transducer first learns to emit only blanks (a plateau at ~3.6 nats per
    token, measured) and then learns slowly on CPU: 600 steps at lr 5e-3 reach ~0.85. Require
    < 1.2, well under the plateau, so a broken encoder, predictor or loss wiring fails."""
    torch.manual_seed(0)
    model = build_yaml("model", RNNT_CONFIGS["lstm"], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    losses = train_steps(model, fbank_batch, steps=600, lr=5e-3)
    assert losses[-1] < 1.2, losses[::50]
