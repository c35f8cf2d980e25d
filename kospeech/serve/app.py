"""The web demo: a page to upload or record audio, and ``POST /transcribe`` for programs.

``POST /transcribe`` takes the audio in the multipart form field ``audio`` or as the raw request
body (wav, flac or ogg; any rate, resampled) and answers ``{"text", "words": [{"text", "start",
"end", "score"}], "duration"}``. Errors are JSON ``{"error": ...}`` with a 4xx status: 400 no
audio, 413 a body over ``max_bytes`` or audio over ``max_seconds``, 415 bytes that are not audio,
503 when every worker stayed busy for ``queue_timeout`` seconds; 422 when the model cannot take the
audio, 500 (JSON too) for a failure of the server itself. JSON is UTF-8 (``"text": "안녕하세요"``).
The server decodes with the model's own decoding (a package's search and LM) unless ``kospeech
serve`` was given ``--search``/``-o``/``--lm``: :func:`open_model` goes through ``kospeech.load``,
the one front door, so ``POST /transcribe`` answers what ``kospeech transcribe`` prints.

Browsers record WebM/Opus, which soundfile cannot read, so the page does not use
MediaRecorder: it captures samples with the Web Audio API, resamples them to 16 kHz in an
OfflineAudioContext and sends a 16-bit WAV. The server therefore only ever decodes what
soundfile reads.

Concurrency: Flask serves each request on its own thread; a semaphore of ``workers`` slots
bounds how many transcribe at once (an onnxruntime session runs concurrent calls safely; a
PyTorch model gets one slot), and a request that waits too long gets 503 instead of piling up.
"""

from __future__ import annotations

import logging
import threading
import time
from importlib import resources
from typing import Any

from kospeech.errors import ConfigError, DataError
from kospeech.serve import Refused

logger = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024
MAX_SECONDS = 60.0


