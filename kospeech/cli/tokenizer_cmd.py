"""``kospeech tokenizer train|show``: build a lang dir from a data dir's ``text`` file."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from kospeech.files import read_utt_text
from kospeech.text.tokenizers import load_tokenizer, train_tokenizer

logger = logging.getLogger(__name__)


def train(args: argparse.Namespace) -> int:
    texts = read_utt_text(args.text, allow_empty=False)
    options: dict[str, Any] = {}
    if args.vocab_size is not None:
        options["vocab_size"] = args.vocab_size
    if args.model_type is not None:
        options["model_type"] = args.model_type
    if args.min_freq is not None:
        options["min_freq"] = args.min_freq
    tok = train_tokenizer(args.name, texts.values(), args.out, **options)
    unk = sum(i == 4 for t in texts.values() for i in tok.encode(t))
    print(f"{args.name}: {tok.vocab_size} units from {len(texts)} transcripts in {args.text} -> {args.out}")
    if unk:
        print(f"  {unk} training units map to <unk> (min_freq)")
    return 0


def show(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.lang)
    print(f"{tok!r}")
    for text in args.texts:
        ids = tok.encode(text)
        print(f"{text}\n  ids:    {' '.join(map(str, ids))}\n  units:  {' '.join(tok.id_to_token(i) for i in ids)}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tokenizer", help="train and inspect tokenizers (lang dirs)")
    tsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    tp = tsub.add_parser("train", parents=[parent], help="learn units from a Kaldi text file into a lang dir")
    tp.add_argument("--name", required=True, help="registered tokenizer: character, jamo, sentencepiece, ...")
    tp.add_argument("--text", required=True, help="Kaldi text file: 'utt-id transcript' per line")
    tp.add_argument("--out", required=True, help="lang dir to write (tokenizer.yaml + its files)")
    tp.add_argument("--vocab-size", type=int, default=None, help="sentencepiece: number of pieces")
    tp.add_argument("--model-type", default=None, choices=["unigram", "bpe"], help="sentencepiece model type")
    tp.add_argument("--min-freq", type=int, default=None, help="character/jamo: rarer units map to <unk>")
    tp.set_defaults(func=train)
    sp = tsub.add_parser("show", parents=[parent], help="a lang dir's tokenizer, and how it splits TEXT")
    sp.add_argument("lang", help="lang dir")
    sp.add_argument("texts", nargs="*", metavar="TEXT")
    sp.set_defaults(func=show)
