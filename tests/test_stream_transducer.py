"""Streams of a transducer (kospeech/inference/stream.py over kospeech/runtime/transducer.py), in both engines.

The model is tests/fixtures/deploy.py's trained Conformer transducer, whose greedy search gives
its eight texts back. With global attention no frame is stable before the audio ends, so a
stream re-decodes its segment's growing window and its final is ``transcribe`` of that audio;
decoded with chunk-wise attention (``chunk_size``, as a dynamic-chunk model is) the frames
become stable chunk by chunk and go into the incremental greedy search call by call, which must
carry its prediction network's state from one call to the next to end where the whole
utterance's greedy search ends. Both are checked in the torch engine (``kospeech.load``) and the
ONNX engine (``kospeech export`` + ``kospeech.runtime.load``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kospeech.cli import main
from kospeech.errors import ConfigError
from kospeech.inference.stream import Endpoint
from kospeech.runtime import transducer
from tests.test_stream import RATE, _committed, _feed, _feed_to_the_end, _joined

DECODE_CHUNK = 8  # encoder frames of 40 ms: chunk-wise attention over 320 ms


def _chunked_checkpoint(fx: dict, root: Path) -> Path:
    """The fixture's checkpoint configured to decode with chunk-wise attention (as a dynamic-chunk
    model is decoded), so that its export bakes the chunk into its graph."""
    from kospeech.train.checkpoint import load_checkpoint, write_checkpoint

    ckpt = load_checkpoint(fx["path"])
    ckpt["config"]["model"]["encoder"] = {**ckpt["config"]["model"]["encoder"], "decode_chunk_size": DECODE_CHUNK}
    return write_checkpoint(ckpt, root / "chunked.pt")


@pytest.fixture(scope="module")
def models(transducer_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The transducer in each engine, with global attention (``full``) and chunk-wise (``chunked``)."""
    import kospeech.runtime

    root = tmp_path_factory.mktemp("stream_transducer")
    chunked = _chunked_checkpoint(transducer_checkpoint, root)
    out = {}
    for kind, ckpt in (("full", transducer_checkpoint["path"]), ("chunked", chunked)):
        assert main(["export", str(ckpt), "--format", "onnx", "--out", str(root / kind)]) == 0
        out["torch", kind] = kospeech.load(ckpt, device="cpu")
        out["onnx", kind] = kospeech.runtime.load(root / kind)
    return out


ENGINES = ["torch", "onnx"]


def _encoder_frames(asr, wave: np.ndarray) -> np.ndarray:
    return asr.engine.network_outputs([wave], "encoder_out")[0]


# ---------------------------------------------------------------------------------------------
# the incremental search


def test_greedy_takes_frames_in_chunks_as_at_once_and_needs_its_state(models: dict,
                                                                      transducer_checkpoint: dict) -> None:
    """On the trained model's frames: frames given in any chunks decode to the whole utterance's
    tokens and frames; a look-ahead from a copy leaves the search where it was; and a search that
    restarted its prediction network at each call (state not carried) would decode other tokens."""
    engine = models["onnx", "full"].engine
    restarted_differs = 0
    for wave, text in zip(transducer_checkpoint["waves"], transducer_checkpoint["texts"]):
        frames = _encoder_frames(models["onnx", "full"], wave)
        whole, spans = transducer.greedy(frames, engine.predictor_step, engine.joint, engine.predictor_state())
        assert engine.detokenize(whole) == text
        for cut in (1, 5, 11):
            search = transducer.Greedy(engine.predictor_step, engine.joint, engine.predictor_state())
            restarted: list[int] = []
            for at in range(0, frames.shape[0], cut):
                ahead, _ = search.look_ahead(frames[at:])
                assert ahead == whole  # the rest of the frames from a copy: the whole answer
                search.advance(frames[at : at + cut])
                fresh = transducer.Greedy(engine.predictor_step, engine.joint, engine.predictor_state())
                fresh.advance(frames[at : at + cut])
                restarted += fresh.best()
            assert search.best() == whole and search.spans == spans and search.frames == frames.shape[0]
            restarted_differs += restarted != whole
    assert restarted_differs >= 8  # what carrying the state between calls is for


# ---------------------------------------------------------------------------------------------
# streams, both engines


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stream_of_each_utterance_ends_as_transcribe(models: dict, transducer_checkpoint: dict,
                                                       engine: str) -> None:
    """Global attention: 160 ms pieces, text before the end, the final equals transcribe's greedy
    text, and the frames committed (all at the end) are the whole utterance's encoder frames."""
    asr = models[engine, "full"]
    reach = asr.stream_reach()
    assert reach.right is None and reach.left is None  # no frame is ever stable before the end
    for text, wave in zip(transducer_checkpoint["texts"], transducer_checkpoint["waves"]):
        stream = asr.stream(endpoint=None)
        assert stream.search_cfg["name"] == "transducer_greedy"
        frames = _committed(stream)
        partials = _feed(stream, wave)
        result = stream.finish()
        assert any(partials[:-1]), f"no text before the end of {text!r}"
        assert result.text == asr.transcribe(wave).text == text
        np.testing.assert_allclose(np.concatenate(frames), _encoder_frames(asr, wave), atol=1e-4)
        assert result.words and 0.0 <= result.words[0].start and result.words[-1].end <= len(wave) / RATE


