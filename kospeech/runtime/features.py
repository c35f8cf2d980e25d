"""The checkpoint's frontend in numpy: STFT, power, mel filters, log, DCT, per-utterance normalisation.

``kaldi_fbank`` frames as Kaldi does instead (:meth:`NumpyFrontend.kaldi_frames`); its framing
rules and constants live here, torch-free, and :class:`kospeech.data.frontends.KaldiFilterBank`
imports them, so the training frontend and the runtime share one definition.

It follows :class:`kospeech.data.frontends.Frontend` step for step (centred frames with zero
padding, the window centred inside ``n_fft``, ``scale`` before the transform,
``log(x + log_offset)``), and takes its arrays from the export's ``frontend.npz``, which holds
the very window and filters the PyTorch module used. Dither is a training-time randomisation
and is not applied (except ``kaldi_fbank``'s, see :func:`kaldi_dither_noise`); silence removal is refused
at export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kospeech.errors import DataError

#: Kaldi's pre-emphasis coefficient and its floor under mel energies (float32 epsilon), as kaldi-native-fbank
KALDI_PREEMPH = 0.97
KALDI_ENERGY_FLOOR = float(np.finfo(np.float32).eps)


def kaldi_frame_starts(num_frames: int, hop_length: int, win_length: int, snip_edges: bool) -> np.ndarray:
    """First sample of each frame, as Kaldi frames: from 0 every hop with ``snip_edges``; else centred on
    ``hop * t + hop // 2`` (samples outside the wave are reflected about its ends)."""
    t = np.arange(num_frames, dtype=np.int64) * hop_length
    return t if snip_edges else t + hop_length // 2 - win_length // 2


