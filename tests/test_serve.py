"""``kospeech serve`` over real HTTP on 127.0.0.1: uploads, bad requests, limits, concurrent requests."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kospeech.cli import main

REPO = Path(__file__).resolve().parents[1]


def wav_bytes(wave: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def post(url: str, data: bytes, *, multipart: bool = True, field: str = "audio") -> tuple[int, dict]:
    """POST ``data`` as the multipart field ``field`` (or as the raw body); (status, JSON body)."""
    if multipart:
        boundary = "----kospeech-test-boundary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n".encode() + data + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body, headers = data, {"Content-Type": "application/octet-stream"}
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def exported(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "onnx"
    assert main(["export", str(ctc_checkpoint["path"]), "--out", str(out)]) == 0
    return out


def run_server(app: object) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(exported: Path) -> Iterator[str]:
    from kospeech import runtime
    from kospeech.serve.app import create_app

    yield from run_server(create_app(runtime.load(exported), max_seconds=4.0, max_bytes=400_000, name="test"))


def test_upload_and_raw_body_give_the_transcript_with_word_times(server: str, ctc_checkpoint: dict) -> None:
    text, wave = ctc_checkpoint["texts"][1], ctc_checkpoint["waves"][1]
    status, body = post(f"{server}/transcribe", wav_bytes(wave))
    assert status == 200, body
    assert set(body) == {"text", "words", "duration"}
    assert body["text"] == text and body["duration"] == pytest.approx(wave.size / 16000, abs=1e-3)
    assert [w["text"] for w in body["words"]] == text.split()
    assert all(0 <= w["start"] < w["end"] <= body["duration"] for w in body["words"])
    status, raw = post(f"{server}/transcribe", wav_bytes(wave, 16000), multipart=False)
    assert status == 200 and raw == body
    # another rate and flac: resampled and decoded on the server
    from kospeech.audio import resample_wave

    buf = io.BytesIO()
    sf.write(buf, resample_wave(wave, 16000, 22050), 22050, format="FLAC")
    status, flac = post(f"{server}/transcribe", buf.getvalue(), multipart=False)
    assert status == 200 and flac["text"] == text


def test_bad_requests_get_clear_4xx(server: str, ctc_checkpoint: dict) -> None:
    status, body = post(f"{server}/transcribe", b"", multipart=False)
    assert status == 400 and "multipart form field 'audio'" in body["error"]
    status, body = post(f"{server}/transcribe", b"", multipart=True)
    assert status == 400
    status, body = post(f"{server}/transcribe", b"hello, this is not audio" * 10)
    assert status == 415 and "not audio" in body["error"]
    long_wave = np.concatenate(ctc_checkpoint["waves"][:4])  # > 4 s, < 400 kB
    status, body = post(f"{server}/transcribe", wav_bytes(long_wave))
    assert status == 413 and "longer than the limit of 4 s" in body["error"]
    status, body = post(f"{server}/transcribe", wav_bytes(np.zeros(16000 * 30, np.float32)), multipart=False)
    assert status == 413 and "larger than the limit" in body["error"]
    status, body = post(f"{server}/transcribe", wav_bytes(np.zeros(50, np.float32)))
    assert status == 200 and body["text"] == ""  # padded as every door pads short audio


def test_concurrent_requests_all_succeed(server: str, ctc_checkpoint: dict) -> None:
    jobs = [(t, wav_bytes(w)) for t, w in zip(ctc_checkpoint["texts"], ctc_checkpoint["waves"])] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: post(f"{server}/transcribe", job[1]), jobs))
    assert [a[0] for a in answers] == [200] * len(jobs)
    assert [a[1]["text"] for a in answers] == [t for t, _ in jobs]


def test_page_offers_upload_and_recording(server: str) -> None:
    with urllib.request.urlopen(f"{server}/", timeout=10) as resp:
        page = resp.read().decode("utf-8")
    assert 'id="file"' in page and 'id="record"' in page and "encodeWav" in page
    with urllib.request.urlopen(f"{server}/health", timeout=10) as resp:
        assert json.loads(resp.read())["ok"] is True


def test_a_failing_model_gives_json_500() -> None:
    from kospeech.serve.app import create_app

    class Broken:
        sample_rate = 16000

        def transcribe(self, wave: np.ndarray, **options: object) -> None:
            raise RuntimeError("out of memory")

    for url in run_server(create_app(Broken())):
        status, body = post(f"{url}/transcribe", wav_bytes(np.ones(16000, np.float32) * 0.1))
        assert status == 500 and "RuntimeError" in body["error"]
        status, _ = post(f"{url}/transcribe", wav_bytes(np.ones(16000, np.float32) * 0.1))
        assert status == 500  # and the server still answers


def test_serve_command(exported: Path, ctc_checkpoint: dict) -> None:
    """The real console command in its own process: starts, answers, stops on SIGTERM."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kospeech", "serve", str(exported), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        status, body = post(f"{url}/transcribe", wav_bytes(ctc_checkpoint["waves"][0]))
        assert status == 200 and body["text"] == ctc_checkpoint["texts"][0]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_a_checkpoint_with_the_pytorch_api(ctc_checkpoint: dict) -> None:
    """A checkpoint (not an export) is served through kospeech.load, one worker; same answers."""
    from kospeech.serve.app import create_app, open_model

    model, workers = open_model(str(ctc_checkpoint["path"]))
    assert workers == 1 and type(model).__name__ == "Transcriber"
    for url in run_server(create_app(model, workers=workers)):
        jobs = [wav_bytes(w) for w in ctc_checkpoint["waves"][:4]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(post, [f"{url}/transcribe"] * len(jobs), jobs))
    assert [a[0] for a in answers] == [200] * 4
    assert [a[1]["text"] for a in answers] == ctc_checkpoint["texts"][:4]
    assert [w["text"] for w in answers[0][1]["words"]] == ctc_checkpoint["texts"][0].split()


def test_serve_refuses_a_missing_path(tmp_path: Path) -> None:
    assert main(["serve", str(tmp_path / "nothing.pt")]) == 1
