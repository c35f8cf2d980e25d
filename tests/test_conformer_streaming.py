"""Streaming Conformer: chunk-wise attention, causal convolution, dynamic chunk training, and the
stream and ONNX export of a chunked model.

What must hold exactly: with chunk-wise attention and a causal convolution an output frame does
not depend on input after the end of its chunk (the test that fails when either leaks), so a
stream commits exactly the frames of the whole utterance at the same chunk size; default
configs compute what they computed before the options existed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.errors import ConfigError
from kospeech.nn.conformer import DYNAMIC_CHUNK_MAX, ConvolutionModule
from kospeech.nn.mask import chunk_mask
from kospeech.registry import build
from tests.test_stream import _committed

INPUT_DIM = 40
SUB = 4  # conv2d_subsampling
RATE = 16000


def encoder_cfg(**options) -> dict:
    return {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 2, "kernel_size": 5, "dropout": 0.0,
            "attention": {"name": "relative_multi_head", "num_heads": 2},
            "extractor": {"name": "conv2d_subsampling", "output_dim": 32, "channels": 8}, **options}


def encoder(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("encoder", encoder_cfg(**options), path="model.encoder", input_dim=INPUT_DIM).eval()


def features(batch: int = 1, frames: int = 160, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, INPUT_DIM, generator=torch.Generator().manual_seed(seed))


def encode(enc: torch.nn.Module, x: torch.Tensor, lengths: list[int] | None = None) -> torch.Tensor:
    lens = torch.tensor(lengths or [x.size(1)] * x.size(0))
    with torch.no_grad():
        return enc(x, lens)[0]


# ---- the pieces ------------------------------------------------------------------------------


def test_chunk_mask_values() -> None:
    expected = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(chunk_mask(5, 2), expected.bool())
    limited = chunk_mask(7, 2, left_chunks=1)
    assert limited.shape == (7, 7)
    assert limited[6].tolist() == [False] * 4 + [True] * 3  # chunk 3 sees chunks 2 and 3 (frames 4..7)
    assert limited[1].tolist() == [True, True, False, False, False, False, False]
    assert torch.equal(chunk_mask(4, 4), torch.ones(4, 4, dtype=torch.bool))  # one chunk: full context
    assert torch.equal(chunk_mask(6, 1, left_chunks=0), torch.eye(6, dtype=torch.bool))


def test_causal_convolution_never_reads_later_frames() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 20, 16)
    mask = torch.ones(1, 20, dtype=torch.bool)
    later = x.clone()
    later[:, 11:] += 1.0
    for kernel in (5, 4):  # a causal kernel may be even: nothing is centred
        causal = ConvolutionModule(16, kernel, 0.0, "layer_norm", causal=True).eval()
        with torch.no_grad():
            a, b = causal(x, mask), causal(later, mask)
        assert a.shape == x.shape
        assert torch.equal(a[:, :11], b[:, :11]) and not torch.allclose(a[:, 11:], b[:, 11:])
    centred = ConvolutionModule(16, 5, 0.0, "layer_norm").eval()
    with torch.no_grad():
        assert not torch.allclose(centred(x, mask)[:, 9:11], centred(later, mask)[:, 9:11])
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        ConvolutionModule(16, 4, 0.0, "layer_norm")


@pytest.mark.parametrize("chunk,left_chunks", [(4, -1), (3, 1), (16, 2)])
def test_a_later_chunk_does_not_change_earlier_outputs(chunk: int, left_chunks: int) -> None:
    """Output frames of chunks 0..k-1 are bit-identical whatever the input after them; with full
    context or a centred convolution they change (so this test can fail)."""
    x = features(frames=200)
    k = 2
    first_later = (k * chunk) * SUB + SUB  # past the subsampling's reach of frame k*chunk - 1 (frames 4t..4t+6)
    changed = x.clone()
    changed[:, first_later:] = torch.randn(changed[:, first_later:].shape)
    streaming = encoder(chunk_size=chunk, left_chunks=left_chunks, causal_conv=True)
    a, b = encode(streaming, x), encode(streaming, changed)
    assert torch.equal(a[:, : k * chunk], b[:, : k * chunk])
    assert not torch.allclose(a[:, (k + 1) * chunk :], b[:, (k + 1) * chunk :])
    for leaky in (encoder(causal_conv=True), encoder(chunk_size=chunk, left_chunks=left_chunks)):
        assert not torch.allclose(encode(leaky, x)[:, : k * chunk], encode(leaky, changed)[:, : k * chunk])


def test_left_chunks_bound_what_a_frame_hears_back() -> None:
    """Two blocks, one chunk of left context each (and a 5-frame causal kernel): a frame five
    chunks on no longer hears the first chunk."""
    x = features(frames=160)
    changed = x.clone()
    changed[:, :8] += 1.0  # the first encoder frames only
    limited = encoder(chunk_size=4, left_chunks=1, causal_conv=True)
    a, b = encode(limited, x), encode(limited, changed)
    assert not torch.allclose(a[:, :4], b[:, :4])
    assert torch.equal(a[:, 20:], b[:, 20:])
    unlimited = encoder(chunk_size=4, causal_conv=True)
    assert not torch.allclose(encode(unlimited, x)[:, 20:], encode(unlimited, changed)[:, 20:])


def test_chunked_encoder_is_padding_invariant() -> None:
    """The chunk mask combines with the padding mask: a padded utterance's frames are its own."""
    enc = encoder(chunk_size=4, left_chunks=2, causal_conv=True)
    x = features(batch=2, frames=150)
    batch = encode(enc, x, [150, 97])
    alone = encode(enc, x[1:, :97], [97])
    torch.testing.assert_close(batch[1:, : alone.size(1)], alone, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batch).all()


