"""Checkpoint -> ONNX export directory (see :mod:`kospeech.export.manifest` for the layout).

What goes into the graph and what stays outside: the encoder and the CTC head (with its
log-softmax) are the network, traced once with dynamic batch and time axes. The frontend and
CMVN stay outside, as numpy in the runtime, because ``torch.stft`` has no portable ONNX form
and because a client may want to feed its own features; their arrays (window, mel filters,
DCT) are copied from the checkpoint's own frontend module, so the runtime does not re-derive
the mel formulas and matches the PyTorch features to float rounding.

The export checks itself: after writing, onnxruntime decodes a batch of another size and
length than the traced one and the log-probabilities are compared with PyTorch's; a model
whose code bakes a shape into the trace fails here rather than in a user's hands.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from kospeech.errors import ConfigError, DataError
from kospeech.export import manifest as mf
from kospeech.files import sha256_files
from kospeech.metadata import make_metadata
from kospeech.models.base import chunk_frames, min_input_frames, model_head

logger = logging.getLogger(__name__)

OPSET = 17
QUANTIZE = ("int8",)
#: largest |log-prob| difference between PyTorch and onnxruntime the self-check accepts
CHECK_TOLERANCE = 1e-3


class _CTCNetwork(nn.Module):
    """features, lengths -> CTC log-probabilities and their lengths (the exported graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc, enc_lengths = self.model.encode(features, feature_lengths)
        return self.model.ctc_log_probs(enc), enc_lengths


class _CTCEncoderNetwork(nn.Module):
    """features, lengths -> CTC log-probabilities, lengths and the encoder output (CTC models with an
    attention decoder: the decoder graph reads the encoder output, the CTC searches the log-probs)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc, enc_lengths = self.model.encode(features, feature_lengths)
        return self.model.ctc_log_probs(enc), enc_lengths, enc


class _EncoderNetwork(nn.Module):
    """features, lengths -> encoder output and its lengths (a transducer's first graph)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(features, feature_lengths)


class _PredictorNetwork(nn.Module):
    """tokens, *state tensors -> predictor output, *next state tensors (state flattened for ONNX)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, new_state = self.model.predictor_step(tokens, tuple(state))
        return (out, *new_state)


class _DecoderNetwork(nn.Module):
    """tokens, encoder_out, encoder_lengths, *state tensors -> log-probs, *next state tensors: one
    attention-decoder step with its state pytree flattened by :func:`_flatten_state`."""

    def __init__(self, model: nn.Module, spec: Any) -> None:
        super().__init__()
        self.model = model
        self.spec = spec

    def forward(self, tokens: torch.Tensor, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor,
                *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logp, new_state = self.model.decoder_step(tokens, _unflatten_state(self.spec, iter(state)), encoder_out,
                                                  encoder_lengths)
        return (logp.float(), *_flatten_state(new_state)[0])


class _StateError(ConfigError):
    """The decoder's state cannot be given to a graph as flat tensors."""


def _flatten_state(state: Any) -> tuple[list[torch.Tensor], Any]:
    """A decoder state pytree -> its tensors (dict keys sorted) and a structure to rebuild it."""
    if torch.is_tensor(state):
        return [state], "tensor"
    if state is None:
        return [], None
    if isinstance(state, Mapping):
        keys = sorted(state)
        parts = [_flatten_state(state[k]) for k in keys]
        return [t for p in parts for t in p[0]], ("dict", tuple(keys), tuple(p[1] for p in parts))
    if isinstance(state, (list, tuple)):
        parts = [_flatten_state(v) for v in state]
        return [t for p in parts for t in p[0]], (type(state).__name__, len(parts), tuple(p[1] for p in parts))
    raise _StateError(f"the attention decoder's state holds a {type(state).__name__}; export needs tensors")


def _unflatten_state(spec: Any, leaves: Any) -> Any:
    if spec == "tensor":
        return next(leaves)
    if spec is None:
        return None
    kind, keys, parts = spec
    if kind == "dict":
        return {k: _unflatten_state(p, leaves) for k, p in zip(keys, parts)}
    values = [_unflatten_state(p, leaves) for p in parts]
    return tuple(values) if kind == "tuple" else values


class _JoinerNetwork(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, encoder_frame: torch.Tensor, predictor_out: torch.Tensor) -> torch.Tensor:
        return self.model.joint(encoder_frame, predictor_out)


def frontend_arrays(frontend: nn.Module) -> dict[str, np.ndarray]:
    """The arrays the numpy frontend needs, taken from the built module (torchaudio or librosa backend)."""
    arrays: dict[str, np.ndarray] = {"window": np.asarray(frontend._window_np, np.float64)}
    if hasattr(frontend, "n_mels"):
        if hasattr(frontend, "mel_fb"):
            arrays["mel_fb"] = frontend.mel_fb.detach().cpu().double().numpy()  # (F, n_mels)
        else:
            arrays["mel_fb"] = np.asarray(frontend._mel_np, np.float64).T
    if hasattr(frontend, "n_mfcc"):
        import torchaudio.functional as AF

        arrays["dct"] = AF.create_dct(frontend.n_mfcc, frontend.n_mels, norm="ortho").double().numpy()
    return arrays


def _example_batch(input_dim: int, frames: int, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(len(lengths), frames, input_dim, generator=gen)
    lens = torch.tensor(lengths, dtype=torch.long)
    feats = feats.masked_fill(torch.arange(frames)[None, :, None] >= lens[:, None, None], 0.0)
    return feats, lens


def _max_diff(session: Any, network: nn.Module, inputs: dict[str, torch.Tensor], valid: int | None = 0) -> float:
    """Largest |difference| between onnxruntime and PyTorch outputs; with ``valid`` set, output
    ``valid + 1`` holds lengths and only frames within them count in output ``valid``."""
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = network(*inputs.values())
    ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    if [g.shape for g in got] != [r.shape for r in ref]:
        return float("inf")
    if valid is None:
        return max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    lengths = ref[valid + 1]
    if not np.array_equal(got[valid + 1], lengths):
        return float("inf")
    return max(float(np.abs(got[valid][b, :n] - ref[valid][b, :n]).max()) for b, n in enumerate(lengths.tolist()) if n)


def _trace(network: nn.Module, inputs: dict[str, torch.Tensor], outputs: list[str], axes: dict[str, dict[int, str]],
           path: Path, opset: int) -> None:
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(network, tuple(inputs.values()), str(path), dynamo=False, input_names=list(inputs),
                          output_names=outputs, dynamic_axes=axes, opset_version=opset)
    network.eval()  # the exporter puts back the wrapper's (training) mode on every submodule


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns on the root logger to pre-process first
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _export_ctc(model: nn.Module, input_dim: int, tmp: Path, opset: int) -> tuple[dict[str, str], float]:
    network = _CTCNetwork(model).eval()
    feats, lens = _example_batch(input_dim, 300, [300, 211], seed=0)
    axes = {"features": {0: "batch", 1: "time"}, "feature_lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    _trace(network, {"features": feats, "feature_lengths": lens}, list(mf.OUTPUTS), axes, tmp / mf.ONNX_FILE, opset)
    feats, lens = _example_batch(input_dim, 523, [523, 97, 388], seed=1)
    diff = _max_diff(_session(tmp / mf.ONNX_FILE), network, {"features": feats, "feature_lengths": lens})
    return {"onnx": mf.ONNX_FILE}, diff


def _export_transducer(model: nn.Module, input_dim: int, tmp: Path, opset: int) -> tuple[dict[str, str], float]:
    files = mf.TRANSDUCER_FILES
    encoder = _EncoderNetwork(model).eval()
    feats, lens = _example_batch(input_dim, 300, [300, 211], seed=0)
    axes = {"features": {0: "batch", 1: "time"}, "feature_lengths": {0: "batch"},
            "encoder_out": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    _trace(encoder, {"features": feats, "feature_lengths": lens}, ["encoder_out", "lengths"], axes,
           tmp / files["onnx"], opset)
    feats, lens = _example_batch(input_dim, 523, [523, 97, 388], seed=1)
    diffs = [_max_diff(_session(tmp / files["onnx"]), encoder, {"features": feats, "feature_lengths": lens})]
    predictor = _PredictorNetwork(model).eval()

    def predictor_inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        state = model.predictor_init_state(n, torch.device("cpu"))
        if not isinstance(state, (tuple, list)) or not all(torch.is_tensor(t) for t in state):
            raise ConfigError(f"the prediction network's state is a {type(state).__name__}; export needs a tuple "
                              "of tensors")
        tokens = torch.randint(0, 5, (n,), generator=gen)
        return {"tokens": tokens, **{f"state_{i}": torch.randn(t.shape, generator=gen) for i, t in enumerate(state)}}

    inputs = predictor_inputs(2, 0)
    n_state = len(inputs) - 1
    outputs = ["predictor_out", *(f"next_state_{i}" for i in range(n_state))]
    _trace(predictor, inputs, outputs, {k: {0: "n"} for k in [*inputs, *outputs]}, tmp / files["predictor"], opset)
    diffs.append(_max_diff(_session(tmp / files["predictor"]), predictor, predictor_inputs(5, 1), valid=None))
    joiner = _JoinerNetwork(model).eval()
    with torch.no_grad():
        pred_dim = int(predictor(*inputs.values())[0].shape[-1])
    enc_dim = int(encoder(feats[:1], lens[:1])[0].shape[-1])

    def joiner_inputs(n: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return {"encoder_frame": torch.randn(n, enc_dim, generator=gen),
                "predictor_out": torch.randn(n, pred_dim, generator=gen)}

    _trace(joiner, joiner_inputs(2, 0), ["log_probs"], {k: {0: "n"} for k in ["encoder_frame", "predictor_out",
                                                                              "log_probs"]},
           tmp / files["joiner"], opset)
    diffs.append(_max_diff(_session(tmp / files["joiner"]), joiner, joiner_inputs(6, 1), valid=None))
    return dict(files), max(diffs)


def _export_ctc_decoder(model: nn.Module, input_dim: int, tmp: Path, opset: int) -> tuple[dict[str, str], float]:
    """A CTC model with an attention decoder: model.onnx also returns the encoder output, and
    decoder.onnx is the decoder step. A decoder whose state cannot be flattened is left out (the
    export is then CTC only, as before) with a warning."""
    network = _CTCEncoderNetwork(model).eval()
    feats, lens = _example_batch(input_dim, 300, [300, 211], seed=0)
    axes = {"features": {0: "batch", 1: "time"}, "feature_lengths": {0: "batch"},
            "log_probs": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}, "encoder_out": {0: "batch", 1: "frames"}}
    _trace(network, {"features": feats, "feature_lengths": lens}, [*mf.OUTPUTS, "encoder_out"], axes,
           tmp / mf.ONNX_FILE, opset)
    feats, lens = _example_batch(input_dim, 523, [523, 97, 388], seed=1)
    diff = _max_diff(_session(tmp / mf.ONNX_FILE), network, {"features": feats, "feature_lengths": lens})
    try:
        diff = max(diff, _export_decoder(model, input_dim, tmp, opset))
    except _StateError as err:
        logger.warning("%s; exporting the CTC head only", err)
        (tmp / mf.ONNX_FILE).unlink()
        return _export_ctc(model, input_dim, tmp, opset)
    return {"onnx": mf.ONNX_FILE, "decoder": mf.DECODER_FILE}, diff


def _export_attention(model: nn.Module, input_dim: int, tmp: Path, opset: int) -> tuple[dict[str, str], float]:
    """An attention model without CTC: encoder.onnx (as a transducer's) and decoder.onnx."""
    encoder = _EncoderNetwork(model).eval()
    feats, lens = _example_batch(input_dim, 300, [300, 211], seed=0)
    axes = {"features": {0: "batch", 1: "time"}, "feature_lengths": {0: "batch"},
            "encoder_out": {0: "batch", 1: "frames"}, "lengths": {0: "batch"}}
    _trace(encoder, {"features": feats, "feature_lengths": lens}, ["encoder_out", "lengths"], axes,
           tmp / mf.ENCODER_FILE, opset)
    feats, lens = _example_batch(input_dim, 523, [523, 97, 388], seed=1)
    diff = _max_diff(_session(tmp / mf.ENCODER_FILE), encoder, {"features": feats, "feature_lengths": lens})
    diff = max(diff, _export_decoder(model, input_dim, tmp, opset))
    return {"onnx": mf.ENCODER_FILE, "decoder": mf.DECODER_FILE}, diff


def _decoder_init_state(model: nn.Module, input_dim: int) -> tuple[Any, list[list[int]]]:
    """The state's structure and per-row shapes before the first step, checked to be zeros that do
    not depend on the encoder output (the runtime starts from zeros of these shapes)."""
    shapes, spec = None, None
    with torch.no_grad():
        for frames, lengths, seed in ((300, [300, 211], 0), (523, [523], 1)):
            enc, enc_len = model.encode(*_example_batch(input_dim, frames, lengths, seed))
            leaves, spec = _flatten_state(model.init_decoder_state(enc, enc_len))
            rows = [list(t.shape[1:]) for t in leaves]
            if shapes not in (None, rows) or any(bool(t.abs().max() > 0) for t in leaves if t.numel()):
                raise _StateError("the attention decoder's initial state depends on the encoder output; the runtime "
                                  "starts it from zeros")
            shapes = rows
    return spec, shapes or []


def _export_decoder(model: nn.Module, input_dim: int, tmp: Path, opset: int) -> float:
    """decoder.onnx: one ``decoder_step``; state dimensions that grow per step (a Transformer's cache)
    are dynamic axes. Checked on another batch size, encoder length and step count."""
    from kospeech.text.special import SOS_ID

    spec, init_shapes = _decoder_init_state(model, input_dim)
    network = _DecoderNetwork(model, spec).eval()

    def inputs(frames: int, lengths: list[int], seed: int, steps: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            enc, enc_len = model.encode(*_example_batch(input_dim, frames, lengths, seed))
            state = model.init_decoder_state(enc, enc_len)
            gen = torch.Generator().manual_seed(seed)
            tokens = torch.full((len(lengths),), SOS_ID, dtype=torch.long)
            for _ in range(steps):
                _, state = model.decoder_step(tokens, state, enc, enc_len)
                leaves, step_spec = _flatten_state(state)
                if step_spec != spec:
                    raise _StateError("the attention decoder's state changes form after a step (e.g. a "
                                      "location-aware attention's alignment appears); it cannot be exported "
                                      "as a fixed set of tensors")
                tokens = torch.randint(5, 20, (len(lengths),), generator=gen)
        return {"tokens": tokens, "encoder_out": enc, "encoder_lengths": enc_len,
                **{f"state_{i}": t for i, t in enumerate(_flatten_state(state)[0])}}

    one, two = inputs(300, [300, 211], 0, 1), inputs(300, [300, 211], 0, 2)
    n_state = len(init_shapes)
    axes: dict[str, dict[int, str]] = {"tokens": {0: "n"}, "encoder_out": {0: "n", 1: "frames"},
                                       "encoder_lengths": {0: "n"}, "log_probs": {0: "n"}}
    for i in range(n_state):
        a, b = one[f"state_{i}"].shape, two[f"state_{i}"].shape
        grow = [d for d in range(1, len(a)) if a[d] != b[d]]
        axes[f"state_{i}"] = {0: "n", **{d: f"state_{i}_{d}" for d in grow}}
        axes[f"next_state_{i}"] = {0: "n", **{d: f"next_state_{i}_{d}" for d in grow}}
    outputs = ["log_probs", *(f"next_state_{i}" for i in range(n_state))]
    _trace(network, two, outputs, axes, tmp / mf.DECODER_FILE, opset)
    return _max_diff(_session(tmp / mf.DECODER_FILE), network, inputs(523, [523, 97, 388], 1, 4), valid=None)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@dataclass
class Source:
    """A checkpoint or package opened for export: the loaded bundle, its model and frontend, the head kind."""

    path: Path
    package: Any  # kospeech.inference.package.Package | None
    bundle: Any  # kospeech.inference.loading's bundle
    name: str
    head: str
    has_decoder: bool

    @property
    def model(self) -> nn.Module:
        return self.bundle.model

    @property
    def frontend(self) -> Any:
        return self.bundle.frontend


def load_source(checkpoint: str | os.PathLike[str]) -> Source:
    """Open ``checkpoint`` (or a package's) for export, with the checks every export format needs:
    onnx and onnxruntime importable, a head that can be exported, a frontend the runtime can run."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"export needs onnx and onnxruntime: pip install 'kospeech[export]' ({err})") from None
    from kospeech.inference import package as pk
    from kospeech.inference.loading import load_for_inference

    source = Path(checkpoint)
    pkg = pk.read_package(source) if pk.is_package(source) else None
    bundle = load_for_inference(pkg.checkpoint if pkg else source, device="cpu")  # refuses a newer format
    model, frontend = bundle.model.eval(), bundle.frontend
    name = bundle.config.get("model", {}).get("name", type(model).__name__)
    has_decoder = bool(getattr(model, "has_decoder", False))
    head = model_head(model)
    if not head:
        raise ConfigError(
            f"{source}: model '{name}' has neither a CTC head, an attention decoder nor a transducer; ONNX export "
            "covers those"
        )
    if frontend is None:
        raise ConfigError(f"{source}: the checkpoint config names no frontend; the runtime needs one to read audio")
    if frontend.del_silence:
        raise ConfigError(f"{source}: frontend.del_silence is not supported by the runtime; export a model without it")
    return Source(source, pkg, bundle, name, head, has_decoder)


def staging_dirs(out_dir: str | os.PathLike[str], source: Path) -> tuple[Path, Path]:
    """(the output folder, an empty sibling to write into; :func:`kospeech.inference.package.replace_dir`
    moves it into place when complete, so a failed export leaves no half-written folder)."""
    from kospeech.inference import package as pk

    out = pk.out_dir(out_dir)
    if out == source.resolve() or source.resolve() in out.parents:
        raise ConfigError(f"--out {out_dir}: inside the model being exported ({source}); choose another folder")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return out, tmp


def subsampling_factor(model: nn.Module, input_dim: int) -> int:
    """Feature frames per encoder frame, measured on a long input (the model's own arithmetic, not its config)."""
    with torch.no_grad():
        _, enc_len = model.encode(*_example_batch(input_dim, 4000, [4000], seed=2))
    return max(1, round(4000 / int(enc_len[0])))


def export_onnx(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    opset: int = OPSET,
) -> Path:
    """Write ``out_dir`` (model.onnx, frontend, CMVN, tokenizer, model.yaml) from ``checkpoint``.

    ``checkpoint`` may be a model package (:mod:`kospeech.inference.package`): its LM, decoding
    and model card come along, so the runtime decodes the export as the package decodes. ``out_dir``
    is replaced only when it is an earlier export (or empty).
    """
    if quantize not in (None, *QUANTIZE):
        raise ConfigError(f"--quantize {quantize!r} is not supported; use one of {', '.join(QUANTIZE)}")
    from kospeech.inference import package as pk

    src = load_source(checkpoint)
    source, pkg, bundle, name, head = src.path, src.package, src.bundle, src.name, src.head
    model, frontend, has_decoder = src.model, src.frontend, src.has_decoder
    out, tmp = staging_dirs(out_dir, source)
    try:
        input_dim = int(frontend.output_dim)
        sr, hop = frontend.sample_rate, frontend.hop_length
        exporter = {"transducer": _export_transducer, "attention": _export_attention,
                    "ctc": _export_ctc_decoder if has_decoder else _export_ctc}[head]
        try:
            graphs, diff = exporter(model, input_dim, tmp, opset)
        except _StateError as err:
            raise ConfigError(f"{source}: model '{name}' cannot be exported: {err}") from None
        if not diff <= CHECK_TOLERANCE:
            raise DataError(
                f"{source}: the exported graph of model '{name}' disagrees with PyTorch on another batch shape "
                f"(max difference {diff:.3g}); its code fixes a shape while tracing, so it cannot be exported yet"
            )
        subsampling = subsampling_factor(model, input_dim)
        files = dict(graphs)
        if quantize == "int8":
            for key, fname in graphs.items():
                int8_name = fname.replace(".onnx", ".int8.onnx")
                _quantize(tmp / fname, tmp / int8_name)
                files["int8" if key == "onnx" else f"{key}_int8"] = int8_name
        np.savez(tmp / mf.FRONTEND_ARRAYS, **frontend_arrays(frontend))
        if bundle.cmvn is not None:
            from kospeech.data.cmvn import save_cmvn

            save_cmvn(tmp / mf.CMVN_FILE, bundle.cmvn.mean.cpu().numpy(), bundle.cmvn.std.cpu().numpy())
            files["cmvn"] = mf.CMVN_FILE
        bundle.tokenizer.save(tmp / mf.TOKENIZER_DIR)
        inherited = {k: bundle.metadata[k] for k in ("plugins", "training_corpus") if k in bundle.metadata}
        checksum = sha256_files(*(tmp / f for f in graphs.values()))
        int8_files = [f for k, f in files.items() if k == "int8" or k.endswith("_int8")]
        decode = {"search": _default_search(bundle.config, head, "decoder" in graphs)}
        if pkg is not None:
            decode = _package_decoding(pkg, head, tmp)
        manifest = {
            "metadata": make_metadata("export", checksum=checksum, **inherited),
            "name": pkg.name if pkg else pk.package_name(out),
            "source": {"checkpoint": source.name, "model": name},
            "files": {**files, "frontend_arrays": mf.FRONTEND_ARRAYS, "tokenizer": mf.TOKENIZER_DIR},
            "network": {
                "head": head,
                "graphs": list(graphs.values()),  # the fp32 files the checksum covers, in order
                "input_dim": input_dim,
                "vocab_size": int(bundle.tokenizer.vocab_size),
                "subsampling": subsampling,
                "frame_seconds": hop * subsampling / sr,
                "min_frames": min_input_frames(model, input_dim),  # the torch engine's own rule
                # chunk-wise attention, fixed in the graph: a stream aligns its windows on it
                **({"chunk_size": chunk} if (chunk := chunk_frames(model)) else {}),
                "opset": opset,
                **({"decoder_state": init_shapes(model, input_dim)} if "decoder" in graphs else {}),
                # the int8 graphs are loaded by default: their bytes are checked too
                **({"int8_graphs": int8_files, "int8_checksum": sha256_files(*(tmp / f for f in int8_files))}
                   if int8_files else {}),
            },
            "frontend": _plain(frontend.config),
            "decode": decode,
            "check": {"max_abs_diff": float(diff)},
        }
        (tmp / mf.MANIFEST).write_text(
            yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        pk.replace_dir(tmp, out, (mf.MANIFEST,))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s (%s) to %s (max |difference| to PyTorch %.2g)", source, head, out, diff)
    return out


def init_shapes(model: nn.Module, input_dim: int) -> list[list[int]]:
    """Per-row shapes of the decoder state before the first step (the manifest's ``decoder_state``)."""
    return _decoder_init_state(model, input_dim)[1]


def _default_search(config: Mapping[str, Any], head: str, decoder: bool = False) -> dict[str, Any]:
    """The checkpoint's decode search when it is one the runtime has, else the head's greedy search."""
    search = (config.get("decode") or {}).get("search") or {}
    if head == "ctc" and isinstance(search, Mapping) and search.get("name") in ("ctc_greedy", "ctc_prefix_beam"):
        return {k: v for k, v in search.items() if k in ("name", "beam_size")}
    if decoder and head == "attention" and isinstance(search, Mapping) and search.get("name") == "greedy":
        return {k: v for k, v in search.items() if k in ("name", "max_len_ratio")}
    return {"name": {"transducer": "transducer_greedy", "attention": "greedy"}.get(head, "ctc_greedy")}


def _package_decoding(pkg: Any, head: str, tmp: Path) -> dict[str, Any]:
    """A package's decoding for the runtime, with its LM and card copied into the export (``tmp``).

    The runtime has CTC greedy and prefix beam (n-gram fusion), transducer greedy and attention
    greedy; a package that decodes with another search is exported with the nearest one and a warning.
    """
    from kospeech.inference import package as pk

    search = dict(pkg.search)
    if (pkg.directory / pk.CARD_FILE).is_file():
        shutil.copy2(pkg.directory / pk.CARD_FILE, tmp / pk.CARD_FILE)
    if search["name"] not in mf.RUNTIME_SEARCHES[head]:
        fallback = _default_search({}, head)
        logger.warning("%s decodes with %s, which the runtime lacks: the export decodes with %s",
                       pkg.directory, search["name"], fallback["name"])
        return {"search": fallback, "package_search": _plain(pkg.info.get("decode", {}).get("search"))}
    if search.get("lm"):
        from kospeech.lm.base import lm_file

        if lm_file(search["lm"]).suffix == ".pt":
            raise ConfigError(f"{pkg.directory}: its LM is a neural LM (lm.pt), which the torch-free runtime cannot "
                              "run; pack it with an n-gram (kospeech lm train --type ngram) to export it")
        pk.copy_lm(search["lm"], tmp / pk.LM_DIR)
        search["lm"] = pk.LM_DIR
    return {"search": _plain(search)}


def _plain(value: Any) -> Any:
    """YAML-safe copy (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
