"""``kospeech export --format sherpa-onnx-online``, run chunk by chunk and by the real ``sherpa_onnx``.

The graph recomputes a window of cached feature frames per chunk (kospeech.export.sherpa_online),
so the frames it returns must be the whole utterance's: checked in onnxruntime through the loop
sherpa-onnx runs, at several chunk sizes, and shown to fail when the cache is not carried. Then
sherpa-onnx's OnlineRecognizer decodes the offline test's utterances (training ones and unseen
variants, some decoded wrongly) and must give our runtime's greedy transcripts.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kospeech.cli import main
from tests.fixtures.deploy import KALDI_FRONTEND
from tests.test_conformer_streaming import write_chunked_checkpoint
from tests.test_sherpa_export import utterances

sherpa_onnx = pytest.importorskip("sherpa_onnx")


@pytest.fixture(scope="module")
def online(kaldi_ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sherpa_online")
    ckpt = str(kaldi_ctc_checkpoint["path"])
    assert main(["export", ckpt, "--format", "sherpa-onnx-online", "--out", str(root / "online")]) == 0
    assert main(["export", ckpt, "--out", str(root / "onnx")]) == 0
    return {"online": root / "online", "onnx": root / "onnx"}


def _window(d: Path) -> Any:
    from kospeech.export.sherpa_online import load_window

    return load_window(d)


def test_the_graph_has_sherpa_onnx_online_interface(online: dict[str, Path], kaldi_ctc_checkpoint: dict) -> None:
    import onnx

    d = online["online"]
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "model.onnx", "sherpa.yaml", "tokens.txt"]
    model = onnx.load(str(d / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    window = _window(d)
    assert {k: meta[k] for k in ("model_type", "head", "num_blocks", "output_size", "subsampling_factor")} == {
        "model_type": "wenet_ctc", "head": "1", "num_blocks": "1", "output_size": "40", "subsampling_factor": "4"}
    assert meta["right_context"] == str(window.right) and meta["cnn_module_kernel"] == str(window.cache + 1)
    assert int(meta["vocab_size"]) == len((d / "tokens.txt").read_text(encoding="utf-8").splitlines())
    assert len(model.graph.input) == 6 and len(model.graph.output) == 3  # every input consumed, none dropped
    elem = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    assert list(elem.values()) == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.INT64,
                                   onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL]
    assert "OnlineRecognizer.from_wenet_ctc" in (d / "README.md").read_text(encoding="utf-8")


class _ForgetfulSession:
    """A session whose caller drops ``conv_cache`` between chunks: each window then starts blind."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        from kospeech.export.sherpa_online import INPUTS

        return self.session.run(None, {**inputs, INPUTS[4]: np.zeros_like(inputs[INPUTS[4]])})


def test_chunks_give_the_whole_utterances_frames(online: dict[str, Path], kaldi_ctc_checkpoint: dict) -> None:
    """sherpa-onnx's loop over the graph in onnxruntime, at several chunk sizes, returns the frames the
    whole utterance gives (all it returns: none of them waits for audio past its chunk's input)."""
    import kospeech
    from kospeech.data.frontends import build_frontend
    from kospeech.export.onnx import _session
    from kospeech.export.sherpa_online import run_chunks

    d = online["online"]
    window = _window(d)
    session = _session(d / "model.onnx")
    frontend = build_frontend(KALDI_FRONTEND).eval()
    engine = kospeech.load(str(kaldi_ctc_checkpoint["path"]), device="cpu").engine
    wave = np.concatenate(kaldi_ctc_checkpoint["waves"][:3])
    feats = frontend.extract(wave)
    whole = engine.log_probs([wave])[0]
    for chunk_size, left_chunks in ((16, 4), (5, 1), (1, 2)):
        got = run_chunks(lambda inputs: session.run(None, inputs), feats, window, chunk_size, left_chunks)
        assert 0 < whole.shape[0] - got.shape[0] <= (window.chunk_length(chunk_size) + chunk_size * 4) // 4 + 1
        np.testing.assert_allclose(got, whole[: got.shape[0]], atol=1e-4)
    broken = run_chunks(_ForgetfulSession(session), feats, window, 16, 4)
    assert np.abs(broken - whole[: broken.shape[0]]).max() > 0.1


