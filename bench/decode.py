"""Decoding speed on CPU: real-time factor of every search, and what batching buys.

Builds two small untrained models (a Conformer with CTC + attention heads, and an RNN-T) on
20 real espeak-ng utterances' fbank features, then prints, for each search that fits, the
real-time factor (decode seconds / audio seconds, encoder included) over the whole set in
batches, and the speed-up of the batched beam search over decoding one utterance at a time.
Untrained models decode to their length limit, so absolute times are pessimistic; the
ratios are what this script is for. Run: ``python bench/decode.py`` (about a minute on 1 core).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kospeech.registry import build  # noqa: E402

SENTENCES = [
    "안녕하세요", "오늘 날씨가 좋네요", "밥 먹었어요", "지금 몇 시예요", "학교에 가요",
    "커피 한 잔 주세요", "감사합니다", "내일 만나요", "어디 가세요", "이거 얼마예요",
    "잘 지냈어요", "화장실이 어디예요", "천천히 말해 주세요", "다시 한번 말해 주세요", "배고파요",
    "주말에 뭐 해요", "버스 정류장이 어디예요", "생일 축하해요", "괜찮아요", "좋은 하루 보내세요",
]
SR = 16000
TINY = {"d_model": 64, "num_heads": 4, "ff_dim": 128, "num_layers": 2, "dropout": 0.0}
CONFORMER = {"name": "conformer", "encoder": {"name": "conformer", "d_model": 64, "ff_dim": 128, "num_layers": 2,
                                              "dropout": 0.0},
             "decoder": {"name": "transformer", **TINY}, "ctc_weight": 0.3}
RNNT = {"name": "rnnt", "encoder": {"name": "conformer", "d_model": 64, "ff_dim": 128, "num_layers": 2,
                                    "dropout": 0.0},
        "predictor": {"name": "transducer", "embed_dim": 32, "hidden_dim": 64}, "joint_dim": 64}
SEARCHES = [
    ("greedy", {}), ("beam", {"beam_size": 4}), ("ctc_greedy", {}), ("ctc_prefix_beam", {"beam_size": 4}),
    ("joint_ctc_attention", {"beam_size": 4}), ("attention_rescoring", {"beam_size": 4}),
    ("transducer_greedy", {}), ("transducer_beam", {"beam_size": 4}),
]
VOCAB = 300  # about a KsponSpeech-sized character vocabulary would be 2000; kept small for CPU


def speech() -> tuple[torch.Tensor, torch.Tensor, float]:
    """fbank features (B, T, 80) of the sentences, their lengths, and the total audio seconds."""
    import torchaudio.functional as AF

    frontend = build("frontend", {"name": "fbank", "n_mels": 80})
    waves = []
    for i, text in enumerate(SENTENCES):
        out = subprocess.run(["espeak-ng", "-v", "ko" if i % 2 else "ko+f2", "-s", "150", "--stdout", text],
                             check=True, capture_output=True).stdout
        w, rate = sf.read(io.BytesIO(out), dtype="float32")
        waves.append(AF.resample(torch.from_numpy(w), rate, SR))
    lens = torch.tensor([len(w) for w in waves])
    padded = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        padded[i, : len(w)] = w
    with torch.no_grad():
        feats, flens = frontend(padded, lens)
    mean, std = feats[0, : flens[0]].mean(0), feats[0, : flens[0]].std(0) + 1e-5
    return (feats - mean) / std, flens, float(lens.sum()) / SR


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    feats, lens, audio_s = speech()
    print(f"{len(SENTENCES)} utterances, {audio_s:.1f} s of audio, vocab {VOCAB}, CPU, 1 thread")
    print(f"{'model':<10} {'search':<22} {'RTF total':>10} {'RTF search':>11}   (batch of {len(SENTENCES)})")
    models = {"conformer": build("model", CONFORMER, input_dim=80, vocab_size=VOCAB).eval(),
              "rnnt": build("model", RNNT, input_dim=80, vocab_size=VOCAB).eval()}
    for mname, model in models.items():
        with torch.no_grad():
            model.encode(feats[:2], lens[:2])  # warm-up
            t_enc = timed(lambda m=model: m.encode(feats, lens))
            enc, enc_lens = model.encode(feats, lens)
        print(f"{mname:<10} {'(encoder only)':<22} {t_enc / audio_s:10.4f}")
        for sname, opts in SEARCHES:
            cfg = {"name": sname, **opts}
            if sname in ("greedy", "beam", "joint_ctc_attention"):
                cfg["max_len_ratio"] = 0.3  # untrained decoders never say <eos>: cap their output length
            try:
                search = build("search", cfg, model=model)
            except Exception:
                continue  # the model lacks the head this search needs
            t = timed(lambda s=search, e=enc, el=enc_lens: s(e, el))
            print(f"{mname:<10} {sname:<22} {(t + t_enc) / audio_s:10.4f} {t / audio_s:11.4f}")

    model = models["conformer"]
    beam = build("search", {"name": "beam", "beam_size": 4, "max_len_ratio": 0.3}, model=model)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
        batched = timed(lambda: beam(enc, enc_lens))
        single = timed(lambda: [beam(enc[i : i + 1, : int(enc_lens[i])], enc_lens[i : i + 1])
                                for i in range(len(SENTENCES))])
    print(f"\nbeam search (beam 4), decoder only: batched {batched:.2f} s, one at a time {single:.2f} s, "
          f"speed-up x{single / batched:.1f}")


if __name__ == "__main__":
    main()