@pytest.mark.parametrize("engine", ENGINES)
def test_a_chunked_transducer_commits_chunk_by_chunk(models: dict, transducer_checkpoint: dict, engine: str) -> None:
    """Chunk-wise attention: windows on chunk boundaries, frames decided chunk by chunk into the
    incremental search (many calls, so its prediction network's state is carried), and they are
    the whole utterance's frames at that chunk size, so the final is transcribe's text."""
    asr = models[engine, "chunked"]
    reach = asr.stream_reach()
    assert reach.period == DECODE_CHUNK * reach.stride and reach.right is not None
    # a chunk ahead, and the centred convolutions' kernels beyond it: not the whole utterance
    assert reach.right < 3 * DECODE_CHUNK * reach.stride
    for wave in transducer_checkpoint["waves"]:
        stream = asr.stream(endpoint=None)
        frames = _committed(stream)
        partials = _feed(stream, wave)
        result = stream.finish()
        whole = _encoder_frames(asr, wave)
        assert len(frames) >= 3, len(frames)  # decided over several calls
        np.testing.assert_allclose(np.concatenate(frames), whole, atol=1e-4)
        assert result.text == asr.transcribe(wave).text and result.text
        assert any(partials[:-1])


def test_the_engines_stream_alike(models: dict, transducer_checkpoint: dict) -> None:
    """One reach, and the same texts from the torch and ONNX streams."""
    wave = transducer_checkpoint["waves"][5]
    for kind in ("full", "chunked"):
        torch_asr, onnx_asr = models["torch", kind], models["onnx", kind]
        assert torch_asr.stream_reach() == onnx_asr.stream_reach()
        a, b = torch_asr.stream(endpoint=None), onnx_asr.stream(endpoint=None)
        pa, pb = _feed(a, wave), _feed(b, wave)
        assert a.finish().text == b.finish().text == transducer_checkpoint["texts"][5]
        assert sum(x == y for x, y in zip(pa, pb)) >= 0.8 * len(pa)


@pytest.mark.parametrize("engine", ENGINES)
def test_endpointing_closes_segments_with_times_on_the_stream(models: dict, transducer_checkpoint: dict,
                                                              engine: str) -> None:
    """Utterances with 2 s pauses: a segment closes after a second with no token emitted, each
    final is transcribe's text of the audio its segment decoded, with times on the whole stream,
    and the stream's result is the finals in order. (This model never heard silence, so what it
    says in a pause is its own; the segments are what is checked.)"""
    asr = models[engine, "full"]
    wave = _joined(transducer_checkpoint["waves"][:3], 2.0)
    stream = asr.stream(endpoint=Endpoint(silence_after_speech=1.0))
    windows: list[tuple[int, int]] = []  # (first sample, samples received) of each closed segment
    close = stream._close

    def spy(frames: int) -> None:
        windows.append((stream._segment_start, stream._received))
        close(frames)

    stream._close = spy
    finals, result = _feed_to_the_end(stream, wave)
    assert len(finals) >= 3, [f.text for f in finals]
    said = [w for w in windows if asr.transcribe(wave[w[0] : w[1]], segment=False).text]
    assert len(said) == len(finals)
    for final, (start, end) in zip(finals, said):
        assert final.text == asr.transcribe(wave[start:end], segment=False).text
        seg_start, seg_end = final.segments[0]
        assert seg_start == pytest.approx(start / RATE) and seg_end <= end / RATE + 1e-6
        assert all(seg_start <= w.start <= w.end <= seg_end + 1e-6 for w in final.words)
    assert [w.text for w in result.words] == [w.text for f in finals for w in f.words]
    assert result.text == " ".join(f.text for f in finals)


def test_a_transducer_stream_refuses_a_ctc_search(models: dict) -> None:
    with pytest.raises(ConfigError, match="CTC"):
        models["torch", "full"].stream(search="ctc_greedy")
    with pytest.raises(ConfigError, match="transducer_greedy"):
        models["onnx", "full"].stream(search="greedy")


# ---------------------------------------------------------------------------------------------
# --chunk-size on transcribe and serve


def test_transcribe_takes_chunk_size(transducer_checkpoint: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    from kospeech import inference
    from kospeech.models.base import chunk_frames

    loaded = []
    real_load = inference.load

    def load(*args, **kwargs):
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(inference, "load", load)
    path = tmp_path / "a.wav"
    sf.write(path, transducer_checkpoint["waves"][2], RATE)
    assert main(["transcribe", str(transducer_checkpoint["path"]), str(path), "--chunk-size", str(DECODE_CHUNK),
                 "--device", "cpu"]) == 0
    assert chunk_frames(loaded[-1].model) == DECODE_CHUNK
    assert capsys.readouterr().out.strip()


def test_serve_takes_chunk_size(transducer_checkpoint: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from kospeech.serve import app

    opened = []

    def serve(path: str, *, search=None, search_options=None, chunk_size=None, **options) -> None:
        opened.append(app.open_model(path, search, chunk_size=chunk_size, **(search_options or {}))[0])

    monkeypatch.setattr(app, "serve", serve)
    assert main(["serve", str(transducer_checkpoint["path"]), "--chunk-size", str(DECODE_CHUNK)]) == 0
    assert opened[-1].engine.chunk_frames() == DECODE_CHUNK