def test_sherpa_onnx_online_transcribes_as_our_runtime(online: dict[str, Path], kaldi_ctc_checkpoint: dict) -> None:
    """sherpa-onnx's OnlineRecognizer, fed as the export's README shows, decodes the frames it runs as our
    runtime's greedy search does on the same audio and features (after NFC, orphan jamo dropped), at two
    chunk sizes.

    The same features: the recognizer is built without dither (from_wenet_ctc's default; README.md
    adds it back, which makes the features random), so the reference is our runtime with its dither
    off; with it on, near-ties of this small model flip (printed). The dithered recognizer loads and
    decodes (how many training utterances right is printed). The frames it runs: sherpa-onnx never
    runs a stream's last ChunkLength frames (the tail padding fills them), and this model, trained on
    tight cuts, emits its last syllable only in the last frames of whatever it is given (it hears the
    end of its input, 0.7 s ahead), which our runtime reaches and sherpa-onnx's online loop cannot;
    the whole-recording agreement is printed.
    """
    from kospeech import runtime
    from kospeech.export.sherpa_online import online_recognizer, tail_padding, transcribe_online
    from kospeech.runtime.ctc import greedy
    from kospeech.text.hangul import to_valid_text

    items = utterances(kaldi_ctc_checkpoint)
    refs, waves = [t for t, _ in items], [w for _, w in items]
    ours_model = runtime.load(online["onnx"], num_threads=1, search="ctc_greedy")
    ours = [r.text for r in ours_model.transcribe(waves, sample_rate=16000, batch_size=1)]
    d = online["online"]
    manifest = yaml.safe_load((d / "sherpa.yaml").read_text(encoding="utf-8"))

    def over_frames(tail: np.ndarray, chunks: list[int], chunk_size: int) -> list[str]:
        return [ours_model.tokenizer.decode(greedy(ours_model.log_probs([np.concatenate([w, tail])])[0]
                                                   [: n * chunk_size])[0]) for w, n in zip(waves, chunks)]

    for chunk_size in (manifest["chunk_size"], 4):
        recognizer = online_recognizer(d, chunk_size=chunk_size, dither=0.0)  # deterministic features
        tail = tail_padding(_window(d), chunk_size, 16000)
        start = time.perf_counter()
        answers = [transcribe_online(recognizer, w, 16000, tail) for w in waves]
        seconds = time.perf_counter() - start
        theirs = [" ".join(to_valid_text(unicodedata.normalize("NFC", text)).split()) for text, _, _ in answers]
        chunks = [n for _, _, n in answers]
        dithered = over_frames(tail, chunks, chunk_size)
        ours_model.frontend.dither = 0.0  # sherpa-onnx's online features
        try:
            same_features = over_frames(tail, chunks, chunk_size)
        finally:
            ours_model.frontend.dither = 1.0
        same = sum(a == b for a, b in zip(same_features, theirs))
        print(f"\nchunk_size {chunk_size}: transcripts equal to our runtime's over the frames sherpa-onnx ran "
              f"{same}/{len(waves)} (with our dither {sum(a == b for a, b in zip(dithered, theirs))}); whole "
              f"recordings {sum(a == b for a, b in zip(ours, theirs))}; RTF "
              f"{seconds / (sum(w.size for w in waves) / 16000):.4f}")
        assert same >= 0.95 * len(waves), [(a, b) for a, b in zip(same_features, theirs) if a != b]
    right = [i for i, (o, r) in enumerate(zip(ours, refs)) if o == r]
    assert len(kaldi_ctc_checkpoint["texts"]) <= len(right) < len(waves)  # learned, and some are wrong
    dithered_recognizer = online_recognizer(d, dither=1.0)  # as README.md shows for a model without a floor
    assert dithered_recognizer.config.feat_config.dither == 1.0
    assert online_recognizer(d).config.feat_config.dither == 0.0  # this model floors silence: not needed
    assert "_Recognizer" not in (d / "README.md").read_text(encoding="utf-8")  # the public API only
    tail = tail_padding(_window(d), manifest["chunk_size"], 16000)
    texts = [" ".join(to_valid_text(unicodedata.normalize("NFC", transcribe_online(dithered_recognizer, w, 16000,
                                                                                   tail)[0])).split())
             for w in waves[:8]]
    print(f"dithered online recognizer: {sum(a == b for a, b in zip(texts, refs))}/8 training utterances right")
    assert all(texts)


def test_unbounded_reach_or_another_frontend_is_refused_in_one_line(ctc_checkpoint: dict, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Full-context attention (every frame hears the whole input) and chunks that see all earlier chunks
    cannot be cut into windows; a chunked Conformer with left_chunks can, and its graph passes the check."""
    from kospeech.export.sherpa_online import export_sherpa_online

    kaldi = {"name": "kaldi_fbank", "n_mels": 40}
    cases = (("full", {}, "all earlier and later"), ("all_left", {"chunk_size": 4}, "all earlier input"))
    for name, options, says in cases:
        ckpt = write_chunked_checkpoint(tmp_path / name, frontend=kaldi, **options)
        assert main(["export", str(ckpt), "--format", "sherpa-onnx-online", "--out", str(tmp_path / "o")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and "left_chunks" in err, err
        assert not (tmp_path / "o").exists()
    ckpt = write_chunked_checkpoint(tmp_path / "left", frontend=kaldi, chunk_size=4, left_chunks=1)
    out = export_sherpa_online(ckpt, tmp_path / "chunked")
    manifest = yaml.safe_load((out / "sherpa.yaml").read_text(encoding="utf-8"))
    assert manifest["window"]["align"] == 16 and manifest["check"]["max_abs_diff"] < 1e-3
    assert main(["export", str(ctc_checkpoint["path"]), "--format", "sherpa-onnx-online", "--out",
                 str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frontend 'fbank'" in err
