"""Checkpoint or package -> a model directory for sherpa-onnx's online (streaming) recognizer
(``kospeech export MODEL --format sherpa-onnx-online``, loaded with ``OnlineRecognizer.from_wenet_ctc``).

sherpa-onnx drives a streaming WeNet CTC graph chunk by chunk: six inputs, taken by position (their
names are read from the graph) -- ``x`` ``(1, ChunkLength, feature_dim)`` raw Kaldi fbank frames,
``offset`` and ``required_cache_size`` (int64, shape ``(1,)``), ``attn_cache`` ``(num_blocks, head,
chunk_size * num_left_chunks, output_size / head * 2)``, ``conv_cache`` ``(num_blocks, 1,
output_size, cnn_module_kernel - 1)`` (float, zeros at the start) and ``attn_mask`` (bool, ``(1, 1,
required_cache_size + chunk_size)``) -- and three outputs: log-probabilities ``(1, T', V)`` and the
two caches, which it hands back on the next call without looking at them; ``offset`` starts at
``required_cache_size`` and grows by ``T'``. A chunk runs once ``ChunkLength = (chunk_size - 1) *
subsampling_factor + right_context + 1`` frames past the last shift have arrived, and the stream
then moves on by ``ChunkShift = chunk_size * subsampling_factor`` frames. On an endpoint it resets
the caches and the offset and goes on from the next frame, as from a stream's start.

Our encoders keep no per-layer state to carry, but the streamable ones (convolutions; a Conformer
with chunk-wise attention over ``left_chunks >= 0`` earlier chunks) have a finite reach: each output
frame depends on a bounded stretch of input frames (:func:`kospeech.inference.stream.probe_reach`,
here on features). So the graph recomputes a window, as our own streams do: ``conv_cache`` carries
the last input frames (one block, ``output_size = feature_dim``, ``cnn_module_kernel`` = cached
frames + 1) and the graph

1. counts the frames consumed so far, ``subsampling * (offset - required_cache_size)``;
2. starts its window ``left`` (the reach back) frames before the first new frame, rounded down to
   a multiple of the subsampling (of the chunk, for chunk-wise attention) so that its frames fall
   where the whole utterance's do -- at the stream's start, at the first frame;
3. runs CMVN, the encoder and the CTC head on the cached frames of the window and ``x``;
4. returns the ``chunk_size`` frames that start at the first new frame (``chunk_size`` follows from
   ``x``'s length, so any ``chunk_size`` works) and, as ``conv_cache``, the last cached frames of
   what it has read plus the ``ChunkShift`` new ones.

``right_context`` is the reach ahead, so every returned frame's whole reach lies in the window and
it equals the frame the whole utterance gives (to float rounding). ``attn_cache`` and ``attn_mask``
carry nothing for us: the cache goes through unchanged (its shape follows the user's ``chunk_size *
num_left_chunks``), the mask is read into a zero so that the graph keeps all six inputs. A model
whose reach is unbounded (full-context attention, or chunks that see every earlier chunk) would need
the whole history per chunk and is refused.

The cost: every chunk runs the network on ``left`` cached frames as well as the chunk's own, so
a larger ``chunk_size`` spends less on re-reading (and waits longer).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kospeech.errors import ConfigError, DataError
from kospeech.export import onnx as ox
from kospeech.export import sherpa as sh

logger = logging.getLogger(__name__)

LOADER = "sherpa_onnx.OnlineRecognizer.from_wenet_ctc"
INPUTS = ("chunk", "offset", "required_cache_size", "att_cache", "cnn_cache", "att_mask")  # WeNet's names
OUTPUTS = ("output", "r_att_cache", "r_cnn_cache")
#: what the README and manifest tell users to pass: sherpa-onnx's default chunk (16 frames of 40 ms
#: at x4 subsampling), one left chunk (it only sizes the pass-through attn_cache)
CHUNK_SIZE, LEFT_CHUNKS = 16, 1
#: chunk sizes the export checks chunk by chunk against the whole utterance (any other works the same way)
CHECK_CHUNKS = ((CHUNK_SIZE, LEFT_CHUNKS), (5, 4))
FRAMES_PER_SECOND = 100  # Kaldi fbank's 10 ms shift, which sherpa-onnx fixes (sherpa.SHERPA_FEATURES)
TAIL_NOISE = 1 / 32768  # std of the tail padding: one int16 step, what kaldi_fbank's dither adds


@dataclass(frozen=True)
class Window:
    """How the graph reads a stream, in input (feature) frames.

    ``left``: frames back each output frame depends on; ``right``: frames ahead (sherpa-onnx's
    ``right_context``); ``align``: windows start on multiples of it (the subsampling, or the chunk of
    chunk-wise attention); ``cache``: frames ``conv_cache`` carries (the most a window re-reads).
    """

    subsampling: int
    left: int
    right: int
    align: int

    @property
    def cache(self) -> int:
        return self.left + self.align

    def chunk_length(self, chunk_size: int) -> int:
        """sherpa-onnx's ChunkLength: the frames ``x`` holds per call."""
        return (chunk_size - 1) * self.subsampling + self.right + 1


