"""Attentions over real fbank frames: masking, normalisation, state, padding invariance."""

from __future__ import annotations

import pytest
import torch
import yaml

import kospeech.nn
from kospeech.errors import ConfigError
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import build, registry

ATTENTIONS = {
    "scaled_dot": "{name: scaled_dot, num_heads: 4}",
    "scaled_dot_sep": "{name: scaled_dot, num_heads: 2, attention_dim: 24, separate_key_proj: true, dropout: 0.1}",
    "location_aware": "{name: location_aware, num_heads: 4, conv_kernel_size: 5}",
    "location_aware_1": "{name: location_aware, num_heads: 1, smoothing: true}",
    "additive": "{name: additive}",
    "additive_chunked": "{name: additive, num_heads: 2, max_chunk_elements: 1000}",
}
QUERY_DIM = 32


def _build(key: str) -> kospeech.nn.Attention:
    att = build("attention", yaml.safe_load(ATTENTIONS[key]), query_dim=QUERY_DIM, key_dim=80)
    assert isinstance(att, kospeech.nn.Attention)
    return att


def _inputs(fbank_batch: dict, lq: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    keys = fbank_batch["features"]
    mask = lengths_to_mask(fbank_batch["feature_lengths"], keys.size(1))
    query = torch.randn(keys.size(0), lq, QUERY_DIM)
    return query, keys, mask


def test_every_builtin_is_registered() -> None:
    assert {"scaled_dot", "location_aware", "additive"} <= set(registry("attention").names())


@pytest.mark.parametrize("key", list(ATTENTIONS))
def test_attention_forward_backward_and_masking(key: str, fbank_batch: dict) -> None:
    att = _build(key)
    query, keys, mask = _inputs(fbank_batch)
    keys = keys.clone().requires_grad_(True)
    query.requires_grad_(True)
    att.eval()  # no dropout: weights must sum to one exactly
    context, weights, _ = att(query, keys, keys, mask)
    b, t = mask.shape
    assert context.shape == (b, 3, att.output_dim)
    assert weights.shape == (b, att.num_heads, 3, t)
    # masked frames get exactly zero weight; each row is a distribution over the real frames
    assert weights.detach().masked_select(~mask[:, None, None, :]).abs().max().item() == 0.0
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, att.num_heads, 3))
    att.train()
    context, _, _ = att(query, keys, keys, mask)
    context.pow(2).sum().backward()
    assert torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0
    assert keys.grad[~mask].abs().max().item() == 0.0  # padding gets no gradient
    assert all(p.grad is not None for p in att.parameters())


@pytest.mark.parametrize("key", list(ATTENTIONS))
def test_attention_padding_invariance(key: str, fbank_batch: dict) -> None:
    att = _build(key).eval()
    query, keys, mask = _inputs(fbank_batch)
    short = int(fbank_batch["feature_lengths"].argmin())
    n = int(fbank_batch["feature_lengths"][short])
    noisy = keys.clone()
    noisy[short, n:] = 50.0
    with torch.no_grad():
        ctx_b, w_b, _ = att(query, noisy, noisy, mask)
        sl = slice(short, short + 1)
        ctx_a, w_a, _ = att(query[sl], keys[sl, :n], keys[sl, :n], mask[sl, :n])
    torch.testing.assert_close(ctx_b[sl], ctx_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(w_b[sl, ..., :n], w_a, atol=1e-6, rtol=0)


def test_location_aware_steps_equal_one_call_and_use_the_state(fbank_batch: dict) -> None:
    att = _build("location_aware").eval()
    query, keys, mask = _inputs(fbank_batch, lq=4)
    with torch.no_grad():
        ctx_all, w_all, last = att(query, keys, keys, mask)
        state, steps = None, []
        for i in range(4):
            ctx, w, state = att(query[:, i : i + 1], keys, keys, mask, state)
            steps.append(ctx)
        torch.testing.assert_close(torch.cat(steps, 1), ctx_all, atol=1e-5, rtol=0)
        torch.testing.assert_close(state, last)
        assert last.shape == (mask.size(0), att.num_heads, mask.size(1))
        # the previous alignment changes the scores: a peaked state differs from the uniform start
        peaked = torch.zeros_like(last)
        peaked[..., 0] = 1.0
        ctx_peaked, _, _ = att(query[:, :1], keys, keys, mask, peaked)
    assert (ctx_peaked - steps[0]).abs().max() > 1e-4


def test_scaled_dot_shares_the_value_projection_like_kospeech() -> None:
    att = build("attention", {"name": "scaled_dot"}, query_dim=512, key_dim=512)
    names = [n for n, _ in att.named_parameters()]
    assert names == ["query_proj.weight", "query_proj.bias", "value_proj.weight", "value_proj.bias"]
    assert att.output_dim == 512 and att.num_heads == 8


def test_heads_must_divide_attention_dim() -> None:
    for name in ("scaled_dot", "location_aware", "additive"):
        with pytest.raises(ConfigError, match="attention_dim 30 must be a multiple of num_heads 4"):
            build("attention", {"name": name, "num_heads": 4, "attention_dim": 30}, query_dim=8, key_dim=8)


def test_attention_config_must_not_set_provided_dims() -> None:
    with pytest.raises(ConfigError, match="gets 'query_dim' from its parent"):
        build(
            "decoder", {"name": "rnn", "attention": {"name": "additive", "query_dim": 3}}, vocab_size=10, encoder_dim=8
        )
