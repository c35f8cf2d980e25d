"""CPU speed of an exported model: PyTorch vs onnxruntime (fp32) vs onnxruntime int8, in one run.

Builds the mini recipe's default model (``recipes/mini/conf/conv_ctc.yaml``: convolution-only
CTC, 256 x 10 separable blocks, 80-dim fbank, jamo units; untrained, which changes nothing
about speed), saves it as a checkpoint, exports it with ``--quantize int8`` and transcribes 20
espeak-ng utterances with each path end to end (audio array in, Result with word times out,
greedy CTC): ``kospeech.load(ckpt).transcribe`` against ``kospeech.runtime.load(dir)``. One
thread each; best of three runs after a warm-up. Prints the real-time factor (seconds of
compute per second of audio) and each path's speed relative to PyTorch.
Run: ``python bench/export.py`` (about a minute).

With a trained checkpoint or a package and data dirs, ``python bench/export.py MODEL DATA_DIR...``
exports that model instead and prints, per data dir, each path's CER on its ``text``, how many
transcripts equal PyTorch's, and the wall time and real-time factor of one pass (2 threads). A
package decodes with its own search and LM on every path (the recipe's prefix beam with the
n-gram: the torch engine's batched search against the runtime's numpy one).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decode import SENTENCES  # noqa: E402  (the 20 sentences of the decoding benchmark)
from kospeech.audio import resample_wave  # noqa: E402

SR = 16000


def speech() -> list[np.ndarray]:
    waves = []
    for i, text in enumerate(SENTENCES):
        out = subprocess.run(["espeak-ng", "-v", "ko" if i % 2 else "ko+f2", "-s", "150", "--stdout", text],
                             check=True, capture_output=True).stdout
        w, rate = sf.read(io.BytesIO(out), dtype="float32")
        waves.append(resample_wave(w, rate, SR))
    return waves


def checkpoint(waves: list[np.ndarray], out: Path) -> Path:
    """The mini default model, untrained, as a checkpoint with its tokenizer and CMVN."""
    from kospeech.data.cmvn import compute_cmvn
    from kospeech.data.frontends import build_frontend
    from kospeech.metadata import make_metadata
    from kospeech.registry import build
    from kospeech.text import read_lang_dir, train_tokenizer
    from kospeech.train.checkpoint import write_checkpoint

    conf = yaml.safe_load((ROOT / "recipes/mini/conf/conv_ctc.yaml").read_text(encoding="utf-8"))
    base = yaml.safe_load((ROOT / "recipes/mini/conf/base.yaml").read_text(encoding="utf-8"))
    model_cfg, frontend_cfg = conf["model"], base["frontend"]
    tok = train_tokenizer("jamo", SENTENCES, out / "lang")
    frontend = build_frontend(frontend_cfg)
    mean, std = compute_cmvn(frontend.extract(w) for w in waves)
    torch.manual_seed(0)
    model = build("model", model_cfg, path="model", input_dim=frontend.output_dim, vocab_size=tok.vocab_size)
    return write_checkpoint({
        "model": model.state_dict(),
        "config": {"model": model_cfg, "frontend": frontend_cfg, "decode": {"search": {"name": "ctc_greedy"}}},
        "model_args": {"input_dim": frontend.output_dim, "vocab_size": tok.vocab_size},
        "cmvn": {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)},
        "tokenizer": read_lang_dir(out / "lang"),
        "metadata": make_metadata("checkpoint"),
    }, out / "model.pt")


def best_of(fn, runs: int = 3) -> float:
    fn()  # warm-up: first-call allocations, kernel selection
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def trained(checkpoint: str, data_dirs: list[str]) -> None:
    """CER and agreement of the three paths on real test sets, for a trained checkpoint."""
    import kospeech
    from kospeech import runtime
    from kospeech.data.kaldi_io import audio_items, read_item
    from kospeech.export.onnx import export_onnx
    from kospeech.files import read_utt_text
    from kospeech.metrics import score_corpus

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = export_onnx(checkpoint, Path(tmp) / "onnx", quantize="int8")
        paths = {
            "pytorch": kospeech.load(checkpoint, device="cpu"),
            "onnxruntime": runtime.load(export_dir, int8=False, num_threads=2),
            "onnxruntime int8": runtime.load(export_dir, int8=True, num_threads=2),
        }
        for data in data_dirs:
            refs = read_utt_text(Path(data) / "text", allow_empty=False)
            items = audio_items(data)  # wav.scp's paths, pipes and segments alike
            ids = list(refs)
            waves = [read_item(items[u], sample_rate=SR) for u in ids]
            audio_s = sum(w.size for w in waves) / SR
            texts = {}
            for name, model in paths.items():
                t0 = time.perf_counter()
                texts[name] = [r.text for r in model.transcribe(waves, sample_rate=SR)]
                wall = time.perf_counter() - t0
                cer = score_corpus(refs, dict(zip(ids, texts[name]))).cer
                same = sum(a == b for a, b in zip(texts[name], texts["pytorch"]))
                print(f"{Path(data).name:<12} {name:<18} CER {cer:6.2f}%  = PyTorch {same}/{len(ids)}  "
                      f"{wall:6.1f} s  RTF {wall / audio_s:.4f}  ({model.search_cfg['name']})", flush=True)


def main() -> None:
    import kospeech
    from kospeech import runtime
    from kospeech.export.onnx import export_onnx

    torch.set_num_threads(1)
    waves = speech()
    audio_s = sum(w.size for w in waves) / SR
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = checkpoint(waves, Path(tmp))
        export_dir = export_onnx(ckpt, Path(tmp) / "onnx", quantize="int8")
        sizes = {p.name: p.stat().st_size / 1e6 for p in export_dir.glob("*.onnx")}
        paths = {
            "pytorch": kospeech.load(ckpt, device="cpu"),
            "onnxruntime": runtime.load(export_dir, int8=False, num_threads=1),
            "onnxruntime int8": runtime.load(export_dir, int8=True, num_threads=1),
        }
        texts = {name: [r.text for r in m.transcribe(waves, sample_rate=SR)] for name, m in paths.items()}
        seconds = {name: best_of(lambda m=m: m.transcribe(waves, sample_rate=SR)) for name, m in paths.items()}
    print(f"{len(waves)} utterances, {audio_s:.1f} s of audio; mini conv_ctc model (untrained), CPU, 1 thread; "
          f"model.onnx {sizes['model.onnx']:.1f} MB, model.int8.onnx {sizes['model.int8.onnx']:.1f} MB")
    print(f"{'path':<18} {'RTF':>8} {'speed vs PyTorch':>17} {'transcripts = PyTorch':>22}")
    for name, sec in seconds.items():
        same = sum(a == b for a, b in zip(texts[name], texts["pytorch"]))
        print(f"{name:<18} {sec / audio_s:8.4f} {seconds['pytorch'] / sec:16.2f}x {same:>16}/{len(waves)}")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        trained(sys.argv[1], sys.argv[2:])
    else:
        main()