def test_default_options_compute_what_they_did() -> None:
    """Full context by default: the options at their defaults (and dynamic_chunk, which acts only in
    training) give bit-identical outputs and the same parameters, so existing checkpoints load."""
    x = features(batch=2, frames=120)
    default = encoder()
    explicit = encoder(chunk_size=0, left_chunks=-1, causal_conv=False, dynamic_chunk=False)
    dynamic_eval = encoder(dynamic_chunk=True)
    assert list(default.state_dict()) == list(explicit.state_dict()) == list(dynamic_eval.state_dict())
    out = encode(default, x, [120, 88])
    assert torch.equal(out, encode(explicit, x, [120, 88])) and torch.equal(out, encode(dynamic_eval, x, [120, 88]))
    # one chunk longer than the utterance is full context again (through the per-query mask)
    torch.testing.assert_close(encode(encoder(chunk_size=64), x, [120, 88]), out, atol=1e-5, rtol=1e-5)


def test_bad_options_are_config_errors() -> None:
    for option, value in (("chunk_size", -1), ("left_chunks", -2), ("decode_chunk_size", -3), ("chunk_size", 1.5)):
        with pytest.raises(ConfigError, match=option):
            encoder(**{option: value})
    with pytest.raises(ConfigError, match="chunk_size needs a self-attention"):
        build("encoder", encoder_cfg(chunk_size=4, attention={"name": "scaled_dot", "attention_dim": 32}),
              input_dim=INPUT_DIM)
    with pytest.raises(ConfigError, match="decode_chunk_size"):
        encoder().set_decode_chunk_size(-1)


# ---- dynamic chunk training ------------------------------------------------------------------


def test_dynamic_chunk_draws_full_context_or_a_chunk_per_batch() -> None:
    enc = encoder(dynamic_chunk=True, chunk_size=16).train()
    torch.manual_seed(3)
    drawn = [enc._current_chunk(100) for _ in range(200)]
    chunks = [c for c, _ in drawn]
    assert 70 < chunks.count(0) < 130
    assert all(0 <= c <= DYNAMIC_CHUNK_MAX for c in chunks) and len(set(chunks)) > 10
    assert {left for _, left in drawn} == {-1}  # left_chunks as set
    assert enc.eval()._current_chunk(100) == (16, -1)
    static = encoder(chunk_size=8, left_chunks=2).train()
    assert {static._current_chunk(100) for _ in range(10)} == {(8, 2)}


