"""What a KsponSpeech training run costs: one update of each model config at its recipe batch.

For each ``recipes/ksponspeech/conf/*.yaml`` model (or the configs named) this builds the model
and optimizer as the recipe does, feeds a synthetic batch of ``data.batch_frames`` feature
frames (utterances of ``--utt-seconds``, ``--tokens-per-second`` targets), and times forward,
loss, backward, gradient clipping and the optimizer step under the trainer's mixed precision
(bf16 where the GPU has it, else fp16 with a gradient scaler). It prints seconds per update,
peak GPU memory, hours of audio trained per GPU-hour, and the projected GPU-hours per epoch of
KsponSpeech's 965 h (one GPU, no data loading, no validation: a lower bound on a real epoch).

Why synthetic input: the GPU machines this runs on are lent for minutes and have torch but not
the corpus, the network, or necessarily our other dependencies; so it runs from the source
tree and imports only torch, numpy and the model code. Without PyYAML it reads the resolved
configs from ``bench/train_gpu_configs.json`` (``--write-configs`` refreshes it; a test checks
it matches the YAML).

Run:
  PYTHONPATH=. python bench/train_gpu.py                                  # CUDA + AMP, recipe batches
  PYTHONPATH=. python bench/train_gpu.py --device cpu --batch-frames 1500 --steps 1   # CPU, small batch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONF = ROOT / "recipes" / "ksponspeech" / "conf"
SNAPSHOT = Path(__file__).with_name("train_gpu_configs.json")
EPOCH_HOURS = 965.0  # KsponSpeech's training set
SECTIONS = ("data", "frontend", "model", "optimizer", "train")
# units of each config's tokenizer: run.sh's VOCAB_SIZE (5000), or what the config's header asks
VOCAB = {"conformer_espnet2_12x512": 2309}
DEFAULT_VOCAB = 5000
NUM_SPECIAL = 5  # kospeech.text.special: targets are drawn above the specials


def config_names() -> list[str]:
    return sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "base")


def resolved_configs(names: list[str]) -> dict[str, dict[str, Any]]:
    """The sections this bench uses of each config, from the YAML (or the JSON snapshot without PyYAML).

    A ``.json`` path is read as one resolved config (what ``kospeech config`` prints, as JSON).
    """
    if names and all(n.endswith(".json") for n in names):
        return {Path(n).stem: json.loads(Path(n).read_text(encoding="utf-8")) for n in names}
    try:
        from kospeech.config import load_config
    except ImportError:  # no PyYAML on this machine
        snap = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
        missing = [n for n in names if n not in snap]
        if missing:
            raise SystemExit(
                f"{SNAPSHOT} lacks {missing}; refresh it with --write-configs where PyYAML is installed"
            ) from None
        return {n: snap[n] for n in names}
    out = {}
    for name in names:
        path = Path(name) if name.endswith(".yaml") else CONF / f"{name}.yaml"
        cfg = load_config(path)
        out[path.stem] = {k: cfg[k] for k in SECTIONS if k in cfg}
    return out


def frame_rate(frontend: dict[str, Any]) -> float:
    return 1000.0 / float(frontend.get("frame_shift_ms", 10.0))


def synthetic_batch(
    cfg: dict[str, Any],
    batch_frames: int,
    utt_seconds: float,
    tokens_per_second: float,
    vocab: int,
    device: torch.device,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Equal-length utterances filling ``batch_frames`` (at least one), random features and targets."""
    g = torch.Generator().manual_seed(seed)
    fps = frame_rate(cfg["frontend"])
    frames = max(1, round(utt_seconds * fps))
    n = max(1, batch_frames // frames)
    dim = int(cfg["frontend"].get("n_mels", 80))
    tokens = max(1, round(utt_seconds * tokens_per_second))
    return {
        "features": torch.randn(n, frames, dim, generator=g).to(device),
        "feature_lengths": torch.full((n,), frames, device=device),
        "targets": torch.randint(NUM_SPECIAL, vocab, (n, tokens), generator=g).to(device),
        "target_lengths": torch.full((n,), tokens, device=device),
    }


def amp_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The trainer's ``train.amp``: auto = bf16 where supported, else fp16; none on CPU."""
    if device.type != "cuda" or mode == "none":
        return None
    if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def bench_one(name: str, cfg: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from kospeech.registry import build

    vocab = VOCAB.get(name, DEFAULT_VOCAB)
    batch_frames = args.batch_frames or int(cfg["data"].get("batch_frames", 20000))
    batch = synthetic_batch(cfg, batch_frames, args.utt_seconds, args.tokens_per_second, vocab, device)
    audio_s = float(batch["feature_lengths"].sum()) / frame_rate(cfg["frontend"])
    n_utts = batch["features"].size(0)
    torch.manual_seed(0)
    dim = batch["features"].size(2)
    model = build("model", cfg["model"], path="model", input_dim=dim, vocab_size=vocab).to(device).train()
    params = sum(p.numel() for p in model.parameters())
    optimizer = build("optimizer", cfg["optimizer"], path="optimizer", params=model.parameters())
    dtype = amp_dtype(device, args.amp if args.amp != "config" else str(cfg.get("train", {}).get("amp", "auto")))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    clip = float(cfg.get("train", {}).get("max_grad_norm", 5.0))

    def update() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(batch["features"], batch["feature_lengths"], batch["targets"], batch["target_lengths"])["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    row: dict[str, Any] = {
        "config": name,
        "params": params,
        "utts": n_utts,
        "audio_s": audio_s,
        "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
    }
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    try:
        update()  # the first update allocates Adam's state and picks kernels: not timed, but in the peak
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sec = (time.perf_counter() - start) / args.steps
    except torch.cuda.OutOfMemoryError:
        sec = None
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    model.cpu()  # free the device for the next config
    optimizer.state.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if sec is None:
        row.update(
            sec=None,
            peak_gib=peak,
            note=f"out of memory at {batch_frames} frames: lower data.batch_frames and raise train.accum_grad",
        )
        return row
    ratio = audio_s / sec
    row.update(sec=sec, peak_gib=peak, audio_h_per_h=ratio, epoch_h=EPOCH_HOURS / ratio, note="")
    return row


def table(rows: list[dict[str, Any]], unit: str = "GPU") -> str:
    lines = [
        f"| config | parameters | batch | precision | s / update | peak GPU memory | audio h / {unit}-h "
        f"| {unit}-h per {EPOCH_HOURS:.0f} h epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        batch = f"{r['utts']} x {r['audio_s'] / r['utts']:.1f} s"
        if r["sec"] is None:
            head = f"| {r['config']} | {r['params'] / 1e6:.1f}M | {batch} | {r['amp']}"
            lines.append(f"{head} | - | - | - | {r['note']} |")
            continue
        peak = f"{r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else "n/a (CPU)"
        epoch = f"{r['epoch_h']:.1f}" if r["epoch_h"] < 100 else f"{r['epoch_h']:,.0f}"
        lines.append(
            f"| {r['config']} | {r['params'] / 1e6:.1f}M | {batch} | {r['amp']} | {r['sec']:.3f} | {peak} "
            f"| {r['audio_h_per_h']:.3g} | {epoch} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--configs",
        nargs="*",
        default=None,
        help="config names in recipes/ksponspeech/conf or .yaml paths (default: every model config)",
    )
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument(
        "--batch-frames",
        type=int,
        default=0,
        help="feature frames per update (default: each config's data.batch_frames)",
    )
    p.add_argument("--utt-seconds", type=float, default=6.0, help="length of each synthetic utterance (default 6 s)")
    p.add_argument("--tokens-per-second", type=float, default=3.0, help="target tokens per second of audio (default 3)")
    p.add_argument("--steps", type=int, default=3, help="timed updates after one untimed (default 3)")
    p.add_argument(
        "--amp",
        default="config",
        choices=["config", "auto", "bf16", "fp16", "none"],
        help="mixed precision (default: the config's train.amp)",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument(
        "--write-configs",
        action="store_true",
        help=f"refresh {SNAPSHOT.name} from the YAML configs (needs PyYAML) and exit",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.write_configs:
        try:
            import kospeech.config  # noqa: F401
        except ImportError:
            raise SystemExit("--write-configs reads the YAML configs: it needs PyYAML") from None
        snap = resolved_configs(config_names())
        SNAPSHOT.write_text(json.dumps(snap, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {SNAPSHOT} ({len(snap)} configs)")
        return []
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --device cpu (and a small --batch-frames)")
    if args.threads:
        torch.set_num_threads(args.threads)
    from kospeech.registry.plugins import load_builtins

    try:
        load_builtins()
    except ImportError:  # no YAML / soundfile here: the model and optimizer code is all this needs
        load_builtins(only=("kospeech.nn", "kospeech.models", "kospeech.optim"))
    configs = resolved_configs(args.configs or config_names())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{where}; torch {torch.__version__}; synthetic utterances of {args.utt_seconds:g} s, "
        f"{args.tokens_per_second:g} tokens/s; {args.steps} timed updates after one untimed"
    )
    rows = []
    for name, cfg in configs.items():
        rows.append(bench_one(name, cfg, args, device))
        unit = "GPU" if device.type == "cuda" else "CPU"
        print(table(rows[-1:], unit).splitlines()[-1] if rows[1:] else table(rows, unit), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
