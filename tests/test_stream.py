"""Streaming recognition (kospeech/inference/stream.py) on a trained model, in both engines.

What must hold exactly: the stable frames a stream commits are the frames of the whole
recording, so the final text equals ``transcribe`` of the whole recording (one segment);
the beam takes frames in chunks as it takes them at once. What must hold as behaviour: text
appears before the audio ends, endpointing closes segments at pauses with times on the whole
stream, and memory does not grow with the stream's length.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

import kospeech
from kospeech.cli import main
from kospeech.errors import ConfigError
from kospeech.inference.stream import Endpoint, Reach, probe_reach
from kospeech.metrics import score_corpus
from kospeech.runtime import ctc

RATE = 16000
CHUNK = int(0.16 * RATE)  # what a microphone page sends


def _feed(stream, wave: np.ndarray, chunk: int = CHUNK) -> list[str]:
    return [stream.feed(wave[i : i + chunk]) for i in range(0, len(wave), chunk)]


def _feed_to_the_end(stream, wave: np.ndarray) -> tuple[list, object]:
    """Feed ``wave`` in microphone chunks and finish: every final the stream closed, and its Result."""
    finals = []
    for i in range(0, len(wave), CHUNK):
        stream.feed(wave[i : i + CHUNK])
        finals += stream.finals()
    result = stream.finish()
    return finals + stream.finals(), result


def _joined(waves: list[np.ndarray], gap_seconds: float) -> np.ndarray:
    """The utterances with a pause before each, ending with the last (as the test model learnt pairs)."""
    gap = np.zeros(int(gap_seconds * RATE), np.float32)
    return np.concatenate([part for w in waves for part in (gap, w)]).astype(np.float32)


def _committed(stream) -> list[np.ndarray]:
    """Record the frames a stream commits to its beam (they are the stream's decisions)."""
    frames: list[np.ndarray] = []
    commit = stream._commit

    def spy(block: np.ndarray) -> None:
        frames.append(np.array(block))
        commit(block)

    stream._commit = spy
    return frames


@pytest.fixture(scope="module")
def running(ctc_checkpoint_running_speech: dict) -> dict:
    """The test model that also learnt pairs of sentences with a pause between them: running speech."""
    return ctc_checkpoint_running_speech


@pytest.fixture(scope="module")
def asr(running: dict):
    return kospeech.load(running["path"], device="cpu")


@pytest.fixture(scope="module")
def exported(running: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream_export") / "onnx"
    assert main(["export", str(running["path"]), "--format", "onnx", "--out", str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------------------
# the pieces


def test_prefix_beam_takes_frames_in_chunks_as_at_once() -> None:
    from kospeech.lm.context import ContextGraph

    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2.0, (60, 12)).astype(np.float32)
    logits[:, 0] += 1.5  # blanks, as CTC has them
    log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    context = ContextGraph([[6, 7, 8]], 12, 1.0)
    whole = ctc.prefix_beam(log_probs, 6, length_bonus=0.3, context=context)
    for cuts in ([1] * 60, [7, 13, 40], [59, 1]):
        beam = ctc.PrefixBeam(12, 6, length_bonus=0.3, context=context)
        at = 0
        for n in cuts:
            snapshot = copy.copy(beam)
            beam.advance(log_probs[at : at + n])
            snapshot.advance(log_probs[at : at + n])  # a look-ahead copy advances apart from the beam
            at += n
        assert beam.hypotheses() == whole and snapshot.hypotheses() == whole
    assert len(whole[0][0]) > 3  # a non-trivial best prefix


def test_probe_measures_the_reach_of_a_known_network() -> None:
    """A network whose frame j averages the frame energies j-3..j+5 (frames of 160 samples, x2
    subsampled): reach 3 and 5 frames of 320 samples, plus the frame's own window and one stride of margin."""
    hop, sub = 160, 2

    def net(waves: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for w in waves:
            n = len(w) // (hop * sub)
            energy = np.array([np.sum(w[j * hop * sub : (j + 1) * hop * sub] ** 2) for j in range(n)])
            padded = np.concatenate([np.zeros(3), energy, np.zeros(5)])
            smooth = np.array([padded[j : j + 9].mean() for j in range(n)])
            out.append(np.stack([smooth, -smooth], axis=1))
        return out

    reach = probe_reach(net, RATE, seconds=4.0)
    assert reach.stride == hop * sub
    assert 3 * 320 <= reach.left <= 5 * 320 and 5 * 320 <= reach.right <= 7 * 320

    def global_net(waves: list[np.ndarray]) -> list[np.ndarray]:
        return [np.full((len(w) // 320, 2), float(np.sum(w**2))) for w in waves]

    assert probe_reach(global_net, RATE, seconds=4.0) == Reach(320, None, None)


# ---------------------------------------------------------------------------------------------
# the torch engine


def test_stream_commits_the_whole_recordings_frames_and_ends_as_transcribe(asr, running: dict) -> None:
    wave = _joined(running["waves"][:3], 0.4)
    stream = asr.stream(endpoint=None)
    frames = _committed(stream)
    partials = _feed(stream, wave)
    result = stream.finish()
    whole = asr.engine.log_probs([wave])[0]
    committed = np.concatenate(frames)
    assert committed.shape == whole.shape
    np.testing.assert_allclose(committed, whole, atol=1e-4)
    expected = asr.transcribe(wave, segment=False).text
    assert result.text == expected == " ".join(running["texts"][:3])
    # text appears while the audio is still arriving, and grows
    first = next(i for i, p in enumerate(partials) if p)
    assert first < len(partials) // 2, partials
    assert result.words and result.words[-1].end <= len(wave) / RATE + 1e-6


def test_every_utterance_shows_text_before_its_end(asr, running: dict) -> None:
    for text, wave in zip(running["texts"], running["waves"]):
        stream = asr.stream(endpoint=None)
        partials = _feed(stream, wave)
        assert any(partials[:-1]), f"no text before the end of {text!r} ({len(wave) / RATE:.2f} s)"
        assert stream.finish().text == asr.transcribe(wave).text


def test_endpointing_closes_segments_at_pauses_with_times_on_the_stream(asr, running: dict) -> None:
    waves = running["waves"][:3]
    wave = _joined(waves, 2.0)
    stream = asr.stream(endpoint=Endpoint(silence_after_speech=1.0))
    finals, result = _feed_to_the_end(stream, wave)
    assert len(finals) == 3, [f.text for f in finals]  # one per sentence, closed in the pause after it
    starts = 2.0 + np.cumsum([0.0] + [len(w) / RATE + 2.0 for w in waves])[:3]  # each after its pause
    for final, start, w in zip(finals, starts, waves):
        assert start - 0.3 <= final.words[0].start and final.words[-1].end <= start + len(w) / RATE + 0.3
    # the sentences, at most their last syllable short: a model this small often leaves the last
    # vowel for the end of the audio, which a pause is not (the whole recording's best path says so too)
    for final, text in zip(finals, running["texts"][:3]):
        assert text.startswith(final.text) and len(final.text) >= len(text) - 1, (final.text, text)
    assert [w.text for w in result.words] == [w.text for f in finals for w in f.words]


def test_int16_samples_and_a_finished_stream(asr, running: dict) -> None:
    wave = running["waves"][0]
    pcm = np.round(wave * 32767).astype(np.int16)
    stream = asr.stream(endpoint=None)
    _feed(stream, pcm)
    assert stream.finish().text == running["texts"][0]
    with pytest.raises(ConfigError, match="finished"):
        stream.feed(pcm[:100])
    with pytest.raises(ConfigError, match="ctc_greedy or ctc_prefix_beam"):
        asr.stream(search="greedy")


def test_memory_is_bounded_over_a_long_stream(asr, running: dict) -> None:
    """Ten minutes of speech and pauses: the audio and the frames kept stay within one window and one segment."""
    one_round = _joined(running["waves"], 1.5)
    wave = np.tile(one_round, int(np.ceil(600 * RATE / len(one_round))))
    stream = asr.stream()
    reach = asr.stream_reach()
    largest_buffer = largest_frames = 0
    for i in range(0, len(wave), 4 * CHUNK):
        stream.feed(wave[i : i + 4 * CHUNK])
        largest_buffer = max(largest_buffer, stream._buffer.size)
        largest_frames = max(largest_frames, stream._done)
    window = reach.left + reach.right + 4 * CHUNK + stream._step + 2 * reach.stride
    assert largest_buffer <= window
    assert largest_frames * reach.stride <= Endpoint().max_segment * RATE + stream._step
    streamed = stream.finish().text
    offline = asr.transcribe(wave).text  # the offline door: the recording cut at its pauses
    refs = " ".join(running["texts"] * int(np.ceil(len(wave) / len(one_round))))
    cer = {name: score_corpus({0: refs}, {0: hyp}).cer for name, hyp in (("stream", streamed), ("offline", offline))}
    assert cer["stream"] <= cer["offline"] + 5.0 and cer["stream"] < 20.0, cer


@pytest.mark.slow
def test_an_hour_of_stream_holds_flat_memory(asr, running: dict) -> None:
    """One hour of speech and pauses, fed as a microphone would: the stream's state (its audio window
    and its open segment's frames) is as large in the last minutes as in the first ten, and what
    Python allocates after the first ten minutes is the transcript (the closed segments that
    ``finish`` returns), a bounded amount per segment."""
    import tracemalloc

    one_round = _joined(running["waves"], 1.5)
    rounds = int(np.ceil(3600 * RATE / len(one_round)))
    stream = asr.stream(search="ctc_greedy", step_seconds=0.64)
    state = {"first": 0, "last": 0}
    finals = {"first": 0, "last": 0}
    tracemalloc.start()
    after_ten_minutes = 0
    fed = 0
    for _ in range(rounds):
        for i in range(0, len(one_round), 4 * CHUNK):
            stream.feed(one_round[i : i + 4 * CHUNK])
            part = "first" if fed < 600 * RATE else "last"
            state[part] = max(state[part], stream.state_bytes())
        fed += len(one_round)
        finals["first" if fed < 600 * RATE else "last"] += len(stream.finals())
        if not after_ten_minutes and fed >= 600 * RATE:
            after_ten_minutes = tracemalloc.get_traced_memory()[0]
    grown = tracemalloc.get_traced_memory()[0] - after_ten_minutes
    tracemalloc.stop()
    result = stream.finish()
    print(f"\n{fed / RATE / 60:.0f} min: state {state['first'] / 1024:.0f} KB (first 10 min) / "
          f"{state['last'] / 1024:.0f} KB (after); {finals['last']} segments after 10 min, "
          f"Python memory +{grown / 1024:.0f} KB "
          f"({grown / max(finals['last'], 1) / 1024:.1f} KB per segment)")
    assert fed >= 3600 * RATE and finals["last"] >= 5 * finals["first"]  # segments close all hour long
    assert state["last"] <= state["first"]  # the stream's own state does not grow
    assert grown <= 16 * 1024 * finals["last"]  # the rest is the transcript kept for finish()
    refs = " ".join(running["texts"] * rounds)
    assert score_corpus({0: refs}, {0: result.text}).cer < 20.0


# ---------------------------------------------------------------------------------------------
# the ONNX engine


def test_the_onnx_engine_streams_as_the_torch_engine(asr, exported: Path, running: dict) -> None:
    import kospeech.runtime

    model = kospeech.runtime.load(exported)
    wave = _joined(running["waves"][3:6], 0.4)
    onnx_stream, torch_stream = model.stream(endpoint=None), asr.stream(endpoint=None)
    frames = _committed(onnx_stream)
    onnx_partials, torch_partials = _feed(onnx_stream, wave), _feed(torch_stream, wave)
    onnx_result, torch_result = onnx_stream.finish(), torch_stream.finish()
    assert model.stream_reach() == asr.stream_reach()
    np.testing.assert_allclose(np.concatenate(frames), model.log_probs([wave])[0], atol=1e-4)
    assert onnx_result.text == torch_result.text == " ".join(running["texts"][3:6])
    assert sum(a == b for a, b in zip(onnx_partials, torch_partials)) >= 0.9 * len(onnx_partials)
