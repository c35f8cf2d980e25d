"""Training cost per update on CPU of the mini recipe's model configs, as ratios in one run.

A CPU recipe has a wall-clock budget, so what a model learns in it is set by how many updates
it gets. This times forward + CTC/attention loss + backward + Adam step of each
``recipes/mini/conf/*.yaml`` model on the same random batch (``--frames`` 10 ms frames in
utterances of 2.75 s, the mini recipe's batch) and prints seconds per update, audio seconds
trained per second, and each model's cost relative to ``deepspeech2.yaml`` (the baseline).

Run: ``python bench/train_step.py [--frames 2000] [--threads 2] [--steps 8] [--configs a b]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kospeech.config import load_config  # noqa: E402
from kospeech.registry import build  # noqa: E402

CONF = ROOT / "recipes" / "mini" / "conf"
BASELINE = "deepspeech2"
VOCAB = 73  # the mini jamo inventory with specials


def batch_for(frames: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Utterances of 275 frames (the mini mean) adding up to ``frames``, 12 jamo per second."""
    g = torch.Generator().manual_seed(seed)
    n = max(1, frames // 275)
    feats = torch.randn(n, 275, 80, generator=g)
    lengths = torch.full((n,), 275)
    targets = torch.randint(5, VOCAB, (n, 33), generator=g)
    return feats, lengths, targets, torch.full((n,), 33)


def seconds_per_update(name: str, batch: tuple[torch.Tensor, ...], steps: int) -> tuple[float, int]:
    cfg = load_config(CONF / f"{name}.yaml")
    torch.manual_seed(0)
    model = build("model", cfg["model"], path="model", input_dim=80, vocab_size=VOCAB)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def update() -> None:
        loss = model(*batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    update()  # warm-up: allocator, one-time kernels
    start = time.perf_counter()
    for _ in range(steps):
        update()
    return (time.perf_counter() - start) / steps, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--configs", nargs="*", default=[BASELINE, "conv_ctc", "conformer_ctc_attention"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [BASELINE] + [c for c in args.configs if c != BASELINE]
    batch = batch_for(args.frames)
    audio_s = float(batch[1].sum()) / 100
    print(f"{batch[0].size(0)} utterances, {audio_s:.1f} s of audio per update, {args.threads} threads")
    print(f"| config | parameters | s / update | audio s / s | cost vs {BASELINE} |")
    print("|---|---|---|---|---|")
    base = None
    for name in names:
        sec, params = seconds_per_update(name, batch, args.steps)
        base = base or sec
        print(f"| {name} | {params / 1e6:.2f}M | {sec:.3f} | {audio_s / sec:.0f} | {sec / base:.2f} |")


if __name__ == "__main__":
    main()
