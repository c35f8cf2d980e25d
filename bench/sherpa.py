"""sherpa-onnx against our runtime on the same files: equal tokens and transcripts, CER, real-time factor.

``python bench/sherpa.py MODEL DATA_DIR... [--noise-floor STD] [--chunk-size N]`` exports MODEL (a
checkpoint or package whose frontend is ``kaldi_fbank``) three times into a temporary folder, for
``kospeech.runtime``, with ``--format sherpa-onnx`` and with ``--format sherpa-onnx-online``, and
decodes every utterance of each Kaldi data dir (``wav.scp``, ``text``) with all three, greedy CTC,
one thread, one utterance at a time, after a warm-up. sherpa-onnx's text is read as our detokenizer
reads jamo (NFC, orphan jamo dropped; NFC alone is printed too).

The online recognizer, built as the export's README shows (dither on), gets each file whole, then the
tail padding (quiet noise), chunk by chunk (``--chunk-size``, 16 by default): compared with our
runtime on the whole recording (what a user sees). As a check of the implementation, it runs again
without dither (from_wenet_ctc's default) and is compared with our runtime over the frames it ran,
on the same padded audio with our fbank's dither off too.

sherpa-onnx dithers (std 1 on the int16 scale, whatever its config says: measured on 2.0.1), so on
digital silence (exact zeros, as synthetic speech has) its own output varies from run to run; the
script prints how often two sherpa-onnx passes agree, and ``--noise-floor 1e-3`` adds a quiet
microphone's noise (33 on the int16 scale, the same draw for both) so that the dither no longer
decides and what is left is the difference between the two implementations.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kospeech.cli import main as cli  # noqa: E402
from kospeech.data.kaldi_io import audio_items, read_item  # noqa: E402
from kospeech.files import read_scp  # noqa: E402
from kospeech.metrics import align  # noqa: E402
from kospeech.text.hangul import to_valid_text  # noqa: E402

SR = 16000


def sherpa_pass(recognizer: object, waves: list[np.ndarray]) -> list[tuple[str, list[str]]]:
    out = []
    for wave in waves:
        stream = recognizer.create_stream()  # type: ignore[attr-defined]
        stream.accept_waveform(SR, wave)
        recognizer.decode_stream(stream)  # type: ignore[attr-defined]
        out.append((" ".join(unicodedata.normalize("NFC", stream.result.text).split()), list(stream.result.tokens)))
    return out


def cer(refs: list[str], hyps: list[str]) -> float:
    errors = length = 0
    for ref, hyp in zip(refs, hyps):
        a = align(list(ref.replace(" ", "")), list(hyp.replace(" ", "")))
        errors += a.count("S") + a.count("D") + a.count("I")
        length += len(ref.replace(" ", ""))
    return 100 * errors / max(1, length)


def compare(onnx_dir: Path, sherpa_dir: Path, online_dir: Path, data: Path, noise_floor: float,
            chunk_size: int) -> None:
    import sherpa_onnx
    import yaml

    from kospeech import runtime

    items, texts = audio_items(data), read_scp(data / "text", allow_empty=True)
    ids = sorted(items)
    waves = [read_item(items[u], sample_rate=SR) for u in ids]
    zeros = float(np.mean(np.concatenate(waves) == 0))
    if noise_floor:
        rng = np.random.default_rng(0)
        waves = [(w + rng.normal(0, noise_floor, w.size)).astype(np.float32) for w in waves]
    seconds = sum(w.size for w in waves) / SR
    ours_model = runtime.load(onnx_dir, num_threads=1, search="ctc_greedy")
    dim = int(yaml.safe_load((sherpa_dir / "sherpa.yaml").read_text(encoding="utf-8"))["feature_dim"])
    recognizer = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(sherpa_dir / "model.onnx"), num_threads=1,
                                                             tokens=str(sherpa_dir / "tokens.txt"), feature_dim=dim)
    ours_model.transcribe(waves[0], sample_rate=SR)  # warm-up
    sherpa_pass(recognizer, waves[:1])
    start = time.perf_counter()
    ours = [ours_model.transcribe(w, sample_rate=SR, timestamps=False) for w in waves]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = sherpa_pass(recognizer, waves)
    t_sherpa = time.perf_counter() - start
    again = sherpa_pass(recognizer, waves)
    unit, space = ours_model.tokenizer.id_to_token, ours_model.tokenizer.space_symbol
    our_tokens = [[" " if unit(i) == space else unit(i) for i in r.tokens] for r in ours]
    cleaned = [" ".join(to_valid_text(text).split()) for text, _ in theirs]
    refs, n = [texts.get(u, "") for u in ids], len(ids)
    print(f"{data}: {n} utterances, {seconds:.1f} s, {100 * zeros:.1f}% exact-zero samples, "
          f"noise floor {noise_floor:g}")
    print(f"  tokens equal {sum(a == b for a, (_, b) in zip(our_tokens, theirs))}/{n}; transcripts equal "
          f"{sum(r.text == c for r, c in zip(ours, cleaned))}/{n} (NFC alone "
          f"{sum(r.text == t for r, (t, _) in zip(ours, theirs))}/{n}); sherpa-onnx twice: "
          f"{sum(a == b for (_, a), (_, b) in zip(theirs, again))}/{n} equal")
    print(f"  CER % ours {cer(refs, [r.text for r in ours]):.2f}, sherpa-onnx {cer(refs, cleaned):.2f}; "
          f"RTF (1 thread) ours {t_ours / seconds:.4f}, sherpa-onnx {t_sherpa / seconds:.4f}")
    online_pass(ours_model, online_dir, waves, [r.text for r in ours], refs, chunk_size)


def online_pass(ours_model: object, online_dir: Path, waves: list[np.ndarray], ours: list[str], refs: list[str],
                chunk_size: int) -> None:
    """The online recognizer on the same waves: agreement with our runtime (whole recordings, and the
    frames it ran with the same features), CER, RTF."""
    from kospeech.export.sherpa_online import load_window, online_recognizer, tail_padding, transcribe_online
    from kospeech.runtime.ctc import greedy

    tail = tail_padding(load_window(online_dir), chunk_size, SR)
    recognizer = online_recognizer(online_dir, chunk_size=chunk_size)  # as README.md: dithered unless floored
    transcribe_online(recognizer, waves[0], SR, tail)  # warm-up
    start = time.perf_counter()
    answers = [transcribe_online(recognizer, w, SR, tail) for w in waves]
    elapsed = time.perf_counter() - start
    nfc = [" ".join(unicodedata.normalize("NFC", text).split()) for text, _, _ in answers]
    cleaned = [" ".join(to_valid_text(t).split()) for t in nfc]
    plain = online_recognizer(online_dir, chunk_size=chunk_size, dither=0.0)  # deterministic, for the check
    answers = [transcribe_online(plain, w, SR, tail) for w in waves]
    plain_cleaned = [" ".join(to_valid_text(unicodedata.normalize("NFC", t)).split()) for t, _, _ in answers]
    frontend = ours_model.frontend  # type: ignore[attr-defined]
    dither, frontend.dither = frontend.dither, 0.0  # sherpa-onnx's online features
    try:
        stable = [ours_model.tokenizer.decode(greedy(  # type: ignore[attr-defined]
            ours_model.log_probs([np.concatenate([w, tail])])[0][: chunks * chunk_size])[0])  # type: ignore[attr-defined]
            for w, (_, _, chunks) in zip(waves, answers)]
    finally:
        frontend.dither = dither
    n, seconds = len(waves), sum(w.size for w in waves) / SR
    print(f"  online (chunk_size {chunk_size}, tail {tail.size / SR:.2f} s): transcripts equal to ours "
          f"{sum(a == b for a, b in zip(ours, cleaned))}/{n} (NFC alone {sum(a == b for a, b in zip(ours, nfc))}/{n}); "
          f"undithered, over the frames it ran, same features: {sum(a == b for a, b in zip(stable, plain_cleaned))}"
          f"/{n} (whole recordings {sum(a == b for a, b in zip(ours, plain_cleaned))}/{n}); "
          f"CER % {cer(refs, cleaned):.2f}; RTF (1 thread) {elapsed / seconds:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("data", nargs="+")
    parser.add_argument("--noise-floor", type=float, default=0.0)
    parser.add_argument("--chunk-size", type=int, default=16, help="the online recognizer's chunk_size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {fmt: Path(tmp) / fmt for fmt in ("onnx", "sherpa-onnx", "sherpa-onnx-online")}
        if any(cli(["export", args.model, "--format", fmt, "--out", str(d)]) for fmt, d in dirs.items()):
            sys.exit(1)
        for data in args.data:
            compare(dirs["onnx"], dirs["sherpa-onnx"], dirs["sherpa-onnx-online"], Path(data), args.noise_floor,
                    args.chunk_size)


if __name__ == "__main__":
    main()
