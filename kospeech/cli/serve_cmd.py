"""``kospeech serve MODEL [--search NAME] [-o KEY=VALUE]... [--lm DIR] [--host 127.0.0.1] [--port 8000]``.

Open http://HOST:PORT/ to upload a file or record from the microphone and read the transcript
with word times; programs ``POST /transcribe`` (multipart field ``audio``, or the raw body) and
get ``{"text", "words", "duration"}``. OpenAI clients use ``base_url="http://HOST:PORT/v1"``
(``POST /v1/audio/transcriptions``; with ``--api-key`` or ``KOSPEECH_API_KEY`` they must send that
key). Live recognition: the WebSocket ``/stream`` (16-bit PCM at 16 kHz in, JSON partial and
final texts out; the page's Live button). MODEL is what ``kospeech.load`` opens: a package (served
with its own decoding and LM), an export directory (the torch-free runtime) or a checkpoint.
Needs the ``serve`` extra: pip install 'kospeech[serve]' (and ``export`` for an export directory).
"""

from __future__ import annotations

import argparse
import os

from kospeech.cli import add_chunk_size_argument, add_search_arguments, add_vad_arguments


def serve(args: argparse.Namespace) -> int:
    from kospeech.cli import search_choice
    from kospeech.serve.app import serve as run

    search, options = search_choice(args)
    run(args.model, host=args.host, port=args.port, max_bytes=int(args.max_mb * 1024 * 1024),
        max_seconds=args.max_seconds, workers=args.workers, search=search, search_options=options,
        api_key=args.api_key or None, max_streams=args.max_streams, max_stream_seconds=args.max_stream_seconds,
        chunk_size=args.chunk_size, vad=args.vad, vad_model=args.vad_model)
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[parent],
        help="web demo and JSON endpoint for a checkpoint or export dir",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="a package (kospeech pack), an export dir or a checkpoint")
    add_search_arguments(p)
    add_chunk_size_argument(p)
    add_vad_arguments(p)  # uploads longer than 20 s (both /transcribe and /v1) are cut by it
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="longest audio accepted (default 60)")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest request body in MB (default 20)")
    p.add_argument("--workers", type=int, default=0, help="concurrent transcriptions (default: 2 runtime, 1 torch)")
    p.add_argument("--max-streams", type=int, default=4, help="concurrent WebSocket /stream connections (default 4)")
    p.add_argument("--max-stream-seconds", type=float, default=3600.0,
                   help="a live stream is finished after this much audio (default 3600)")
    p.add_argument("--api-key", default=os.environ.get("KOSPEECH_API_KEY"), metavar="KEY",
                   help="the key OpenAI clients must send to /v1 (default: $KOSPEECH_API_KEY; unset: any key)")
    p.set_defaults(func=serve)
