"""Cost of LM shallow fusion in the CTC prefix beam search, per LM kind, as ratios in one run.

Builds the n-grams from the training text (timing the build), and an LSTM (1 x 256, the mini
README's) and a small Transformer LM (2 x 256) with random weights (their cost does not depend
on the weights), then decodes the same CTC posteriors with ``ctc_prefix_beam`` (beam 10): peaky
posteriors spelling real test sentences (one frame per unit, then a blank frame, 20% of the
mass on another unit), so the beam keeps several live prefixes as it does on real audio.
Prints the n-gram build times and perplexities, then seconds per LM and the ratio to no LM.

Run (after ``recipes/mini/run.sh --stop-stage 1``): ``python bench/lm_fusion.py
[--data recipes/mini/data] [--utts 64] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kospeech.lm.loading import load_lm  # noqa: E402
from kospeech.lm.ngram import ngram_perplexity, train_ngram  # noqa: E402
from kospeech.lm.text import encode_sentences, read_transcripts  # noqa: E402
from kospeech.registry import build  # noqa: E402
from kospeech.search.ctc import ctc_prefix_beam_search  # noqa: E402
from kospeech.text import load_tokenizer  # noqa: E402
from kospeech.text.special import BLANK_ID, NUM_SPECIAL  # noqa: E402


def posteriors(seqs: list[list[int]], V: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = 2 * max(len(s) for s in seqs)
    out = torch.full((len(seqs), T, V), 1e-4)
    out[:, :, BLANK_ID] = 1.0
    for b, s in enumerate(seqs):
        for i, u in enumerate(s):
            other = int(torch.randint(NUM_SPECIAL, V, (1,), generator=g))
            out[b, 2 * i] = 1e-4
            out[b, 2 * i, u] = 0.8
            out[b, 2 * i, other] += 0.2
    lengths = torch.tensor([2 * len(s) for s in seqs])
    return out.log().log_softmax(-1), lengths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="recipes/mini/data")
    ap.add_argument("--utts", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    tok = load_tokenizer(data / "lang")
    train = read_transcripts(data / "train" / "text")
    test = encode_sentences(read_transcripts(data / "eval_clean" / "text"), tok)[: args.utts]
    V = tok.vocab_size

    lms: dict[str, object] = {"none": None}
    with tempfile.TemporaryDirectory() as tmp:
        for name, order, unit in (("ngram3", 3, "token"), ("ngram5", 5, "token"), ("word3", 3, "word")):
            t0 = time.perf_counter()
            train_ngram(train, tok, Path(tmp) / name, order=order, unit=unit)
            built = time.perf_counter() - t0
            lm = load_lm(Path(tmp) / name)
            ppl = ngram_perplexity(lm, test)
            per = "word" if unit == "word" else "unit"
            print(f"{name}: built in {built:.2f} s from {len(train)} sentences; eval_clean ppl {ppl:.2f} per {per}")
            lms[name] = lm
        torch.manual_seed(0)
        lms["lstm 1x256"] = build("lm", {"name": "lstm", "hidden": 256, "layers": 1}, vocab_size=V).eval()
        lms["transformer 2x256"] = build(
            "lm", {"name": "transformer", "d_model": 256, "num_heads": 4, "ff_dim": 1024, "num_layers": 2},
            vocab_size=V,
        ).eval()

        batches = [posteriors(test[i : i + args.batch], V) for i in range(0, len(test), args.batch)]
        base = None
        for name, lm in lms.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                for lp, lens in batches:
                    ctc_prefix_beam_search(lp, lens, 10, lm=lm, lm_weight=0.5 if lm is not None else 0.0)
            sec = time.perf_counter() - t0
            base = base or sec
            print(f"{name:>18}: {sec:6.2f} s for {len(test)} utterances ({sec / base:.2f}x no LM)")


if __name__ == "__main__":
    main()