def test_dynamic_left_chunks_draws_from_none_to_all() -> None:
    """U2++: a chunked batch also draws its left chunks, 0 up to every chunk before the last frame's."""
    enc = encoder(dynamic_chunk=True, dynamic_left_chunks=True, left_chunks=4).train()
    torch.manual_seed(0)
    drawn = [enc._current_chunk(100) for _ in range(400)]
    chunked = [(c, left) for c, left in drawn if c]
    assert all(0 <= left <= 99 // c for c, left in chunked)
    assert {left for _, left in chunked} >= {0, 1, 2, 5} and max(left for _, left in chunked) > 10
    assert enc.eval()._current_chunk(100) == (0, 4)  # evaluation: decode_chunk_size (0) and left_chunks
    with pytest.raises(ConfigError, match="dynamic_chunk: true"):
        encoder(dynamic_left_chunks=True)


HEADS = {
    "ctc": {"head": "ctc"},
    "attention": {"head": "attention", "ctc_weight": 0.3, "label_smoothing": 0.0,
                  "decoder": {"name": "transformer", "d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1}},
}


def train_dynamic(head: str, steps: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {"name": "conformer", **HEADS[head],
           "encoder": encoder_cfg(dynamic_chunk=True, causal_conv=True, chunk_size=16, left_chunks=-1)}
    model = build("model", cfg, path="model", input_dim=INPUT_DIM, vocab_size=12)
    x, lengths = features(batch=3, frames=180, seed=2), torch.tensor([180, 150, 100])
    targets = torch.randint(5, 12, (3, 6), generator=torch.Generator().manual_seed(4))
    target_lengths = torch.tensor([6, 5, 4])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        out = model(x, lengths, targets, target_lengths)
        assert torch.isfinite(out["loss"]), out
        opt.zero_grad()
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
    return model.eval()


@pytest.mark.parametrize("head", sorted(HEADS))
def test_one_dynamic_chunk_checkpoint_decodes_at_any_chunk_size(head: str) -> None:
    model = train_dynamic(head)
    x, lengths = features(batch=2, frames=200, seed=5), torch.tensor([200, 170])
    outputs = {}
    for chunk in (0, 4, 16):
        model.encoder.set_decode_chunk_size(chunk)
        assert model.encoder.decode_chunk_frames == chunk
        with torch.no_grad():
            enc, enc_len = model.encode(x, lengths)
            outputs[chunk] = model.ctc_log_probs(enc)
        assert torch.isfinite(outputs[chunk]).all() and enc_len.tolist() == [49, 41]
    assert not torch.allclose(outputs[0], outputs[4]) and not torch.allclose(outputs[4], outputs[16])
    # the same weights in a model configured for chunk 4 decode as the override did
    torch.manual_seed(0)
    cfg = {"name": "conformer", **HEADS[head], "encoder": encoder_cfg(causal_conv=True, decode_chunk_size=4)}
    again = build("model", cfg, path="model", input_dim=INPUT_DIM, vocab_size=12).eval()
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.ctc_log_probs(again.encode(x, lengths)[0]), outputs[4])


# ---- streaming and export --------------------------------------------------------------------


FRONTEND = {"name": "fbank", "n_mels": INPUT_DIM}
TEXTS = ["안녕하세요", "오늘 날씨가 좋네요", "음성 인식"]


def write_chunked_checkpoint(root: Path, frontend: dict = FRONTEND, **options) -> Path:
    """An untrained chunked Conformer CTC checkpoint, whole as the trainer writes one (its CTC layer's
    blank bias lowered so that it emits units); ``options`` go to the encoder."""
    from kospeech.metadata import make_metadata
    from kospeech.text import read_lang_dir, train_tokenizer
    from kospeech.train.checkpoint import write_checkpoint

    tok = train_tokenizer("jamo", TEXTS, root / "lang")
    cfg = {"name": "conformer", "head": "ctc", "encoder": encoder_cfg(causal_conv=True, **options)}
    torch.manual_seed(0)
    model = build("model", cfg, path="model", input_dim=INPUT_DIM, vocab_size=tok.vocab_size)
    with torch.no_grad():
        model.ctc.bias[0] -= 1.0
    ckpt = {
        "model": model.state_dict(),
        "config": {"model": cfg, "frontend": frontend, "decode": {"search": {"name": "ctc_greedy"}}},
        "model_args": {"input_dim": INPUT_DIM, "vocab_size": tok.vocab_size},
        "cmvn": {"mean": torch.zeros(INPUT_DIM), "std": torch.full((INPUT_DIM,), 4.0)},
        "tokenizer": read_lang_dir(root / "lang"),
        "metadata": make_metadata("checkpoint", training_corpus={"corpus": "none: an untrained test model"}),
    }
    return write_checkpoint(ckpt, root / "model.pt")


def test_wave(seconds: float = 3.3, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 0.7 * t)) * t)
    return (tone * (0.5 + 0.5 * np.sin(2 * np.pi * 2.3 * t)) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


test_wave.__test__ = False  # a helper, not a test


def streamed_frames(asr, wave: np.ndarray, seconds: float = 0.2) -> tuple[list[np.ndarray], object]:
    """The frames a stream commits and its final result; steps of 5 frames, so that windows starting
    where the frames are decided would fall off the chunks of 4."""
    step = int(seconds * RATE)
    stream = asr.stream(endpoint=None, search="ctc_greedy", step_seconds=seconds)
    frames = _committed(stream)
    for i in range(0, len(wave), step):
        stream.feed(wave[i : i + step])
    return frames, stream.finish()


@pytest.mark.parametrize("left_chunks", [-1, 2])
def test_a_stream_of_a_chunked_model_commits_the_whole_utterances_frames(left_chunks: int, tmp_path: Path) -> None:
    """Unbounded left context: a growing window from the segment's start; two chunks: a sliding window
    that starts on chunk boundaries. Either way the committed frames are the whole utterance's at the
    same chunk size, the final text is transcribe's, and the reach ahead is about one chunk."""
    import kospeech

    chunk = 4
    asr = kospeech.load(write_chunked_checkpoint(tmp_path, chunk_size=chunk, left_chunks=left_chunks), device="cpu")
    reach = asr.stream_reach()
    stride = SUB * 160
    assert reach.stride == stride and reach.period == chunk * stride
    assert (chunk - 1) * stride <= reach.right <= (chunk + 2) * stride, reach  # a chunk, not the utterance
    assert (reach.left is None) == (left_chunks < 0)
    wave = test_wave(6.0)
    frames, result = streamed_frames(asr, wave)
    whole = asr.engine.log_probs([wave])[0]
    committed = np.concatenate(frames)
    assert committed.shape == whole.shape
    np.testing.assert_allclose(committed, whole, atol=1e-5)
    expected = asr.transcribe(wave, segment=False)
    assert result.text == expected.text and len(expected.tokens) > 3
    if left_chunks >= 0:  # windows that ignored the chunks' alignment would compute other frames
        from dataclasses import replace

        asr._reach = replace(reach, period=0)
        misaligned = np.concatenate(streamed_frames(asr, wave)[0])
        assert not np.allclose(misaligned, whole, atol=1e-5)


def test_decode_time_chunk_size_and_the_onnx_export(tmp_path: Path) -> None:
    """``kospeech.load(..., chunk_size=N)`` overrides the configured chunk size; the export bakes the
    chunk mask into its graph (log-probs equal PyTorch's at that chunk size, batched with padding),
    records the chunk size, and refuses another one at load."""
    import yaml

    import kospeech
    from kospeech import runtime
    from kospeech.cli import main

    ckpt = write_chunked_checkpoint(tmp_path, chunk_size=4, dynamic_chunk=True)
    waves = [test_wave(2.9, 1), test_wave(1.7, 2)]
    full = kospeech.load(ckpt, device="cpu", chunk_size=0).engine.log_probs(waves)
    at_four = kospeech.load(ckpt, device="cpu").engine.log_probs(waves)
    at_sixteen = kospeech.load(ckpt, device="cpu", chunk_size=16)
    assert at_sixteen.engine.chunk_frames() == 16
    assert not np.allclose(full[0], at_four[0], atol=1e-4)
    assert not np.allclose(at_sixteen.engine.log_probs(waves)[0], at_four[0], atol=1e-4)
    with pytest.raises(ConfigError, match="chunk_size"):
        kospeech.load(ckpt, device="cpu", chunk_size=-1)

    out = tmp_path / "onnx"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    manifest = yaml.safe_load((out / "model.yaml").read_text(encoding="utf-8"))
    assert manifest["network"]["chunk_size"] == 4
    exported = runtime.load(out)
    ours = exported.log_probs(waves)
    assert [a.shape for a in ours] == [b.shape for b in at_four]
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, at_four)) < 1e-3
    assert exported.engine.chunk_frames() == 4
    # the ONNX engine streams through the same chunk-aligned windows
    wave = test_wave(4.0, 5)
    frames, result = streamed_frames(exported, wave)
    np.testing.assert_allclose(np.concatenate(frames), exported.log_probs([wave])[0], atol=1e-5)
    assert result.text == exported.transcribe(wave, segment=False).text
    with pytest.raises(ConfigError, match="fixed in its graph"):
        kospeech.load(out, chunk_size=8)


