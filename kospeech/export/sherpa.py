"""Checkpoint or package -> a model directory for sherpa-onnx (``kospeech export MODEL --format sherpa-onnx``).

sherpa-onnx (C++ with Python, Android, iOS, WebSocket and other front ends) runs CTC models
through several loaders; WeNet's (``OfflineRecognizer.from_wenet_ctc``, ``model_type``
``wenet_ctc``) is the one that fits our CTC graph as it is:

- its graph contract is ours: features ``(N, T, C)`` and lengths ``(N,)`` int64 in, CTC
  log-probabilities ``(N, T', V)`` and their lengths out (inputs and outputs are taken by
  position, so our names stay);
- its features are Kaldi fbank (kaldi-native-fbank with sherpa-onnx's defaults: 25/10 ms,
  20-7600 Hz, ``snip_edges`` false, and in 2.0.1 a dither of std 1 whatever its ``dither``
  option says) on samples on the int16 scale (it sets ``normalize_samples`` false for WeNet),
  which is the ``kaldi_fbank`` frontend with its defaults, and nothing else is done to them:
  CMVN has to be in the graph, as WeNet folds it;
- it reads two metadata entries, ``vocab_size`` and ``subsampling_factor`` (the latter for
  token times), and takes the blank from ``<blank>`` in tokens.txt.

The other CTC loaders fit worse: NeMo's (``from_nemo_ctc``) computes librosa-style features with
its own per-feature normalisation and wants ``(N, C, T)``; icefall's zipformer CTC feeds samples in
[-1, 1] (a constant shift of every log energy) and is meant for icefall's own graphs; TeleSpeech's
computes MFCCs. The online recognizer (``OnlineRecognizer.from_wenet_ctc``) runs the same models through
:mod:`kospeech.export.sherpa_online`, which reuses this module's checks, tokens.txt and files.

tokens.txt lists every id (sherpa-onnx looks each one up): ``<blank> 0`` and our other special
tokens, then the units with the word separator written as ``▁``, which sherpa-onnx turns into a
space when it joins tokens. It joins token strings as they are: a jamo model prints conjoining
jamo, which Unicode NFC composes into the syllables our detokenizer gives (``unicodedata.normalize
("NFC", text)``; the ``nfc`` metadata entry says when it is needed).

The graph itself is the ONNX export's CTC graph (:func:`kospeech.export.onnx._export_ctc`, with its
self-check against PyTorch) over the model with the checkpoint's global CMVN in front of the encoder.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from kospeech.errors import ConfigError, DataError
from kospeech.export import onnx as ox
from kospeech.files import sha256_files

logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.txt"
MANIFEST = "sherpa.yaml"
#: the frontend options sherpa-onnx's WeNet CTC path computes (the sample rate and ``n_mels``, its
#: ``feature_dim``, are passed to from_wenet_ctc and may be anything); dither as measured on 2.0.1
SHERPA_FEATURES: dict[str, Any] = {"frame_length_ms": 25.0, "frame_shift_ms": 10.0, "low_freq": 20.0,
                                   "high_freq": -400.0, "snip_edges": False, "dither": 1.0}
SPACE = "\u2581"  # sherpa-onnx's SymbolTable turns a leading ▁ into a space


class _CmvnModel(nn.Module):
    """The model with its global CMVN before the encoder: ``encode``/``ctc_log_probs`` as the model's, so
    the ONNX export's CTC graph code takes it as it is. Padded frames stay zero (GlobalCMVN masks them),
    so sherpa-onnx's batch padding (log 1e-10) reaches the encoder as our own padding does."""

    def __init__(self, model: nn.Module, cmvn: nn.Module | None, floor: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model, self.cmvn = model, cmvn
        self.register_buffer("floor", floor, persistent=False)

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.floor is not None:  # the frontend's dither_floor, which sherpa-onnx's own features lack
            features = torch.maximum(features, self.floor)
        if self.cmvn is not None:
            features = self.cmvn(features, lengths)
        return self.model.encode(features, lengths)

    def ctc_log_probs(self, enc: torch.Tensor) -> torch.Tensor:
        return self.model.ctc_log_probs(enc)


def check_frontend(config: Mapping[str, Any], source: str) -> None:
    """Refuse (one line) a frontend whose features sherpa-onnx does not compute, naming the difference."""
    name = config.get("name")
    if name != "kaldi_fbank":
        raise ConfigError(f"{source}: its frontend '{name}' is not the Kaldi fbank sherpa-onnx computes (DC removal, "
                          "pre-emphasis 0.97, Kaldi framing and mel banks, 7600 Hz top); sherpa-onnx would feed it "
                          "other features: train with 'frontend: {name: kaldi_fbank}' to export it")
    differ = [f"{k}={config.get(k)!r} (sherpa-onnx: {v!r})" for k, v in SHERPA_FEATURES.items()
              if config.get(k, v) != v]
    if differ:
        raise ConfigError(f"{source}: its kaldi_fbank frontend has {', '.join(differ)}, which sherpa-onnx's WeNet "
                          "CTC loader does not set; only sample_rate and n_mels may differ")


def token_lines(units: list[str], space_symbol: str) -> list[str]:
    """tokens.txt lines (``symbol id``) for every id; refuses units sherpa-onnx would misread."""
    lines = []
    for i, unit in enumerate(units):
        sym = SPACE if unit == space_symbol else unit
        if not sym or any(ch.isspace() for ch in sym) or (sym.startswith(SPACE) and unit != space_symbol
                                                            and space_symbol != SPACE):
            raise DataError(f"unit {i} ({unit!r}) cannot be written to {TOKENS_FILE}: sherpa-onnx splits lines at "
                            "whitespace and reads a leading \u2581 as a space")
        lines.append(f"{sym} {i}")
    return lines


def _add_metadata(path: Path, entries: Mapping[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    onnx.save(model, str(path))


@dataclass
class Prepared:
    """A checked source for either sherpa-onnx export: the model with CMVN in front, its tokens.txt
    lines and what the metadata, the manifest and the README say about it."""

    src: ox.Source
    network: _CmvnModel
    lines: list[str]
    feature_dim: int
    sample_rate: int
    subsampling: int
    nfc: bool

    def metadata(self, loader: str, **entries: Any) -> dict[str, Any]:
        """The ONNX metadata both exports write (sherpa-onnx reads ``vocab_size`` and
        ``subsampling_factor``; the rest describes the model), then ``entries``."""
        from kospeech import __version__

        tokenizer = self.src.bundle.tokenizer
        return {"model_type": "wenet_ctc", "vocab_size": len(self.lines), "subsampling_factor": self.subsampling,
                **entries, "feature_dim": self.feature_dim, "sample_rate": self.sample_rate,
                "frontend": "kaldi_fbank", "language": "Korean", "tokenizer": tokenizer.name, "nfc": int(self.nfc),
                "model_author": "kospeech", "kospeech_version": __version__,
                "comment": f"exported by kospeech {__version__} from {self.src.path.name} ({self.src.name}); "
                           f"load with {loader}"}


def prepare(checkpoint: str | os.PathLike[str], quantize: str | None) -> Prepared:
    """Open ``checkpoint`` for a sherpa-onnx export: refuse (one line) what sherpa-onnx cannot run the
    same way (no CTC head, another frontend, units tokens.txt cannot hold) and make tokens.txt's lines."""
    if quantize not in (None, *ox.QUANTIZE):
        raise ConfigError(f"--quantize {quantize!r} is not supported; use one of {', '.join(ox.QUANTIZE)}")
    src = ox.load_source(checkpoint)
    if src.head != "ctc":
        raise ConfigError(f"{src.path}: model '{src.name}' has no CTC head ({src.head}); sherpa-onnx export covers "
                          "CTC models (WeNet's loader)")
    check_frontend(src.frontend.config, str(src.path))
    tokenizer = src.bundle.tokenizer
    units = [tokenizer.id_to_token(i) for i in range(int(tokenizer.vocab_size))]
    space = SPACE if tokenizer.name == "sentencepiece" else str(getattr(tokenizer, "space_symbol", "|"))
    if units[0] != "<blank>":
        raise DataError(f"{src.path}: unit 0 is {units[0]!r}, not <blank>; sherpa-onnx takes the blank from it")
    lines = token_lines(units, space)
    input_dim = int(src.frontend.output_dim)
    network = _CmvnModel(src.model, src.bundle.cmvn, getattr(src.frontend, "floor", None)).eval()
    return Prepared(src, network, lines, input_dim, int(src.frontend.sample_rate),
                    ox.subsampling_factor(src.model, input_dim), tokenizer.name == "jamo")


def write_export(prep: Prepared, tmp: Path, out: Path, graph: str, metadata: Mapping[str, Any],
                 manifest: Mapping[str, Any], readme: str, quantize: str | None) -> None:
    """Finish a sherpa-onnx export staged in ``tmp`` (which holds the graph file ``graph``): its
    metadata, [the int8 copy], tokens.txt, sherpa.yaml (the metadata block, then ``manifest``),
    README.md; then move it into place as ``out``."""
    from kospeech.inference import package as pk
    from kospeech.metadata import make_metadata

    _add_metadata(tmp / graph, metadata)
    files = {"model": graph, "tokens": TOKENS_FILE}
    if quantize == "int8":
        files["int8"] = graph.replace(".onnx", ".int8.onnx")
        ox._quantize(tmp / graph, tmp / files["int8"])
        _add_metadata(tmp / files["int8"], metadata)
    (tmp / TOKENS_FILE).write_text("\n".join(prep.lines) + "\n", encoding="utf-8")
    src = prep.src
    inherited = {k: src.bundle.metadata[k] for k in ("plugins", "training_corpus") if k in src.bundle.metadata}
    doc = {
        "metadata": make_metadata("export", checksum=sha256_files(tmp / graph), **inherited),
        **{k: v for k, v in manifest.items() if k != "check"},
        "source": {"checkpoint": src.path.name, "model": src.name},
        "files": files,
        "feature_dim": prep.feature_dim, "sample_rate": prep.sample_rate, "subsampling_factor": prep.subsampling,
        "nfc": prep.nfc, "frontend": ox._plain(src.frontend.config), "check": manifest["check"],
    }
    (tmp / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (tmp / "README.md").write_text(readme, encoding="utf-8")
    pk.replace_dir(tmp, out, (MANIFEST,))


def export_sherpa(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  quantize: str | None = None, opset: int = ox.OPSET) -> Path:
    """Write ``out_dir`` (model.onnx with CMVN folded in and sherpa-onnx's metadata, tokens.txt,
    sherpa.yaml, README.md; with ``quantize="int8"`` also model.int8.onnx, the same metadata) from a
    CTC ``checkpoint`` or package trained on ``kaldi_fbank`` features.

    A package's LM and beam search do not come along: sherpa-onnx decodes CTC greedily (or with its
    own prefix beam, without our n-gram). ``out_dir`` is replaced only when it is an earlier one.
    """
    prep = prepare(checkpoint, quantize)
    src = prep.src
    out, tmp = ox.staging_dirs(out_dir, src.path)
    try:
        graphs, diff = ox._export_ctc(prep.network, prep.feature_dim, tmp, opset)
        if not diff <= ox.CHECK_TOLERANCE:
            raise DataError(f"{src.path}: the sherpa-onnx graph disagrees with PyTorch on another batch shape (max "
                            f"difference {diff:.3g})")
        loader = "sherpa_onnx.OfflineRecognizer.from_wenet_ctc"
        write_export(prep, tmp, out, graphs["onnx"], prep.metadata(loader),
                     {"format": "sherpa-onnx", "loader": loader, "check": {"max_abs_diff": float(diff)}},
                     _readme(out.name, prep.feature_dim, prep.sample_rate, prep.nfc), quantize)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s for sherpa-onnx to %s (max |difference| to PyTorch %.2g)", src.path, out, diff)
    return out


def compose_snippet(nfc: bool) -> str:
    """README lines that read a jamo model's sherpa-onnx text as our detokenizer does (empty otherwise)."""
    return ("\n# a jamo model: sherpa-onnx prints conjoining jamo; NFC composes the syllables, and the\n"
            "# jamo left over (no syllable: a wrong guess) are dropped, as KoSpeech's own detokenizer does\n"
            "import re, unicodedata\n"
            "text = \" \".join(re.sub(\"[\\u1100-\\u11ff]\", \"\", unicodedata.normalize(\"NFC\", text)).split())\n"
            ) if nfc else ""


def _readme(name: str, feature_dim: int, sample_rate: int, nfc: bool) -> str:
    compose = compose_snippet(nfc)
    return f"""# {name}: a KoSpeech CTC model for sherpa-onnx

```python
import sherpa_onnx, soundfile as sf

recognizer = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(
    model="{name}/model.onnx", tokens="{name}/tokens.txt", feature_dim={feature_dim}, sample_rate={sample_rate})
wave, rate = sf.read("speech.wav", dtype="float32")
stream = recognizer.create_stream()
stream.accept_waveform(rate, wave)
recognizer.decode_stream(stream)
text = stream.result.text.strip()
{compose}```

Features are computed by sherpa-onnx (Kaldi fbank); CMVN is inside model.onnx.
"""
