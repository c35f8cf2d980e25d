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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from kospeech.errors import ConfigError, DataError
from kospeech.export import manifest as mf
from kospeech.metadata import make_metadata

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


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    opset: int = OPSET,
) -> Path:
    """Write ``out_dir`` (model.onnx, frontend, CMVN, tokenizer, model.yaml) from ``checkpoint``."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"export needs onnx and onnxruntime: pip install 'kospeech[export]' ({err})") from None
    if quantize not in (None, *QUANTIZE):
        raise ConfigError(f"--quantize {quantize!r} is not supported; use one of {', '.join(QUANTIZE)}")
    from kospeech.inference.loading import load_for_inference

    source = Path(checkpoint)
    bundle = load_for_inference(source, device="cpu")  # refuses a newer checkpoint format
    model, frontend = bundle.model.eval(), bundle.frontend
    name = bundle.config.get("model", {}).get("name", type(model).__name__)
    head = "transducer" if getattr(model, "is_transducer", False) else "ctc" if getattr(model, "has_ctc", False) else ""
    if not head:
        raise ConfigError(
            f"{source}: model '{name}' has neither a CTC head nor a transducer; ONNX export covers those two for "
            "now (train an attention model with a CTC branch, ctc_weight > 0, to export it)"
        )
    if frontend is None:
        raise ConfigError(f"{source}: the checkpoint config names no frontend; the runtime needs one to read audio")
    if frontend.del_silence:
        raise ConfigError(f"{source}: frontend.del_silence is not supported by the runtime; export a model without it")

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        input_dim = int(frontend.output_dim)
        sr, hop = frontend.sample_rate, frontend.hop_length
        exporter = _export_transducer if head == "transducer" else _export_ctc
        graphs, diff = exporter(model, input_dim, tmp, opset)
        if not diff <= CHECK_TOLERANCE:
            raise DataError(
                f"{source}: the exported graph of model '{name}' disagrees with PyTorch on another batch shape "
                f"(max difference {diff:.3g}); its code fixes a shape while tracing, so it cannot be exported yet"
            )
        with torch.no_grad():  # encoder frames per feature frame, from a long input
            _, enc_len = model.encode(*_example_batch(input_dim, 4000, [4000], seed=2))
        subsampling = max(1, round(4000 / int(enc_len[0])))
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
        checksum = mf.sha256_files(*(tmp / f for f in graphs.values()))
        manifest = {
            "metadata": make_metadata("export", checksum=checksum, **inherited),
            "source": {"checkpoint": source.name, "model": name},
            "files": {**files, "frontend_arrays": mf.FRONTEND_ARRAYS, "tokenizer": mf.TOKENIZER_DIR},
            "network": {
                "head": head,
                "graphs": list(graphs.values()),  # the fp32 files the checksum covers, in order
                "input_dim": input_dim,
                "vocab_size": int(bundle.tokenizer.vocab_size),
                "subsampling": subsampling,
                "frame_seconds": hop * subsampling / sr,
                "min_frames": _min_frames(model),
                "opset": opset,
            },
            "frontend": _plain(frontend.config),
            "decode": {"search": _default_search(bundle.config, head)},
            "check": {"max_abs_diff": float(diff)},
        }
        (tmp / mf.MANIFEST).write_text(
            yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s (%s) to %s (max |difference| to PyTorch %.2g)", source, head, out, diff)
    return out


def _min_frames(model: nn.Module) -> int:
    """Shortest input the encoder's extractor takes (conv subsampling needs a few frames)."""
    extractor = getattr(getattr(model, "encoder", None), "extractor", None)
    return int(getattr(extractor, "min_frames", 1))


def _default_search(config: Mapping[str, Any], head: str) -> dict[str, Any]:
    """The checkpoint's decode search when it is one the runtime has, else the head's greedy search."""
    search = (config.get("decode") or {}).get("search") or {}
    if head == "ctc" and isinstance(search, Mapping) and search.get("name") in ("ctc_greedy", "ctc_prefix_beam"):
        return {k: v for k, v in search.items() if k in ("name", "beam_size")}
    return {"name": "transducer_greedy" if head == "transducer" else "ctc_greedy"}


def _plain(value: Any) -> Any:
    """YAML-safe copy (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
