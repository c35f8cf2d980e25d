#!/usr/bin/env python3
"""Hotwords on names the model and its LM never saw: name recall and CER, with and without.

Speaks sentences built around made-up names (products, people, places) with particles attached
(솔담채에서, 한빛나래로), in voices of the training side, and decodes them with a package's own
decoding, first without hotwords, then with the names as hotwords at each ``--weights``. A name
counts as recalled when the hypothesis holds it exactly (spaces ignored). The cost on speech
without the names is the CER of a test set (``--test-set``, e.g. data/eval_clean) decoded with
the same hotword list. Names found in the training or LM text (``--corpus``) are refused, so
the measurement stays on unseen words.

    python local/hotword_eval.py exp/conv_ctc/package --corpus corpus --test-set data/dev --tuning  # choose W
    python local/hotword_eval.py exp/conv_ctc/package --corpus corpus --test-set data/eval_clean    # measure
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kospeech.data.corpora.synthetic_plan import Voice
from kospeech.data.corpora.synthetic_render import espeak
from kospeech.files import read_utt_text
from kospeech.metrics import score_corpus
from kospeech.text import hangul

# the measured names; TUNING_NAMES (another 20, spoken by other voices) choose the default weight, so the
# measurement never picks its own weight
NAMES = ["솔담채", "한빛나래", "누리온", "다온채", "별하솔", "가람빛", "윤슬재", "해든누리", "미르샘", "라온제",
         "비담터", "늘솔길", "온새미", "꽃담채", "휘빛섬", "마루벗", "초롱결", "은가비", "아라솔", "나릿골"]
TUNING_NAMES = ["보담솔", "새온길", "하늬결", "누리빛", "담솜채", "다솜재", "빛여울", "솔가람", "한결채", "이든샘",
                "모아온", "너울빛", "가온솔", "별다온", "예솔터", "미리내골", "도담채", "라온빛", "새롬결", "찬솔누리"]
# {name} then a particle chosen by the name's last syllable: (after a vowel, after a final consonant)
TEMPLATES = [("{}에서 만나기로 했어요", None), ("내일 {}{} 가 볼까요", ("로", "으로")),
             ("{}{} 제일 유명해요", ("가", "이")), ("어제 {}{} 처음 봤어요", ("를", "을"))]
VOICES = [Voice("m1", 160, 50), Voice("f2", 150, 55), Voice("m3", 170, 45), Voice("f1", 165, 60)]
TUNING_VOICES = [Voice("m2", 155, 48), Voice("f3", 160, 58), Voice("m4", 165, 52), Voice("f4", 150, 50)]


def has_final(word: str) -> bool:
    jamo = hangul.decompose(word[-1])
    return len(jamo) == 3


def sentences(names: list[str]) -> list[tuple[str, str]]:
    """(name, sentence): each name in two templates."""
    out = []
    for i, name in enumerate(names):
        for template, particles in (TEMPLATES[i % 4], TEMPLATES[(i + 1) % 4]):
            text = template.format(name) if particles is None else template.format(name, particles[has_final(name)])
            out.append((name, text))
    return out


def unseen(names: list[str], corpus: Path | None) -> None:
    if corpus is None:
        return
    texts = [p for p in (corpus / "lm_text.txt",) if p.is_file()] + sorted(corpus.rglob("*.trn"))
    seen = {n for p in texts for n in names if n in p.read_text(encoding="utf-8", errors="replace")}
    if seen:
        sys.exit(f"names found in the corpus text, not unseen: {', '.join(sorted(seen))}")


def decode(asr, waves: list[np.ndarray], **options) -> list[str]:
    results = asr.transcribe(waves, sample_rate=16000, timestamps=False, **options)
    bad = [r.error for r in results if not r.ok]
    if bad:
        sys.exit(f"decoding failed: {bad[0]}")
    return [r.text for r in results]


def main() -> None:
    import kospeech

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--corpus", type=Path, default=None, help="the synthetic corpus (checks the names are unseen)")
    ap.add_argument("--test-set", type=Path, default=None, help="a data dir without the names (the cost elsewhere)")
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    ap.add_argument("--tuning", action="store_true", help="the tuning names and voices (to choose the weight)")
    args = ap.parse_args()
    names, voices = (TUNING_NAMES, TUNING_VOICES) if args.tuning else (NAMES, VOICES)
    unseen(names, args.corpus)
    items = sentences(names)
    waves = [espeak(text, voices[i % len(voices)]) for i, (_, text) in enumerate(items)]
    refs = {str(i): text for i, (_, text) in enumerate(items)}
    asr = kospeech.load(args.package)
    test_waves, test_refs = [], {}
    if args.test_set is not None:
        from kospeech.data.kaldi_io import audio_items, read_item

        scp, text = audio_items(args.test_set), read_utt_text(args.test_set / "text")  # pipes (KsponSpeech's) too
        test_refs = {u: text[u] for u in scp}
        test_waves = [read_item(scp[u], sample_rate=asr.sample_rate) for u in test_refs]
    rows = []
    for weight in [0.0, *args.weights]:
        options = {"hotwords": names, "hotword_weight": weight} if weight else {}
        hyps = decode(asr, waves, **options)
        recall = np.mean([name in h.replace(" ", "") for (name, _), h in zip(items, hyps)])
        row = {"hotword_weight": weight, "name_recall": 100 * float(recall),
               "cer_name_sentences": score_corpus(refs, dict(zip(refs, hyps))).cer}
        if test_waves:
            test_hyps = asr.transcribe(test_waves, sample_rate=asr.sample_rate, timestamps=False, **options)
            row["cer_test_set"] = score_corpus(test_refs, {u: r.text for u, r in zip(test_refs, test_hyps)}).cer
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
    print(f"\n{len(items)} utterances, {len(names)} made-up names; decoding: {asr.search_cfg}\n")
    print("| hotword weight | name recall % | CER % (name sentences) | CER % (" + (args.test_set.name if args.test_set
          else "no test set") + ") |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['hotword_weight'] or 'none'} | {r['name_recall']:.1f} | {r['cer_name_sentences']:.2f} | "
              f"{r.get('cer_test_set', float('nan')):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
