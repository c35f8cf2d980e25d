"""OpenAI's transcription API on ``kospeech serve``: ``POST /v1/audio/transcriptions`` (and ``GET /v1/models``).

Many tools already speak this API through the official ``openai`` client; pointing their
``base_url`` at ``http://HOST:PORT/v1`` makes them use a KoSpeech model unchanged. The form
fields are OpenAI's: ``file`` (the audio, multipart), ``model`` (any name: there is one model,
so clients that hard-code ``whisper-1`` work), ``response_format`` = ``json`` | ``text`` |
``srt`` | ``vtt`` | ``verbose_json``, ``timestamp_granularities[]`` = ``word`` | ``segment``
(verbose_json only, as OpenAI has it), ``language`` (``ko`` or empty: the models are Korean),
``prompt`` (its words become hotwords: names the model should favour) and ``temperature``
(accepted and ignored: the searches are deterministic); ``stream=true`` is refused (400).

Nothing of the audio handling is repeated here: the app's ``transcribe_upload`` reads the
upload, applies the size and length limits, resamples and transcribes on a worker slot, so
``/transcribe`` and this API refuse and answer alike; this module only translates the form
in and the result out. Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: 400 a bad request or a file that is not audio, 401 a wrong key, 413 too large,
503 busy, 500 a failure of the server, so the client raises its matching exception class.

Authentication: without ``api_key`` any key (or none) is accepted, since a local server needs
none and the client insists on sending one; with it (``kospeech serve --api-key`` or
``KOSPEECH_API_KEY``) the ``Authorization: Bearer KEY`` header must match.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable, Sequence
from typing import Any

from kospeech.errors import KoSpeechError
from kospeech.inference.formats import cues, to_srt, to_vtt
from kospeech.inference.result import Result

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
#: ``language`` values taken as Korean (ISO 639-1, -3 and OpenAI's verbose_json spelling)
KOREAN = ("ko", "kor", "korean")
#: statuses of the app's refusals -> OpenAI's (status, error type, param, code)
_REFUSALS: dict[int, tuple[int, str, str | None, str | None]] = {
    400: (400, "invalid_request_error", "file", None),
    413: (413, "invalid_request_error", "file", "file_too_large"),
    415: (400, "invalid_request_error", "file", "invalid_file_format"),
    422: (400, "invalid_request_error", "file", "audio_not_transcribable"),
    503: (503, "server_error", None, "server_busy"),
}


def openai_error(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> Any:
    """A Flask response in OpenAI's error shape (the ``openai`` client reads ``message`` from it)."""
    from flask import jsonify

    return jsonify({"error": {"message": message, "type": type, "param": param, "code": code}}), status


def hotwords_from_prompt(prompt: str | None) -> list[str]:
    """The words of a prompt, as hotwords (Whisper reads a prompt as context; here it favours its words)."""
    words = (prompt or "").replace(",", " ").split()
    return list(dict.fromkeys(w for w in words if w))


def verbose_body(result: Result, granularities: Sequence[str]) -> dict[str, Any]:
    """OpenAI's ``verbose_json``: ``task``, ``language``, ``duration``, ``text``, and ``words`` and/or
    ``segments`` as asked (segments by default, as OpenAI). Segments are the subtitle cues
    (:func:`kospeech.inference.formats.cues`: cut at pauses and at a readable length); fields with
    no meaning for a CTC model are neutral (temperature 0, no_speech_prob 0, compression_ratio 1)."""
    body: dict[str, Any] = {"task": "transcribe", "language": "korean", "duration": round(result.duration, 3),
                            "text": result.text}
    if "word" in granularities:
        body["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in result.words]
    if "segment" in granularities or not granularities:
        segments = []
        for i, (start, end, text) in enumerate(cues(result)):
            scores = [w.score for w in result.words if w.score is not None and start <= w.start and w.end <= end]
            logprob = sum(math.log(max(s, 1e-10)) for s in scores) / len(scores) if scores else 0.0
            segments.append({"id": i, "seek": 0, "start": start, "end": end, "text": text, "tokens": [],
                             "temperature": 0.0, "avg_logprob": round(logprob, 4), "compression_ratio": 1.0,
                             "no_speech_prob": 0.0})
        body["segments"] = segments
    return body


def blueprint(transcribe_upload: Callable[..., Result], *, name: str = "", api_key: str | None = None) -> Any:
    """The ``/v1`` routes over the app's ``transcribe_upload(field, **options) -> Result`` (which raises
    ``kospeech.serve.Refused``); its error handlers answer in OpenAI's shape for these routes only."""
    from flask import Blueprint, Response, jsonify, request

    from kospeech.serve import Refused

    bp = Blueprint("openai", __name__, url_prefix="/v1")

    @bp.before_request
    def authenticate() -> Any:
        if api_key is None:
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return openai_error(401, "Incorrect API key provided. The server was started with --api-key "
                                "(or KOSPEECH_API_KEY); pass that key as the client's api_key.",
                                code="invalid_api_key")
        return None

    @bp.errorhandler(413)
    def too_large(_: Any) -> Any:
        return openai_error(413, "the request is larger than the server's limit", param="file", code="file_too_large")

    @bp.errorhandler(500)
    def failed(err: Any) -> Any:
        cause = getattr(err, "original_exception", None) or err
        return openai_error(500, f"the server failed on this request ({type(cause).__name__}); see its log",
                            type="server_error")

    @bp.get("/models")
    def models() -> Any:
        return jsonify({"object": "list", "data": [{"id": name or "kospeech", "object": "model", "created": 0,
                                                    "owned_by": "kospeech"}]})

    @bp.post("/audio/transcriptions")
    def transcriptions() -> Any:
        form = request.form
        fmt = form.get("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            return openai_error(400, f"response_format {fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                                param="response_format")
        granularities = form.getlist("timestamp_granularities[]") or form.getlist("timestamp_granularities")
        bad = [g for g in granularities if g not in GRANULARITIES]
        if bad:
            return openai_error(400, f"timestamp_granularities {bad[0]!r} is not one of {', '.join(GRANULARITIES)}",
                                param="timestamp_granularities")
        if granularities and fmt != "verbose_json":
            return openai_error(400, "timestamp_granularities needs response_format 'verbose_json'",
                                param="timestamp_granularities")
        if (form.get("stream") or "").lower() in ("true", "1"):
            return openai_error(400, "stream: streamed transcription is not supported; send stream=false",
                                param="stream")
        language = (form.get("language") or "").strip().lower()
        if language and language not in KOREAN:
            return openai_error(400, f"language {language!r}: this model transcribes Korean ('ko') only",
                                param="language")
        if "file" not in request.files:
            return openai_error(400, "no audio: send it in the multipart form field 'file'", param="file")
        hotwords = hotwords_from_prompt(form.get("prompt"))
        try:
            result = transcribe_upload("file", **({"hotwords": hotwords} if hotwords else {}))
        except Refused as err:
            status, kind, param, code = _REFUSALS.get(err.status, (err.status, "invalid_request_error", None, None))
            return openai_error(status, str(err), type=kind, param=param, code=code)
        except KoSpeechError as err:  # e.g. hotwords for a model whose search takes none
            return openai_error(400, str(err), param="prompt" if hotwords else None)
        if fmt == "json":
            return jsonify({"text": result.text})
        if fmt == "verbose_json":
            return jsonify(verbose_body(result, granularities))
        text = {"text": result.text + "\n", "srt": to_srt(result), "vtt": to_vtt(result)}[fmt]
        mimetype = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}[fmt]
        return Response(text, content_type=f"{mimetype}; charset=utf-8")

    return bp
