"""Conformer encoder, relative-position attention and the ``conformer`` model with each head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from kospeech.errors import ConfigError
from kospeech.models.transformer import decoder_io
from kospeech.nn.norm import MaskedBatchNorm1d
from kospeech.nn.transformer import sinusoid_table
from kospeech.registry import build
from tests.test_transformer import (
    ATOL,
    TINY_EXTRACTOR,
    TINY_TRANSFORMER_DECODER,
    attention_logprobs_by_steps,
    build_yaml,
    check_padding_invariance,
    greedy_attention,
    greedy_ctc,
    greedy_transducer,
    model_args,
    references,
    shortest_and_longest,
    sub_batch,
    transducer_logprobs_by_steps,
)

TINY_CONFORMER_ENCODER = (
    f"{{name: conformer, extractor: {TINY_EXTRACTOR}, d_model: 64, ff_dim: 128, num_layers: 2, kernel_size: 7, "
    "dropout: 0.0, attention: {name: relative_multi_head, num_heads: 2}}"
)
TINY_PREDICTOR = "{name: transducer, embed_dim: 32, hidden_dim: 64, dropout: 0.0}"
HEAD_CONFIGS = {
    "ctc": f"{{name: conformer, head: ctc, encoder: {TINY_CONFORMER_ENCODER}}}",
    "attention": (
        f"{{name: conformer, head: attention, encoder: {TINY_CONFORMER_ENCODER}, "
        f"decoder: {TINY_TRANSFORMER_DECODER}, label_smoothing: 0.0}}"
    ),
    "transducer": (
        f"{{name: conformer, head: transducer, encoder: {TINY_CONFORMER_ENCODER}, predictor: {TINY_PREDICTOR}, "
        "joint_dim: 64}"
    ),
}


def tiny_encoder(**overrides):
    cfg = yaml.safe_load(TINY_CONFORMER_ENCODER)
    cfg.update(overrides)
    return build("encoder", cfg, input_dim=80)


EXPECTED_PARTS = {"ctc": {"loss", "ctc"}, "attention": {"loss", "ctc", "att"}, "transducer": {"loss", "transducer"}}


# ---- relative-position attention ---------------------------------------------------------------


@pytest.mark.parametrize("query_len,key_len", [(5, 5), (3, 7), (6, 2)])
def test_relative_attention_scores_match_the_formula(query_len, key_len):
    """Weights equal softmax(((q+u).k + (q+v).W_p p(i-j)) / sqrt(d_k)) computed pair by pair."""
    att = build_yaml("attention", "{name: relative_multi_head, num_heads: 2}", query_dim=16, key_dim=16).eval()
    query, keys = torch.randn(1, query_len, 16), torch.randn(1, key_len, 16)
    mask = torch.ones(1, key_len, dtype=torch.bool)
    mask[0, -1] = False
    with torch.no_grad():
        context, weights, state = att(query, keys, keys, mask)
        q = att.q(query)[0].view(query_len, 2, 8)
        k = att.k(keys)[0].view(key_len, 2, 8)
        scores = torch.empty(2, query_len, key_len)
        for i in range(query_len):
            for j in range(key_len):
                p = att.pos_proj(sinusoid_table(torch.tensor([i - j]), 16))[0].view(2, 8)
                for h in range(2):
                    content = (q[i, h] + att.pos_bias_u[h]) @ k[j, h]
                    position = (q[i, h] + att.pos_bias_v[h]) @ p[h]
                    scores[h, i, j] = (content + position) / math.sqrt(8)
        scores[:, :, -1] = float("-inf")
        expected = torch.softmax(scores, dim=-1)
    assert state is None
    assert context.shape == (1, query_len, 16) and att.output_dim == 16
    torch.testing.assert_close(weights[0], expected, atol=1e-6, rtol=0)
    assert float(weights[0, :, :, -1].abs().max()) == 0.0


def test_relative_attention_backprops_through_position_biases():
    att = build_yaml("attention", "{name: relative_multi_head, num_heads: 4, dropout: 0.1}", query_dim=32, key_dim=32)
    x = torch.randn(2, 9, 32)
    context, _, _ = att(x, x, x, torch.tensor([[True] * 9, [True] * 5 + [False] * 4]))
    context.pow(2).sum().backward()
    for p in (att.pos_bias_u, att.pos_bias_v, att.pos_proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


# ---- encoder ---------------------------------------------------------------------------------


def test_encoder_builds_from_yaml_and_backprops(fbank_batch):
    enc = build_yaml("encoder", TINY_CONFORMER_ENCODER, input_dim=80)
    y, lengths = enc(fbank_batch["features"], fbank_batch["feature_lengths"])
    assert enc.output_dim == 64 and y.shape == (8, int(lengths.max()), 64)
    assert torch.equal(lengths, ((fbank_batch["feature_lengths"] - 1) // 2 - 1) // 2)
    y.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_encoder_default_config_builds():
    enc = build_yaml("encoder", "{name: conformer, num_layers: 1}", input_dim=80)
    assert enc.output_dim == 256


@pytest.mark.parametrize("conv_norm", ["layer_norm", "batch_norm"])
def test_encoder_padding_invariance(fbank_batch, conv_norm):
    enc = tiny_encoder(dropout=0.1, conv_norm=conv_norm)
    enc.train()
    enc(fbank_batch["features"], fbank_batch["feature_lengths"])  # moves batch-norm running statistics
    enc.eval()
    short, long = shortest_and_longest(fbank_batch)
    alone, pair = sub_batch(fbank_batch, [short]), sub_batch(fbank_batch, [short, long])
    with torch.no_grad():
        ya, la = enc(alone["features"], alone["feature_lengths"])
        yp, lp = enc(pair["features"], pair["feature_lengths"])
    n = int(la[0])
    assert int(lp[0]) == n and yp.size(1) > n
    torch.testing.assert_close(ya[0, :n], yp[0, :n], atol=ATOL, rtol=0)


def test_batch_norm_encoder_ignores_extra_padding_in_training(fbank_batch):
    """In training, batch-norm statistics come from real frames only: extra padding changes nothing."""
    enc = tiny_encoder(conv_norm="batch_norm")
    enc.train()
    feats, lengths = fbank_batch["features"], fbank_batch["feature_lengths"]
    padded = torch.cat([feats, torch.zeros(8, 40, 80)], dim=1)
    y1, l1 = enc(feats, lengths)
    y2, l2 = enc(padded, lengths)
    assert torch.equal(l1, l2) and y2.size(1) > y1.size(1)
    mask = torch.arange(y1.size(1))[None, :] < l1[:, None]
    torch.testing.assert_close(y1[mask], y2[:, : y1.size(1)][mask], atol=ATOL, rtol=0)


def test_masked_batch_norm_uses_only_real_frames():
    torch.manual_seed(1)
    x = torch.randn(3, 4, 10)
    lengths = torch.tensor([10, 6, 3])
    mask = torch.arange(10)[None, :] < lengths[:, None]
    x = x.masked_fill(~mask[:, None, :], 100.0)  # loud padding that must not matter
    ours, ref = MaskedBatchNorm1d(4), torch.nn.BatchNorm1d(4)
    y = ours(x, mask)
    real = torch.cat([x[b, :, : int(n)] for b, n in enumerate(lengths)], dim=1)[None]  # (1, C, sum T)
    y_ref = ref(real)
    torch.testing.assert_close(
        torch.cat([y[b, :, : int(n)] for b, n in enumerate(lengths)], 1)[None], y_ref, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_encoder_even_kernel_is_rejected():
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        build_yaml("encoder", "{name: conformer, num_layers: 1, kernel_size: 8}", input_dim=80)


def test_attention_heads_must_divide_width():
    with pytest.raises(ConfigError, match="attention_dim \\(64\\) must be divisible by num_heads \\(3\\)"):
        build_yaml("encoder", "{name: conformer, num_layers: 1, d_model: 64, attention: "
                   "{name: relative_multi_head, num_heads: 3}}", input_dim=80)


def test_encoder_bad_conv_norm_is_a_config_error():
    with pytest.raises(ConfigError, match="conv_norm"):
        build_yaml("encoder", "{name: conformer, conv_norm: group_norm}", input_dim=80)


def test_encoder_accepts_another_registered_attention(fbank_batch):
    enc = build_yaml(
        "encoder",
        TINY_CONFORMER_ENCODER.replace("relative_multi_head, num_heads: 2", "scaled_dot, attention_dim: 32"),
        input_dim=80,
    )
    y, _ = enc(fbank_batch["features"], fbank_batch["feature_lengths"])
    assert y.size(-1) == 64


# ---- model -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", list(HEAD_CONFIGS))
def test_model_forward_backward(fbank_batch, head):
    model = build_yaml("model", HEAD_CONFIGS[head], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    assert model.has_ctc == (head != "transducer")
    assert model.has_decoder == (head == "attention")
    assert model.is_transducer == (head == "transducer")
    out = model(*model_args(fbank_batch))
    assert set(out) == EXPECTED_PARTS[head]
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("head", list(HEAD_CONFIGS))
def test_model_padding_invariance(fbank_batch, head):
    model = build_yaml("model", HEAD_CONFIGS[head], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    check_padding_invariance(model, fbank_batch)


def test_model_builds_only_the_chosen_head(fbank_batch):
    v = fbank_batch["vocab_size"]
    ctc = build_yaml("model", HEAD_CONFIGS["ctc"], input_dim=80, vocab_size=v)
    assert ctc.attention is None and ctc.transducer is None
    assert not any(k.startswith(("attention.", "transducer.")) for k in ctc.state_dict())
    with pytest.raises(NotImplementedError, match="head 'ctc' has no attention decoder"):
        ctc.init_decoder_state(torch.zeros(1, 3, 64), torch.tensor([3]))
    with pytest.raises(NotImplementedError, match="head 'ctc' is not a transducer"):
        ctc.predictor_init_state(1, torch.device("cpu"))


def test_attention_head_steps_match_training_logits(fbank_batch):
    model = build_yaml("model", HEAD_CONFIGS["attention"], input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
    targets, target_lengths = fbank_batch["targets"], fbank_batch["target_lengths"]
    with torch.no_grad():
        enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        stepped = attention_logprobs_by_steps(model, enc, enc_len, targets, target_lengths)
        dec_in, _ = decoder_io(targets, target_lengths)
        full = F.log_softmax(model.attention.decoder(dec_in, enc, enc_len), dim=-1)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)


def test_transducer_head_hooks_match_training_logits(fbank_batch):
    model = build_yaml("model", HEAD_CONFIGS["transducer"], input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
    with torch.no_grad():
        enc, _ = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
        stepped = transducer_logprobs_by_steps(model, enc, fbank_batch["targets"])
        full = F.log_softmax(model.transducer.logits(enc, fbank_batch["targets"]), dim=-1)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("head", list(HEAD_CONFIGS))
def test_model_overfits_eight_utterances(fbank_batch, head):
    """Full-batch training (up to 600 steps) until greedy decoding with the model's own hooks gives
    every training transcript exactly, and for the attention head until every reference token gets
    p > 0.5 on its reference prefix (so greedy follows it by construction, not by luck)."""
    from tests.test_transformer import forced_token_probs

    torch.manual_seed(0)
    model = build_yaml("model", HEAD_CONFIGS[head], input_dim=80, vocab_size=fbank_batch["vocab_size"])
    refs = references(fbank_batch)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def decoded() -> dict[str, object]:
        model.eval()
        with torch.no_grad():
            enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
            out: dict[str, object] = {}
            if model.has_ctc:
                out["ctc"] = greedy_ctc(model, enc, enc_len)
            if model.has_decoder:
                out["attention"] = greedy_attention(model, enc, enc_len)
                out["worst_p"] = float(forced_token_probs(model, enc, enc_len, refs).min())
            if model.is_transducer:
                out["transducer"] = greedy_transducer(model, enc, enc_len)
        return out

    def done(out: dict[str, object]) -> bool:
        return all(v == refs for k, v in out.items() if k != "worst_p") and out.get("worst_p", 1.0) > 0.5

    out: dict[str, object] = {}
    for step in range(1, 601):
        model.train()
        loss = model(*model_args(fbank_batch))["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if step % 50 == 0 and done(out := decoded()):
            break
    for key, hyps in out.items():
        if key != "worst_p":
            assert hyps == refs, f"{head} head, greedy {key} after {step} steps"
    assert out.get("worst_p", 1.0) > 0.5, f"worst reference token p = {out['worst_p']:.3f} after {step} steps"
