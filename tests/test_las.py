"""The LAS model, its RNN listener and speller on real fbank features."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from kospeech.errors import ConfigError
from kospeech.models.base import ASRModel
from kospeech.models.las import decoder_io
from kospeech.nn.mask import lengths_to_mask
from kospeech.registry import build
from kospeech.text.special import EOS_ID, PAD_ID, SOS_ID
from kospeech.train.options import resolve_amp

# KoSpeech's LAS as its README configures it: 80 mel bins, 2038 characters.
KOSPEECH_LAS_YAML = """
name: las
ctc_weight: 0.0
encoder:
  name: rnn
  rnn_type: lstm
  hidden_dim: 256
  num_layers: 3
  bidirectional: true
  dropout: 0.3
  extractor: {name: vgg}
decoder:
  name: rnn
  rnn_type: lstm
  hidden_dim: 512
  num_layers: 2
  dropout: 0.3
  attention: {name: scaled_dot, num_heads: 8}
"""

# The module tree printed in KoSpeech's README (container class names dropped: ours are named
# after their registry entries; recent PyTorch prints BatchNorm's ``bias=True``, dropped too).
KOSPEECH_TREE = """
(listener): (
  (extractor): (
    (cnn): (
      (sequential): (
        (0): Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        (1): Hardtanh(min_val=0, max_val=20, inplace=True)
        (2): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
        (3): Conv2d(64, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        (4): Hardtanh(min_val=0, max_val=20, inplace=True)
        (5): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
        (6): BatchNorm2d(64, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
        (7): Conv2d(64, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        (8): Hardtanh(min_val=0, max_val=20, inplace=True)
        (9): BatchNorm2d(128, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
        (10): Conv2d(128, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)
        (11): Hardtanh(min_val=0, max_val=20, inplace=True)
        (12): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
      )
    )
  )
  (rnn): LSTM(2560, 256, num_layers=3, batch_first=True, dropout=0.3, bidirectional=True)
)
(speller): (
  (embedding): Embedding(2038, 512)
  (input_dropout): Dropout(p=0.3, inplace=False)
  (rnn): LSTM(512, 512, num_layers=2, batch_first=True, dropout=0.3)
  (attention): (
    (query_proj): Linear(in_features=512, out_features=512, bias=True)
    (value_proj): Linear(in_features=512, out_features=512, bias=True)
  )
  (fc1): Linear(in_features=1024, out_features=512, bias=True)
  (fc2): Linear(in_features=512, out_features=2038, bias=True)
)
"""


def _normalised_tree(model: torch.nn.Module) -> list[str]:
    lines = str(model).splitlines()[1:-1]  # drop the outer ``ListenAttendSpell(`` ... ``)``
    out = []
    for line in lines:
        line = line[2:]
        line = re.sub(r"^(\s*\(\w+\)): \w+\($", r"\1: (", line)
        out.append(line.replace(", bias=True, track_running_stats", ", track_running_stats"))
    return out


def small_las(attention: str = "{name: scaled_dot, num_heads: 4}", **extra: object) -> str:
    """A LAS small enough for CPU tests; the attention line is the one a user would swap."""
    text = f"""
name: las
init: default
label_smoothing: 0.0
encoder:
  name: rnn
  hidden_dim: 32
  num_layers: 2
  dropout: 0.0
  extractor: {{name: conv2d_subsampling, output_dim: 32, channels: 8}}
decoder:
  name: rnn
  hidden_dim: 32
  num_layers: 1
  dropout: 0.0
  attention: {attention}
"""
    cfg = yaml.safe_load(text)
    for key, value in extra.items():
        section, _, name = key.partition("__")
        if name:
            cfg[section][name] = value
        else:
            cfg[section] = value
    return yaml.safe_dump(cfg)


def _build(text: str, fbank_batch: dict) -> ASRModel:
    return build("model", yaml.safe_load(text), input_dim=80, vocab_size=fbank_batch["vocab_size"])


def _batch(fb: dict) -> tuple[torch.Tensor, ...]:
    return fb["features"], fb["feature_lengths"], fb["targets"], fb["target_lengths"]


# ---- the KoSpeech configuration -------------------------------------------------------------


def test_kospeech_las_has_exactly_its_parameter_count_and_tree() -> None:
    model = build("model", yaml.safe_load(KOSPEECH_LAS_YAML), input_dim=80, vocab_size=2038)
    assert sum(p.numel() for p in model.parameters()) == 16_525_878
    assert [n for n, _ in model.named_children()] == ["listener", "speller"]
    assert [n for n, _ in model.speller.named_children()] == [
        "embedding",
        "input_dropout",
        "rnn",
        "attention",
        "fc1",
        "fc2",
    ]
    assert _normalised_tree(model) == KOSPEECH_TREE.strip("\n").splitlines()
    # the defaults are that configuration
    default = build("model", {"name": "las"}, input_dim=80, vocab_size=2038)
    assert str(default) == str(model)


def test_uniform_init_bounds_every_weight_but_norm_layers() -> None:
    model = build("model", yaml.safe_load(small_las(init="uniform")), input_dim=80, vocab_size=20)
    for name, p in model.named_parameters():
        assert p.abs().max() <= 0.08, name
    default = build("model", yaml.safe_load(small_las()), input_dim=80, vocab_size=20)
    assert max(p.abs().max().item() for p in default.parameters()) > 0.08
    with pytest.raises(ConfigError, match="unknown initialisation; choose one of default, uniform"):
        build("model", {"name": "las", "init": "xavier"}, input_dim=80, vocab_size=20)


# ---- building, training step, padding invariance --------------------------------------------

ATTENTION_LINES = {
    "scaled_dot": "{name: scaled_dot, num_heads: 4}",
    "location_aware": "{name: location_aware, num_heads: 4, conv_kernel_size: 5}",
    "additive": "{name: additive, num_heads: 4}",
}


@pytest.mark.parametrize("attention", list(ATTENTION_LINES))
def test_las_forward_backward_with_each_attention(attention: str, fbank_batch: dict) -> None:
    model = _build(small_las(ATTENTION_LINES[attention]), fbank_batch)
    assert type(model.speller.attention).__name__.lower().startswith(attention.replace("_", ""))
    out = model(*_batch(fbank_batch))
    assert set(out) == {"loss", "att"}
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 1.0  # untrained: near ln(V) = 3.8
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("attention", list(ATTENTION_LINES))
def test_las_padding_invariance(attention: str, fbank_batch: dict) -> None:
    model = _build(small_las(ATTENTION_LINES[attention]), fbank_batch).eval()
    feats, flen, targets, tlen = _batch(fbank_batch)
    short = int(flen.argmin())
    n, m = int(flen[short]), int(tlen[short])
    sl = slice(short, short + 1)
    with torch.no_grad():
        batched = model.attention_logits(feats, flen, targets, tlen)
        alone = model.attention_logits(feats[sl, :n], flen[sl], targets[sl, :m], tlen[sl])
        enc_b, len_b = model.encode(feats, flen)
        enc_a, len_a = model.encode(feats[sl, :n], flen[sl])
    torch.testing.assert_close(enc_b[sl, : int(len_a[0])], enc_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[sl, : m + 1], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", list(ATTENTION_LINES))
@pytest.mark.parametrize("input_feeding", [False, True])
def test_decoder_steps_reproduce_teacher_forcing(attention: str, input_feeding: bool, fbank_batch: dict) -> None:
    model = _build(small_las(ATTENTION_LINES[attention], decoder__input_feeding=input_feeding), fbank_batch).eval()
    feats, flen, targets, tlen = _batch(fbank_batch)
    dec_in, _ = decoder_io(targets, tlen)
    with torch.no_grad():
        logits = model.attention_logits(feats, flen, targets, tlen)
        enc, enc_len = model.encode(feats, flen)
        state = model.init_decoder_state(enc, enc_len)
        steps = []
        for i in range(dec_in.size(1)):
            logp, state = model.decoder_step(dec_in[:, i], state, enc, enc_len)
            steps.append(logp)
            # reordering hypotheses with select_state keeps the state usable
            state = model.select_state(state, torch.arange(enc.size(0)))
    torch.testing.assert_close(torch.stack(steps, 1), logits.log_softmax(-1), atol=1e-5, rtol=1e-5)


def test_one_yaml_line_swaps_the_attention(fbank_batch: dict) -> None:
    text = small_las()
    assert text.count("name: scaled_dot") == 1
    swapped = text.replace("name: scaled_dot", "name: location_aware")
    model = _build(swapped, fbank_batch)
    assert type(model.speller.attention).__name__ == "LocationAwareAttention"


def test_joint_ctc_attention(fbank_batch: dict) -> None:
    model = _build(small_las(ctc_weight=0.3), fbank_batch)
    assert model.has_ctc and model.has_decoder
    out = model(*_batch(fbank_batch))
    assert set(out) == {"loss", "ctc", "att"}
    torch.testing.assert_close(out["loss"].detach(), 0.3 * out["ctc"] + 0.7 * out["att"])
    out["loss"].backward()
    assert model.ctc_head.weight.grad is not None
    enc, enc_len = model.encode(fbank_batch["features"], fbank_batch["feature_lengths"])
    logp = model.ctc_log_probs(enc)
    assert logp.shape == (8, enc.size(1), fbank_batch["vocab_size"])
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(8, enc.size(1)))
    plain = _build(small_las(), fbank_batch)
    assert not plain.has_ctc
    with pytest.raises(NotImplementedError, match="set model.ctc_weight > 0"):
        plain.ctc_log_probs(enc)


def test_decoder_io_wraps_targets_with_sos_and_eos() -> None:
    targets = torch.tensor([[7, 8, 9], [5, 6, PAD_ID]])
    dec_in, dec_out = decoder_io(targets, torch.tensor([3, 2]))
    assert dec_in.tolist() == [[SOS_ID, 7, 8, 9], [SOS_ID, 5, 6, PAD_ID]]
    assert dec_out.tolist() == [[7, 8, 9, EOS_ID], [5, 6, EOS_ID, PAD_ID]]


# ---- scheduled sampling -------------------------------------------------------------------------


def test_teacher_forcing_ratio_decays_to_its_floor_and_is_checkpointed(fbank_batch: dict) -> None:
    text = small_las(
        decoder__teacher_forcing_ratio=0.9, decoder__teacher_forcing_step=0.25, decoder__min_teacher_forcing_ratio=0.3
    )
    model = _build(text, fbank_batch)
    batch = _batch(fbank_batch)
    model.train()
    model(*batch)
    assert model.speller.teacher_forcing_ratio == pytest.approx(0.65)
    model(*batch)
    model(*batch)
    assert model.speller.teacher_forcing_ratio == pytest.approx(0.3)  # floor, not 0.15
    model.eval()
    with torch.no_grad():
        model(*batch)  # evaluation does not advance the schedule
    assert model.speller.teacher_forcing_ratio == pytest.approx(0.3)
    fresh = _build(text, fbank_batch)
    fresh.load_state_dict(model.state_dict())
    assert fresh.speller.teacher_forcing_ratio == pytest.approx(0.3)
    manual = _build(small_las(decoder__teacher_forcing_step=0.1, auto_teacher_forcing_step=False), fbank_batch)
    manual.train()
    manual(*batch)
    assert manual.speller.teacher_forcing_ratio == 1.0
    assert manual.step_teacher_forcing() == pytest.approx(0.9)


def test_scheduled_sampling_feeds_back_predictions(fbank_batch: dict) -> None:
    feats, flen, targets, tlen = _batch(fbank_batch)
    model = _build(small_las(decoder__teacher_forcing_ratio=0.0, auto_teacher_forcing_step=False), fbank_batch)
    model.train()  # no dropout in the small model: train and eval differ only by the sampling
    sampled = model.attention_logits(feats, flen, targets, tlen).detach()
    model.eval()
    forced = model.attention_logits(feats, flen, targets, tlen).detach()
    torch.testing.assert_close(sampled[:, 0], forced[:, 0])  # the first input is <sos> either way
    assert (sampled[:, 1:] - forced[:, 1:]).abs().max() > 1e-3
    # feeding back greedy predictions is exactly greedy decoding
    enc, enc_len = model.encode(feats, flen)
    state = model.init_decoder_state(enc, enc_len)
    tokens = torch.full((8,), SOS_ID)
    for i in range(sampled.size(1)):
        logp, state = model.decoder_step(tokens, state, enc, enc_len)
        torch.testing.assert_close(logp, sampled[:, i].log_softmax(-1), atol=1e-5, rtol=1e-5)
        tokens = logp.argmax(-1)


# ---- the listener on its own -----------------------------------------------------------------

ENCODERS = {
    "lstm_vgg": "{name: rnn, hidden_dim: 16, num_layers: 2, extractor: {name: vgg}}",
    "gru_none": "{name: rnn, rnn_type: gru, hidden_dim: 16, num_layers: 2, extractor: null}",
    "gru_identity": "{name: rnn, rnn_type: gru, hidden_dim: 16, num_layers: 1, extractor: {name: none}}",
    "lstm_uni_ds2": "{name: rnn, hidden_dim: 16, bidirectional: false, extractor: {name: deepspeech2, channels: 4}}",
    "lstm_sub": "{name: rnn, hidden_dim: 16, extractor: {name: conv2d_subsampling, output_dim: 16, channels: 4}}",
}


@pytest.mark.parametrize("key", list(ENCODERS))
def test_rnn_encoder_padding_invariance_and_backward(key: str, fbank_batch: dict) -> None:
    enc = build("encoder", yaml.safe_load(ENCODERS[key]), input_dim=80)
    # four utterances (the shortest among them) keep the VGG run cheap on CPU
    flen = fbank_batch["feature_lengths"][4:]
    feats = fbank_batch["features"][4:, : int(flen.max())]
    out, lengths = enc(feats, flen)
    assert out.shape == (4, int(lengths.max()), enc.output_dim)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in enc.parameters())
    enc.eval()
    short = int(flen.argmin())
    n = int(flen[short])
    with torch.no_grad():
        batched, blen = enc(feats, flen)
        alone, alen = enc(feats[short : short + 1, :n], flen[short : short + 1])
    assert int(alen[0]) == int(blen[short])
    torch.testing.assert_close(batched[short, : alone.size(1)], alone[0], atol=1e-5, rtol=0)
    pad = ~lengths_to_mask(blen, batched.size(1))
    assert batched[pad].abs().max().item() == 0.0


# ---- overfitting -----------------------------------------------------------------------------------


def greedy_decode(model: ASRModel, feats: torch.Tensor, flen: torch.Tensor, max_len: int) -> list[list[int]]:
    enc, enc_len = model.encode(feats, flen)
    state = model.init_decoder_state(enc, enc_len)
    tokens = torch.full((feats.size(0),), SOS_ID)
    hyps: list[list[int]] = [[] for _ in range(feats.size(0))]
    done = torch.zeros(feats.size(0), dtype=torch.bool)
    for _ in range(max_len):
        logp, state = model.decoder_step(tokens, state, enc, enc_len)
        tokens = logp.argmax(-1)
        for b in range(feats.size(0)):
            if not done[b] and int(tokens[b]) != EOS_ID:
                hyps[b].append(int(tokens[b]))
        done |= tokens == EOS_ID
        if done.all():
            break
    return hyps


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_las_overfits_eight_utterances(amp: str, fbank_batch: dict) -> None:
    """Eight distinct sentences, 64 target tokens with <eos>. A mean attention loss under
    ln(2) / 64 = 0.0108 nats per token bounds every single token's loss by ln 2, so each
    reference token, including the first one, which only the audio can tell, gets p > 0.5
    and is the argmax: greedy decoding (this model has no dropout or batch norm, so eval
    equals train) must give back all eight transcripts exactly. A decoder that ignored the
    audio would stay near ln(8) / 8 tokens = 0.26, and the loss starts near ln V = 3.8.
    The training is the trainer's: the registry's (fused) Adam, and with ``amp: bf16`` CPU
    autocast as ``train.amp: bf16`` runs it."""
    dtype = resolve_amp(amp, torch.device("cpu"))
    if amp == "bf16" and dtype is None:
        pytest.skip("this CPU has no native bf16")
    model = _build(small_las(ctc_weight=0.3, encoder__hidden_dim=64, decoder__hidden_dim=64), fbank_batch)
    opt = build("optimizer", {"name": "adam", "lr": 0.005, "betas": [0.9, 0.999], "eps": 1e-8},
                params=model.parameters())
    batch = _batch(fbank_batch)
    first = None
    for _ in range(600):
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = model(*batch)
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        first = first if first is not None else out["att"].item()
        if out["att"].item() < 0.0108:
            break
    assert first > 3.0
    assert out["att"].item() < 0.0108
    model.eval()
    with torch.no_grad():
        hyps = greedy_decode(model, fbank_batch["features"], fbank_batch["feature_lengths"], 15)
    refs = [t[: int(n)].tolist() for t, n in zip(fbank_batch["targets"], fbank_batch["target_lengths"])]
    assert hyps == refs


# Losses of four Adam updates (lr 1e-3) on a fixed padded batch, computed by the code before the
# training-speed work of issue 27 (zeroing after every extractor layer, Adam's per-tensor loop,
# convolutions in NCHW): the faster extractor and the fused Adam must train the same model. The
# VGG now convolves channels-last, which sums in another order: float32 rounding, 1e-5 of the
# loss after four updates.
LOSSES_BEFORE_SPEEDUPS = [7.624048233032227, 7.073996543884277, 6.2042436599731445, 5.414872169494629]


def test_faster_las_trains_as_before() -> None:
    g = torch.Generator().manual_seed(27)
    feats = torch.randn(4, 160, 80, generator=g) * 3
    lengths = torch.tensor([160, 149, 131, 97])
    targets = torch.randint(5, 2038, (4, 12), generator=g)
    target_lengths = torch.tensor([12, 10, 9, 6])
    torch.manual_seed(0)
    model = build("model", yaml.safe_load(KOSPEECH_LAS_YAML), input_dim=80, vocab_size=2038).train()
    opt = build("optimizer", {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5}, params=model.parameters())
    losses = []
    for step in range(4):
        torch.manual_seed(step)  # dropout masks
        loss = model(feats, lengths, targets, target_lengths)["loss"]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses == pytest.approx(LOSSES_BEFORE_SPEEDUPS, rel=5e-5)
