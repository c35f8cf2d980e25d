"""``kospeech transcribe CHECKPOINT AUDIO... [--search NAME [key=value ...]] [--json] [--batch-size N]``.

Audio may be wav, flac, ogg (any sample rate: resampled to the frontend's) or KsponSpeech
headerless ``.pcm``. Prints ``path<TAB>text`` per file, in the order given. ``--json`` prints
one JSON object per file with per-token timestamps from CTC forced alignment
(torchaudio ``forced_align`` on the CTC head's log-probabilities; one encoder frame lasts the
frontend's frame shift x the encoder's subsampling). A model without a CTC head (an attention
or transducer model without the auxiliary CTC branch) gets ``"timestamps": null`` and a note.
Search options follow the search name (``--search beam beam_size=10``); arguments of the form
``key=value`` among the audio files that are not existing files are search options too.
"""

from __future__ import annotations

import argparse
import json
import os


def transcribe(args: argparse.Namespace) -> int:
    from kospeech.audio import read_audio
    from kospeech.decode import build_search, frontend_sample_rate, resolve_device, search_config, transcribe_waves
    from kospeech.errors import DataError
    from kospeech.progress import progress_bar
    from kospeech.train.checkpoint import load_for_inference

    audio = [a for a in args.items if "=" not in a or os.path.exists(a)]
    options = [a for a in args.items if a not in audio]
    if not audio:
        raise DataError("no audio files given")
    device = resolve_device(args.device)
    bundle = load_for_inference(args.checkpoint, device=device)
    name = args.search[0] if args.search else None
    options += list(args.search[1:]) if args.search else []
    search = build_search(bundle.model, search_config(bundle.model, bundle.config, name, options))
    sr = frontend_sample_rate(bundle)
    # longest first keeps padding small inside each batch; output keeps the order given
    order = sorted(range(len(audio)), key=lambda i: -os.path.getsize(audio[i]) if os.path.exists(audio[i]) else 0)
    results: dict[int, dict] = {}
    with progress_bar(total=len(audio), desc="transcribe", unit="file", disable=len(audio) < 2) as bar:
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            waves = [read_audio(audio[i], sample_rate=sr) for i in idx]
            for i, r in zip(idx, transcribe_waves(bundle, waves, search, device, timestamps=args.json)):
                results[i] = r
            bar.update(len(idx))
    for i, path in enumerate(audio):
        if args.json:
            print(json.dumps({"path": path, **results[i]}, ensure_ascii=False))
        else:
            print(f"{path}\t{results[i]['text']}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "transcribe",
        parents=[parent],
        help="transcribe audio files (wav/flac/pcm) with a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a checkpoint .pt (carries its tokenizer, frontend and CMVN)")
    p.add_argument("items", nargs="+", metavar="AUDIO_OR_KEY=VALUE", help="audio files, then optional search options")
    p.add_argument(
        "--search",
        nargs="+",
        default=None,
        metavar=("NAME", "KEY=VALUE"),
        help="registered search name, then its options (default: the checkpoint's decode.search)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per file, with per-token CTC timestamps")
    p.add_argument("--batch-size", type=int, default=8, help="files per batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=transcribe)
