"""Long audio through the Python API: real-time factor and peak memory for 1, 10 and 60 minutes.

Builds the mini recipe's default model (``recipes/mini/conf/conv_ctc.yaml``, untrained: decoding
costs the same) on a jamo tokenizer, speaks 20 sentences with espeak-ng, tiles them (with
0.4 s pauses) into files of each length, and transcribes each file in a fresh process
(``kospeech.load(ckpt).transcribe(path)``), reading the peak resident memory (ru_maxrss) there.
The baseline in the same run is the old way: the whole file decoded in one piece
(``segment=False``), for the lengths where that still fits. Run: ``python bench/long_audio.py
[--minutes 1 10 60]`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "안녕하세요", "오늘 날씨가 좋네요", "밥 먹었어요", "지금 몇 시예요", "학교에 가요",
    "커피 한 잔 주세요", "감사합니다", "내일 만나요", "어디 가세요", "이거 얼마예요",
    "잘 지냈어요", "화장실이 어디예요", "천천히 말해 주세요", "다시 한번 말해 주세요", "배고파요",
    "주말에 뭐 해요", "버스 정류장이 어디예요", "생일 축하해요", "괜찮아요", "좋은 하루 보내세요",
]
SR = 16000
CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import kospeech
asr = kospeech.load(sys.argv[1], device="cpu", search="ctc_greedy")
t0 = time.perf_counter()
r = asr.transcribe(sys.argv[2], segment=sys.argv[3] == "1", batch_size=8, timestamps=sys.argv[5] == "1")
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "duration": r.duration, "ok": r.ok, "pieces": max(1, len(r.segments)),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_checkpoint(out: Path) -> Path:
    import torch

    from kospeech.config import load_config
    from kospeech.data.inputs import InputPipeline
    from kospeech.registry import build
    from kospeech.text import read_lang_dir, train_tokenizer
    from kospeech.torch_files import atomic_save

    cfg = load_config(ROOT / "recipes/mini/conf/conv_ctc.yaml")
    tok = train_tokenizer("jamo", SENTENCES, out / "lang")
    dim = InputPipeline.from_config(cfg["frontend"]).output_dim
    model = build("model", cfg["model"], path="model", input_dim=dim, vocab_size=tok.vocab_size)
    ckpt = {"model": model.state_dict(), "config": {"model": cfg["model"], "frontend": cfg["frontend"]},
            "model_args": {"input_dim": dim, "vocab_size": tok.vocab_size},
            "cmvn": {"mean": torch.zeros(dim), "std": torch.ones(dim)}, "tokenizer": read_lang_dir(out / "lang")}
    return atomic_save(ckpt, out / "model.pt")


def speech() -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    pieces = []
    for i, text in enumerate(SENTENCES):
        raw = subprocess.run(["espeak-ng", "-v", "ko" if i % 2 else "ko+f2", "-s", "150", "--stdout", text],
                             check=True, capture_output=True).stdout
        w, rate = sf.read(io.BytesIO(raw), dtype="float32")
        pieces += [AF.resample(torch.from_numpy(w), rate, SR).numpy(), np.zeros(int(0.4 * SR), np.float32)]
    return np.concatenate(pieces)


def run(ckpt: Path, path: Path, segment: bool, timestamps: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), str(path), "1" if segment else "0", str(ROOT),
                          "1" if timestamps else "0"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--baseline-up-to", type=float, default=10, help="decode in one piece up to this length")
    parser.add_argument("--checkpoint", default=None,
                        help="a trained checkpoint instead of the untrained mini default (realistic output)")
    parser.add_argument("--timestamps", type=int, default=1, help="1: word times (CTC alignment), 0: text only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else make_checkpoint(tmp_path)
        base = speech()
        what = args.checkpoint or "recipes/mini/conf/conv_ctc.yaml (untrained)"
        print(f"model: {what}, search ctc_greedy, timestamps {bool(args.timestamps)}, CPU, {time.strftime('%F')}")
        print(f"{'minutes':>8} {'way':>9} {'pieces':>7} {'RTF':>7} {'peak MiB':>9} {'vs one piece':>13}")
        for minutes in args.minutes:
            reps = int(np.ceil(minutes * 60 * SR / len(base)))
            path = tmp_path / f"{minutes:g}min.wav"
            sf.write(path, np.tile(base, reps)[: int(minutes * 60 * SR)], SR, subtype="PCM_16")
            rows = {"segmented": run(ckpt, path, True, bool(args.timestamps))}
            if minutes <= args.baseline_up_to:
                rows["one piece"] = run(ckpt, path, False, bool(args.timestamps))
            for way, r in rows.items():
                if "error" in r:
                    print(f"{minutes:>8g} {way:>9} failed: {r['error']}")
                    continue
                ratio = ""
                if way == "segmented" and "wall" in rows.get("one piece", {}):
                    one = rows["one piece"]
                    ratio = f"{r['wall'] / one['wall']:.2f}x time, {r['peak_mib'] / one['peak_mib']:.2f}x mem"
                print(f"{minutes:>8g} {way:>9} {r['pieces']:>7} {r['wall'] / r['duration']:>7.4f} "
                      f"{r['peak_mib']:>9.0f} {ratio:>13}")
            path.unlink()


if __name__ == "__main__":
    main()
