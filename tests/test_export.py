"""``kospeech export``: the directory it writes, its parity with PyTorch, int8, and what it refuses.

Parity is measured on the eight training utterances and on eight unseen renditions (other
voice, speed and pitch), whose transcripts are partly wrong: a model that is unsure is where a
rounding difference would flip an argmax.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kospeech.cli import main
from kospeech.errors import ConfigError, DataError
from kospeech.metrics import score_corpus

from .conftest import SHORT_SENTENCES, espeak_wave

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def exported(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    args = ["export", str(ctc_checkpoint["path"]), "--format", "onnx", "--out", str(out), "--quantize", "int8"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def unseen_waves(espeak_available: bool) -> list[np.ndarray]:
    return [espeak_wave(t, voice="ko+m3", speed=135, pitch=30) for t in SHORT_SENTENCES]


def cer(refs: list[str], hyps: list[str]) -> float:
    """Corpus CER in percent."""
    return score_corpus(dict(enumerate(refs)), dict(enumerate(hyps))).cer


def torch_log_probs(checkpoint: Path, waves: list[np.ndarray]) -> list[np.ndarray]:
    """The PyTorch path: the checkpoint's frontend, CMVN, encoder and CTC head, one padded batch."""
    from kospeech.inference.loading import load_for_inference

    bundle = load_for_inference(checkpoint)
    lengths = torch.tensor([w.size for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        batch[b, : w.size] = torch.from_numpy(w)
    with torch.no_grad():
        feats, flen = bundle.frontend(batch, lengths)
        feats = bundle.cmvn(feats, flen)
        enc, enc_len = bundle.model.encode(feats, flen)
        lp = bundle.model.ctc_log_probs(enc)
    return [lp[b, : int(n)].numpy() for b, n in enumerate(enc_len)]


def torch_greedy_texts(checkpoint: Path, waves: list[np.ndarray]) -> list[str]:
    from kospeech.inference.loading import load_for_inference
    from kospeech.search.ctc import ctc_best_path

    tok = load_for_inference(checkpoint).tokenizer
    out = []
    for lp in torch_log_probs(checkpoint, waves):
        ids, _ = ctc_best_path(torch.from_numpy(lp)[None], torch.tensor([lp.shape[0]]))
        out.append(tok.decode(ids[0]))
    return out


def test_export_directory_is_self_contained(exported: Path, ctc_checkpoint: dict) -> None:
    import onnx

    from kospeech.files import sha256_files
    from kospeech.metadata import FORMAT_VERSION, check_metadata

    names = {p.name for p in exported.iterdir()}
    assert {"model.yaml", "model.onnx", "model.int8.onnx", "frontend.npz", "cmvn.npz", "tokenizer"} <= names
    assert not any(n.startswith(".") for n in names)
    manifest = yaml.safe_load((exported / "model.yaml").read_text(encoding="utf-8"))
    meta = check_metadata(manifest["metadata"], "model.yaml")
    assert meta["kind"] == "export" and meta["format_version"] == FORMAT_VERSION
    assert {"kospeech", "torch", "onnx", "onnxruntime"} <= set(meta["versions"])
    assert meta["checksum"] == sha256_files(exported / "model.onnx")
    assert meta["training_corpus"] == {"corpus": "espeak-ng test utterances"}  # carried over from the checkpoint
    ckpt_meta = torch.load(ctc_checkpoint["path"], weights_only=True)["metadata"]
    assert ckpt_meta["checksum"] != meta["checksum"]  # the export's covers its graphs, not the torch weights
    assert manifest["network"]["frame_seconds"] == pytest.approx(0.04)
    assert manifest["check"]["max_abs_diff"] < 1e-3
    graph = onnx.load(str(exported / "model.onnx")).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims == {"features": ["batch", "time", 40], "feature_lengths": ["batch"]}
    assert (exported / "tokenizer" / "units.txt").is_file()


def test_runtime_matches_pytorch(exported: Path, ctc_checkpoint: dict, unseen_waves: list[np.ndarray]) -> None:
    """Greedy transcripts identical on 16 utterances; log-probs within 1e-3; beam CER within 0.1 point."""
    from kospeech import runtime
    from kospeech.search.ctc import ctc_prefix_beam_search

    model = runtime.load(exported, int8=False)
    waves = ctc_checkpoint["waves"] + unseen_waves
    refs = ctc_checkpoint["texts"] * 2
    ours = model.log_probs(waves)
    theirs = torch_log_probs(ctc_checkpoint["path"], waves)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))
    logger.info("max |log-prob| difference, runtime vs PyTorch: %.2e", diff)
    assert all(a.shape == b.shape for a, b in zip(ours, theirs)) and diff < 1e-3
    torch_texts = torch_greedy_texts(ctc_checkpoint["path"], waves)
    results = model.transcribe(waves)
    assert [r.text for r in results] == torch_texts
    assert [r.text for r in results[:8]] == ctc_checkpoint["texts"]  # the training utterances come back
    assert any(r.text != t for r, t in zip(results[8:], refs[8:]))  # the unseen ones are a real test
    beam = model.transcribe(waves, search="ctc_prefix_beam", beam_size=5)
    tok = model.tokenizer
    torch_beam = [
        tok.decode(ctc_prefix_beam_search(torch.from_numpy(lp)[None], torch.tensor([lp.shape[0]]), 5)[0][0].tokens)
        for lp in theirs
    ]
    beam_cer, torch_beam_cer = cer(refs, [r.text for r in beam]), cer(refs, torch_beam)
    logger.info("prefix beam CER: runtime %.2f%%, PyTorch %.2f%%", beam_cer, torch_beam_cer)
    assert abs(beam_cer - torch_beam_cer) <= 0.1
    for r in results[:8]:  # words carry times inside the audio, in order
        assert r.words and [w.text for w in r.words] == r.text.split()
        assert all(0 <= w.start < w.end <= r.duration for w in r.words)
        assert all(a.end <= b.start for a, b in zip(r.words, r.words[1:]))


