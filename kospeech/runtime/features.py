"""The checkpoint's frontend in numpy: STFT, power, mel filters, log, DCT, per-utterance normalisation.

It follows :class:`kospeech.data.frontends.Frontend` step for step (centred frames with zero
padding, the window centred inside ``n_fft``, ``scale`` before the transform,
``log(x + log_offset)``), and takes its arrays from the export's ``frontend.npz``, which holds
the very window and filters the PyTorch module used. Dither is a training-time randomisation
and is not applied; silence removal is refused at export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kospeech.errors import DataError


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
        self.scale = float(config.get("scale", 1.0))
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
        pad = self.n_fft // 2
        x = np.pad(x, (pad, pad))
        frames = np.lib.stride_tricks.sliding_window_view(x, self.n_fft)[:: self.hop_length]
        frames = frames[: 1 + (x.size - 2 * pad) // self.hop_length]
        spec = np.fft.rfft(frames * self.window, axis=1)
        power = spec.real**2 + spec.imag**2
        feats = np.log((power @ self.mel_fb if self.mel_fb is not None else power) + self.log_offset)
        if self.dct is not None:
            feats = feats @ self.dct
        if self.normalize:
            feats = (feats - feats.mean()) / max(float(feats.std()), 1e-8)
        if self.input_reverse:
            feats = feats[::-1]
        return np.ascontiguousarray(feats, dtype=np.float32)
