"""``kospeech score --dir DECODE_DIR`` (or ``--ref REF --hyp HYP``): CER, CRR, WER, sWER.

Writes ``scores.json`` (totals, what was decoded how, and per-utterance character errors so
that ``kospeech compare`` can bootstrap confidence intervals) and ``result.txt`` (an
sclite-like alignment of every utterance).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml


def _decode_info(directory: Path) -> dict[str, Any]:
    path = directory / "decode.yaml"
    if not path.exists():
        return {}
    info = yaml.safe_load(path.read_text(encoding="utf-8"))
    return info if isinstance(info, dict) else {}


def _checkpoint_metadata(path: str) -> dict[str, Any]:
    """The metadata block of a checkpoint named in decode.yaml ({} when it is gone or has none)."""
    if not path or not Path(path).is_file():
        return {}
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable file only costs the column; decode already used it
        return {}
    meta = ckpt.get("metadata") if isinstance(ckpt, dict) else None
    return meta if isinstance(meta, dict) else {}


def training_corpus(info: dict[str, Any]) -> Any:
    """The training corpus of the decoded model(s): decode.yaml's record, else the metadata of
    the checkpoint(s) it names; a list when an ensemble's members differ, None when unknown."""
    if info.get("training_corpus"):
        return info["training_corpus"]
    ckpts = info.get("checkpoint")
    records = [_checkpoint_metadata(c).get("training_corpus") for c in (ckpts if isinstance(ckpts, list) else [ckpts])]
    records = [r for r in records if r]
    unique = list({json.dumps(r, sort_keys=True): r for r in records}.values())
    return None if not unique else unique[0] if len(unique) == 1 else unique


def score_files(ref_path: Path, hyp_path: Path, out_dir: Path, *, cer_spaces: bool = False) -> dict[str, Any]:
    """Score ``hyp_path`` against ``ref_path``; write ``scores.json`` and ``result.txt`` into ``out_dir``.

    ``cer_spaces``: CER scores the space between words as a character, as ESPnet's published
    CERs do (see :mod:`kospeech.metrics`); ``scores.json`` records it.
    """
    from kospeech.files import read_utt_text, write_atomic
    from kospeech.metrics import format_alignment, score_corpus

    refs, hyps = read_utt_text(ref_path), read_utt_text(hyp_path)
    score = score_corpus(refs, hyps, cer_spaces=cer_spaces)
    info = _decode_info(hyp_path.parent)
    test = info.get("test_set") or {}
    search = info.get("search") or {}
    errors, lengths = score.per_utt_char_errors()
    result: dict[str, Any] = {
        **score.to_dict(),
        "test_set": test.get("name") or hyp_path.parent.name,
        "corpus": test.get("corpus"),
        "transcript": test.get("transcript"),
        "search": search.get("name"),
        "search_config": search or None,
        "model": info.get("model"),
        "checkpoint": info.get("checkpoint"),
        "training_corpus": training_corpus(info),
        "real_time_factor": (info.get("timing") or {}).get("real_time_factor"),
        "ref": str(ref_path),
        "hyp": str(hyp_path),
        "per_utt": {
            "utt_ids": [u.utt_id for u in score.utts],
            "char_errors": errors.tolist(),
            "char_lengths": lengths.tolist(),
        },
    }
    write_atomic(out_dir / "scores.json", json.dumps(result, ensure_ascii=False, indent=1))
    header = [
        f"# {score.summary()}",
        f"# test set: {result['test_set']}  corpus: {result['corpus']}  transcript: {result['transcript']}  "
        f"search: {result['search']}  model: {result['model']}",
        "",
    ]
    blocks = [format_alignment(u.utt_id, u.ref, u.hyp, spaces=cer_spaces) for u in score.utts]
    write_atomic(out_dir / "result.txt", "\n".join(header) + "\n\n".join(blocks) + "\n")
    result["summary"] = score.summary()
    return result


def score(args: argparse.Namespace) -> int:
    from kospeech.errors import ConfigError

    if args.dir:
        d = Path(args.dir)
        ref, hyp = Path(args.ref or d / "ref.trn"), Path(args.hyp or d / "hyp.trn")
        out = Path(args.out or d)
    elif args.ref and args.hyp:
        ref, hyp = Path(args.ref), Path(args.hyp)
        out = Path(args.out or hyp.parent)
    else:
        raise ConfigError("give --dir DECODE_DIR, or both --ref and --hyp")
    result = score_files(ref, hyp, out, cer_spaces=args.cer_spaces)
    form = f" ({result['transcript']} transcripts)" if result.get("transcript") else ""
    print(f"{result['test_set']}{form}: {result['summary']}  -> {out / 'scores.json'}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("score", parents=[parent], help="CER/CRR/WER/sWER of a decode dir -> scores.json, result.txt")
    p.add_argument("--dir", default=None, help="decode dir holding hyp.trn and ref.trn (and decode.yaml)")
    p.add_argument("--ref", default=None, help="reference file (utt-id text per line)")
    p.add_argument("--hyp", default=None, help="hypothesis file (utt-id text per line)")
    p.add_argument("--out", default=None, help="where to write scores.json and result.txt (default: the decode dir)")
    p.add_argument(
        "--cer-spaces",
        action="store_true",
        help="score the space between words as a character in CER, as ESPnet's published CERs do "
        "(default: spaces removed, the usual Korean CER)",
    )
    p.set_defaults(func=score)