def test_int8_cost(exported: Path, ctc_checkpoint: dict, unseen_waves: list[np.ndarray]) -> None:
    """int8 dynamic quantisation: measured CER cost on the 16 utterances, bounded at 5 points."""
    from kospeech import runtime

    waves = ctc_checkpoint["waves"] + unseen_waves
    refs = ctc_checkpoint["texts"] * 2
    fp32 = [r.text for r in runtime.load(exported, int8=False).transcribe(waves)]
    int8_model = runtime.load(exported)
    assert int8_model.int8
    int8 = [r.text for r in int8_model.transcribe(waves)]
    cost = cer(refs, int8) - cer(refs, fp32)
    logger.info("CER fp32 %.2f%%, int8 %.2f%% (cost %.2f points)", cer(refs, fp32), cer(refs, int8), cost)
    assert cost <= 5.0


def test_long_audio_is_cut_as_the_pytorch_api_cuts_it(exported: Path, ctc_checkpoint: dict) -> None:
    """Eight utterances with pauses (~20 s) cut into pieces of at most 6 s: the same segments, text,
    tokens and word times as ``kospeech.load(..., max_segment_seconds=6)``."""
    import kospeech
    from kospeech import runtime

    pause = np.zeros(12000, np.float32)
    wave = np.concatenate([x for w in ctc_checkpoint["waves"] for x in (w, pause)])
    ours = runtime.load(exported, int8=False).transcribe(wave, max_segment_seconds=6.0)
    theirs = kospeech.load(ctc_checkpoint["path"], device="cpu", max_segment_seconds=6.0).transcribe(wave)
    assert ours.ok and len(ours.segments) >= 4 and ours.segments == theirs.segments
    assert ours.tokens == theirs.tokens and ours.text == theirs.text
    assert ours.duration == pytest.approx(wave.size / 16000, abs=1e-3)
    assert [w.text for w in ours.words] == ours.text.split()
    # times: the runtime's greedy spans against PyTorch's forced alignment, within two encoder frames
    assert [w.text for w in ours.words] == [w.text for w in theirs.words]
    assert all(abs(a.start - b.start) <= 0.08 for a, b in zip(ours.words, theirs.words))
    assert all(a.end <= b.start for a, b in zip(ours.words, ours.words[1:]))