def load_window(directory: str | os.PathLike[str]) -> Window:
    """The :class:`Window` an export's sherpa.yaml records (for the tail padding and run_chunks)."""
    import yaml

    manifest = yaml.safe_load((Path(directory) / sh.MANIFEST).read_text(encoding="utf-8"))
    w = manifest["window"]
    return Window(int(manifest["subsampling_factor"]), int(w["left"]), int(w["right_context"]), int(w["align"]))


class _OnlineGraph(nn.Module):
    """The window recomputation of the module docstring, with sherpa-onnx's six inputs and three outputs."""

    def __init__(self, network: nn.Module, window: Window) -> None:
        super().__init__()
        self.network, self.window = network, window

    def forward(self, x: torch.Tensor, offset: torch.Tensor, required_cache_size: torch.Tensor,
                attn_cache: torch.Tensor, conv_cache: torch.Tensor,
                attn_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = self.window
        frames = x[0]  # (ChunkLength, F)
        cache = conv_cache[0, 0].transpose(0, 1)  # (w.cache, F), oldest first
        consumed = (offset.reshape(-1)[0] - required_cache_size.reshape(-1)[0]) * w.subsampling
        start = torch.div(torch.clamp(consumed - w.left, min=0), w.align, rounding_mode="floor") * w.align
        valid = consumed - start  # cached frames the window reads: at most w.cache, all real ones
        history = cache.index_select(0, torch.arange(w.cache, device=x.device)[w.cache - valid:])
        window = torch.cat([history, frames], 0)[None]
        lengths = torch.ones_like(window[:, :, 0], dtype=torch.long).sum(1)
        enc, _ = self.network.encode(window, lengths)
        log_probs = self.network.ctc_log_probs(enc)
        count = torch.div(frames.new_ones((), dtype=torch.long) * frames.size(0) - w.right - 1, w.subsampling,
                          rounding_mode="floor") + 1  # sherpa-onnx's chunk_size
        first = torch.div(valid, w.subsampling, rounding_mode="floor")
        out = log_probs.index_select(1, first + torch.arange(log_probs.size(1), device=x.device)[:count])
        shift = count * w.subsampling
        new_frames = frames.index_select(0, torch.arange(frames.size(0), device=x.device)[:shift])
        new_cache = torch.cat([cache, new_frames], 0)[-w.cache:]
        keep = attn_mask.any().to(out.dtype) * 0  # the graph must consume every input sherpa-onnx feeds
        return out + keep, attn_cache, new_cache.transpose(0, 1)[None, None]


def measure_window(network: nn.Module, feature_dim: int, subsampling: int, source: str) -> Window:
    """The graph's :class:`Window`, from the reach measured on features (with CMVN in front, as exported);
    a model whose reach is unbounded is refused in one line."""
    from kospeech.inference.stream import probe_reach
    from kospeech.models.base import chunk_frames

    # the probe's noise lifted above a dither_floor (which would flatten it: the reach is the same)
    floor = getattr(network, "floor", None)
    level = 0.0 if floor is None else float(floor.max()) + 1.0

    def log_probs(batch: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        with torch.no_grad():
            for feats in batch:  # one at a time: the same batch shape for every run
                x = torch.from_numpy(feats)[None] + level
                enc, lengths = network.encode(x, torch.tensor([x.size(1)]))
                out.append(network.ctc_log_probs(enc)[0, : int(lengths[0])].numpy())
        return out

    chunk = chunk_frames(network)
    rate = math.lcm(FRAMES_PER_SECOND, subsampling)  # a whole number of outputs
    reach = probe_reach(log_probs, rate, seconds=max(1200 // rate, 4), chunk_frames=chunk, feature_dim=feature_dim)
    if not reach.bounded:
        side = "earlier and later" if reach.left is None and reach.right is None else (
            "earlier" if reach.left is None else "later")
        raise ConfigError(f"{source}: the model's output frames depend on all {side} input (full-context "
                          "attention), so it cannot stream chunk by chunk; train a Conformer with chunk_size and "
                          "left_chunks >= 0, or a convolutional encoder, to export for sherpa-onnx's online recognizer")
    assert reach.left is not None and reach.right is not None
    align = reach.period or reach.stride
    left = -(-reach.left // reach.stride) * reach.stride
    return Window(int(reach.stride), int(left), int(max(reach.right, reach.stride)), int(align))


def cache_shapes(window: Window, feature_dim: int, required_cache_size: int) -> tuple[tuple[int, ...], ...]:
    """The shapes of ``attn_cache`` and ``conv_cache`` sherpa-onnx makes from the metadata we write
    (``head`` 1, ``num_blocks`` 1, ``output_size`` = ``feature_dim``, ``cnn_module_kernel`` = cache + 1)."""
    return (1, 1, required_cache_size, 2 * feature_dim), (1, 1, feature_dim, window.cache)


def run_chunks(run: Callable[[dict[str, np.ndarray]], list[np.ndarray]], feats: np.ndarray, window: Window,
               chunk_size: int, left_chunks: int) -> np.ndarray:
    """The log-probabilities sherpa-onnx's online recognizer gets from the graph for ``feats``
    ``(T, F)``: its loop (online-recognizer-ctc-impl.h, online-wenet-ctc-model.cc) over an
    onnxruntime ``run(inputs) -> outputs``, for the export's self-check and the tests."""
    required = chunk_size * left_chunks
    length, shift = window.chunk_length(chunk_size), chunk_size * window.subsampling
    attn_shape, conv_shape = cache_shapes(window, feats.shape[1], required)
    attn, conv = np.zeros(attn_shape, np.float32), np.zeros(conv_shape, np.float32)
    offset = np.array([required], np.int64)
    processed, pieces = 0, []
    while processed + length < feats.shape[0]:
        chunk_idx = int(offset[0]) // chunk_size - left_chunks
        mask = np.ones((1, 1, required + chunk_size), bool)
        if chunk_idx < left_chunks:
            mask[..., : required - chunk_idx * chunk_size] = False
        out, attn, conv = run({INPUTS[0]: feats[None, processed: processed + length], INPUTS[1]: offset,
                               INPUTS[2]: np.array([required], np.int64), INPUTS[3]: attn, INPUTS[4]: conv,
                               INPUTS[5]: mask})
        pieces.append(out[0])
        offset = offset + out.shape[1]
        processed += shift
    return np.concatenate(pieces) if pieces else np.zeros((0, 0), np.float32)


def _check(path: Path, network: nn.Module, window: Window, feature_dim: int) -> float:
    """Largest |difference| between the graph run chunk by chunk in onnxruntime and PyTorch on the
    whole input, over the frames the chunks return; inf when they return too few or too many."""
    session = ox._session(path)
    gen = torch.Generator().manual_seed(3)
    feats = (torch.randn(1, 700, feature_dim, generator=gen) * 3 + 8).numpy()[0]
    with torch.no_grad():
        enc, lengths = network.encode(torch.from_numpy(feats)[None], torch.tensor([feats.shape[0]]))
        whole = network.ctc_log_probs(enc)[0, : int(lengths[0])].numpy()
    worst = 0.0
    for chunk_size, left_chunks in CHECK_CHUNKS:
        got = run_chunks(lambda inputs: session.run(None, inputs), feats, window, chunk_size, left_chunks)
        runs = (feats.shape[0] - window.chunk_length(chunk_size) - 1) // (chunk_size * window.subsampling) + 1
        if got.shape[0] != runs * chunk_size or got.shape[0] > whole.shape[0]:
            return float("inf")
        worst = max(worst, float(np.abs(got - whole[: got.shape[0]]).max()))
    return worst


def export_sherpa_online(checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                         quantize: str | None = None, opset: int = ox.OPSET) -> Path:
    """Write ``out_dir`` for ``sherpa_onnx.OnlineRecognizer.from_wenet_ctc`` (model.onnx, tokens.txt,
    sherpa.yaml, README.md; [model.int8.onnx]) from a CTC ``checkpoint`` or package trained on
    ``kaldi_fbank`` features whose reach is finite, checked chunk by chunk against PyTorch on the
    whole input before it is written."""
    prep = sh.prepare(checkpoint, quantize)
    src, dim = prep.src, prep.feature_dim
    window = measure_window(prep.network, dim, prep.subsampling, str(src.path))
    out, tmp = ox.staging_dirs(out_dir, src.path)
    try:
        graph = _OnlineGraph(prep.network, window).eval()
        shapes = cache_shapes(window, dim, CHUNK_SIZE * LEFT_CHUNKS)
        length = window.chunk_length(CHUNK_SIZE)
        example = (torch.zeros(1, length, dim), torch.tensor([CHUNK_SIZE * LEFT_CHUNKS]),
                   torch.tensor([CHUNK_SIZE * LEFT_CHUNKS]), torch.zeros(shapes[0]), torch.zeros(shapes[1]),
                   torch.ones(1, 1, CHUNK_SIZE * (LEFT_CHUNKS + 1), dtype=torch.bool))
        axes = {INPUTS[0]: {1: "chunk_length"}, INPUTS[3]: {2: "required_cache_size"},
                INPUTS[5]: {2: "mask_length"}, OUTPUTS[0]: {1: "chunk_size"}, OUTPUTS[1]: {2: "required_cache_size"}}
        ox._trace(graph, dict(zip(INPUTS, example)), list(OUTPUTS), axes, tmp / "model.onnx", opset)
        diff = _check(tmp / "model.onnx", prep.network, window, dim)
        if not diff <= ox.CHECK_TOLERANCE:
            raise DataError(f"{src.path}: the streaming graph run chunk by chunk disagrees with PyTorch on the whole "
                            f"input (max difference {diff:.3g})")
        chunk = {"chunk_size": CHUNK_SIZE, "num_left_chunks": LEFT_CHUNKS}
        metadata = prep.metadata(LOADER, head=1, num_blocks=1, output_size=dim, cnn_module_kernel=window.cache + 1,
                                 right_context=window.right, **chunk, left_reach=window.left, window_align=window.align)
        manifest = {"format": "sherpa-onnx-online", "loader": LOADER, **chunk,
                    "window": {"left": window.left, "right_context": window.right, "align": window.align,
                               "cache_frames": window.cache},
                    "tail_padding_seconds": round(tail_samples(window, CHUNK_SIZE, prep.sample_rate)
                                                  / prep.sample_rate, 3),
                    "check": {"max_abs_diff": float(diff), "chunks": [list(c) for c in CHECK_CHUNKS]}}
        sh.write_export(prep, tmp, out, "model.onnx", metadata, manifest,
                        _readme(out.name, prep, window), quantize)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s for sherpa-onnx's online recognizer to %s (each frame reads %d frames back, %d ahead; "
                "max |difference| to PyTorch %.2g)", src.path, out, window.left, window.right, diff)
    return out


def tail_padding(window: Window, chunk_size: int, sample_rate: int) -> np.ndarray:
    """What to feed after a stream's last sample: sherpa-onnx runs a chunk only when ChunkLength
    frames past its start are there (the last chunk starts at most at the last frame), so without
    them the last words stay unread. Quiet noise, not zeros: sherpa-onnx's online features (2.0.1)
    are not dithered, and exact zeros give log energies the model never saw in training (our
    ``kaldi_fbank`` dithers with std 1 on the int16 scale, this noise's level)."""
    return np.random.default_rng(0).normal(0, TAIL_NOISE, tail_samples(window, chunk_size, sample_rate)).astype(
        np.float32)


def tail_samples(window: Window, chunk_size: int, sample_rate: int) -> int:
    """How long :func:`tail_padding` is: a chunk's input and two frames more."""
    return int((window.chunk_length(chunk_size) + 2) * sample_rate / FRAMES_PER_SECOND)


def needs_dither(manifest: dict[str, Any]) -> bool:
    """Whether sherpa-onnx's online recognizer must be rebuilt with dither for this export: our
    ``kaldi_fbank`` trains on dithered fbank (std 1 on the int16 scale, what sherpa-onnx's offline
    recognizer always adds), while ``from_wenet_ctc`` leaves the online one undithered, so digital
    silence would reach the model as log energies it never saw; unless the frontend has a
    ``dither_floor``, which the graph applies: silence is then the floor, dithered or not."""
    return manifest.get("frontend", {}).get("dither_floor") is None


def online_recognizer(directory: str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE,
                      dither: float | None = None, num_threads: int = 1) -> Any:
    """sherpa-onnx's OnlineRecognizer for an export, built as README.md shows: ``from_wenet_ctc``, rebuilt
    with ``dither`` in its feature config (None: 1.0 where :func:`needs_dither`, else none; 0: none)."""
    import sherpa_onnx
    import yaml
    from sherpa_onnx.online_recognizer import _Recognizer

    d = Path(directory)
    manifest = yaml.safe_load((d / sh.MANIFEST).read_text(encoding="utf-8"))
    recognizer = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
        tokens=str(d / sh.TOKENS_FILE), model=str(d / manifest["files"]["model"]), chunk_size=chunk_size,
        num_left_chunks=int(manifest["num_left_chunks"]), num_threads=num_threads,
        sample_rate=int(manifest["sample_rate"]), feature_dim=int(manifest["feature_dim"]))
    if dither is None:
        dither = 1.0 if needs_dither(manifest) else 0.0
    if dither:
        recognizer.config.feat_config.dither = dither
        recognizer.recognizer = _Recognizer(recognizer.config)
    return recognizer


def transcribe_online(recognizer: Any, wave: np.ndarray, sample_rate: int,
                      tail: np.ndarray) -> tuple[str, list[str], int]:
    """(text, tokens, chunks decoded) of one ``wave`` through a sherpa-onnx ``OnlineRecognizer``, fed
    as README.md shows (the wave, the ``tail`` padding, input finished, every ready chunk decoded);
    the text is sherpa-onnx's, not yet NFC-composed. For the tests and bench/sherpa.py."""
    stream = recognizer.create_stream()
    stream.accept_waveform(sample_rate, wave)
    stream.accept_waveform(sample_rate, tail)
    stream.input_finished()
    chunks = 0
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
        chunks += 1
    result = recognizer.get_result_all(stream)
    return result.text, list(result.tokens), chunks


def _dither_snippet(prep: sh.Prepared) -> str:
    """The README's lines that rebuild the recognizer with dither, where the model needs it."""
    if not needs_dither({"frontend": prep.src.frontend.config}):
        return ("# the model floors digital silence (its kaldi_fbank's dither_floor, inside model.onnx), so\n"
                "# sherpa-onnx's undithered online features give it what it was trained on\n")
    return ("# the model was trained on dithered fbank (std 1 on the int16 scale, as sherpa-onnx's offline\n"
            "# recognizer computes it); from_wenet_ctc leaves the online features undithered: rebuild with it\n"
            "recognizer.config.feat_config.dither = 1.0\n"
            "recognizer.recognizer = sherpa_onnx.online_recognizer._Recognizer(recognizer.config)\n")


def _readme(name: str, prep: sh.Prepared, window: Window) -> str:
    pad = round(tail_samples(window, CHUNK_SIZE, prep.sample_rate) / prep.sample_rate, 3)
    return f"""# {name}: a KoSpeech CTC model for sherpa-onnx's online (streaming) recognizer

```python
import numpy as np, sherpa_onnx, soundfile as sf

recognizer = sherpa_onnx.OnlineRecognizer.from_wenet_ctc(
    model="{name}/model.onnx", tokens="{name}/tokens.txt", chunk_size={CHUNK_SIZE}, num_left_chunks={LEFT_CHUNKS},
    feature_dim={prep.feature_dim}, sample_rate={prep.sample_rate})
{_dither_snippet(prep)}wave, rate = sf.read("speech.wav", dtype="float32")
stream = recognizer.create_stream()
stream.accept_waveform(rate, wave)  # or piece by piece as it arrives, decoding while ready
# tail padding, so that the last chunk runs: quiet noise, not zeros (sherpa-onnx's online features
# are not dithered, and digital silence gives features the model never saw)
stream.accept_waveform(rate, np.random.default_rng().normal(0, 1 / 32768, int({pad} * rate)).astype(np.float32))
stream.input_finished()
while recognizer.is_ready(stream):
    recognizer.decode_stream(stream)
text = recognizer.get_result(stream).strip()
{sh.compose_snippet(prep.nfc)}```

Any `chunk_size` works: output frames of {prep.subsampling * 10} ms per chunk; a larger one re-reads less and waits
longer; the tail padding is (chunk_size - 1) * {prep.subsampling} + {window.right} + 3 frames of 10 ms.
`num_left_chunks` only sizes a cache the model passes through (any value >= 1). Each chunk's frames
are the ones the whole recording gives: the model re-reads {window.left} frames ({window.left * 10} ms) before
the chunk and waits for {window.right} frames ({window.right * 10} ms) after it. Features are computed by
sherpa-onnx (Kaldi fbank; without the dither above, stretches of exact zeros, such as synthetic
speech has, reach the model as features it never saw); CMVN is inside model.onnx.
"""
