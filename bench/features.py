"""Frontend speed (torchaudio vs librosa) and batching padding (buckets vs plain shuffle), in one run.

    python bench/features.py

1. Synthesises ~60 s of Korean speech with espeak-ng, then times every frontend with each
   backend on the same audio, one thread each: real-time factor (compute seconds per audio
   second; lower is faster), and the torchaudio/librosa ratio. torchaudio is also timed
   batched (the on-the-fly path: one padded batch through ``forward``). Each backend is
   warmed up first, so librosa's one-off import/JIT cost (seconds) is reported separately.
2. Padding fraction of ``BucketBatchSampler`` against a plain shuffled batcher with the same
   padded-frames budget, on a KsponSpeech-like length distribution (log-normal around 3 s).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import io  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

SAMPLE_RATE = 16000
TARGET_SECONDS = 60.0
FALLBACK = ["안녕하세요 반갑습니다", "오늘 날씨가 정말 좋네요", "커피 한 잔 주세요", "내일 학교에서 만나요"]


def synthesise(target_seconds: float = TARGET_SECONDS) -> list[np.ndarray]:
    import torchaudio.functional as AF

    try:
        from kospeech.text.normalize import normalize_kspon
        from kospeech.text.sentences import load_sentences

        sentences = [normalize_kspon(s, "phonetic") for s in load_sentences()]
        sentences = [s for s in sentences if s]
    except Exception:  # the bench must run even if the text package changes
        sentences = FALLBACK
    waves: list[np.ndarray] = []
    total = 0.0
    i = 0
    while total < target_seconds:
        text = sentences[i % len(sentences)]
        voice = ["ko", "ko+f2", "ko+m3"][i % 3]
        raw = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(140 + 10 * (i % 4)), "--stdout", text], check=True, capture_output=True
        ).stdout
        wave, rate = sf.read(io.BytesIO(raw), dtype="float32")
        wave = AF.resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()
        waves.append(wave)
        total += len(wave) / SAMPLE_RATE
        i += 1
    return waves


def time_it(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_frontends(waves: list[np.ndarray]) -> None:
    from kospeech.data.frontends import build_frontend

    seconds = sum(len(w) for w in waves) / SAMPLE_RATE
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)

    warm = time_it(lambda: build_frontend({"name": "fbank", "backend": "librosa"}).extract(waves[0]))
    print(f"\n{len(waves)} utterances, {seconds:.1f} s of espeak-ng speech; librosa first call: {warm:.1f} s")
    print(
        f"{'frontend':<12} {'dim':>4} {'librosa RTF':>12} {'torchaudio RTF':>15} {'ta/librosa':>11} "
        f"{'ta batched RTF':>15} {'max |diff|':>10}" + (f" {'cuda batched':>12}" if torch.cuda.is_available() else "")
    )
    for name in ("spectrogram", "mel", "fbank", "mfcc"):
        ta = build_frontend({"name": name})
        lb = build_frontend({"name": name, "backend": "librosa"})
        ta.extract(waves[0])
        lb.extract(waves[0])
        t_lb = time_it(lambda lb=lb: [lb.extract(w) for w in waves], repeat=2)
        t_ta = time_it(lambda ta=ta: [ta.extract(w) for w in waves], repeat=2)
        with torch.no_grad():
            t_batch = time_it(lambda ta=ta: ta(batch, lengths), repeat=2)
        diff = max(float(np.abs(ta.extract(w) - lb.extract(w)).max()) for w in waves[:5])
        gpu = ""
        if torch.cuda.is_available():
            ta_gpu, batch_gpu, lengths_gpu = ta.to("cuda"), batch.to("cuda"), lengths.to("cuda")

            def run_gpu(ta_gpu=ta_gpu, batch_gpu=batch_gpu, lengths_gpu=lengths_gpu) -> None:
                with torch.no_grad():
                    ta_gpu(batch_gpu, lengths_gpu)
                torch.cuda.synchronize()

            run_gpu()
            gpu = f" {time_it(run_gpu, repeat=3) / seconds:>12.6f}"
        print(
            f"{name:<12} {ta.output_dim:>4} {t_lb / seconds:>12.5f} {t_ta / seconds:>15.5f} "
            f"{t_ta / t_lb:>11.2f} {t_batch / seconds:>15.5f} {diff:>10.1e}{gpu}"
        )


def bench_padding() -> None:
    from kospeech.data.sampler import BucketBatchSampler, padded_fraction, shuffled_batches, shuffled_fixed_batches

    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(300), 0.6, 20000), 50, 3000).astype(int)  # frames (10 ms)
    budget = 20000
    print(
        f"\npadding on {len(lengths)} utterances (median {np.median(lengths) / 100:.1f} s, "
        f"{lengths.min() / 100:.1f}-{lengths.max() / 100:.1f} s), batch_frames={budget}"
    )
    plain = np.mean(
        [padded_fraction(lengths, shuffled_batches(lengths, batch_frames=budget, seed=s)) for s in range(3)]
    )
    fixed = padded_fraction(lengths, shuffled_fixed_batches(lengths, batch_frames=budget))
    print(
        f"  plain shuffle, same padded budget:  {plain:6.1%} padding, "
        f"{len(shuffled_batches(lengths, batch_frames=budget))} batches"
    )
    print(f"  plain shuffle, fixed batch size:    {fixed:6.1%} padding (batch = budget / mean length)")
    for buckets in (5, 10, 20):
        sampler = BucketBatchSampler(lengths, batch_frames=budget, num_buckets=buckets, seed=0)
        ours = np.mean([sampler.padding_fraction(e) for e in range(3)])
        print(
            f"  BucketBatchSampler num_buckets={buckets:<3}  {ours:6.1%} padding, {len(sampler)} batches, "
            f"{plain / ours:.0f}x less padding than plain shuffle"
        )


def main() -> None:
    torch.set_num_threads(1)
    start = time.perf_counter()
    waves = synthesise()
    print(f"synthesis: {time.perf_counter() - start:.1f} s")
    bench_frontends(waves)
    bench_padding()
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