# ---- the KsponSpeech streaming config --------------------------------------------------------


def test_ksponspeech_streaming_config_builds_to_its_parameter_count() -> None:
    """recipes/ksponspeech/conf/conformer_transducer_streaming.yaml passes the training-config check,
    builds (on the meta device) to the count in its header, and sets 640 ms chunks."""
    from kospeech.config import load_config
    from kospeech.train.schema import check_train_config

    conf = Path(__file__).resolve().parents[1] / "recipes" / "ksponspeech" / "conf"
    path = conf / "conformer_transducer_streaming.yaml"
    cfg = load_config(path)
    check_train_config(cfg)
    frontend = build("frontend", cfg["frontend"], path="frontend")
    with torch.device("meta"):
        model = build("model", cfg["model"], path="model", input_dim=frontend.output_dim, vocab_size=5000)
    count = sum(p.numel() for p in model.parameters())
    assert count == 79_253_384
    header = path.read_text(encoding="utf-8").split("\nextends:")[0]
    assert "79.253 M parameters" in header and "Remaining differences" in header
    enc = model.encoder
    frame_ms = frontend.hop_length / frontend.sample_rate * 1000 * SUB
    assert enc.chunk_size * frame_ms == 640 and enc.dynamic_chunk and enc.causal_conv and enc.left_chunks == 4
    assert model.is_transducer
    build("search", cfg["decode"]["search"], path="decode.search", model=model)


