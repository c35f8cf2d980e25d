"""One LAS training step: the original KoSpeech (the "seed") against ours, interleaved (issue 27).

Times forward + loss + backward + Adam step of the seed's ``ListenAttendSpell`` and of ours
(``recipes/ksponspeech/conf/las.yaml``) on the same random batch (seeded): batch 8, 400 frames of
80 mels, 40-token targets, vocabulary 2,038. The steps alternate (seed, ours, seed, ours, ...) so
the shared machine's load hits both alike; it prints the median seconds per step of each and the
ratio ours / seed. ``--profile`` then runs ``torch.profiler`` (CPU) over a few steps of each and
prints the top ops by self CPU time.

The seed is the KoSpeech checkout at ``--seed-path`` (``git clone
https://github.com/sooftware/kospeech DIR``); it is not a dependency of this project. Its package is also named
``kospeech``, so only the files its LAS needs (``kospeech/models/{modules,activation,convolution,
attention,encoder,decoder,model}.py``, ``kospeech/models/las/{encoder,decoder,model}.py`` and its
criterion ``kospeech/criterion/label_smoothed_cross_entropy.py``) are loaded as
``seed_kospeech.*``: while they load, our ``kospeech*`` entries of ``sys.modules`` are set aside
and ``kospeech.*`` aliases the seed's modules (its absolute imports resolve to them); then ours
come back. The seed's package ``__init__`` files (which import every model, Hydra configs,
...) are not run; the one name ``las/model.py`` takes from ``kospeech.models`` (``EncoderRNN``,
``DecoderRNN``) is set on the bare package. Those files need only torch and numpy: nothing is
stubbed (no hydra, omegaconf).

The seed is built as its ``kospeech/model_builder.py::build_las`` does: a 3-layer BiLSTM
listener, a 2-layer LSTM speller of twice its size (``hidden_dim << 1``), ``multi-head``
attention, VGG extractor, hardtanh, dropout 0.3, max_len 400, teacher forcing 1.0; pad/sos/eos
0/1/2 (its KsponSpeech vocabulary). By default it has the size of its README's LAS, which our
config and ``tests/test_las.py`` follow (listener 256, speller 512, 8 heads: 16.79M parameters
against our 16.53M), so two implementations of one model are compared; ``--seed-hidden-dim 512
--seed-heads 4`` builds its HEAD ``configs/model/las.yaml`` instead (51.7M). Its loss is its
trainer's for LAS (``kospeech/utils.py::get_criterion``): its ``LabelSmoothedCrossEntropyLoss`` with smoothing 0.1
and reduction 'mean' (``configs/train/las_train.yaml``) on ``targets[:, 1:]``. Both get Adam at
lr 1e-4, weight decay 1e-5 (both recipes); neither clips gradients here (both trainers clip at 400).

Run: ``PYTHONPATH=. python bench/las_vs_seed.py --seed-path /tmp/seed_kospeech [--steps 10]
[--warmup 2] [--threads 2] [--profile]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kospeech.config import load_config  # noqa: E402
from kospeech.registry import build  # noqa: E402
from kospeech.train.options import resolve_amp  # noqa: E402

CONF = ROOT / "recipes" / "ksponspeech" / "conf" / "las.yaml"
VOCAB = 2038
BATCH, FRAMES, MELS, TOKENS = 8, 400, 80, 40
SEED_PAD, SEED_SOS, SEED_EOS = 0, 1, 2  # the seed's KsponSpeech vocabulary
# in load order: each file's ``from kospeech.X import ...`` names only files above it
SEED_PACKAGES = ("", "models", "models.las", "criterion")
SEED_MODULES = (
    "models.modules", "models.activation", "models.convolution", "models.attention",
    "models.encoder", "models.decoder", "models.model",
    "models.las.encoder", "models.las.decoder", "models.las.model",
    "criterion.label_smoothed_cross_entropy",
)


def _ours_in(modules: dict[str, Any]) -> list[str]:
    return [k for k in modules if k == "kospeech" or k.startswith("kospeech.")]


def load_seed(seed_path: Path) -> dict[str, types.ModuleType]:
    """The seed's LAS files as ``seed_kospeech.<sub>`` modules, keyed by ``<sub>``."""
    src = seed_path / "kospeech"
    if not (src / "models" / "las" / "model.py").is_file():
        sys.exit(f"{seed_path}: no kospeech/models/las/model.py (pass the seed checkout's root)")
    ours = {k: sys.modules.pop(k) for k in _ours_in(sys.modules)}
    mods: dict[str, types.ModuleType] = {}
    try:
        for sub in SEED_PACKAGES:  # bare packages: their __init__ (every model, hydra) not run
            mod = types.ModuleType("seed_kospeech" + ("." + sub if sub else ""))
            mod.__path__ = [str(src.joinpath(*sub.split(".")) if sub else src)]
            sys.modules[mod.__name__] = sys.modules["kospeech" + ("." + sub if sub else "")] = mod
            mods[sub] = mod
        for sub in SEED_MODULES:
            if sub == "models.las.model":  # `from kospeech.models import EncoderRNN, DecoderRNN`
                mods["models"].EncoderRNN = mods["models.las.encoder"].EncoderRNN
                mods["models"].DecoderRNN = mods["models.las.decoder"].DecoderRNN
            spec = importlib.util.spec_from_file_location(
                "seed_kospeech." + sub, src.joinpath(*sub.split(".")).with_suffix(".py")
            )
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = sys.modules["kospeech." + sub] = mod
            spec.loader.exec_module(mod)
            parent, _, leaf = sub.rpartition(".")
            setattr(mods[parent], leaf, mod)
            mods[sub] = mod
    finally:
        for k in _ours_in(sys.modules):  # the seed's aliases go, ours come back
            del sys.modules[k]
        sys.modules.update(ours)
    return mods


