"""The onnxruntime engine: an export dir decoded with onnxruntime and numpy, no torch.

:class:`OnnxEngine` implements the driver's engine interface
(:class:`kospeech.inference.driver.Engine`): waves -> features (numpy frontend, CMVN) -> the
exported graphs -> a numpy search (CTC greedy, CTC prefix beam with n-gram shallow fusion,
transducer greedy, attention greedy) -> token ids with their CTC spans. :class:`ExportedModel`
is the driver over it, so inputs, long audio, batching, per-item errors and results are the
very code the torch engine runs behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kospeech.errors import ConfigError, DataError
from kospeech.export import manifest as mf
from kospeech.files import sha256_files
from kospeech.inference.driver import Driver
from kospeech.inference.engine import Decoded, samples_for_frames
from kospeech.inference.package import package_name, resolve_lm
from kospeech.inference.timing import TokenSpan
from kospeech.metadata import check_metadata
from kospeech.runtime import attention, ctc, transducer
from kospeech.runtime.features import NumpyFrontend, kaldi_min_samples
from kospeech.runtime.tokens import Detokenizer

OPTIONS = {"ctc_greedy": (), "ctc_prefix_beam": ("beam_size", "lm", "lm_weight", "length_bonus", "hotwords",
                                                  "hotword_weight"),
           "transducer_greedy": ("max_symbols_per_frame",),
           "greedy": ("max_len_ratio",)}
#: onnxruntime input types of decoder state tensors -> numpy (the zero start state)
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
           "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class RuntimeSearch:
    """A checked search config and, for fusion, its loaded n-gram (what :meth:`OnnxEngine.build_search` gives)."""

    def __init__(self, cfg: Mapping[str, Any], lm: Any = None, context: Any = None) -> None:
        self.cfg, self.lm, self.context = dict(cfg), lm, context


class OnnxEngine:
    """A loaded export directory as a driver engine (see :func:`kospeech.runtime.load`)."""

    kind = "onnx"

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
        if self.head not in mf.RUNTIME_SEARCHES:
            raise DataError(f"{d}: network head {self.head!r} is not one this runtime decodes "
                            f"({', '.join(mf.RUNTIME_SEARCHES)})")
        use_int8 = ("int8" in files) if int8 is None else int8
        if use_int8 and "int8" not in files:
            raise ConfigError(f"{d}: has no int8 model; export with --quantize int8")
        graphs = [d / f for f in net.get("graphs", [files.get("onnx", mf.ONNX_FILE)])]
        for path in graphs:
            if not path.is_file():
                raise DataError(f"{path}: missing; export the checkpoint again")
        checksum = self.metadata.get("checksum")
        if checksum and sha256_files(*graphs) != checksum:
            names = ", ".join(p.name for p in graphs)
            raise DataError(f"{d}: sha256 of {names} differs from {mf.MANIFEST}'s checksum; the files are damaged, "
                            "export again")
        if use_int8 and net.get("int8_checksum"):
            int8_paths = [d / f for f in net.get("int8_graphs", [])]
            if not all(p.is_file() for p in int8_paths) or sha256_files(*int8_paths) != net["int8_checksum"]:
                raise DataError(f"{d}: the int8 graphs are missing or their sha256 differs from {mf.MANIFEST}'s; "
                                "the files are damaged: export again (or load with int8=False)")
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
        self.decoder = session("decoder") if "decoder" in files else None
        self.searches: tuple[str, ...] = mf.RUNTIME_SEARCHES[self.head]
        if self.decoder is not None:
            self._decoder_init = [list(s) for s in net.get("decoder_state", [])]
            self._decoder_inputs = [i.name for i in self.decoder.get_inputs()[3:]]
            self._decoder_dtypes = [_DTYPES.get(i.type, np.float32) for i in self.decoder.get_inputs()[3:]]
            if self.head == "ctc":
                self.searches = (*self.searches, "greedy")
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
        self.space_symbol = self.tokenizer.space_symbol

    def default_search(self) -> dict[str, Any]:
        search = self.manifest.get("decode", {}).get("search")
        return resolve_lm(search or {"name": self.searches[0]}, self.directory)

    def chunk_frames(self) -> int:
        """The chunk size of the graph's chunk-wise attention in output frames (0: none), as the
        export recorded it: a stream starts its windows on chunk boundaries."""
        return int(self.manifest.get("network", {}).get("chunk_size") or 0)

    def min_samples(self) -> int:
        fe = self.frontend
        if fe.kaldi:
            return kaldi_min_samples(self.min_frames, fe.hop_length, fe.win_length, fe.snip_edges)
        return samples_for_frames(self.min_frames, self.sample_rate, fe.hop_length / self.sample_rate)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def build_search(self, cfg: Mapping[str, Any]) -> RuntimeSearch:
        checked = self._check_search(cfg)
        return RuntimeSearch(checked, *self.ctc_fusion(checked))

    def ctc_fusion(self, cfg: Mapping[str, Any]) -> tuple[Any, Any]:
        """The n-gram and hotword graph of a CTC search config (:func:`kospeech.runtime.ctc.ctc_fusion`)."""
        return ctc.ctc_fusion(cfg, self.tokenizer.vocab_size, self.tokenizer.encode)

    def decode(self, waves: Sequence[np.ndarray], search: Any, *, timestamps: bool) -> list[Decoded]:
        if not isinstance(search, RuntimeSearch):
            search = self.build_search(search)
        return [Decoded(tokens, None, spans if timestamps else None)
                for tokens, spans in self._decode_batch(self._run(waves), search)]

    # -- pieces (also used by the parity test and bench/export.py) ---------------------------

    def features(self, wave: np.ndarray) -> np.ndarray:
        """(S,) wave -> (T, D) normalised features, as the checkpoint's frontend and CMVN give them."""
        feats = self.frontend(wave)
        if self.cmvn is not None:
            feats = (feats - self.cmvn[0]) / self.cmvn[1]
        return feats

    def network_outputs(self, waves: Sequence[np.ndarray], output: str | None = None) -> list[np.ndarray]:
        """The first graph's output per wave, the waves run as one padded batch: CTC log-probs
        (T', V) for CTC models, encoder frames (T', H) for transducers and attention-only models;
        ``output="encoder_out"`` gives a CTC model's encoder frames when it has a decoder."""
        return [o[output or self._first_output] for o in self._run(waves)]

    @property
    def _first_output(self) -> str:
        return "log_probs" if self.head == "ctc" else "encoder_out"

    def _run(self, waves: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Every output of the first graph per wave (trimmed to its frames)."""
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
        names = [o.name for o in self.session.get_outputs()]
        outs = dict(zip(names, self.session.run(None, {"features": batch, "feature_lengths": lengths})))
        out_lengths = outs.pop("lengths")
        return [{k: v[b, : int(n)] for k, v in outs.items()} for b, n in enumerate(out_lengths)]

    def log_probs(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """CTC log-probabilities (T', V) per wave (CTC exports)."""
        if self.head != "ctc":
            raise ConfigError(f"{self.directory}: a {self.head} export has no CTC log-probabilities")
        return self.network_outputs(waves)

    # -- the transducer's step and joint for the numpy greedy (kospeech.runtime.transducer) -------
    def predictor_state(self) -> list[np.ndarray]:
        """The prediction network's start state for one hypothesis: zeros of the graph's shapes."""
        return [np.zeros(shape, dtype=np.float32) for shape in self._state_shapes]

    def predictor_step(self, tokens: np.ndarray, state: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One prediction-network step: tokens (1,) -> its output (1, P) and the next state."""
        out, *new_state = self.predictor.run(None, {"tokens": tokens, **dict(zip(self._state_inputs, state))})
        return out, new_state

    def _decoder_step(self, tokens: np.ndarray, state: Sequence[np.ndarray], encoder_out: np.ndarray,
                      encoder_lengths: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        assert self.decoder is not None
        feeds = {"tokens": tokens, "encoder_out": encoder_out, "encoder_lengths": encoder_lengths,
                 **dict(zip(self._decoder_inputs, state))}
        logp, *new_state = self.decoder.run(None, feeds)
        return logp, new_state

    def attention_greedy(self, outs: Sequence[Mapping[str, np.ndarray]], max_len_ratio: float = 1.0) -> list[list[int]]:
        """Batched greedy search of the attention decoder over the pieces' encoder outputs."""
        encs = [o["encoder_out"] for o in outs]
        lengths = np.array([e.shape[0] for e in encs], dtype=np.int64)
        batch = np.zeros((len(encs), int(lengths.max()), encs[0].shape[1]), dtype=np.float32)
        for b, e in enumerate(encs):
            batch[b, : e.shape[0]] = e
        state = [np.zeros((len(encs), *shape), dtype=dt) for shape, dt in zip(self._decoder_init, self._decoder_dtypes)]
        return attention.greedy(batch, lengths, self._decoder_step, state, max_len_ratio)

    def joint(self, frame: np.ndarray, pred_out: np.ndarray) -> np.ndarray:
        """The joiner on one encoder frame (1, H): log-probabilities (1, V)."""
        return self.joiner.run(None, {"encoder_frame": frame, "predictor_out": pred_out})[0]

    def _check_search(self, search: Mapping[str, Any]) -> dict[str, Any]:
        """``search`` when the runtime has it for this head and knows every option, else a ConfigError."""
        cfg = dict(search)
        if cfg.get("name") not in self.searches:
            raise ConfigError(f"search {cfg.get('name')!r}: the runtime has {', '.join(self.searches)} for "
                              f"this {self.head} export")
        unknown = set(cfg) - {"name", *OPTIONS[cfg["name"]]}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ConfigError(f"search {cfg['name']}: unknown option(s) {names}; it takes "
                              f"{', '.join(OPTIONS[cfg['name']]) or 'none'}")
        return cfg

    def _decode_batch(self, outs: Sequence[Mapping[str, np.ndarray]],
                      search: RuntimeSearch) -> list[tuple[list[int], list[TokenSpan]]]:
        """Pieces' first-graph outputs -> token ids and spans; the attention decoder runs them as one batch."""
        cfg = search.cfg
        if cfg["name"] != "greedy":
            return [self._decode(o[self._first_output], search) for o in outs]
        step = self.frame_seconds
        decoded = []
        for o, tokens in zip(outs, self.attention_greedy(outs, float(cfg.get("max_len_ratio", 1.0)))):
            # word times by CTC forced alignment when the model has a CTC head (as the PyTorch API)
            spans = ctc.align(o["log_probs"], tokens) or [] if "log_probs" in o and tokens else []
            decoded.append((tokens, [TokenSpan(self.tokenizer.id_to_token(t), s * step, e * step, round(p, 4))
                                     for t, s, e, p in spans]))
        return decoded

    def _decode(self, out: np.ndarray, search: RuntimeSearch) -> tuple[list[int], list[TokenSpan]]:
        """One piece's network output -> token ids and their spans in seconds from the piece's start."""
        cfg = search.cfg
        if cfg["name"] == "transducer_greedy":
            tokens, spans = transducer.greedy(out, self.predictor_step, self.joint, self.predictor_state(),
                                              int(cfg.get("max_symbols_per_frame", 3)))
        elif cfg["name"] == "ctc_greedy":
            tokens, spans = ctc.greedy(out)
        else:
            tokens = ctc.prefix_beam(out, int(cfg.get("beam_size", 10)), lm=search.lm,
                                     lm_weight=float(cfg.get("lm_weight") or 0.0),
                                     length_bonus=float(cfg.get("length_bonus", 0.0)),
                                     context=search.context)[0][0]
            spans = ctc.align(out, tokens) or []
        step = self.frame_seconds
        return tokens, [TokenSpan(self.tokenizer.id_to_token(t), s * step, e * step, round(p, 4))
                        for t, s, e, p in spans]


class ExportedModel(Driver):
    """An export dir ready to transcribe without torch: the driver over an :class:`OnnxEngine`.

    ``transcribe`` takes and returns what ``kospeech.load(checkpoint).transcribe`` does; with no
    options it decodes with the export's own search (a package's LM and weights included).
    """

    def __init__(self, directory: str | os.PathLike[str], *, int8: bool | None = None, num_threads: int = 0,
                 search: str | Mapping[str, Any] | None = None, max_segment_seconds: float = 20.0,
                 **options: Any) -> None:
        engine = OnnxEngine(directory, int8=int8, num_threads=num_threads)
        name = str(engine.manifest.get("name") or package_name(engine.directory))
        super().__init__(engine, search=search, max_segment_seconds=max_segment_seconds, name=name, **options)

    def __getattr__(self, key: str) -> Any:  # the engine's facts and pieces: head, int8, log_probs, manifest...
        if key == "engine":
            raise AttributeError(key)
        return getattr(self.engine, key)

    def __repr__(self) -> str:
        src = self.engine.manifest.get("source", {})
        return f"ExportedModel({str(self.engine.directory)!r}, model={src.get('model')!r}, int8={self.engine.int8})"
