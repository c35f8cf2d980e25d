"""Cutting long audio: silero's VAD against the energy cutter on long files built from a test set (CER, RTF).

``python bench/vad.py MODEL DATA_DIR... [--minutes 5] [--max-segment-seconds 20]``: the utterances
of each data dir (in order) are joined into files of about ``--minutes`` with 0.5-1.5 s of silence
between them, in two conditions:

- ``pauses``: the utterances and the silences as they are;
- ``noise``: the same under a noise bed (brown noise at 20 dB below the speech power) and, after
  every 8th utterance, 4 s of louder noise with no speech in it (10 dB below the speech), the
  stretch a model-based VAD should leave out and an energy cutter cannot tell from speech.

Each file is transcribed with ``vad="energy"`` and ``vad="silero"`` (MODEL's own decoding; a
package decodes with its LM); the table gives the CER of the joined references, the RTF of the
whole transcribe, the VAD's own RTF (silero's network over the file alone, in the same run) and
the share of the audio decoded. The baseline row decodes each utterance alone (the package's own
score). Needs ``pip install 'kospeech[vad]'``. Run it alone on the machine: RTFs are wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SR = 16000
NOISE_EVERY = 8


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    """Brown-ish noise (integrated white noise, its drift removed) of unit power: traffic, a fan."""
    walk = np.cumsum(rng.normal(0, 1, n + 800))
    walk = (walk - np.convolve(walk, np.ones(800) / 800, "same"))[400 : 400 + n]
    return (walk / np.sqrt(np.mean(walk**2))).astype(np.float32)


def long_files(waves: list[np.ndarray], texts: list[str], minutes: float, noisy: bool,
               seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """(wave, joined reference) of each long file."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(np.concatenate(waves) ** 2))
    files, parts, refs, length = [], [], [], 0
    for i, (w, t) in enumerate(zip(waves, texts)):
        gap = int(rng.uniform(0.5, 1.5) * SR)
        parts += [w, np.zeros(gap, np.float32)]
        length += len(w) + gap
        if noisy and (i + 1) % NOISE_EVERY == 0:
            parts.append(brown(4 * SR, rng) * np.sqrt(power / 10))
            length += 4 * SR
        refs.append(t)
        if length >= minutes * 60 * SR or i == len(waves) - 1:
            wave = np.concatenate(parts)
            if noisy:
                wave = wave + brown(len(wave), rng) * np.sqrt(power / 100)
            files.append((np.clip(wave, -1, 1).astype(np.float32), " ".join(refs)))
            parts, refs, length = [], [], 0
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a package, checkpoint or export dir")
    parser.add_argument("data", nargs="+", help="data dirs (wav.scp, text)")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each long file")
    parser.add_argument("--max-segment-seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads")
    args = parser.parse_args()

    import kospeech
    from kospeech.data.kaldi_io import audio_items, read_item
    from kospeech.files import read_utt_text
    from kospeech.metrics import score_corpus
    from kospeech.runtime.vad import SileroVad

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    asr = kospeech.load(args.model, device="cpu", max_segment_seconds=args.max_segment_seconds,
                        **({"num_threads": args.threads} if Path(args.model, "manifest.json").is_file() else {}))
    vad = SileroVad()
    print(f"model: {args.model} ({asr.engine.kind}, {asr.search_cfg['name']}), {args.threads} thread(s), "
          f"files of ~{args.minutes:g} min, max segment {args.max_segment_seconds:g} s, silero model {vad.path.name}, "
          f"{time.strftime('%F')}")
    print("| data | condition | cutter | files | audio (s) | pieces | decoded | CER % | RTF | VAD RTF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            refs = read_utt_text(Path(data) / "text", allow_empty=False)
            items = audio_items(data)  # wav.scp's paths, pipes and segments alike
            ids = list(refs)
            waves = [read_item(items[u], sample_rate=SR) for u in ids]
            texts = [refs[u] for u in ids]
            name = Path(data).name
            audio_s = sum(len(w) for w in waves) / SR
            asr.transcribe(waves[:2], sample_rate=SR)  # warm-up (first-call costs), untimed
            t0 = time.perf_counter()
            alone = asr.transcribe(waves, sample_rate=SR)
            wall = time.perf_counter() - t0
            cer = score_corpus(refs, {u: r.text for u, r in zip(ids, alone)}).cer
            print(f"| {name} | one utterance at a time | - | {len(ids)} utts | {audio_s:.0f} | {len(ids)} | 100% "
                  f"| {cer:.2f} | {wall / audio_s:.4f} | - |", flush=True)
            for condition in ("pauses", "noise"):
                files = long_files(waves, texts, args.minutes, condition == "noise")
                paths = []
                for k, (wave, _) in enumerate(files):
                    paths.append(Path(tmp) / f"{name}_{condition}_{k}.wav")
                    sf.write(paths[-1], wave, SR, subtype="PCM_16")
                seconds = sum(len(w) for w, _ in files) / SR
                t0 = time.perf_counter()
                for wave, _ in files:
                    vad.probabilities(wave)
                vad_rtf = (time.perf_counter() - t0) / seconds
                for cutter in ("energy", "silero"):
                    t0 = time.perf_counter()
                    results = [asr.transcribe(str(p), vad=cutter) for p in paths]
                    wall = time.perf_counter() - t0
                    bad = [r.error for r in results if not r.ok]
                    if bad:
                        print(f"| {name} | {condition} | {cutter} | failed: {bad[0]} |")
                        continue
                    hyp = {str(k): r.text for k, r in enumerate(results)}
                    cer = score_corpus({str(k): ref for k, (_, ref) in enumerate(files)}, hyp).cer
                    pieces = sum(max(1, len(r.segments)) for r in results)
                    decoded = sum(sum(b - a for a, b in r.segments) if r.segments else r.duration for r in results)
                    print(f"| {name} | {condition} | {cutter} | {len(files)} | {seconds:.0f} | {pieces} | "
                          f"{100 * decoded / seconds:.0f}% | {cer:.2f} | {wall / seconds:.4f} | "
                          f"{vad_rtf if cutter == 'silero' else 0:.4f} |".replace("| 0.0000 |", "| - |"), flush=True)
                for p in paths:
                    p.unlink()


if __name__ == "__main__":
    main()