def make_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(BATCH, FRAMES, MELS, generator=g)
    tokens = torch.randint(5, VOCAB, (BATCH, TOKENS), generator=g)  # no special of either vocabulary
    return feats, torch.full((BATCH,), FRAMES), tokens


def seed_step_fn(
    mods: dict[str, types.ModuleType], batch: tuple, hidden: int, heads: int
) -> tuple[Callable, torch.nn.Module]:
    feats, lengths, tokens = batch
    torch.manual_seed(0)
    model = mods["models.las.model"].ListenAttendSpell(  # as model_builder.build_las
        input_dim=MELS, num_classes=VOCAB,
        encoder_hidden_state_dim=hidden, decoder_hidden_state_dim=hidden << 1,  # use_bidirectional
        num_encoder_layers=3, num_decoder_layers=2, bidirectional=True,
        extractor="vgg", activation="hardtanh", rnn_type="lstm", max_length=400,
        pad_id=SEED_PAD, sos_id=SEED_SOS, eos_id=SEED_EOS,
        attn_mechanism="multi-head", num_heads=heads,
        encoder_dropout_p=0.3, decoder_dropout_p=0.3, joint_ctc_attention=False,
    )
    model.train()
    criterion = mods["criterion.label_smoothed_cross_entropy"].LabelSmoothedCrossEntropyLoss(
        num_classes=VOCAB, ignore_index=SEED_PAD, smoothing=0.1, reduction="mean", dim=-1
    )
    b = tokens.size(0)
    targets = torch.cat([tokens.new_full((b, 1), SEED_SOS), tokens, tokens.new_full((b, 1), SEED_EOS)], dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-5)

    def step() -> None:  # its trainer's LAS step (supervised_trainer._model_forward), no DataParallel
        model.flatten_parameters()
        outputs, _, _ = model(inputs=feats, input_lengths=lengths, targets=targets, teacher_forcing_ratio=1.0)
        loss = criterion(outputs.contiguous().view(-1, outputs.size(-1)), targets[:, 1:].contiguous().view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, model


def ours_step_fn(batch: tuple, amp: str = "none") -> tuple[Callable, torch.nn.Module]:
    """Our step as the trainer takes it: the recipe's model and optimizer (``optimizer:`` of
    las.yaml: Adam, lr 1e-4, weight decay 1e-5) from the registry, autocast as ``train.amp``."""
    feats, lengths, tokens = batch
    cfg = load_config(CONF)
    torch.manual_seed(0)
    model = build("model", cfg["model"], path="model", input_dim=MELS, vocab_size=VOCAB)
    model.train()
    target_lengths = torch.full((tokens.size(0),), tokens.size(1))
    opt = build("optimizer", cfg["optimizer"], params=model.parameters())
    dtype = resolve_amp(amp, torch.device("cpu"))

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = model(feats, lengths, tokens, target_lengths)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, model


def timed(step: Callable) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def profile(name: str, step: Callable, steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"\n## {name}: top {rows} ops by self CPU time over {steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-path", type=Path, required=True, help="the seed KoSpeech checkout's root")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed-hidden-dim", type=int, default=256,
                        help="256: the size of our las.yaml (the issue's comparison); its configs/model/las.yaml: 512")
    parser.add_argument("--seed-heads", type=int, default=8, help="8 as ours; its configs/model/las.yaml: 4")
    parser.add_argument("--amp", nargs="*", default=[], choices=["bf16"],
                        help="also time ours under CPU autocast (train.amp) in this dtype")
    parser.add_argument("--profile", action="store_true", help="then profile a few steps of each")
    parser.add_argument("--profile-steps", type=int, default=2)
    parser.add_argument("--profile-rows", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    mods = load_seed(args.seed_path.resolve())
    batch = make_batch()
    seed_step, seed_model = seed_step_fn(mods, batch, args.seed_hidden_dim, args.seed_heads)
    ours_step, ours_model = ours_step_fn(batch)
    variants = {"ours": ours_step}
    for amp in args.amp:
        variants[f"ours, amp {amp}"] = ours_step_fn(batch, amp)[0]
    n_seed = sum(p.numel() for p in seed_model.parameters())
    n_ours = sum(p.numel() for p in ours_model.parameters())
    print(f"torch {torch.__version__}, {args.threads} threads; batch {BATCH} x {FRAMES} frames x {MELS} mels, "
          f"{TOKENS} tokens, vocabulary {VOCAB}; forward + loss + backward + Adam step")
    print(f"seed: {args.seed_path} ListenAttendSpell, listener BiLSTM 3 x {args.seed_hidden_dim}, speller LSTM "
          f"2 x {args.seed_hidden_dim << 1}, {args.seed_heads}-head multi-head; {n_seed:,} parameters")
    print(f"ours: {CONF.relative_to(ROOT)}; {n_ours:,} parameters")

    for _ in range(args.warmup):
        seed_step()
        for step in variants.values():
            step()
    t_seed: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.steps):  # interleaved: load on the machine hits all alike
        t_seed.append(timed(seed_step))
        for name, step in variants.items():
            times[name].append(timed(step))
    m_seed = statistics.median(t_seed)
    print(f"\n{args.steps} interleaved steps after {args.warmup} warm-up of each (median; min-max)")
    print("| model | parameters | s / step | min-max | / seed (medians) | / seed (median per-step ratio) |")
    print("|---|---|---|---|---|---|")
    print(f"| seed | {n_seed / 1e6:.2f}M | {m_seed:.3f} | {min(t_seed):.3f}-{max(t_seed):.3f} | 1.00 | 1.00 |")
    for name, t in times.items():
        paired = statistics.median(o / s for o, s in zip(t, t_seed))
        print(f"| {name} | {n_ours / 1e6:.2f}M | {statistics.median(t):.3f} | {min(t):.3f}-{max(t):.3f} | "
              f"{statistics.median(t) / m_seed:.2f} | {paired:.2f} |")

    if args.profile:
        profile("seed", seed_step, args.profile_steps, args.profile_rows)
        profile("ours", ours_step, args.profile_steps, args.profile_rows)


if __name__ == "__main__":
    main()
