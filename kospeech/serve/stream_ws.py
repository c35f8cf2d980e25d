"""Live recognition over a WebSocket on ``kospeech serve``: ``/stream``.

The protocol (one recognition per connection):

- the client sends **binary** messages of 16-bit little-endian mono PCM at 16 kHz (any length;
  the page sends about 160 ms each) and the **text** message ``EOF`` when the audio ends;
- the server answers JSON text messages: ``{"text": ..., "final": false}`` whenever the open
  segment's partial text changes; ``{"text", "final": true, "words": [{"text", "start", "end",
  "score"}], "start", "end"}`` for each segment endpointing closes (times in seconds on the whole
  stream; ``start``/``end`` span the segment's words); after ``EOF`` the finals left and a last
  message with ``"last": true`` (a final, possibly with empty text when the end held no speech);
  then the server closes the socket (1000).
- Refusals and errors are ``{"error": ...}`` followed by a close: 1013 (try again later) when
  ``max_streams`` streams are open already or no worker slot freed up in ``queue_timeout``
  seconds; 1003 a text message other than ``EOF``; 1007 a binary message with an odd number of
  bytes; 1008 no message for ``idle_timeout`` seconds; 1011 a model that cannot stream (or a
  failure of the server, logged). A stream that reaches ``max_stream_seconds`` of audio is
  finished as at ``EOF`` (its last message says ``"limit": true``) and later audio is ignored.

Concurrency. One :class:`~kospeech.inference.stream.Stream` per connection (its own buffers and
beam; the model is shared). Each computation of a stream (creating it, every ``feed``, the
``finish``) holds one of the app's worker slots, the semaphore ``/transcribe`` uses, so a
PyTorch model (one slot) never runs two forward passes at once and an onnxruntime model runs
as many as it has slots; a stream's compute per message is short, so streams and uploads
interleave. ``max_streams`` bounds the open connections, each of which holds a thread of the
server. The WebSocket comes from ``flask-sock`` (``simple-websocket``), which works under
werkzeug's threaded server that ``kospeech serve`` runs.
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from typing import Any

import numpy as np

from kospeech.errors import ConfigError, KoSpeechError

logger = logging.getLogger(__name__)

MAX_STREAMS = 4
MAX_STREAM_SECONDS = 3600.0
IDLE_TIMEOUT = 60.0
MAX_MESSAGE_BYTES = 1 << 20  # 32 s of audio in one message; the connection closes (1009) on a larger one
STREAM_RATE = 16000  # the protocol's rate (the page and clients send 16 kHz PCM)

# WebSocket close codes (RFC 6455, section 7.4.1)
NORMAL, UNSUPPORTED, BAD_DATA, POLICY, SERVER_ERROR, TRY_AGAIN_LATER = 1000, 1003, 1007, 1008, 1011, 1013


class _Close(Exception):
    """End the connection: an ``{"error": message}`` and a close with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def close(ws: Any, code: int, reason: str, wait: float = 2.0) -> None:
    """Send the close frame, then wait (up to ``wait`` s) for the client's, as the closing handshake
    asks: the server returning at once lets the socket be torn down while the client's close frame
    is in flight, and the reset that follows can discard the last messages before the client reads
    them (a browser then sees code 1006 and no final text)."""
    ws.close(code, reason)
    reader = getattr(ws, "thread", None)  # simple-websocket's reader ends when the client's close arrives
    if reader is not None:
        reader.join(timeout=wait)


def final_message(result: Any, *, at: float) -> dict[str, Any]:
    """A closed segment's JSON: its text, words with times on the whole stream, and its span
    (first word's start to last word's end; ``at`` for both when it has no words)."""
    words = [{"text": w.text, "start": w.start, "end": w.end, "score": w.score} for w in result.words]
    start = words[0]["start"] if words else at
    end = words[-1]["end"] if words else at
    return {"text": result.text, "final": True, "words": words, "start": start, "end": end}


