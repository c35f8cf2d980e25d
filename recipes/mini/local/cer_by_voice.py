#!/usr/bin/env python3
"""CER of a decoded synthetic test set, broken down by voice and by noise.

A single CER over eval_other hides that some unseen voices are nearly solved and others (a
whispering voice, very slow speech) fail outright; this says which. Reads ``voices.tsv``
(written by ``kospeech data synth`` beside ``synth.yaml``) and each decode dir's
``ref.trn``/``hyp.trn``; prints one markdown table per decode dir, worst voices first.

    python local/cer_by_voice.py corpus exp/conv_ctc/decode_eval_other_default [more dirs]
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

from kospeech.files import read_utt_text
from kospeech.metrics import score_corpus


def read_voices(corpus: Path) -> dict[str, dict[str, str]]:
    path = corpus / "voices.tsv"
    if not path.is_file():
        sys.exit(f"{path}: not found (corpora synthesised before voices.tsv existed: synthesise again)")
    with path.open(encoding="utf-8", newline="") as f:
        return {row["utt_id"]: row for row in csv.DictReader(f, delimiter="\t")}


def breakdown(voices: dict[str, dict[str, str]], decode_dir: Path) -> str:
    refs, hyps = read_utt_text(decode_dir / "ref.trn"), read_utt_text(decode_dir / "hyp.trn")
    unknown = [u for u in refs if u not in voices]
    if unknown:
        sys.exit(f"{decode_dir}: {len(unknown)} utterances are not in voices.tsv (first: {unknown[0]})")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for utt in refs:
        v = voices[utt]
        groups[("voice", f"{v['variant']} (speed {v['speed']}, pitch {v['pitch']})")].append(utt)
        groups[("noise", v["noise"] or "none")].append(utt)
    rows = []
    for (kind, name), utts in groups.items():
        score = score_corpus({u: refs[u] for u in utts}, {u: hyps[u] for u in utts if u in hyps})
        rows.append((kind, -score.cer, name, len(utts), score))
    total = score_corpus(refs, hyps)
    out = [f"### {decode_dir}: CER {total.cer:.2f}% over {total.n_utts} utterances", ""]
    out += ["| by | group | utts | CER % | S | D | I |", "|---|---|---|---|---|---|---|"]
    for kind, _, name, n, s in sorted(rows):
        out.append(f"| {kind} | {name} | {n} | {s.cer:.1f} | {s.substitutions} | {s.deletions} | {s.insertions} |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="the synthetic corpus root (holds voices.tsv)")
    parser.add_argument("decode_dirs", type=Path, nargs="+", help="decode dirs holding ref.trn and hyp.trn")
    args = parser.parse_args()
    voices = read_voices(args.corpus)
    for d in args.decode_dirs:
        print(breakdown(voices, d))


if __name__ == "__main__":
    main()