def kaldi_num_frames(num_samples: Any, hop_length: int, win_length: int, snip_edges: bool) -> Any:
    """Kaldi's frame count (ints or tensors alike): ``(S - win) // hop + 1`` (0 when shorter) with
    ``snip_edges``, else ``(S + hop // 2) // hop``."""
    if snip_edges:
        return ((num_samples - win_length) // hop_length + 1) * (num_samples >= win_length)
    return (num_samples + hop_length // 2) // hop_length


def kaldi_dither_noise(num_samples: int, dither: float) -> np.ndarray:
    """The dither of an utterance at inference: Gaussian, std ``dither`` on the int16 scale, from a fixed seed
    so that the torch frontend and this runtime add the very same noise (and a transcript is repeatable).

    Why dither at inference at all: sherpa-onnx does (std 1 on the int16 scale, measured on 2.0.1, whatever
    its ``FeatureExtractorConfig.dither`` says), so digital silence (exact zeros) reaches its model as
    noise, not as the log floor; a ``kaldi_fbank`` model has to hear silence the same way everywhere."""
    return (np.random.default_rng(0).standard_normal(int(num_samples)) * dither).astype(np.float32)


def kaldi_dither_floor(window: np.ndarray, mel_fb: np.ndarray, n_fft: int, dither: float, margin: float) -> np.ndarray:
    """(n_mels,) the lowest log energy of each mel band of a ``kaldi_fbank`` frame: ``margin`` natural-log
    units above the mean energy that the dither alone (Gaussian, std ``dither`` on the int16 scale) puts
    into the band, through DC removal, pre-emphasis, the window and the FFT (computed exactly, not sampled).

    Why: on digital silence (exact zeros, as synthetic speech has) every frame is the dither, and
    sherpa-onnx's dither is random on every run, so a model decides there on noise nobody can repeat.
    Raised to this floor, such a band is the same number whatever the draw (a band of Gaussian noise
    exceeds its mean by ``margin`` log units with a probability of at most ``exp(-exp(margin))``), while
    speech lies far above it (a margin of 5 puts the floor about 22 dB above a dither of std 1)."""
    w = np.asarray(window, np.float64).reshape(-1)
    size = w.size
    dc_removal = np.eye(size) - 1.0 / size
    preemphasis = np.eye(size) - KALDI_PREEMPH * np.eye(size, k=-1)
    preemphasis[0, 0] = 1.0 - KALDI_PREEMPH  # a frame's first sample has no previous one within the frame
    spectra = np.fft.rfft(w[:, None] * (preemphasis @ dc_removal), n=n_fft, axis=0)  # (bins, samples)
    bin_power = dither**2 * np.square(np.abs(spectra)).sum(axis=1)  # E|X_k|^2 for white noise
    return np.log(np.maximum(bin_power @ np.asarray(mel_fb, np.float64), KALDI_ENERGY_FLOOR)) + float(margin)


def kaldi_min_samples(frames: int, hop_length: int, win_length: int, snip_edges: bool) -> int:
    """The fewest samples Kaldi framing turns into ``frames`` frames (the engines pad short audio up to
    it; the centred frontends' rule, ``driver.samples_for_frames``, would give one frame less)."""
    frames = max(1, int(frames))
    return (frames - 1) * hop_length + win_length if snip_edges else frames * hop_length - hop_length // 2


class NumpyFrontend:
    """One wave (S,) float -> features (T, D) float32, ``T = 1 + S // hop_length``."""

    def __init__(self, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        self.name = str(config.get("name", "?"))
        self.sample_rate = int(config["sample_rate"])
        win_length = int(round(self.sample_rate * float(config["frame_length_ms"]) / 1000))
        self.hop_length = int(round(self.sample_rate * float(config["frame_shift_ms"]) / 1000))
        self.n_fft = 1 << (win_length - 1).bit_length()
        window = np.asarray(arrays["window"], np.float64)
        if window.size != win_length:
            raise DataError(f"frontend.npz: window has {window.size} samples, the config says {win_length}")
        left = (self.n_fft - win_length) // 2  # torch.stft centres a shorter window inside n_fft
        self.window = np.zeros(self.n_fft)
        self.window[left : left + win_length] = window
        self.mel_fb = np.asarray(arrays["mel_fb"], np.float64) if "mel_fb" in arrays else None
        self.dct = np.asarray(arrays["dct"], np.float64) if "dct" in arrays else None
        self.kaldi = self.name == "kaldi_fbank"
        self.dither = float(config.get("dither", 0.0)) if self.kaldi else 0.0
        self.win_length, self.snip_edges = win_length, bool(config.get("snip_edges", False))
        margin = config.get("dither_floor") if self.kaldi else None
        self.floor = (None if margin is None else
                      kaldi_dither_floor(window, self.mel_fb, self.n_fft, self.dither, margin))
        self.scale = 32768.0 if self.kaldi else float(config.get("scale", 1.0))
        self.log_offset = float(config.get("log_offset", 1e-6))
        self.normalize = bool(config.get("normalize", False))
        self.input_reverse = bool(config.get("input_reverse", False))

    @property
    def output_dim(self) -> int:
        if self.dct is not None:
            return int(self.dct.shape[1])
        return int(self.mel_fb.shape[1]) if self.mel_fb is not None else self.n_fft // 2 + 1

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float64).reshape(-1) * self.scale
        if x.size == 0:
            raise DataError("the frontend got an empty wave")
        if self.kaldi:
            if self.dither > 0:
                x = x + kaldi_dither_noise(x.size, self.dither)
            spec = np.fft.rfft(self.kaldi_frames(x), n=self.n_fft, axis=1)
        else:
            pad = self.n_fft // 2
            x = np.pad(x, (pad, pad))
            frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop_length]
            frames = frames[: 1 + (x.size - 2 * pad) // self.hop_length]
            spec = np.fft.rfft(frames * self.window, axis=1)
        power = spec.real**2 + spec.imag**2
        if self.kaldi:
            feats = np.log(np.maximum(power @ self.mel_fb, KALDI_ENERGY_FLOOR))
            if self.floor is not None:
                feats = np.maximum(feats, self.floor)
        else:
            feats = np.log((power @ self.mel_fb if self.mel_fb is not None else power) + self.log_offset)
        if self.dct is not None:
            feats = feats @ self.dct
        if self.normalize:
            feats = (feats - feats.mean()) / max(float(feats.std()), 1e-8)
        if self.input_reverse:
            feats = feats[::-1]
        return np.ascontiguousarray(feats, dtype=np.float32)

    def kaldi_frames(self, x: np.ndarray) -> np.ndarray:
        """Kaldi's windowed frames (T, win) of a scaled wave: reflected framing, DC removal,
        pre-emphasis, Povey window (the window array of frontend.npz, uncentred)."""
        count = int(kaldi_num_frames(x.size, self.hop_length, self.win_length, self.snip_edges))
        starts = kaldi_frame_starts(count, self.hop_length, self.win_length, self.snip_edges)
        idx = np.remainder(starts[:, None] + np.arange(self.win_length)[None, :], 2 * x.size)
        frames = x[np.where(idx >= x.size, 2 * x.size - 1 - idx, idx)]
        frames = frames - frames.mean(axis=1, keepdims=True)
        frames = np.concatenate([frames[:, :1] * (1 - KALDI_PREEMPH), frames[:, 1:] - KALDI_PREEMPH * frames[:, :-1]],
                                axis=1)
        left = (self.n_fft - self.win_length) // 2
        return frames * self.window[left : left + self.win_length]