def blueprint(model: Any, slots: threading.Semaphore, *, max_streams: int = MAX_STREAMS,
              max_stream_seconds: float = MAX_STREAM_SECONDS, queue_timeout: float = 30.0,
              idle_timeout: float = IDLE_TIMEOUT) -> Any:
    """The ``/stream`` route over ``model`` (a driver with ``stream()``), computing on the app's
    worker ``slots``; at most ``max_streams`` connections at once."""
    from flask import Blueprint

    try:
        from flask_sock import Sock
    except ImportError:
        raise ConfigError("the server's WebSocket /stream needs flask-sock: pip install 'kospeech[serve]'") from None

    bp = Blueprint("stream", __name__)
    bp.record_once(lambda state: state.app.config.setdefault("SOCK_SERVER_OPTIONS",
                                                             {"max_message_size": MAX_MESSAGE_BYTES}))
    open_streams = threading.BoundedSemaphore(max(1, max_streams))
    rate = int(getattr(model, "sample_rate", STREAM_RATE))
    max_samples = int(max_stream_seconds * STREAM_RATE)

    @contextmanager
    def slot() -> Any:
        if not slots.acquire(timeout=queue_timeout):
            raise _Close(TRY_AGAIN_LATER, f"every worker stayed busy for {queue_timeout:g} s; try again later")
        try:
            yield
        finally:
            slots.release()

    def send(ws: Any, message: dict[str, Any]) -> None:
        ws.send(json.dumps(message, ensure_ascii=False))

    def recognise(ws: Any) -> None:
        if not callable(getattr(model, "stream", None)):
            raise _Close(SERVER_ERROR, "this model cannot stream (it has no stream()); use POST /transcribe")
        try:
            with slot():
                stream = model.stream(name="<websocket>")
        except KoSpeechError as err:  # e.g. an attention-only model (neither CTC nor transducer)
            raise _Close(SERVER_ERROR, f"this model cannot stream: {err}") from None
        received = 0
        closed: list[str] = []  # texts of the segments sent as finals
        partial = ""

        def send_finals() -> None:
            nonlocal partial
            for result in stream.finals():
                if result.text:
                    closed.append(result.text)
                    send(ws, final_message(result, at=received / STREAM_RATE))
                    partial = ""

        limit = False
        while True:
            message = ws.receive(timeout=idle_timeout)
            if message is None:
                raise _Close(POLICY, f"no message for {idle_timeout:g} s: send audio or EOF")
            if isinstance(message, str):
                if message.strip() == "EOF":
                    break
                raise _Close(UNSUPPORTED, f"unknown text message {message[:40]!r}: send audio as binary messages "
                                          "(16-bit little-endian PCM, 16 kHz mono) and the text message EOF to finish")
            if len(message) % 2:
                raise _Close(BAD_DATA, f"a binary message of {len(message)} bytes: audio is 16-bit PCM, "
                                       "2 bytes a sample, so every message has an even number of bytes")
            pcm = np.frombuffer(message, dtype="<i2")
            if received + pcm.size >= max_samples:
                pcm, limit = pcm[: max_samples - received], True
            received += pcm.size
            if pcm.size:
                wave = pcm.astype(np.float32) / 32768.0
                if rate != STREAM_RATE:
                    from kospeech.audio import resample_wave

                    wave = resample_wave(wave, STREAM_RATE, rate)  # a model at another rate (per message)
                with slot():
                    text = stream.feed(wave)
                send_finals()
                done = " ".join(closed)
                now = text[len(done):].strip() if text.startswith(done) else text
                if now != partial:
                    partial = now
                    send(ws, {"text": now, "final": False})
            if limit:
                logger.info("a stream reached the limit of %g s of audio; finished", max_stream_seconds)
                break
        with slot():
            result = stream.finish()
        finals = [r for r in stream.finals() if r.text]
        for r in finals[:-1]:
            send(ws, final_message(r, at=received / STREAM_RATE))
        last = final_message(finals[-1], at=received / STREAM_RATE) if finals else \
            {"text": "", "final": True, "words": [], "start": received / STREAM_RATE, "end": received / STREAM_RATE}
        last["last"] = True
        if limit:
            last["limit"] = True
        send(ws, last)
        logger.info("stream: %.2f s of audio, %d words", received / STREAM_RATE, len(result.words))
        close(ws, NORMAL, "the stream reached the limit" if limit else "done")

    @bp.get("/stream")
    def not_a_websocket() -> Any:  # a plain GET (a browser tab, curl): say what the route wants
        from flask import jsonify

        return jsonify({"error": "/stream is a WebSocket: connect with ws:// (16-bit PCM at 16 kHz in, "
                                 "JSON texts out; see kospeech.serve.stream_ws)"}), 426

    @Sock().route("/stream", bp=bp)
    def stream_route(ws: Any) -> None:
        from simple_websocket import ConnectionClosed

        if not open_streams.acquire(blocking=False):
            send(ws, {"error": f"all {max_streams} streams are in use; try again later"})
            close(ws, TRY_AGAIN_LATER, "try again later")
            return
        try:
            recognise(ws)
        except _Close as err:
            send(ws, {"error": str(err)})
            close(ws, err.code, str(err).encode()[:120].decode(errors="ignore"))  # a reason is at most 123 bytes
        except ConnectionClosed:
            logger.info("a stream's client went away")
        except Exception as err:  # noqa: BLE001  # the client gets a line, the log the cause
            logger.exception("a stream failed")
            try:
                send(ws, {"error": f"the server failed on this stream ({type(err).__name__}); see its log"})
                close(ws, SERVER_ERROR, "server error")
            except ConnectionClosed:
                pass
        finally:
            open_streams.release()

    return bp
