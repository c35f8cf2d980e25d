"""Training a neural fusion LM (any registered ``lm``: ``lstm``, ``transformer``) on transcripts,
and measuring its perplexity. (The n-gram is estimated, not trained: :mod:`kospeech.lm.ngram`;
the text both read: :mod:`kospeech.lm.text`.)

The LM reads the same token ids as the acoustic model (the lang dir's tokenizer), so the
searches can add its log-probabilities token by token. Sentences are batched by length
(sorted, then shuffled in batches) so that little compute goes to padding.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kospeech.errors import DataError
from kospeech.lm.model import TokenLM, save_lm
from kospeech.lm.text import encode_sentences, hold_out
from kospeech.optim.schedulers import warmup_lr
from kospeech.registry import build
from kospeech.text.special import PAD_ID

logger = logging.getLogger(__name__)


def _batches(seqs: Sequence[list[int]], batch_tokens: int, shuffle: bool, rng: random.Random) -> list[list[int]]:
    """Index batches of similar lengths, each with about ``batch_tokens`` padded tokens."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches, cur, longest = [], [], 0
    for i in order:
        longest_new = max(longest, len(seqs[i]) + 1)
        if cur and longest_new * (len(cur) + 1) > batch_tokens:
            batches.append(cur)
            cur, longest_new = [], len(seqs[i]) + 1
        cur.append(i)
        longest = longest_new
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


def _pad(seqs: Sequence[list[int]], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max())), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s)
    return out.to(device), lens.to(device)


@torch.no_grad()
def neural_perplexity(
    lm: TokenLM, seqs: Sequence[list[int]], *, batch_tokens: int = 8000, device: str = "cpu"
) -> float:
    """exp(mean negative log-likelihood per predicted token, ``<eos>`` included) of a neural LM.

    Any LM file's LM: :func:`kospeech.lm.loading.perplexity`.
    """
    was_training = lm.training
    lm.eval()
    total, count = 0.0, 0
    for idx in _batches(seqs, batch_tokens, False, random.Random(0)):
        x, n = _pad([seqs[i] for i in idx], device)
        nll, k = lm.nll(x, n)
        total += float(nll)
        count += int(k)
    lm.train(was_training)
    return math.exp(total / max(count, 1))


def train_lm(
    texts: Sequence[str],
    tokenizer: Any,
    out_dir: str | Path,
    *,
    valid_texts: Sequence[str] | None = None,
    lm: Mapping[str, Any] | None = None,
    epochs: int = 10,
    lr: float = 1e-3,
    warmup_steps: int = 0,
    batch_tokens: int = 8000,
    valid_fraction: float = 0.05,
    seed: int = 1,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a neural LM and save the best (lowest validation perplexity) as ``out_dir/lm.pt``.

    ``lm`` is its config (``{name: lstm|transformer, **options}``, default ``{name: lstm}``).
    ``warmup_steps`` raises the learning rate linearly from 0 (deep Transformer LMs diverge
    without it).

    Without ``valid_texts`` a ``valid_fraction`` of the sentences (at least one) is held out.
    ``on_step(total_steps, loss)`` is called after each update (the CLI drives a progress bar
    with it). Returns ``{"path", "train_ppl", "valid_ppl", "epochs", "vocab_size"}``.
    """
    rng = random.Random(seed)
    torch.manual_seed(seed)
    seqs = encode_sentences(texts, tokenizer)
    if not seqs:
        raise DataError("no LM training sentences left after tokenisation; check --text and --lang")
    if valid_texts is not None:
        valid = encode_sentences(valid_texts, tokenizer)
        train = seqs
    else:
        valid, train = hold_out(seqs, valid_fraction, rng)
    model = build("lm", dict(lm or {"name": "lstm"}), path="lm", vocab_size=tokenizer.vocab_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda n: warmup_lr(n + 1, 0.0, 1.0, warmup_steps) if n + 1 < warmup_steps else 1.0)
    out_path = Path(out_dir) / "lm.pt"
    best = math.inf
    step = 0
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in _batches(train, batch_tokens, True, rng):
            x, n = _pad([train[i] for i in idx], device)
            nll, k = model.nll(x, n)
            loss = nll / k
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            if on_step is not None:
                on_step(step, float(loss.detach()))
        train_ppl = neural_perplexity(model, train, batch_tokens=batch_tokens, device=device)
        valid_ppl = neural_perplexity(model, valid, batch_tokens=batch_tokens, device=device) if valid else train_ppl
        history.append({"epoch": epoch, "train_ppl": train_ppl, "valid_ppl": valid_ppl})
        logger.info("LM epoch %d: train ppl %.2f, valid ppl %.2f", epoch, train_ppl, valid_ppl)
        if valid_ppl < best:
            best = valid_ppl
            save_lm(model, out_path, epoch=epoch, train_ppl=train_ppl, valid_ppl=valid_ppl)
    last = history[-1]
    return {"path": str(out_path), "train_ppl": last["train_ppl"], "valid_ppl": best, "epochs": epochs,
            "vocab_size": tokenizer.vocab_size, "history": history}