def test_kospeech_decode_takes_a_chunk_size(tmp_path: Path) -> None:
    """``kospeech decode MODEL --chunk-size N``: the hypotheses are those of ``kospeech.load(...,
    chunk_size=N)`` and decode.yaml records the chunk size."""
    import yaml

    import kospeech
    from kospeech.audio import write_audio
    from kospeech.cli import main
    from kospeech.data.datadir import write_data_dir
    from kospeech.files import read_utt_text

    ckpt = write_chunked_checkpoint(tmp_path, chunk_size=4, dynamic_chunk=True)
    waves = {"a": test_wave(2.1, 3), "b": test_wave(1.4, 4)}
    audio = {}
    for utt, wave in waves.items():
        audio[utt] = str(tmp_path / f"{utt}.wav")
        write_audio(audio[utt], wave, RATE)
    data = write_data_dir(tmp_path / "data", wav=audio, text={u: TEXTS[0] for u in audio},
                          utt2spk={u: "spk" for u in audio}, utt2dur={u: 2.0 for u in audio}, corpus="none",
                          transcript="phonetic")
    assert main(["decode", str(ckpt), "--data", str(data), "--out", str(tmp_path / "d16"), "--chunk-size", "16"]) == 0
    info = yaml.safe_load((tmp_path / "d16" / "decode.yaml").read_text(encoding="utf-8"))
    assert info["chunk_size"] == 16
    asr = kospeech.load(ckpt, device="cpu", chunk_size=16)
    hyps = read_utt_text(tmp_path / "d16" / "hyp.trn")
    assert [hyps[u] for u in waves] == [asr.transcribe(w, sample_rate=RATE).text for w in waves.values()]
    assert all(hyps.values())  # the model emits, so the comparison means something
