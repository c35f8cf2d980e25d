"""``kospeech transcribe MODEL AUDIO... [--search NAME] [-o KEY=VALUE]... [--lm DIR] [--format FMT]``.

A thin command line over ``kospeech.load`` (the Python API). AUDIO is a wav/flac/ogg file (any
sample rate), a KsponSpeech headerless ``.pcm``, or ``-`` for standard input; MODEL is a package
(decoded with its own search and LM, as the recipe scored it), an export dir (onnxruntime), a
checkpoint ``.pt`` or an exp dir. Audio longer than ``--max-segment-seconds``
is cut at pauses and decoded piece by piece (a progress bar shows the seconds done); ``--vad
silero`` cuts it at the speech silero's VAD network finds instead, and the rest is not decoded
(noise between sentences gives no words; ``pip install 'kospeech[vad]'``).

``--format``: ``text`` (``path<TAB>text`` per file; the text alone for one file), ``json`` (one
object per file: text, words and syllables with times, duration, error), ``srt``, ``vtt``,
``ctm`` (word times). Search options come as ``-o beam_size=10`` (repeatable); ``key=value``
words among the audio arguments that are not files are taken as search options too.

A file that cannot be read or decoded is reported on standard error; the others are still
transcribed, and the exit status is 1 when any file failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from kospeech.cli import add_chunk_size_argument, add_search_arguments, add_vad_arguments, positive_int


def transcribe(args: argparse.Namespace) -> int:
    from kospeech.cli import search_choice
    from kospeech.errors import DataError
    from kospeech.inference import load
    from kospeech.inference.formats import render
    from kospeech.progress import progress_bar

    audio = [a for a in args.items if "=" not in a or os.path.exists(a) or a == "-"]
    texts = [a for a in args.items if a not in audio]
    if not audio:
        raise DataError("no audio files given (give paths, or - for standard input)")
    search, options = search_choice(args, texts)
    asr = load(args.checkpoint, device=args.device, search=search, trust_plugins=args.trust_plugins,
               max_segment_seconds=args.max_segment_seconds, chunk_size=args.chunk_size, **options)
    total = 0.0
    for a in audio:
        if a != "-" and os.path.isfile(a):
            total += os.path.getsize(a) / (2 * asr.sample_rate)  # a 16-bit mono estimate, for the bar only
    with progress_bar(total=int(round(total)), desc="transcribe", unit="s", disable=total < 60) as bar:
        done = [0.0]  # seconds decoded; the bar counts whole seconds (float sums showed 930.4999/930.6)

        def advance(seconds: float) -> None:
            before = int(done[0])
            done[0] += seconds
            bar.update(int(done[0]) - before)

        results = asr.transcribe(audio, batch_size=args.batch_size, timestamps=args.format != "text",
                                 progress=advance, vad=args.vad, vad_model=args.vad_model)
    failed = 0
    for path, r in zip(audio, results):
        if not r.ok:
            failed += 1
            print(f"kospeech transcribe: {path}: error: {r.error}", file=sys.stderr)
    sys.stdout.write(render(results, args.format, names=audio))
    return 1 if failed else 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "transcribe",
        parents=[parent],
        help="transcribe audio files (wav/flac/pcm, any length) with a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="MODEL",
                   help="a package (kospeech pack; a recipe's exp/<run>/package), an export dir, a checkpoint .pt "
                   "or an exp dir")
    p.add_argument("items", nargs="*", metavar="AUDIO", help="audio files, or - for standard input")
    add_search_arguments(p)
    p.add_argument("--format", choices=("text", "json", "srt", "vtt", "ctm"), default="text", help="output format")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    p.add_argument(
        "--batch-size", type=positive_int, default=8, help="files (or pieces of a long file) decoded together"
    )
    p.add_argument("--max-segment-seconds", type=float, default=20.0, help="longer audio is cut at pauses")
    add_vad_arguments(p)
    add_chunk_size_argument(p)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--trust-plugins", action="store_true",
                   help="import the plugin folders the checkpoint recorded (runs their code: trusted files only)")
    p.set_defaults(func=transcribe, extra_positionals="items")
