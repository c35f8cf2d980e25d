"""Streaming recognition of a trained model, in one run: accuracy, latency, compute and memory.

    python bench/streaming.py MODEL DATA_DIR [DATA_DIR...] [--onnx EXPORT_DIR] [--look-ahead S ...]

MODEL is a package, checkpoint or exp dir (the torch engine); ``--onnx`` adds the same model's
export (the onnxruntime engine; the look-ahead settings run on the torch engine only). Every
utterance of each data dir is fed in 160 ms chunks, as a microphone page sends them, one stream
at a time, one thread. Printed per data dir, engine
and look-ahead setting:

- CER of the streams' final text, and of the offline ``transcribe`` of the same files (the
  same decoding: the model's own search and LM), and how many finals equal the offline text;
- the share of utterances of 2 s or more whose text appears before their audio ends;
- algorithmic latency of final text (look-ahead + step) and the emission delay: for each word
  of the final result, the audio time at which it first shows in the partial text minus the
  word's end time in the final alignment (median and 90th percentile; negative: shown before
  the word was over);
- compute per chunk, real-time factor, and the real-time streams one core sustains (1 / RTF);
- the memory a stream holds (its audio window and decided frames) at its largest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kospeech.data.kaldi_io import audio_items, read_item  # noqa: E402
from kospeech.files import read_scp  # noqa: E402
from kospeech.metrics import score_corpus  # noqa: E402

SR = 16000
CHUNK_SECONDS = 0.16


def stream_one(model, wave: np.ndarray, look_ahead: float | None, step: float) -> dict:
    """Feed one utterance in chunks; what the stream showed when, and its final result."""
    stream = model.stream(endpoint=None, look_ahead=look_ahead, step_seconds=step)
    chunk = int(CHUNK_SECONDS * SR)
    shown: list[tuple[float, str]] = []
    compute = 0.0
    largest = 0
    for i in range(0, len(wave), chunk):
        start = time.perf_counter()
        text = stream.feed(wave[i : i + chunk])
        compute += time.perf_counter() - start
        shown.append((min(len(wave), i + chunk) / SR, text))
        largest = max(largest, stream.state_bytes())
    start = time.perf_counter()
    result = stream.finish()
    compute += time.perf_counter() - start
    return {"result": result, "shown": shown, "compute": compute, "chunks": len(shown), "bytes": largest,
            "latency": stream.latency}


def emission_delays(result, shown: list[tuple[float, str]]) -> list[float]:
    """Per final word: when the partial text first held it (in its place) minus the word's end."""
    delays = []
    end_of_audio = shown[-1][0] if shown else 0.0
    for k, word in enumerate(result.words):
        first = next((t for t, text in shown if len(text.split()) > k and text.split()[k] == word.text), end_of_audio)
        delays.append(first - word.end)
    return delays


def run(model, name: str, data_dir: Path, waves: dict[str, np.ndarray], look_ahead: float | None,
        offline: dict[str, str], step: float) -> dict:
    refs = read_scp(data_dir / "text")
    finals, delays, early, long_utts = {}, [], 0, 0
    compute = audio = 0.0
    chunks = 0
    largest = 0
    latency = None
    for utt, wave in waves.items():
        out = stream_one(model, wave, look_ahead, step)
        finals[utt] = out["result"].text
        delays += emission_delays(out["result"], out["shown"])
        if len(wave) >= 2 * SR:
            long_utts += 1
            early += any(text for t, text in out["shown"][:-1])
        compute, audio, chunks = compute + out["compute"], audio + len(wave) / SR, chunks + out["chunks"]
        largest, latency = max(largest, out["bytes"]), out["latency"]
    d = np.array(delays) if delays else np.zeros(1)
    return {
        "engine": name,
        "look_ahead": "full" if look_ahead is None else f"{look_ahead:.2f} s",
        "cer": score_corpus(refs, finals).cer,
        "offline_cer": score_corpus(refs, offline).cer,
        "same": sum(finals[u] == offline[u] for u in finals),
        "n": len(finals),
        "early": f"{early}/{long_utts}",
        "latency": "n/a" if latency is None else f"{latency:.2f} s",
        "delay": f"{np.median(d):.2f} / {np.percentile(d, 90):.2f}",
        "ms_chunk": 1000 * compute / max(chunks, 1),
        "rtf": compute / audio,
        "kb": largest / 1024,
    }


def main() -> None:
    import kospeech

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--onnx", help="the model's export dir: stream with the onnxruntime engine too")
    parser.add_argument("--look-ahead", type=float, nargs="*", default=[],
                        help="seconds of look-ahead to try besides the model's whole reach")
    parser.add_argument("--step", type=float, default=0.32, help="seconds of new audio that run the network again")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = [("torch", kospeech.load(args.model, device="cpu"))]
    if args.onnx:
        import kospeech.runtime

        models.append(("onnx", kospeech.runtime.load(args.onnx, int8=False, num_threads=1)))
    reach = models[0][1].stream_reach()
    print(f"model: {args.model}; reach: {reach.left / SR:.2f} s back, {reach.right / SR:.2f} s ahead, "
          f"{reach.stride / SR * 1000:.0f} ms per frame; chunks of {CHUNK_SECONDS * 1000:.0f} ms, "
          f"step {args.step:g} s, one thread")
    print("| data | engine | look-ahead | CER final | CER offline | finals = offline | text before the end "
          "| latency | emission delay median / p90 (s) | ms per chunk | RTF | streams per core | state KB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for data_dir in args.data:
        items = audio_items(data_dir)  # wav.scp's paths, pipes and segments alike
        waves = {u: read_item(item, sample_rate=SR) for u, item in items.items()}
        for name, model in models:
            offline = {u: r.text for u, r in zip(waves, model.transcribe(list(waves.values()), sample_rate=SR))}
            for look_ahead in [None, *(args.look_ahead if name == "torch" else [])]:  # the engines decide alike
                r = run(model, name, data_dir, waves, look_ahead, offline, args.step)
                print(f"| {data_dir.name} | {r['engine']} | {r['look_ahead']} | {r['cer']:.2f} "
                      f"| {r['offline_cer']:.2f} | {r['same']}/{r['n']} | {r['early']} | {r['latency']} "
                      f"| {r['delay']} | {r['ms_chunk']:.1f} "
                      f"| {r['rtf']:.4f} | {1 / r['rtf']:.0f} | {r['kb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
