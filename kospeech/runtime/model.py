"""An exported model decoded with onnxruntime and numpy: the torch-free twin of ``kospeech.load``.

``transcribe`` takes what the Python API takes (a path, a float wave at the model's rate, a
file's bytes, or a list of them) and returns the same :class:`~kospeech.inference.result.Result`
objects: text, words and syllables with times (from the CTC spans of the chosen tokens, grouped
by :func:`kospeech.inference.timing.syllables_and_words`), duration. A bad item gives a failed
Result naming it; the others still decode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kospeech.audio import check_finite, read_audio, read_audio_bytes, resample_wave
from kospeech.errors import ConfigError, DataError, KoSpeechError
from kospeech.export import manifest as mf
from kospeech.inference.result import Result
from kospeech.inference.segment import segment_stream
from kospeech.inference.timing import Piece, TokenSpan, assemble
from kospeech.metadata import check_metadata
from kospeech.runtime import ctc, transducer
from kospeech.runtime.features import NumpyFrontend
from kospeech.runtime.tokens import Detokenizer

SEARCHES = {"ctc": ("ctc_greedy", "ctc_prefix_beam"), "transducer": ("transducer_greedy",)}
OPTIONS = {"ctc_greedy": (), "ctc_prefix_beam": ("beam_size",), "transducer_greedy": ("max_symbols_per_frame",)}
Item = str | os.PathLike | np.ndarray | bytes


class ExportedModel:
    """A loaded export directory (see :func:`kospeech.runtime.load`)."""

    def __init__(self, directory: str | os.PathLike[str], *, int8: bool | None = None, num_threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("kospeech.runtime needs onnxruntime: pip install onnxruntime") from None
        d = Path(directory)
        if not (d / mf.MANIFEST).is_file():
            raise DataError(f"{d}: not an export directory (no {mf.MANIFEST}); make one with `kospeech export`")
        self.directory = d
        self.manifest: dict[str, Any] = yaml.safe_load((d / mf.MANIFEST).read_text(encoding="utf-8")) or {}
        self.metadata = check_metadata(self.manifest.get("metadata"), str(d / mf.MANIFEST))
        files = self.manifest.get("files", {})
        net = self.manifest.get("network", {})
        self.head = str(net.get("head"))
        if self.head not in ("ctc", "transducer"):
            raise DataError(f"{d}: network head {self.head!r} is not one this runtime decodes (ctc, transducer)")
        use_int8 = ("int8" in files) if int8 is None else int8
        if use_int8 and "int8" not in files:
            raise ConfigError(f"{d}: has no int8 model; export with --quantize int8")
        graphs = [d / f for f in net.get("graphs", [files.get("onnx", mf.ONNX_FILE)])]
        for path in graphs:
            if not path.is_file():
                raise DataError(f"{path}: missing; export the checkpoint again")
        checksum = self.metadata.get("checksum")
        if checksum and mf.sha256_files(*graphs) != checksum:
            names = ", ".join(p.name for p in graphs)
            raise DataError(f"{d}: sha256 of {names} differs from {mf.MANIFEST}'s checksum; the files are damaged, "
                            "export again")
        self.int8 = bool(use_int8)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1

        def session(key: str) -> Any:
            name = files.get(f"{key}_int8" if key != "onnx" else "int8") if use_int8 else None
            return ort.InferenceSession(str(d / (name or files[key])), opts, providers=["CPUExecutionProvider"])

        self.session = session("onnx")
        if self.head == "transducer":
            self.predictor, self.joiner = session("predictor"), session("joiner")
            self._state_inputs = [i.name for i in self.predictor.get_inputs()[1:]]
            self._state_shapes = [[1, *i.shape[1:]] for i in self.predictor.get_inputs()[1:]]
        with np.load(d / files.get("frontend_arrays", mf.FRONTEND_ARRAYS)) as arrays:
            self.frontend = NumpyFrontend(self.manifest["frontend"], dict(arrays))
        self.cmvn: tuple[np.ndarray, np.ndarray] | None = None
        if files.get("cmvn"):
            with np.load(d / files["cmvn"]) as stats:
                self.cmvn = (stats["mean"].astype(np.float32), stats["std"].astype(np.float32))
        self.tokenizer = Detokenizer(d / files.get("tokenizer", mf.TOKENIZER_DIR))
        self.sample_rate = self.frontend.sample_rate
        self.frame_seconds = float(net["frame_seconds"])
        self.min_frames = int(net.get("min_frames", 1))
        search = self.manifest.get("decode", {}).get("search")
        self.default_search: dict[str, Any] = dict(search or {"name": "ctc_greedy"})

    def __repr__(self) -> str:
        src = self.manifest.get("source", {})
        return f"ExportedModel({str(self.directory)!r}, model={src.get('model')!r}, int8={self.int8})"

    # -- pieces (also used by the parity test and bench/export.py) ---------------------------

    def read(self, item: Item) -> tuple[np.ndarray, str]:
        """A wave at the model's rate and the item's name for results and errors."""
        if isinstance(item, np.ndarray):
            if item.ndim != 1 or item.size == 0:
                raise DataError(f"<array>: expected a non-empty mono wave, got shape {item.shape}")
            check_finite(item, "<array>")
            return item.astype(np.float32, copy=False), "<array>"
        if isinstance(item, (bytes, bytearray)):
            wave, rate = read_audio_bytes(item, "<bytes>")
            check_finite(wave, "<bytes>")
            return resample_wave(wave, rate, self.sample_rate), "<bytes>"
        return read_audio(item, sample_rate=self.sample_rate), str(item)

    def features(self, wave: np.ndarray) -> np.ndarray:
        """(S,) wave -> (T, D) normalised features, as the checkpoint's frontend and CMVN give them."""
        feats = self.frontend(wave)
        if self.cmvn is not None:
            feats = (feats - self.cmvn[0]) / self.cmvn[1]
        return feats

    def network_outputs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The first graph's output per wave, the waves run as one padded batch: CTC log-probs
        (T', V) for CTC models, encoder frames (T', H) for transducers."""
        feats = [self.features(w) for w in waves]
        for f in feats:
            if f.shape[0] < self.min_frames:
                raise DataError(
                    f"audio of {f.shape[0] * self.frontend.hop_length / self.sample_rate:.3f} s is too short; the "
                    f"model needs at least {self.min_frames * self.frontend.hop_length / self.sample_rate:.3f} s"
                )
        lengths = np.array([f.shape[0] for f in feats], dtype=np.int64)
        batch = np.zeros((len(feats), int(lengths.max()), feats[0].shape[1]), dtype=np.float32)
        for b, f in enumerate(feats):
            batch[b, : f.shape[0]] = f
        out, out_lengths = self.session.run(None, {"features": batch, "feature_lengths": lengths})
        return [out[b, : int(n)] for b, n in enumerate(out_lengths)]

    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """CTC log-probabilities (T', V) per wave (CTC exports)."""
        if self.head != "ctc":
            raise ConfigError(f"{self.directory}: a {self.head} export has no CTC log-probabilities")
        return self.network_outputs(waves)

    def _step(self, tokens: np.ndarray, state: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        out, *new_state = self.predictor.run(None, {"tokens": tokens, **dict(zip(self._state_inputs, state))})
        return out, new_state

    def _joint(self, frame: np.ndarray, pred_out: np.ndarray) -> np.ndarray:
        return self.joiner.run(None, {"encoder_frame": frame, "predictor_out": pred_out})[0]

    # -- the API --------------------------------------------------------------------------------

    def transcribe(
        self,
        items: Item | Sequence[Item],
        *,
        search: str | Mapping[str, Any] | None = None,
        batch_size: int = 8,
        segment: bool = True,
        max_segment_seconds: float = 20.0,
        **options: Any,
    ) -> Result | list[Result]:
        """Transcribe one item (returns a Result) or a list (returns a list, in order).

        ``search``: ``ctc_greedy``, ``ctc_prefix_beam`` or ``transducer_greedy`` (default: the
        export's); options such as ``beam_size=10`` go with it. Audio longer than
        ``max_segment_seconds`` is cut at its longest pauses (:mod:`kospeech.inference.segment`,
        as the PyTorch API does) and the pieces' times are put back on the whole item.
        """
        single = not isinstance(items, (list, tuple))
        todo: list[Item] = [items] if single else list(items)  # type: ignore[list-item]
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        cfg = self._search(search, options)
        results: list[Result | None] = [None] * len(todo)
        rate = self.sample_rate
        pieces: list[tuple[int, int, np.ndarray]] = []  # (item, start sample, wave)
        names: dict[int, tuple[str, float]] = {}
        for i, item in enumerate(todo):
            try:
                wave, name = self.read(item)
            except KoSpeechError as err:
                results[i] = Result.failed(_name(item), str(err))
                continue
            names[i] = (name, wave.size / rate)
            if segment and wave.size > max_segment_seconds * rate:
                cuts = segment_stream([wave], rate, max_seconds=max_segment_seconds,
                                      min_seconds=max_segment_seconds / 4)
                pieces.extend((i, start, piece) for start, piece in cuts)
            else:
                pieces.append((i, 0, wave))
        pieces.sort(key=lambda p: -p[2].size)  # similar lengths share a batch: little padding
        decoded: dict[int, list[Piece]] = {i: [] for i in names}
        failed: dict[int, str] = {}
        for start in range(0, len(pieces), batch_size):
            chunk = pieces[start : start + batch_size]
            try:
                outs: list[np.ndarray | None] = list(self.network_outputs([w for _, _, w in chunk]))
            except KoSpeechError:
                outs = [None] * len(chunk)  # decode one by one below, so one bad item names itself
            for (i, offset, wave), out in zip(chunk, outs):
                try:
                    out = self.network_outputs([wave])[0] if out is None else out
                    tokens, spans = self._decode(out, cfg)
                    decoded[i].append((offset / rate, (offset + wave.size) / rate, tokens, spans))
                except KoSpeechError as err:
                    failed[i] = f"{names[i][0]}: {err}"
        space = self.tokenizer.space_symbol
        for i, (name, seconds) in names.items():
            if i in failed:
                results[i] = Result.failed(name, failed[i])
            else:
                results[i] = assemble(sorted(decoded[i], key=lambda p: p[0]), self.tokenizer.decode,
                                      space_symbol=space, seconds=seconds, source=name)
        return results[0] if single else results  # type: ignore[return-value]

    def _search(self, search: str | Mapping[str, Any] | None, options: Mapping[str, Any]) -> dict[str, Any]:
        if search is None:
            cfg = {**self.default_search, **options}
        elif isinstance(search, str):
            cfg = {"name": search, **options}
        else:
            cfg = {**search, **options}
        if cfg.get("name") not in SEARCHES[self.head]:
            raise ConfigError(f"search {cfg.get('name')!r}: the runtime has {', '.join(SEARCHES[self.head])} for "
                              f"{self.head} models")
        unknown = set(cfg) - {"name", *OPTIONS[cfg["name"]]}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ConfigError(f"search {cfg['name']}: unknown option(s) {names}; it takes "
                              f"{', '.join(OPTIONS[cfg['name']]) or 'none'}")
        return cfg

    def _decode(self, out: np.ndarray, cfg: Mapping[str, Any]) -> tuple[list[int], list[TokenSpan]]:
        """One piece's network output -> token ids and their spans in seconds from the piece's start."""
        if cfg["name"] == "transducer_greedy":
            state = [np.zeros(shape, dtype=np.float32) for shape in self._state_shapes]
            tokens, spans = transducer.greedy(out, self._step, self._joint, state,
                                              int(cfg.get("max_symbols_per_frame", 3)))
        elif cfg["name"] == "ctc_greedy":
            tokens, spans = ctc.greedy(out)
        else:
            tokens = ctc.prefix_beam(out, int(cfg.get("beam_size", 10)))[0][0]
            spans = ctc.align(out, tokens) or []
        step = self.frame_seconds
        return tokens, [TokenSpan(self.tokenizer.id_to_token(t), s * step, e * step, round(p, 4))
                        for t, s, e, p in spans]


def _name(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return "<array>"
    if isinstance(item, (bytes, bytearray)):
        return "<bytes>"
    return str(item)
