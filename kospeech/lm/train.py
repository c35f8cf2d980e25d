"""Training a neural fusion LM (any registered ``lm``: ``lstm``, ``transformer``) on transcripts,
and measuring its perplexity. (The n-gram is estimated, not trained: :mod:`kospeech.lm.ngram`.)

The LM reads the same token ids as the acoustic model (the lang dir's tokenizer), so the
searches can add its log-probabilities token by token. Sentences are batched by length
(sorted, then shuffled in batches) so that little compute goes to padding.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from kospeech.errors import DataError
from kospeech.lm.model import TokenLM, save_lm
from kospeech.optim.schedulers import warmup_lr
from kospeech.registry import build
from kospeech.text.special import PAD_ID

logger = logging.getLogger(__name__)


def _has_hangul(s: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e" for ch in s)


def _is_kaldi_text(path: Path, lines: Sequence[str]) -> bool:
    """Whether ``lines`` are a Kaldi ``text`` (``utt-id transcript``) rather than plain sentences.

    Utterance ids never contain Hangul, so a file whose every line is ``field transcript`` with a
    Hangul-free first field is Kaldi text (the rule this function always had). A Kaldi text may
    also hold utterances with an empty transcript: the line is the id alone. Those used to make
    the whole file read as plain sentences, so the ids became training text. An id-only line
    still marks Kaldi text when it looks like the other ids: every first field Hangul-free and
    unique in the file (ids are keys; the first words of sentences repeat), the id-only ones
    with a digit in them (ids are numbered; a lone plain word like ``b/`` or ``OK`` is not), and
    at least one line with a transcript. A data dir's own ``text`` (beside ``wav.scp`` or
    ``utt2spk``) is Kaldi text whatever its ids look like.
    """
    if path.name == "text" and any((path.parent / f).is_file() for f in ("wav.scp", "utt2spk")):
        return True
    firsts = [ln.split(maxsplit=1) for ln in lines]
    if any(_has_hangul(f[0]) for f in firsts):
        return False
    if all(len(f) == 2 for f in firsts):
        return True
    ids = [f[0] for f in firsts]
    lone = [f[0] for f in firsts if len(f) == 1]
    return (
        len(lone) < len(firsts)
        and len(set(ids)) == len(ids)
        and all(any(ch.isascii() and ch.isdigit() for ch in i) for i in lone)
    )


def read_transcripts(path: str | Path, *, transcript: str | None = None) -> list[str]:
    """Transcripts of a Kaldi ``text`` file (``utt-id transcript``), or of a plain one-per-line file.

    Which of the two a file is, :func:`_is_kaldi_text` decides; otherwise each whole line is a
    sentence. In Kaldi text an utterance with an empty transcript (the id alone on its line) is
    skipped and counted in the log, never read as a sentence: its id is not text to learn.
    ``transcript`` (``phonetic`` or ``spelling``) reads the lines as KsponSpeech notation and
    keeps that form, so notated extra text matches the acoustic model's prepared transcripts;
    lines that normalise to nothing are dropped.
    """
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise DataError(f"LM text file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason})") from None
    lines = [ln for ln in lines if ln]
    if not lines:
        raise DataError(f"{path}: no sentences to train an LM on")

    if _is_kaldi_text(path, lines):
        fields = [ln.split(maxsplit=1) for ln in lines]
        empty = [f[0] for f in fields if len(f) < 2]
        if empty:
            logger.warning("%s: %d utterance(s) have an empty transcript and were skipped (e.g. %s)",
                           path, len(empty), ", ".join(empty[:3]))
        texts = [f[1] for f in fields if len(f) == 2]
        if not texts:
            raise DataError(f"{path}: every utterance has an empty transcript; no sentences to train an LM on")
    else:
        texts = lines
    if transcript is not None:
        from kospeech.text.normalize import normalize_kspon

        texts = [t for t in (normalize_kspon(x, transcript) for x in texts) if t]
    return texts


def encode_sentences(texts: Iterable[str], tokenizer: Any) -> list[list[int]]:
    """Token ids of each sentence; sentences that encode to nothing are skipped and counted."""
    out, skipped = [], 0
    for t in texts:
        ids = tokenizer.encode(t)
        if ids:
            out.append(ids)
        else:
            skipped += 1
    if skipped:
        logger.warning("LM data: %d sentences encode to no tokens and were skipped", skipped)
    return out


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


def hold_out(items: Sequence[Any], fraction: float, rng: random.Random) -> tuple[list[Any], list[Any]]:
    """A shuffled ``fraction`` of ``items`` (at least one, none of a single item) and the rest."""
    shuffled = list(items)
    rng.shuffle(shuffled)
    n_valid = max(1, int(len(shuffled) * fraction)) if len(shuffled) > 1 else 0
    return shuffled[:n_valid], shuffled[n_valid:] or shuffled


@torch.no_grad()
def perplexity(lm: Any, seqs: Sequence[list[int]], *, batch_tokens: int = 8000, device: str = "cpu") -> float:
    """exp(mean negative log-likelihood per predicted token, ``<eos>`` included); any LM file's LM."""
    if not isinstance(lm, TokenLM):
        from kospeech.lm.ngram import ngram_perplexity

        return ngram_perplexity(lm, seqs)
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
        train_ppl = perplexity(model, train, batch_tokens=batch_tokens, device=device)
        valid_ppl = perplexity(model, valid, batch_tokens=batch_tokens, device=device) if valid else train_ppl
        history.append({"epoch": epoch, "train_ppl": train_ppl, "valid_ppl": valid_ppl})
        logger.info("LM epoch %d: train ppl %.2f, valid ppl %.2f", epoch, train_ppl, valid_ppl)
        if valid_ppl < best:
            best = valid_ppl
            save_lm(model, out_path, epoch=epoch, train_ppl=train_ppl, valid_ppl=valid_ppl)
    last = history[-1]
    return {"path": str(out_path), "train_ppl": last["train_ppl"], "valid_ppl": best, "epochs": epochs,
            "vocab_size": tokenizer.vocab_size, "history": history}
