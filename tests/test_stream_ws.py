"""The WebSocket ``/stream`` of ``kospeech serve`` (kospeech/serve/stream_ws.py) over real sockets on
127.0.0.1, with a trained model: partial texts while the audio arrives, the final text as
``transcribe`` gives it, the close after the last final; the limit on concurrent streams; bad
messages answered with a clear error and a close code, not a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest

import kospeech

from .test_serve import REPO, run_server

simple_websocket = pytest.importorskip("simple_websocket", reason="flask-sock is in the serve extra")

RATE = 16000
CHUNK = int(0.16 * RATE)  # what the page sends


@pytest.fixture(scope="module")
def asr(ctc_checkpoint_running_speech: dict):
    return kospeech.load(ctc_checkpoint_running_speech["path"], device="cpu")


@pytest.fixture(scope="module")
def server(asr) -> Iterator[str]:
    from kospeech.serve.app import create_app

    for url in run_server(create_app(asr, name="test", max_streams=2, max_stream_seconds=30.0)):
        yield url.replace("http://", "ws://") + "/stream"


def pcm(wave: np.ndarray) -> bytes:
    return np.round(np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def close(ws: object) -> None:
    """Close from the client's side unless the server closed already."""
    from simple_websocket import ConnectionClosed

    try:
        ws.close()
    except ConnectionClosed:
        pass


def receive_all(ws: object, timeout: float = 30.0) -> list[dict]:
    """Every message until the server closes the socket (fails if it stays open past ``timeout``)."""
    from simple_websocket import ConnectionClosed

    messages, end = [], time.monotonic() + timeout
    while True:
        assert time.monotonic() < end, f"the server did not close the socket; got {messages}"
        try:
            data = ws.receive(timeout=1.0)
        except ConnectionClosed:
            return messages
        if data is not None:
            messages.append(json.loads(data))


def test_stream_partials_then_final_as_transcribe_then_close(server: str, asr, ctc_checkpoint_running_speech: dict
                                                             ) -> None:
    from simple_websocket import Client

    fixture = ctc_checkpoint_running_speech
    for index in (1, 4):
        text, wave = fixture["texts"][index], fixture["waves"][index]
        ws = Client.connect(server)
        before_eof: list[dict] = []
        try:
            data = pcm(wave)
            for i in range(0, len(data), 2 * CHUNK):
                ws.send(data[i : i + 2 * CHUNK])
                time.sleep(0.02)
                while (message := ws.receive(timeout=0)) is not None:
                    before_eof.append(json.loads(message))
            end = time.monotonic() + 10  # the server may lag the client: wait for its first partial
            while not before_eof and time.monotonic() < end:
                if (message := ws.receive(timeout=0.2)) is not None:
                    before_eof.append(json.loads(message))
            ws.send("EOF")
            after = receive_all(ws)
        finally:
            close(ws)
        partials = [m for m in before_eof if not m["final"]]
        assert partials and partials[0]["text"], before_eof  # text while the audio was arriving
        assert all(set(m) == {"text", "final"} for m in partials)
        assert len({m["text"] for m in partials}) == len(partials) or all(  # sent only when it changed
            a["text"] != b["text"] for a, b in zip(partials, partials[1:]))
        messages = before_eof + after
        finals = [m for m in messages if m["final"]]
        assert messages[-1] is finals[-1] and messages[-1]["last"] is True  # the socket closed after it
        assert len(finals) == 1, finals
        final = finals[0]
        assert final["text"] == asr.transcribe(wave).text == text
        assert [w["text"] for w in final["words"]] == text.split()
        assert 0 <= final["start"] == final["words"][0]["start"] < final["end"] == final["words"][-1]["end"]
        assert final["end"] <= len(wave) / RATE + 1e-6
        assert ws.close_reason == 1000


def test_two_sentences_give_two_finals_with_times_on_the_stream(server: str, asr, ctc_checkpoint_running_speech: dict
                                                                ) -> None:
    """Endpointing closes the first sentence in the pause (a final before EOF), the second at EOF:
    the finals of a Stream fed the same messages in the process, texts and word times."""
    from simple_websocket import Client

    fixture = ctc_checkpoint_running_speech
    gap = np.zeros(2 * RATE, np.float32)
    first, second = fixture["waves"][0], fixture["waves"][2]
    data = pcm(np.concatenate([gap, first, gap, second]))
    ws = Client.connect(server)
    try:
        for i in range(0, len(data), 2 * CHUNK):
            ws.send(data[i : i + 2 * CHUNK])
        time.sleep(0.5)
        ws.send("EOF")
        messages = receive_all(ws)
    finally:
        close(ws)
    finals = [m for m in messages if m["final"]]
    stream = asr.stream()
    expected = []
    for i in range(0, len(data), 2 * CHUNK):
        stream.feed(np.frombuffer(data[i : i + 2 * CHUNK], "<i2"))
        expected += stream.finals()
    stream.finish()
    expected += stream.finals()
    assert [f["text"] for f in finals] == [r.text for r in expected]
    assert [[(w["text"], w["start"], w["end"]) for w in f["words"]] for f in finals] == [
        [(w.text, w.start, w.end) for w in r.words] for r in expected]
    # the sentences, at most their last syllable short (a pause is not the end of the audio; see test_stream.py)
    for final, text in zip(finals, [fixture["texts"][0], fixture["texts"][2]], strict=True):
        assert text.startswith(final["text"]) and len(final["text"]) >= len(text) - 1, (final["text"], text)
    assert "last" not in finals[0] and finals[1]["last"] is True
    second_start = (2 * gap.size + first.size) / RATE
    assert 1.5 < finals[0]["start"] < finals[0]["end"] < second_start <= finals[1]["start"] + 0.3


