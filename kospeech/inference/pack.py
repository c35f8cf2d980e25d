"""Writing a model package (``kospeech pack``, recipes' last stage): the checkpoint, its decoding,
its LM and a model card, checked by decoding with the torch engine before it is moved into place.

The format and its readers are :mod:`kospeech.inference.package`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kospeech.errors import DataError
from kospeech.inference.package import (
    CARD_FILE,
    CHECKPOINT_FILE,
    LM_DIR,
    PACKAGE_FILE,
    copy_lm,
    out_dir,
    package_name,
    replace_dir,
)
from kospeech.metadata import make_metadata

logger = logging.getLogger(__name__)


def write_package(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    search: str | Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
    scores: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write a package: the checkpoint, its decoding (its ``lm`` is copied in), a card.

    The decoding is the checkpoint's own, or ``search`` with ``options`` on top, by the rules of
    every door (:func:`kospeech.inference.driver.resolve_search`: an LM turns a greedy search into
    its beam search and gets a default weight). ``scores`` are decode dirs (or their
    ``scores.json``) measured with this decoding; their table goes into the card and the manifest.
    """
    from kospeech.inference.api import TorchEngine
    from kospeech.inference.driver import resolve_search
    from kospeech.inference.loading import load_for_inference
    from kospeech.train.checkpoint import checkpoint_file

    src = Path(checkpoint)
    bundle = load_for_inference(src, device="cpu")  # checks the checksum, the plugins, the tokenizer
    engine = TorchEngine(bundle)
    decode = resolve_search(engine.default_search(), search, options or {})
    engine.build_search({k: v for k, v in decode.items() if k != "lm"})  # a bad option fails before writing
    dest = out_dir(out)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copy2(checkpoint_file(src), tmp / CHECKPOINT_FILE)  # the file load_for_inference read
        if decode.get("lm"):
            copy_lm(decode["lm"], tmp / LM_DIR)
            decode["lm"] = LM_DIR
        rows = [score_row(Path(s)) for s in scores]
        transcript = next((r["transcript"] for r in rows if r.get("transcript") not in (None, "?")), None)
        model_cfg = bundle.config.get("model") or {}
        info: dict[str, Any] = {
            "name": name or package_name(dest),
            "checkpoint": CHECKPOINT_FILE,
            "model": model_cfg.get("name") if isinstance(model_cfg, Mapping) else None,
            "parameters": int(sum(p.numel() for p in bundle.model.parameters())),
            "transcript": transcript,
            "decode": {"search": decode},
            "scores": [{k: r[k] for k in ("test_set", "corpus", "transcript", "utts", "cer", "cer_lo", "cer_hi",
                                          "search")} for r in rows],
            "metadata": make_metadata("package", **{k: bundle.metadata[k] for k in ("training_corpus", "plugins")
                                                    if k in bundle.metadata}),
        }
        (tmp / PACKAGE_FILE).write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True), encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card(info, bundle), encoding="utf-8")
        replace_dir(tmp, dest, (PACKAGE_FILE,))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote the package %s (%s)", dest, _describe(decode))
    return dest


def score_row(path: Path) -> dict[str, Any]:
    """One row of the card's table from a decode dir or its ``scores.json`` (CER with its 95% interval)."""
    from kospeech.metrics import summarise

    file = path / "scores.json" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no scores.json; score the decode dir first (kospeech score --dir {path})")
    return summarise(file)


def _describe(search: Mapping[str, Any]) -> str:
    return " ".join([str(search.get("name"))] + [f"{k}={v}" for k, v in search.items() if k != "name"])


FORMS = {"phonetic": "KsponSpeech's phonetic form (what was said: 조네요 for 좋네요, numbers as read)",
         "spelling": "KsponSpeech's spelling form (standard orthography: 좋네요, digits as written)"}


def model_card(info: Mapping[str, Any], bundle: Any) -> str:
    """The package's README.md: what it is, what it scored, how to use it."""
    corpus = (info.get("metadata") or {}).get("training_corpus") or {}
    decode = info["decode"]["search"]
    form = info.get("transcript")
    trained_on = (f"{corpus.get('corpus', 'an unrecorded corpus')}" + (f" (`{corpus['path']}`)" if corpus.get("path")
                                                                       else "")
                  if isinstance(corpus, Mapping) else str(corpus or "an unrecorded corpus"))
    lines = [
        f"# {info['name']}",
        "",
        f"A KoSpeech model package: `{info.get('model')}` ({info.get('parameters', 0) / 1e6:.2f} M parameters), "
        f"trained on {trained_on}.",
        "",
        f"- Output form: {FORMS.get(str(form), 'not recorded (no scored decode dir was given)')}.",
        f"- Decoding: `{_describe(decode)}`" + (" (the LM is in `lm/`)" if decode.get("lm") else "") + ".",
        f"- Tokenizer: {getattr(bundle.tokenizer, 'name', type(bundle.tokenizer).__name__)}, "
        f"{bundle.tokenizer.vocab_size} units; {bundle.inputs.sample_rate} Hz audio.",
        "",
    ]
    if info.get("scores"):
        lines += ["## Scores (this decoding, as the recipe measured it)", "",
                  "| test set | corpus | transcript | utterances | CER % [95% CI] |", "|---|---|---|---|---|"]
        for r in info["scores"]:
            ci = f" [{r['cer_lo']:.2f}, {r['cer_hi']:.2f}]" if r.get("cer_lo") is not None else ""
            lines.append(f"| {r['test_set']} | {r['corpus']} | {r['transcript']} | {r['utts']} | {r['cer']:.2f}{ci} |")
        lines.append("")
    lines += ["## Use", "", "```", "kospeech transcribe PACKAGE_DIR a.wav b.pcm      # this decoding, LM included",
              "kospeech serve PACKAGE_DIR                      # web page and POST /transcribe",
              "kospeech export PACKAGE_DIR --out DIR           # ONNX; kospeech.runtime.load(DIR) needs no torch",
              "```", "", "```python", "import kospeech", "", "asr = kospeech.load(\"PACKAGE_DIR\")",
              "print(asr.transcribe(\"a.wav\").text)", "```", ""]
    return "\n".join(lines)
