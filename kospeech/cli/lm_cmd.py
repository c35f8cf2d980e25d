"""``kospeech lm train`` (an LSTM LM for shallow fusion) and ``kospeech lm ppl`` (its perplexity)."""

from __future__ import annotations

import argparse
import json

from kospeech.cli import positive_int


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def train(args: argparse.Namespace) -> int:
    from kospeech.lm.train import read_transcripts, train_lm
    from kospeech.progress import progress_bar
    from kospeech.text import load_tokenizer

    tokenizer = load_tokenizer(args.lang)
    texts = read_transcripts(args.text)
    valid = read_transcripts(args.valid_text) if args.valid_text else None
    bar = progress_bar(desc="lm train", unit="step")

    def on_step(step: int, loss: float) -> None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    try:
        result = train_lm(
            texts,
            tokenizer,
            args.out,
            valid_texts=valid,
            epochs=args.epochs,
            hidden=args.hidden,
            layers=args.layers,
            embed_dim=args.embed_dim,
            dropout=args.dropout,
            lr=args.lr,
            batch_tokens=args.batch_tokens,
            seed=args.seed,
            device=_device(args.device),
            on_step=on_step,
        )
    finally:
        bar.close()
    print(f"LM saved to {result['path']}: {len(texts)} sentences, vocab {result['vocab_size']}, "
          f"train ppl {result['train_ppl']:.2f}, valid ppl {result['valid_ppl']:.2f}")
    return 0


def ppl(args: argparse.Namespace) -> int:
    from kospeech.lm.model import load_lm
    from kospeech.lm.train import encode_sentences, perplexity, read_transcripts
    from kospeech.text import load_tokenizer

    device = _device(args.device)
    lm = load_lm(args.lm, device=device)
    seqs = encode_sentences(read_transcripts(args.text), load_tokenizer(args.lang))
    value = perplexity(lm, seqs, device=device)
    print(json.dumps({"lm": args.lm, "text": args.text, "sentences": len(seqs), "ppl": round(value, 4)}))
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lm", help="train an LSTM language model for shallow fusion, or measure its perplexity")
    lsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    tp = lsub.add_parser("train", parents=[parent], help="train lm.pt on transcripts with the lang dir's tokenizer")
    tp.add_argument("--text", required=True, help="Kaldi text file (utt-id transcript) or one sentence per line")
    tp.add_argument("--lang", required=True, help="lang dir of the acoustic model's tokenizer")
    tp.add_argument("--out", required=True, help="output folder; lm.pt is written there")
    tp.add_argument("--valid-text", default=None, help="held-out sentences (default: 5%% of --text)")
    tp.add_argument("--epochs", type=positive_int, default=10)
    tp.add_argument("--hidden", type=positive_int, default=512)
    tp.add_argument("--layers", type=positive_int, default=2)
    tp.add_argument("--embed-dim", type=positive_int, default=256)
    tp.add_argument("--dropout", type=float, default=0.1)
    tp.add_argument("--lr", type=float, default=1e-3)
    tp.add_argument("--batch-tokens", type=positive_int, default=8000, help="padded tokens per batch")
    tp.add_argument("--seed", type=int, default=1)
    tp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    tp.set_defaults(func=train)
    pp = lsub.add_parser("ppl", parents=[parent], help="perplexity of lm.pt on a text file")
    pp.add_argument("--lm", required=True)
    pp.add_argument("--text", required=True)
    pp.add_argument("--lang", required=True)
    pp.add_argument("--device", default="auto")
    pp.set_defaults(func=ppl)
