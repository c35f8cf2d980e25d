"""``POST /v1/audio/transcriptions`` driven by the official ``openai`` client, on 127.0.0.1.

The server runs a trained CTC model (the ``ctc_checkpoint`` fixture, exported), so each answer
is compared with what the same model object gives for the same audio through the Python API:
the endpoint must carry the model's transcript (right or wrong) and its times, not merely some
text. Error bodies must have OpenAI's shape, which the client turns into its exception classes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kospeech.cli import main
from kospeech.inference.formats import cues, to_srt, to_vtt
from tests.test_serve import REPO, run_server, wav_bytes

openai = pytest.importorskip("openai")

KEY = "sk-kospeech-test"


@pytest.fixture(scope="module")
def exported(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("openai") / "onnx"
    assert main(["export", str(ctc_checkpoint["path"]), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def model(exported: Path) -> Any:
    from kospeech import runtime

    return runtime.load(exported)


@pytest.fixture(scope="module")
def server(model: Any) -> Iterator[str]:
    from kospeech.serve.app import create_app

    yield from run_server(create_app(model, max_seconds=6.0, max_bytes=400_000, name="test"))


@pytest.fixture(scope="module")
def keyed_server(model: Any) -> Iterator[str]:
    from kospeech.serve.app import create_app

    yield from run_server(create_app(model, name="test", api_key=KEY))


def client(url: str, key: str = "any key at all") -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def upload(wave: np.ndarray, name: str = "a.wav") -> tuple[str, bytes, str]:
    return (name, wav_bytes(wave), "audio/wav")


def test_json_and_text_carry_the_models_own_transcript(server: str, model: Any, ctc_checkpoint: dict) -> None:
    api = client(server)
    right = 0
    for text, wave in zip(ctc_checkpoint["texts"], ctc_checkpoint["waves"]):
        expected = model.transcribe(wave, sample_rate=16000).text
        got = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), language="ko")
        assert got.text == expected
        plain = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="text")
        assert isinstance(plain, str) and plain.strip() == expected
        right += expected == text
    assert right >= len(ctc_checkpoint["texts"]) // 2  # a trained model: mostly right, and checked against itself


def test_subtitles_are_the_cli_formats_of_the_same_result(server: str, model: Any, ctc_checkpoint: dict) -> None:
    api = client(server)
    wave = ctc_checkpoint["waves"][2]
    result = model.transcribe(wave, sample_rate=16000)
    srt = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="srt")
    vtt = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="vtt")
    assert srt == to_srt(result) and srt.startswith("1\n00:00:0")
    assert vtt == to_vtt(result) and vtt.startswith("WEBVTT\n\n00:00:0")
    assert result.text.split()[0] in srt


def test_verbose_json_gives_word_and_segment_times(server: str, model: Any, ctc_checkpoint: dict) -> None:
    api = client(server)
    wave = np.concatenate([ctc_checkpoint["waves"][0], np.zeros(16000, np.float32), ctc_checkpoint["waves"][1]])
    result = model.transcribe(wave, sample_rate=16000)
    got = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="verbose_json",
                                          timestamp_granularities=["word", "segment"])
    assert got.text == result.text and got.language == "korean"
    assert got.duration == pytest.approx(wave.size / 16000, abs=1e-3)
    assert [(w.word, w.start, w.end) for w in got.words] == [(w.text, w.start, w.end) for w in result.words]
    assert all(0 <= w.start < w.end <= got.duration for w in got.words)
    assert [(s.start, s.end, s.text) for s in got.segments] == cues(result)  # the subtitles' cues
    assert " ".join(s.text for s in got.segments) == result.text
    assert [s.id for s in got.segments] == list(range(len(got.segments)))
    assert all(a.end <= b.start for a, b in zip(got.segments, got.segments[1:]))
    only_words = api.audio.transcriptions.create(model="whisper-1", file=upload(wave),
                                                 response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.words and only_words.segments is None
    default = api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="verbose_json")
    assert default.segments and default.words is None  # OpenAI's default granularity: segments


def test_prompt_words_are_hotwords(server: str, model: Any, ctc_checkpoint: dict) -> None:
    wave = ctc_checkpoint["waves"][3]
    words = ctc_checkpoint["texts"][3].split()[:2]
    expected = model.transcribe(wave, sample_rate=16000, hotwords=words).text
    got = client(server).audio.transcriptions.create(model="whisper-1", file=upload(wave), prompt=", ".join(words))
    assert got.text == expected


def error_body(err: Any) -> dict:
    body = err.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_a_wrong_key_gets_401_in_openais_shape(keyed_server: str, ctc_checkpoint: dict) -> None:
    wave = ctc_checkpoint["waves"][0]
    with pytest.raises(openai.AuthenticationError) as info:
        client(keyed_server, "sk-wrong").audio.transcriptions.create(model="whisper-1", file=upload(wave))
    assert info.value.status_code == 401
    body = error_body(info.value)
    assert body["code"] == "invalid_api_key" and body["type"] == "invalid_request_error"
    assert "api key" in body["message"].lower() and KEY not in body["message"]
    got = client(keyed_server, KEY).audio.transcriptions.create(model="whisper-1", file=upload(wave))
    assert got.text  # the right key passes
    with urllib.request.urlopen(f"{keyed_server}/health", timeout=10) as resp:  # the demo's own routes stay open
        assert resp.status == 200


def test_bad_requests_get_400_in_openais_shape(server: str, ctc_checkpoint: dict) -> None:
    api = client(server)
    with pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"this is not audio" * 20, "audio/wav"))
    body = error_body(info.value)
    assert info.value.status_code == 400 and body["param"] == "file" and body["code"] == "invalid_file_format"
    assert "not audio" in body["message"]
    wave = ctc_checkpoint["waves"][0]
    with pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=upload(wave), response_format="xml")  # type: ignore
    assert error_body(info.value)["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=upload(wave), language="en")
    assert error_body(info.value)["param"] == "language" and "Korean" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:  # OpenAI too: granularities need verbose_json
        api.audio.transcriptions.create(model="whisper-1", file=upload(wave), timestamp_granularities=["word"])
    assert error_body(info.value)["param"] == "timestamp_granularities"
    with pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=upload(wave), stream=True)
    assert error_body(info.value)["param"] == "stream"
    with pytest.raises(openai.APIStatusError) as info:  # 7 s, 224 kB: over the length limit, not the size limit
        api.audio.transcriptions.create(model="whisper-1", file=upload(np.zeros(7 * 16000, np.float32)))
    assert info.value.status_code == 413 and "longer than the limit of 6 s" in error_body(info.value)["message"]
    with pytest.raises(openai.APIStatusError) as info:  # 16 s, 512 kB: over the size limit, refused unread
        api.audio.transcriptions.create(model="whisper-1", file=upload(np.zeros(16 * 16000, np.float32)))
    assert info.value.status_code == 413 and error_body(info.value)["code"] == "file_too_large"
    models = api.models.list()
    assert [m.id for m in models.data] == ["test"]


def test_a_failing_model_gives_500_in_openais_shape() -> None:
    from kospeech.serve.app import create_app

    class Broken:
        sample_rate = 16000

        def transcribe(self, wave: np.ndarray, **options: object) -> None:
            raise RuntimeError("out of memory")

    for url in run_server(create_app(Broken())):
        with pytest.raises(openai.InternalServerError) as info:
            client(url).audio.transcriptions.create(model="whisper-1", file=upload(np.ones(16000, np.float32) * 0.1))
        body = error_body(info.value)
        assert body["type"] == "server_error" and "RuntimeError" in body["message"]


def test_serve_command_takes_the_key_from_the_environment(exported: Path, ctc_checkpoint: dict) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "KOSPEECH_API_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "kospeech", "serve", str(exported), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        wave = ctc_checkpoint["waves"][0]
        with pytest.raises(openai.AuthenticationError):
            client(url, "sk-wrong").audio.transcriptions.create(model="whisper-1", file=upload(wave))
        assert client(url, KEY).audio.transcriptions.create(model="whisper-1", file=upload(wave)).text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