def test_transcribe_inputs_and_bad_items(exported: Path, ctc_checkpoint: dict, tmp_path: Path) -> None:
    from kospeech import runtime
    from kospeech.audio import write_audio

    model = runtime.load(exported, int8=False)
    wav, pcm = tmp_path / "a.wav", tmp_path / "b.pcm"
    write_audio(wav, ctc_checkpoint["waves"][0], 16000)
    write_audio(pcm, ctc_checkpoint["waves"][1], 16000)
    one = model.transcribe(str(wav))
    assert one.ok and one.text == ctc_checkpoint["texts"][0] and one.source == str(wav)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    out = model.transcribe([wav.read_bytes(), str(tmp_path / "bad.wav"), pcm, np.zeros(10, np.float32)])
    assert out[0].text == ctc_checkpoint["texts"][0] and out[0].source == "<bytes>"
    assert not out[1].ok and "bad.wav" in out[1].error
    assert out[2].text == ctc_checkpoint["texts"][1]
    # the one short-audio rule of both engines: padded with silence, decoded (to nothing here)
    assert out[3].ok and out[3].text == "" and out[3].duration < 0.01
    with pytest.raises(ConfigError, match="runtime has"):
        model.transcribe(str(wav), search="beam")


def test_refuses_newer_format_and_damaged_weights(exported: Path, tmp_path: Path) -> None:
    from kospeech import runtime

    newer = tmp_path / "newer"
    shutil.copytree(exported, newer)
    manifest = yaml.safe_load((newer / "model.yaml").read_text(encoding="utf-8"))
    manifest["metadata"]["format_version"] = 99
    (newer / "model.yaml").write_text(yaml.safe_dump(manifest, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DataError, match="format 99.*upgrade kospeech"):
        runtime.load(newer)
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (damaged / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        runtime.load(damaged, int8=False)
    with pytest.raises(DataError, match="not an export directory"):
        runtime.load(tmp_path)


TRANSDUCER = {"name": "rnnt", "encoder": {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 1,
                                          "extractor": {"name": "conv2d_subsampling", "output_dim": 32, "channels": 8}},
              "predictor": {"name": "transducer", "embed_dim": 16, "hidden_dim": 32, "num_layers": 2},
              "joint_dim": 32}


def _variant(ctc_checkpoint: dict, cfg: dict, path: Path, *, blank_bias: float = 0.0) -> Path:
    """The test checkpoint with another (untrained) model in it."""
    from kospeech.registry import build
    from kospeech.train.checkpoint import write_checkpoint

    ckpt = torch.load(ctc_checkpoint["path"], weights_only=True)
    torch.manual_seed(0)
    model = build("model", cfg, path="model", **ckpt["model_args"])
    with torch.no_grad():  # an untrained joiner says blank or nothing; make it emit units
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == ckpt["model_args"]["vocab_size"]:
                m.bias[0] += blank_bias
    ckpt.update(model=model.state_dict(), config={**ckpt["config"], "model": cfg})
    return write_checkpoint(ckpt, path)  # sealed again: the checksum of the new weights


def test_transducer_export_matches_pytorch_greedy(ctc_checkpoint: dict, tmp_path: Path) -> None:
    """Encoder, predictor step and joiner as three graphs; the numpy greedy search over them emits the
    tokens PyTorch's transducer_greedy emits, at the same frames."""
    import kospeech
    from kospeech import runtime

    ckpt = _variant(ctc_checkpoint, TRANSDUCER, tmp_path / "rnnt.pt", blank_bias=0.5)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "rnnt"), "--quantize", "int8"]) == 0
    names = {p.name for p in (tmp_path / "rnnt").iterdir()}
    assert {"encoder.onnx", "predictor.onnx", "joiner.onnx", "joiner.int8.onnx"} <= names
    manifest = yaml.safe_load((tmp_path / "rnnt" / "model.yaml").read_text(encoding="utf-8"))
    assert manifest["network"]["head"] == "transducer" and manifest["check"]["max_abs_diff"] < 1e-3
    waves = ctc_checkpoint["waves"][:4]
    ours = runtime.load(tmp_path / "rnnt", int8=False).transcribe(waves)
    theirs = kospeech.load(ckpt, device="cpu", search="transducer_greedy").transcribe(waves)
    assert [r.tokens for r in ours] == [r.tokens for r in theirs]
    assert sum(len(r.tokens) for r in ours) > 10  # the heads emit, so the comparison means something
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert all(r.ok for r in runtime.load(tmp_path / "rnnt").transcribe(waves))  # int8 runs
    with pytest.raises(ConfigError, match="transducer_greedy"):
        runtime.load(tmp_path / "rnnt").transcribe(waves[0], search="ctc_greedy")


