"""A model package: one directory that decodes as the recipe scored it, and the export dir's twin.

::

    PKG/package.yaml   name, the decoding (search and its options; ``lm: lm`` relative to PKG),
                       the output form (KsponSpeech phonetic or spelling transcripts),
                       the scores the recipe measured with this decoding, the metadata block
    PKG/model.pt       the checkpoint (weights, config, tokenizer, frontend, CMVN), unchanged
    PKG/lm/            the language model of the decoding (lm.arpa + lm.yaml, or lm.pt), if any
    PKG/README.md      the model card: what it was trained on, scores with intervals, how to use it

``kospeech export PKG --out DIR`` writes an export dir (:mod:`kospeech.export.manifest`) that
carries the same ``lm/``, card and decoding, so the torch-free runtime decodes as the package does.
Reading (:func:`read_package`, :func:`is_package`, :func:`is_export_dir`) needs no torch; writing
(:func:`write_package`) opens the checkpoint to check it and to fill the card.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.export import manifest as mf
from kospeech.metadata import check_metadata, make_metadata

logger = logging.getLogger(__name__)

PACKAGE_FILE = "package.yaml"
CHECKPOINT_FILE = "model.pt"
LM_DIR = "lm"
CARD_FILE = "README.md"


@dataclass
class Package:
    """A package read back: where its parts are and how it decodes (``search['lm']`` an absolute path)."""

    directory: Path
    name: str
    search: dict[str, Any]
    checkpoint: Path | None = None
    transcript: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def is_package(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / PACKAGE_FILE).is_file()


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    return Path(path).is_dir() and (Path(path) / mf.MANIFEST).is_file()


def resolve_lm(search: Mapping[str, Any], directory: Path) -> dict[str, Any]:
    """``search`` with a relative ``lm`` taken from ``directory`` (a package's or export's own LM)."""
    out = dict(search)
    lm = out.get("lm")
    if lm and not Path(str(lm)).is_absolute():
        path = directory / str(lm)
        if not path.exists():
            raise DataError(f"{directory}: the decoding names the LM {lm!r} but {path} is missing; "
                            "the package is incomplete, make it again with `kospeech pack`")
        out["lm"] = str(path)
    return out


def read_package(path: str | os.PathLike[str]) -> Package:
    """Open ``PKG/package.yaml``; errors name the file and what is missing."""
    d = Path(path)
    file = d / PACKAGE_FILE
    try:
        info = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{file}: cannot be read as a package manifest ({err})") from None
    if not isinstance(info, Mapping):
        raise DataError(f"{file}: not a mapping; the package is damaged")
    check_metadata(info.get("metadata"), str(file))
    checkpoint = d / str(info.get("checkpoint", CHECKPOINT_FILE))
    if not checkpoint.is_file():
        raise DataError(f"{d}: the package has no {checkpoint.name}; make it again with `kospeech pack`")
    search = (info.get("decode") or {}).get("search")
    if not isinstance(search, Mapping) or not search.get("name"):
        raise DataError(f"{file}: decode.search names no search; make the package again with `kospeech pack`")
    return Package(directory=d, name=str(info.get("name") or d.name), search=resolve_lm(search, d),
                   checkpoint=checkpoint, transcript=info.get("transcript"), info=dict(info))


def package_name(directory: Path) -> str:
    """``conv_ctc`` for ``exp/conv_ctc/package``: the run's name, since recipes name packages ``package``."""
    d = directory.resolve()
    return d.parent.name if d.name in ("package", "export", "onnx") else d.name


def replace_dir(tmp: Path, out: Path, kinds: Sequence[str]) -> None:
    """Move a finished ``tmp`` onto ``out``; an existing ``out`` is replaced only when it is of ``kinds``
    (files named there, e.g. ``package.yaml``) or empty, so ``--out`` never deletes a user's folder."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not any((out / k).is_file() for k in kinds)):
            raise ConfigError(f"--out {out}: exists and is not an earlier output of this command (no "
                              f"{' or '.join(kinds)}); choose a new folder, it is not replaced")
        old = out.with_name(f".{out.name}.old{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def out_dir(path: str | os.PathLike[str]) -> Path:
    """An output folder as an absolute path (``--out .`` is the current folder, with its real name)."""
    out = Path(path).expanduser().resolve()
    if out == Path(out.anchor):
        raise ConfigError(f"--out {path}: the filesystem root cannot be an output folder")
    return out


def copy_lm(lm: str | os.PathLike[str], dest: Path) -> None:
    """The LM's files (``lm.arpa`` + ``lm.yaml`` [+ ``spellings.txt``], or ``lm.pt``) into ``dest``."""
    from kospeech.lm.base import lm_file

    src = lm_file(lm)
    dest.mkdir(parents=True, exist_ok=True)
    names = ("lm.arpa", "lm.yaml", "spellings.txt") if src.suffix in (".arpa", ".yaml") else (src.name,)
    for name in names:
        if (src.parent / name).is_file():
            shutil.copy2(src.parent / name, dest / name)


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
    from kospeech.cli.compare_cmd import summarise

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