def test_concurrent_streams_past_the_limit_are_refused(server: str) -> None:
    from simple_websocket import Client

    held = [Client.connect(server) for _ in range(2)]  # max_streams=2
    try:
        for ws in held:
            ws.send(pcm(np.zeros(CHUNK, np.float32)))
        time.sleep(0.3)
        refused = Client.connect(server)
        messages = receive_all(refused, timeout=10)
        assert messages == [{"error": "all 2 streams are in use; try again later"}]
        assert refused.close_reason == 1013
    finally:
        for ws in held:
            close(ws)
    time.sleep(0.5)  # the held streams end on the server
    ws = Client.connect(server)  # a slot is free again
    try:
        ws.send(pcm(np.zeros(CHUNK, np.float32)))
        ws.send("EOF")
        messages = receive_all(ws)
    finally:
        close(ws)
    assert messages[-1]["final"] and messages[-1]["last"] and messages[-1]["text"] == ""


@pytest.mark.parametrize("bad, code, words", [
    (b"\x01\x02\x03", 1007, "3 bytes"),
    ("hello", 1003, "unknown text message 'hello'"),
])
def test_bad_messages_get_a_clear_error_and_close(server: str, bad: bytes | str, code: int, words: str) -> None:
    from simple_websocket import Client

    ws = Client.connect(server)
    ws.send(pcm(np.zeros(CHUNK, np.float32)))
    ws.send(bad)
    messages = receive_all(ws, timeout=10)
    errors = [m for m in messages if "error" in m]
    assert len(errors) == 1 and messages[-1] is errors[0], messages
    assert words in errors[0]["error"] and "Traceback" not in errors[0]["error"]
    assert ws.close_reason == code


def test_a_message_over_the_size_limit_closes_the_socket(server: str) -> None:
    from simple_websocket import Client

    from kospeech.serve.stream_ws import MAX_MESSAGE_BYTES

    ws = Client.connect(server)
    ws.send(b"\0" * (MAX_MESSAGE_BYTES + 2))
    assert receive_all(ws, timeout=10) == []
    assert ws.close_reason == 1009  # message too big


def test_a_plain_get_is_told_to_use_a_websocket(server: str) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.replace("ws://", "http://"), timeout=10)
    assert err.value.code == 426 and "is a WebSocket" in json.loads(err.value.read())["error"]


def test_the_stream_ends_at_the_length_limit(asr, ctc_checkpoint_running_speech: dict) -> None:
    from simple_websocket import Client

    from kospeech.serve.app import create_app

    wave = ctc_checkpoint_running_speech["waves"][1]
    for url in run_server(create_app(asr, max_stream_seconds=1.0)):
        ws = Client.connect(url.replace("http://", "ws://") + "/stream")
        data = pcm(np.concatenate([wave, wave]))
        for i in range(0, len(data), 2 * CHUNK):
            try:
                ws.send(data[i : i + 2 * CHUNK])
            except Exception:  # noqa: BLE001  # the server may have closed already
                break
        messages = receive_all(ws)
    last = messages[-1]
    assert last["final"] and last["last"] and last["limit"] is True
    assert last["end"] <= 1.0 + 1e-6 and ws.close_reason == 1000


def test_a_model_that_cannot_stream_is_refused_clearly(ctc_checkpoint_running_speech: dict) -> None:
    from simple_websocket import Client

    from kospeech.serve.app import create_app

    class Offline:
        sample_rate = 16000

        def transcribe(self, wave: np.ndarray, **options: object) -> None:
            raise AssertionError("not called")

    for url in run_server(create_app(Offline())):
        ws = Client.connect(url.replace("http://", "ws://") + "/stream")
        messages = receive_all(ws, timeout=10)
    assert messages == [{"error": "this model cannot stream (it has no stream()); use POST /transcribe"}]
    assert ws.close_reason == 1011


def test_serve_command_limits_streams(ctc_checkpoint_running_speech: dict) -> None:
    """``kospeech serve --max-streams 1`` in its own process: one stream runs, a second is refused."""
    import urllib.request

    from simple_websocket import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kospeech", "serve", str(ctc_checkpoint_running_speech["path"]), "--port", str(port),
         "--max-streams", "1"],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        url = f"ws://127.0.0.1:{port}/stream"
        first = Client.connect(url)
        first.send(pcm(ctc_checkpoint_running_speech["waves"][3]))
        time.sleep(0.3)
        second = Client.connect(url)
        assert receive_all(second, timeout=10) == [{"error": "all 1 streams are in use; try again later"}]
        first.send("EOF")
        messages = receive_all(first)
        assert messages[-1]["last"] and messages[-1]["text"] == ctc_checkpoint_running_speech["texts"][3]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
