"""``kospeech lm train`` (an LSTM, Transformer or n-gram LM for shallow fusion) and ``kospeech lm ppl``."""

from __future__ import annotations

import argparse
import json

from kospeech.cli import positive_int


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _train_ngram(args: argparse.Namespace, tokenizer: object, texts: list[str], valid: list[str] | None) -> int:
    import random

    from kospeech.lm.ngram import train_ngram
    from kospeech.lm.text import hold_out

    if valid is None:
        valid, texts = hold_out(texts, 0.05, random.Random(args.seed))
    result = train_ngram(texts, tokenizer, args.out, order=args.order, unit=args.unit, valid_texts=valid)
    per = "word" if args.unit == "word" else "token"
    print(f"n-gram LM saved to {result['path']}: order {args.order} over {args.unit}s, "
          f"{len(texts)} sentences, n-grams {result['ngrams']}, {result['seconds']:.1f} s, "
          f"valid ppl {result.get('valid_ppl', float('nan')):.2f} per {per}")
    return 0


_NEURAL_OPTIONS = {
    "lstm": ("embed_dim", "hidden", "layers", "dropout"),
    "transformer": ("embed_dim", "d_model", "num_heads", "ff_dim", "num_layers", "dropout", "pos_enc"),
}


def _lm_config(args: argparse.Namespace) -> dict[str, object]:
    """The ``lm`` config of ``--type``: its own options from the flags; unset flags keep the defaults."""
    cfg: dict[str, object] = {"name": args.type}
    flags = dict(vars(args))
    if args.type == "transformer" and flags.get("layers") is not None:
        flags["num_layers"] = flags["layers"]
    for key in _NEURAL_OPTIONS[args.type]:
        if flags.get(key) is not None:
            cfg[key] = flags[key]
    return cfg


def train(args: argparse.Namespace) -> int:
    from kospeech.lm.text import read_transcripts
    from kospeech.lm.train import train_lm
    from kospeech.progress import progress_bar
    from kospeech.text import load_tokenizer

    tokenizer = load_tokenizer(args.lang)
    texts = [t for path in args.text for t in read_transcripts(path, transcript=args.transcript)]
    valid = read_transcripts(args.valid_text, transcript=args.transcript) if args.valid_text else None
    if args.type == "ngram":
        return _train_ngram(args, tokenizer, texts, valid)
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
            lm=_lm_config(args),
            epochs=args.epochs,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
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
    from kospeech.lm.loading import load_lm, perplexity
    from kospeech.lm.text import encode_sentences, read_transcripts
    from kospeech.text import load_tokenizer

    device = _device(args.device)
    lm = load_lm(args.lm, device=device)
    seqs = encode_sentences(read_transcripts(args.text), load_tokenizer(args.lang))
    value = perplexity(lm, seqs, device=device)
    print(json.dumps({"lm": args.lm, "text": args.text, "sentences": len(seqs), "ppl": round(value, 4)}))
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lm", help="train a language model for shallow fusion (LSTM, Transformer, n-gram), "
                                  "or measure its perplexity")
    lsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    tp = lsub.add_parser("train", parents=[parent], help="train lm.pt (or build lm.arpa) on transcripts with the lang "
                                                         "dir's tokenizer")
    tp.add_argument("--text", required=True, nargs="+", metavar="FILE",
                    help="Kaldi text files (utt-id transcript) or files of one sentence per line, read together")
    tp.add_argument("--transcript", choices=["phonetic", "spelling"], default=None,
                    help="read the lines as KsponSpeech notation ((3시)/(세 시), 아/, b/) and keep this form, as "
                         "`kospeech data prep --transcript` does for the acoustic model's text (a line that is "
                         "already plain stays as it is)")
    tp.add_argument("--lang", required=True, help="lang dir of the acoustic model's tokenizer")
    tp.add_argument("--out", required=True, help="output folder; lm.pt (or lm.arpa + lm.yaml) is written there")
    tp.add_argument("--type", choices=["lstm", "transformer", "ngram"], default="lstm",
                    help="the registered LM (kospeech registry list lm)")
    tp.add_argument("--valid-text", default=None, help="held-out sentences (default: 5%% of --text)")
    ng = tp.add_argument_group("n-gram (--type ngram)")
    ng.add_argument("--order", type=positive_int, default=4, help="n-gram order (modified Kneser-Ney)")
    ng.add_argument("--unit", choices=["token", "word"], default="token",
                    help="token: the tokenizer's units (jamo/char/subword); word: eojeol, lexicon-free fusion")
    nn_ = tp.add_argument_group("neural LMs (unset: the LM's default; kospeech registry list lm)")
    nn_.add_argument("--epochs", type=positive_int, default=10)
    nn_.add_argument("--embed-dim", type=positive_int, default=None)
    nn_.add_argument("--layers", type=positive_int, default=None, help="LSTM layers, or Transformer layers")
    nn_.add_argument("--hidden", type=positive_int, default=None, help="LSTM hidden size")
    nn_.add_argument("--d-model", type=positive_int, default=None, help="Transformer attention width")
    nn_.add_argument("--num-heads", type=positive_int, default=None, help="Transformer attention heads")
    nn_.add_argument("--ff-dim", type=positive_int, default=None, help="Transformer feed-forward size")
    nn_.add_argument("--pos-enc", choices=["sinusoidal", "none"], default=None, help="Transformer positions")
    nn_.add_argument("--dropout", type=float, default=None)
    nn_.add_argument("--lr", type=float, default=1e-3)
    nn_.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up (updates)")
    nn_.add_argument("--batch-tokens", type=positive_int, default=8000, help="padded tokens per batch")
    tp.add_argument("--seed", type=int, default=1)
    tp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    tp.set_defaults(func=train)
    pp = lsub.add_parser("ppl", parents=[parent],
                         help="perplexity of an LM (lm.pt, lm.arpa or its folder) on a text file")
    pp.add_argument("--lm", required=True)
    pp.add_argument("--text", required=True)
    pp.add_argument("--lang", required=True)
    pp.add_argument("--device", default="auto")
    pp.set_defaults(func=ppl)