def create_app(
    model: Any,
    *,
    max_bytes: int = MAX_BYTES,
    max_seconds: float = MAX_SECONDS,
    workers: int = 2,
    queue_timeout: float = 30.0,
    name: str = "",
    api_key: str | None = None,
    max_streams: int = 4,
    max_stream_seconds: float = 3600.0,
    vad: str | None = None,
    vad_model: str | None = None,
) -> Any:
    """A Flask app serving ``model`` (anything with ``transcribe(item) -> Result`` and ``sample_rate``);
    ``api_key``: the key OpenAI clients must send to ``/v1`` (None: any key, as a local server needs none);
    ``max_streams``/``max_stream_seconds``: the WebSocket ``/stream`` (:mod:`kospeech.serve.stream_ws`);
    ``vad``/``vad_model``: how every API cuts long uploads (``transcribe``'s options; silero's model is
    loaded here, once, so a missing one stops the server at its start, not at its first long upload)."""
    try:
        from flask import Flask, Response, jsonify, request
    except ImportError:
        raise ConfigError("the web demo needs flask: pip install 'kospeech[serve]'") from None
    from kospeech.audio import check_finite, read_audio_bytes, resample_wave

    app = Flask("kospeech.serve")
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Korean as UTF-8, not \uXXXX escapes
    slots = threading.BoundedSemaphore(max(1, workers))
    page = resources.files("kospeech.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    page = page.replace("{{MAX_SECONDS}}", f"{max_seconds:g}").replace("{{MODEL}}", name or "model")
    sample_rate = int(getattr(model, "sample_rate", 16000))
    cutting = {k: v for k, v in (("vad", vad), ("vad_model", vad_model)) if v is not None}
    if cutting:
        model.cutter(vad, vad_model)  # checked and loaded (into the model's own cache) before the first request

    def error(status: int, message: str) -> Any:
        return jsonify({"error": message}), status

    @app.errorhandler(413)
    def too_large(_: Any) -> Any:
        return error(413, f"the request is larger than the limit of {max_bytes / 1e6:.1f} MB")

    @app.errorhandler(500)
    def failed(err: Any) -> Any:
        cause = getattr(err, "original_exception", None) or err
        logger.error("transcription failed: %s: %s", type(cause).__name__, cause)
        return error(500, f"the server failed on this request ({type(cause).__name__}); see its log")

    @app.get("/")
    def index() -> Any:
        return Response(page, mimetype="text/html")

    @app.get("/health")
    def health() -> Any:
        return jsonify({"ok": True, "model": name, "max_seconds": max_seconds, "max_bytes": max_bytes})

    def transcribe_upload(field: str, **options: Any) -> Any:
        """The request's audio (multipart ``field``, else the raw body) within the limits, transcribed on a
        worker slot with ``options``; a :class:`Refused` names the status. Shared by every API of the app."""
        # a chunked body has no Content-Length for MAX_CONTENT_LENGTH to check: read one byte past the limit
        upload = request.files.get(field) if request.mimetype == "multipart/form-data" else None
        data = upload.read(max_bytes + 1) if upload is not None else request.stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise Refused(413, f"the request is larger than the limit of {max_bytes / 1e6:.1f} MB")
        if not data:
            raise Refused(400, f"no audio: send a file in the multipart form field '{field}' or as the request body")
        source = (upload.filename if upload is not None else "") or "<upload>"
        declared = declared_seconds(data)
        if declared is not None and declared > max_seconds:  # a compressed file: refused before it is decoded
            raise Refused(413, f"{source}: {declared:.1f} s of audio is longer than the limit of {max_seconds:g} s")
        try:
            wave, rate = read_audio_bytes(data, source)
            check_finite(wave, source)
        except DataError as err:
            raise Refused(415, str(err)) from None
        duration = wave.size / rate
        if duration > max_seconds:
            raise Refused(413, f"{source}: {duration:.1f} s of audio is longer than the limit of {max_seconds:g} s")
        wave = resample_wave(wave, rate, sample_rate)
        if not slots.acquire(timeout=queue_timeout):
            raise Refused(503, f"all {workers} workers stayed busy for {queue_timeout:g} s; try again later")
        try:
            start = time.perf_counter()
            result = model.transcribe(wave, sample_rate=sample_rate, **cutting, **options)
        finally:
            slots.release()
        if not result.ok:
            raise Refused(422, result.error or "transcription failed")
        logger.info("%s: %.2f s of audio in %.2f s", source, duration, time.perf_counter() - start)
        return result

    @app.post("/transcribe")
    def transcribe() -> Any:
        try:
            body = transcribe_upload("audio").to_dict()
        except Refused as err:
            return error(err.status, str(err))
        return jsonify({"text": body["text"], "words": body["words"], "duration": body["duration"]})

    from kospeech.serve.openai_api import blueprint  # POST /v1/audio/transcriptions, OpenAI's API

    app.register_blueprint(blueprint(transcribe_upload, name=name, api_key=api_key))
    from kospeech.serve import stream_ws  # the WebSocket /stream: live recognition on the same worker slots

    app.register_blueprint(stream_ws.blueprint(model, slots, max_streams=max_streams,
                                               max_stream_seconds=max_stream_seconds, queue_timeout=queue_timeout))
    return app


def declared_seconds(data: bytes) -> float | None:
    """The length a file's header announces (frames / rate), read without decoding; None when unknown."""
    import io

    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, TypeError):
        return None
    return info.frames / info.samplerate if info.samplerate and 0 < info.frames < 2**62 else None


def open_model(path: str, search: str | None = None, *, chunk_size: int | None = None,
               **options: Any) -> tuple[Any, int]:
    """Any model ``kospeech.load`` opens (package, export dir, checkpoint) and its worker count:
    2 for the onnxruntime engine (its sessions run concurrent calls safely), 1 for PyTorch.
    ``chunk_size``: decode a Conformer with chunk-wise attention of that many encoder frames
    (``kospeech serve --chunk-size``; an export has its own fixed in its graph).

    Only the path the user named is opened; checkpoints load with ``weights_only`` (no pickled code).
    """
    from pathlib import Path

    import kospeech

    if not Path(path).exists():
        raise DataError(f"{path}: no such model (a package, an export directory or a checkpoint)")
    model = kospeech.load(str(path), search=search, chunk_size=chunk_size, **options)
    return model, 2 if model.engine.kind == "onnx" else 1


def serve(path: str, *, host: str = "127.0.0.1", port: int = 8000, search: str | None = None,
          search_options: dict[str, Any] | None = None, chunk_size: int | None = None, **options: Any) -> None:
    """Load ``path`` and serve until interrupted (werkzeug's threaded server); ``options`` go to
    :func:`create_app` (limits, ``api_key``, ``vad``...)."""
    from werkzeug.serving import make_server

    model, workers = open_model(path, search, chunk_size=chunk_size, **(search_options or {}))
    app = create_app(model, workers=options.pop("workers", None) or workers, name=model.name, **options)
    server = make_server(host, port, app, threaded=True)
    logger.info("serving %s on http://%s:%d (Ctrl-C stops)", path, host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