_TRANSFORMER = {"name": "transformer",
                "encoder": {"name": "transformer", "d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1,
                            "extractor": {"name": "conv2d_subsampling", "output_dim": 32, "channels": 8}},
                "decoder": {"name": "transformer", "d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 2}}
_LAS = {"name": "las", "init": "default",
        "encoder": {"name": "rnn", "hidden_dim": 32, "num_layers": 2, "dropout": 0.0,
                    "extractor": {"name": "conv2d_subsampling", "output_dim": 32, "channels": 8}},
        "decoder": {"name": "rnn", "hidden_dim": 32, "num_layers": 1, "dropout": 0.0,
                    "attention": {"name": "scaled_dot", "num_heads": 4}}}
ATTENTION_MODELS = {
    "transformer": {**_TRANSFORMER, "ctc_weight": 0.0},
    "transformer_ctc": {**_TRANSFORMER, "ctc_weight": 0.3},
    "las": _LAS,
}


@pytest.mark.parametrize("name", sorted(ATTENTION_MODELS))
def test_attention_decoder_export_matches_pytorch_greedy(name: str, ctc_checkpoint: dict, tmp_path: Path) -> None:
    """The decoder step as decoder.onnx (state flattened, the Transformer cache's growing axis dynamic):
    the runtime's batched numpy greedy search emits the tokens PyTorch's ``greedy`` emits on real
    utterances; a CTC+attention export keeps CTC as its default search."""
    import kospeech
    from kospeech import runtime
    from kospeech.files import sha256_files

    ckpt = _variant(ctc_checkpoint, ATTENTION_MODELS[name], tmp_path / f"{name}.pt")
    out = tmp_path / name
    assert main(["export", str(ckpt), "--out", str(out), "--quantize", "int8"]) == 0
    manifest = yaml.safe_load((out / "model.yaml").read_text(encoding="utf-8"))
    net = manifest["network"]
    assert manifest["files"]["decoder_int8"] == "decoder.int8.onnx"
    with_ctc = name == "transformer_ctc"
    assert net["head"] == ("ctc" if with_ctc else "attention")
    first = "model.onnx" if with_ctc else "encoder.onnx"
    assert net["graphs"] == [first, "decoder.onnx"] and manifest["files"]["decoder"] == "decoder.onnx"
    assert manifest["metadata"]["checksum"] == sha256_files(out / first, out / "decoder.onnx")
    assert manifest["check"]["max_abs_diff"] < 1e-3 and net["decoder_state"]
    assert manifest["decode"]["search"] == {"name": "ctc_greedy" if with_ctc else "greedy"}
    waves = ctc_checkpoint["waves"][:4]
    model = runtime.load(out, int8=False)
    ours = model.transcribe(waves, search="greedy")
    theirs = kospeech.load(ckpt, device="cpu", search="greedy").transcribe(waves)
    assert all(r.ok for r in ours)
    assert [r.tokens for r in ours] == [r.tokens for r in theirs]
    assert sum(len(r.tokens) for r in ours) > 10  # the decoder emits, so the comparison means something
    assert [r.text for r in ours] == [r.text for r in theirs]
    one_by_one = [model.transcribe(w, search="greedy").tokens for w in waves]  # batching changes nothing
    assert one_by_one == [r.tokens for r in ours]
    assert all(r.ok for r in runtime.load(out).transcribe(waves, search="greedy", max_len_ratio=0.5))  # int8
    if with_ctc:
        assert [r.text for r in model.transcribe(waves)] == torch_greedy_texts(ckpt, waves)  # CTC by default
        assert [w.text for w in ours[0].words] == [w.text for w in theirs[0].words]
    else:
        with pytest.raises(ConfigError, match="greedy"):
            model.transcribe(waves[0], search="ctc_greedy")
    if name == "transformer":  # the decoder search needs no torch either
        _greedy_without_torch(out, waves[:2], [r.tokens for r in theirs[:2]], tmp_path)


def _greedy_without_torch(export: Path, waves: list[np.ndarray], expected: list[list[int]], tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys
    import textwrap

    from .test_runtime import BLOCKER, REPO

    np.save(tmp_path / "waves.npy", np.stack([np.pad(w, (0, max(map(len, waves)) - len(w))) for w in waves]))
    lengths = [len(w) for w in waves]
    script = BLOCKER + textwrap.dedent(
        f"""
        import json, numpy as np, kospeech.runtime
        waves = np.load({str(tmp_path / "waves.npy")!r})
        model = kospeech.runtime.load({str(export)!r})
        results = model.transcribe([w[:n] for w, n in zip(waves, {lengths!r})], search="greedy")
        blocked = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
        print(json.dumps({{"tokens": [r.tokens for r in results], "torch": blocked}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"tokens": expected, "torch": []}


def test_export_refuses_a_decoder_state_it_cannot_flatten(ctc_checkpoint: dict, tmp_path: Path) -> None:
    """A location-aware LAS attention adds its alignment to the state after the first step: refused."""
    las = {**_LAS, "decoder": {**_LAS["decoder"], "attention": {"name": "location_aware"}}}
    ckpt = _variant(ctc_checkpoint, las, tmp_path / "las.pt")
    from kospeech.export.onnx import export_onnx

    with pytest.raises(ConfigError, match="changes form after a step"):
        export_onnx(ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["export", str(ckpt), "--out", str(tmp_path / "out")]) == 1
    # with a CTC head the model still exports, CTC only
    ckpt = _variant(ctc_checkpoint, {**las, "ctc_weight": 0.3}, tmp_path / "las_ctc.pt")
    export_onnx(ckpt, tmp_path / "ctc")
    manifest = yaml.safe_load((tmp_path / "ctc" / "model.yaml").read_text(encoding="utf-8"))
    assert manifest["network"]["graphs"] == ["model.onnx"] and "decoder" not in manifest["files"]
    assert {p.name for p in (tmp_path / "ctc").iterdir()} >= {"model.onnx"}
    assert not (tmp_path / "ctc" / "decoder.onnx").exists()


OTHER_CTC_MODELS = {
    "conformer": {"name": "conformer", "head": "attention", "ctc_weight": 0.3,
                  "encoder": {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 2, "kernel_size": 7,
                              "attention": {"name": "relative_multi_head", "num_heads": 2},
                              "extractor": {"name": "conv2d_subsampling", "output_dim": 32, "channels": 8}},
                  "decoder": {"name": "transformer", "d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1}},
    "deepspeech2": {"name": "deepspeech2", "encoder": {"name": "rnn", "hidden_dim": 32, "num_layers": 2}},
}


@pytest.mark.parametrize("name", sorted(OTHER_CTC_MODELS))
def test_other_models_with_a_ctc_head_export(name: str, ctc_checkpoint: dict, tmp_path: Path) -> None:
    """A Conformer (relative attention, CTC branch beside its decoder) and Deep Speech 2 (packed BiGRU)
    trace shape-generically: the runtime's log-probs match PyTorch's on real audio of three lengths."""
    from kospeech import runtime

    _variant(ctc_checkpoint, OTHER_CTC_MODELS[name], tmp_path / f"{name}.pt")
    out = main(["export", str(tmp_path / f"{name}.pt"), "--out", str(tmp_path / name)])
    assert out == 0
    waves = ctc_checkpoint["waves"][:3]
    ours = runtime.load(tmp_path / name).log_probs(waves)
    theirs = torch_log_probs(tmp_path / f"{name}.pt", waves)
    assert [a.shape for a in ours] == [b.shape for b in theirs]
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)) < 1e-3
