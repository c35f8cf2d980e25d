"""Feature frontends (registry kind ``frontend``): waves in, ``(T, D)`` features out.

Four frontends, each with two interchangeable backends (KoSpeech's ``feature_extract_by``), and
``kaldi_fbank`` (torch only), Kaldi's own fbank as sherpa-onnx computes it (see its class):

``spectrogram``  log power spectrum, ``D = n_fft // 2 + 1``
``mel``          log mel power spectrum, librosa's conventions (Slaney mel scale, area-normalised filters)
``fbank``        Kaldi-style log mel filterbank (HTK mel scale, unnormalised filters, Povey window,
                 samples on the int16 scale), the feature most recipes train on
``mfcc``         orthonormal DCT-II of ``mel``'s log mel spectrum

Why two backends that compute the same thing: ``torchaudio`` is batched and runs on whatever
device the module is on (the "on-the-fly frontend" inside training, on the GPU), ``librosa``
is the reference implementation KoSpeech users know. Both share every definition that
matters (the same window array, ``n_fft`` = next power of two above the window, centred
frames with zero padding, the same mel filter formula, the same ``log(x + log_offset)`` and
DCT), so they differ only by floating-point rounding in the FFT and the filter sums.
Measured on eight real espeak-ng Korean utterances (torch 2.14 / librosa 0.11, float32),
``max |features(torchaudio) - features(librosa)|`` in natural-log units (so: relative error
of the energies) is 1.3e-4 for ``mel``, 4.4e-4 for ``fbank``, 1.0e-3 for ``spectrogram``
(single FFT bins, no averaging over a band) and 1.7e-4 for ``mfcc``; the means are 2e-6 to
2e-5. The tests assert ``max < 1e-2`` and ``mean < 1e-4``: an order of magnitude of margin
for other FFT libraries, yet far below any real difference (a wrong window, mel scale or
log offset moves values by 1e-2 to 1). Bins whose energy is near the
``log_offset`` floor are where the rounding shows most; that is why the bound is on the
log of energies (relative error) rather than on raw values.

Frame counts are ``1 + num_samples // hop_length`` (centred frames) for both backends and
for the batched and the single-utterance path, so ``feature_lengths`` are exact and a padded
batch gives, frame for frame, what each utterance gives alone.

Processing order: silence removal (``del_silence``) -> dither -> features -> per-utterance
normalisation (``normalize``) -> time reversal (``input_reverse``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kospeech.errors import ConfigError, DataError
from kospeech.registry import build, register
from kospeech.runtime.features import (
    KALDI_ENERGY_FLOOR,
    KALDI_PREEMPH,
    kaldi_dither_floor,
    kaldi_dither_noise,
    kaldi_frame_starts,
    kaldi_num_frames,
)

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("torchaudio", "librosa")
WINDOWS: tuple[str, ...] = ("hann", "hamming", "povey")

# librosa.effects.split's analysis frames, which KoSpeech's del_silence used unchanged
SILENCE_FRAME = 2048
SILENCE_HOP = 512
_AMIN = 1e-5  # librosa.amplitude_to_db's floor


def make_window(kind: str, length: int) -> np.ndarray:
    """The analysis window both backends use (float64, computed once, shared by construction).

    ``hann`` and ``hamming`` are periodic (torch's and librosa's default for spectral
    analysis); ``povey`` is Kaldi's ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85``.
    """
    n = np.arange(length, dtype=np.float64)
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * n / length)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * n / length)
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(2 * np.pi * n / (length - 1))) ** 0.85
    raise ConfigError(f"frontend window '{kind}' is not one of {', '.join(WINDOWS)}")


def num_frames(num_samples: int | Tensor, hop_length: int) -> int | Tensor:
    """Centred framing: one frame every ``hop_length`` samples, the first centred on sample 0."""
    return 1 + num_samples // hop_length


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _check_args(backend: str, window: str, sample_rate: int, frame_length_ms: float, frame_shift_ms: float) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"frontend backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if window not in WINDOWS:
        raise ConfigError(f"frontend window '{window}' is not one of {', '.join(WINDOWS)}")
    if sample_rate <= 0 or frame_length_ms <= 0 or frame_shift_ms <= 0:
        raise ConfigError(
            f"frontend needs positive sample_rate, frame_length_ms and frame_shift_ms, got "
            f"{sample_rate}, {frame_length_ms}, {frame_shift_ms}"
        )


def _arguments(local_vars: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's arguments, from ``locals()`` taken before anything else is assigned."""
    return {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}


class Frontend(nn.Module):
    """Shared machinery: framing, silence removal, dither, normalisation, reversal.

    Subclasses define the spectral part twice, ``_features_torch`` (batched) and
    ``_features_librosa`` (one utterance), from the power spectrum.
    """

    name = "frontend"

    def __init__(
        self,
        *,
        backend: str,
        sample_rate: int,
        frame_length_ms: float,
        frame_shift_ms: float,
        window: str,
        scale: float,
        log_offset: float,
        normalize: bool,
        del_silence: bool,
        top_db: float,
        input_reverse: bool,
        dither: float,
    ) -> None:
        args = _arguments(locals())
        super().__init__()
        _check_args(backend, window, sample_rate, frame_length_ms, frame_shift_ms)
        self.backend = backend
        self.sample_rate = int(sample_rate)
        self.win_length = int(round(sample_rate * frame_length_ms / 1000))
        self.hop_length = int(round(sample_rate * frame_shift_ms / 1000))
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.window_kind = window
        self.scale = float(scale)
        self.log_offset = float(log_offset)
        self.normalize = bool(normalize)
        self.del_silence = bool(del_silence)
        self.top_db = float(top_db)
        self.input_reverse = bool(input_reverse)
        self.dither = float(dither)
        self._window_np = make_window(window, self.win_length)
        self.register_buffer("window", torch.from_numpy(self._window_np).float(), persistent=False)
        # the full argument set (defaults included), so a dump can write ``frontend.yaml``;
        # subclasses add their own arguments
        self.config: dict[str, Any] = {"name": self.name, **args}

    @property
    def output_dim(self) -> int:
        raise NotImplementedError

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def extra_repr(self) -> str:
        return f"backend={self.backend}, win={self.win_length}, hop={self.hop_length}, n_fft={self.n_fft}"

    # -- spectral hooks ------------------------------------------------------------------------

    def _features_torch(self, power: Tensor) -> Tensor:
        """(B, T, n_freqs) power spectrum -> (B, T, D) features."""
        raise NotImplementedError

    def _features_librosa(self, power: np.ndarray) -> np.ndarray:
        """(T, n_freqs) power spectrum -> (T, D) features."""
        raise NotImplementedError

    # -- batched path ----------------------------------------------------------------------------

    def feature_lengths(self, wave_lengths: Tensor) -> Tensor:
        """Frames per utterance for these wave lengths (without silence removal)."""
        return num_frames(wave_lengths.long(), self.hop_length)

    def forward(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) waves and (B,) lengths -> (B, T, D) features (zero beyond each length), (B,) lengths."""
        if waves.dim() != 2:
            raise DataError(f"frontend expects waves of shape (batch, samples), got {tuple(waves.shape)}")
        wave_lengths = wave_lengths.to(waves.device).long()
        if bool((wave_lengths <= 0).any()):
            raise DataError("frontend got an empty wave (length 0); drop it from the data dir")
        if self.backend == "librosa":
            return self._forward_librosa(waves, wave_lengths)
        waves = waves.float()
        waves = waves.masked_fill(~length_mask(wave_lengths, waves.size(1)), 0.0)
        if self.del_silence:
            waves, wave_lengths = remove_silence(waves, wave_lengths, top_db=self.top_db)
        if self.dither > 0:
            noise = torch.randn_like(waves) * self.dither
            waves = waves + noise.masked_fill(~length_mask(wave_lengths, waves.size(1)), 0.0)
        spec = torch.stft(
            waves * self.scale,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(waves.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        power = (spec.real.square() + spec.imag.square()).transpose(1, 2)  # (B, T, F)
        lengths = self.feature_lengths(wave_lengths)
        max_t = int(lengths.max())
        feats = self._features_torch(power[:, :max_t])
        mask = length_mask(lengths, max_t)[..., None]
        feats = feats.masked_fill(~mask, 0.0)
        if self.normalize:
            feats = _normalize_batch(feats, lengths, mask)
        if self.input_reverse:
            feats = reverse_padded(feats, lengths)
        return feats, lengths

    def _forward_librosa(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        wav_np = waves.detach().float().cpu().numpy()
        outs = [self.extract(wav_np[b, : int(n)]) for b, n in enumerate(wave_lengths.tolist())]
        lengths = torch.tensor([o.shape[0] for o in outs], dtype=torch.long)
        feats = torch.zeros(len(outs), int(lengths.max()), self.output_dim)
        for b, o in enumerate(outs):  # loop over utterances, not frames: librosa is per utterance
            feats[b, : o.shape[0]] = torch.from_numpy(o)
        return feats.to(waves.device), lengths.to(waves.device)

    # -- one utterance -------------------------------------------------------------------------

    @torch.no_grad()
    def extract(self, wave: np.ndarray) -> np.ndarray:
        """One float wave (S,) -> float32 features (T, D); the dump's entry point."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise DataError(f"frontend.extract expects a non-empty mono wave, got shape {wave.shape}")
        if self.backend == "torchaudio":
            feats, _ = self.forward(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
            return feats[0].cpu().numpy()
        import librosa

        if self.del_silence:
            intervals = librosa.effects.split(
                wave, top_db=self.top_db, frame_length=SILENCE_FRAME, hop_length=SILENCE_HOP
            )
            wave = np.concatenate([wave[s:e] for s, e in intervals]) if len(intervals) else wave
        if self.dither > 0:
            wave = wave + self.dither * np.random.default_rng().standard_normal(wave.size).astype(np.float32)
        spec = librosa.stft(
            wave * np.float32(self.scale),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self._window_np,
            center=True,
            pad_mode="constant",
        )
        power = (spec.real**2 + spec.imag**2).T  # (T, F)
        feats = self._features_librosa(power).astype(np.float32)
        if self.normalize:
            std = max(float(feats.std()), 1e-8)
            feats = (feats - feats.mean()) / std
        if self.input_reverse:
            feats = feats[::-1]
        return np.ascontiguousarray(feats, dtype=np.float32)


def _normalize_batch(feats: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
    """KoSpeech's per-utterance normalisation: one scalar mean and std over all valid (t, d)."""
    count = (lengths * feats.size(2)).to(feats.dtype)[:, None, None]
    mean = feats.sum(dim=(1, 2), keepdim=True) / count
    var = ((feats - mean).square() * mask).sum(dim=(1, 2), keepdim=True) / count
    out = (feats - mean) / var.sqrt().clamp_min(1e-8)
    return out.masked_fill(~mask, 0.0)


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence's first ``lengths[b]`` steps along dim 1; padding stays at the end."""
    t = torch.arange(x.size(1), device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx[..., None].expand_as(x))


def speech_frames(
    waves: Tensor,
    wave_lengths: Tensor,
    *,
    top_db: float,
    frame_length: int = SILENCE_FRAME,
    hop_length: int = SILENCE_HOP,
) -> Tensor:
    """(B, F) True on the frames librosa.effects.split would keep (RMS within ``top_db`` of the
    loudest frame); frame ``f`` holds the samples ``f * hop_length`` to ``(f + 1) * hop_length``.

    Same analysis as librosa (by default 2048-sample centred frames every 512 samples, zero
    padded, dB relative to the utterance's maximum RMS with a 1e-5 floor), as librosa's
    frames-to-samples conversion has it. Shorter frames find the edges of speech more finely
    (``augment trim_edges``: 20 ms every 10 ms).
    """
    x = waves.masked_fill(~length_mask(wave_lengths, waves.size(1)), 0.0)
    half = frame_length // 2
    power = F.avg_pool1d(F.pad(x.square(), (half, half))[:, None], frame_length, hop_length)[:, 0]
    rms = power.clamp_min(0).sqrt()
    frames = num_frames(wave_lengths, hop_length)
    valid = length_mask(frames, rms.size(1))
    ref = rms.masked_fill(~valid, 0.0).amax(dim=1, keepdim=True)
    db = 20 * torch.log10(rms.clamp_min(_AMIN)) - 20 * torch.log10(ref.clamp_min(_AMIN))
    return db > -top_db


def silence_mask(
    waves: Tensor,
    wave_lengths: Tensor,
    *,
    top_db: float,
    frame_length: int = SILENCE_FRAME,
    hop_length: int = SILENCE_HOP,
) -> Tensor:
    """(B, S) True on the samples of :func:`speech_frames`' frames, within each length."""
    keep_frame = speech_frames(waves, wave_lengths, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    frame_of_sample = torch.arange(waves.size(1), device=waves.device) // hop_length
    keep = keep_frame[:, frame_of_sample.clamp_max(keep_frame.size(1) - 1)]
    return keep & length_mask(wave_lengths, waves.size(1))


def remove_silence(waves: Tensor, wave_lengths: Tensor, *, top_db: float = 30.0) -> tuple[Tensor, Tensor]:
    """Drop silent stretches of each wave and close the gaps (KoSpeech's ``del_silence``), batched."""
    keep = silence_mask(waves, wave_lengths, top_db=top_db)
    new_lengths = keep.sum(dim=1)
    max_len = int(new_lengths.max())
    pos = torch.where(keep, keep.long().cumsum(dim=1) - 1, torch.full_like(wave_lengths[:, None], max_len))
    out = waves.new_zeros(waves.size(0), max_len + 1)
    out.scatter_(1, pos, waves)
    return out[:, :max_len], new_lengths


# ---------------------------------------------------------------------------------------------
# the four frontends


class _MelFrontend(Frontend):
    """Adds a mel filterbank (same formula in both backends: triangles in Hz between mel-spaced points);
    its features are the log mel spectrum."""

    def __init__(
        self,
        *,
        n_mels: int,
        f_min: float,
        f_max: float | None,
        mel_scale: str,
        mel_norm: str | None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.config.update(n_mels=n_mels, f_min=f_min, f_max=f_max, mel_scale=mel_scale, mel_norm=mel_norm)
        if mel_scale not in ("htk", "slaney"):
            raise ConfigError(f"frontend mel_scale '{mel_scale}' is not 'htk' or 'slaney'")
        if mel_norm not in (None, "slaney"):
            raise ConfigError(f"frontend mel_norm '{mel_norm}' is not null or 'slaney'")
        f_max = float(f_max) if f_max is not None else self.sample_rate / 2
        if not 0 <= f_min < f_max <= self.sample_rate / 2:
            raise ConfigError(f"frontend needs 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")
        self.n_mels = int(n_mels)
        self.f_min, self.f_max, self.mel_scale, self.mel_norm = float(f_min), f_max, mel_scale, mel_norm
        if self.backend == "torchaudio":
            import torchaudio.functional as AF

            fb = AF.melscale_fbanks(
                self.n_freqs, self.f_min, self.f_max, self.n_mels, self.sample_rate, norm=mel_norm, mel_scale=mel_scale
            )
            self.register_buffer("mel_fb", fb, persistent=False)  # (F, n_mels)
        else:
            import librosa

            self._mel_np = librosa.filters.mel(
                sr=self.sample_rate,
                n_fft=self.n_fft,
                n_mels=self.n_mels,
                fmin=self.f_min,
                fmax=self.f_max,
                htk=mel_scale == "htk",
                norm=mel_norm,
                dtype=np.float32,
            )  # (n_mels, F)

    def _log_mel_torch(self, power: Tensor) -> Tensor:
        return torch.log(power @ self.mel_fb.to(power.dtype) + self.log_offset)

    def _log_mel_librosa(self, power: np.ndarray) -> np.ndarray:
        return np.log(power @ self._mel_np.T + np.float32(self.log_offset))

    @property
    def output_dim(self) -> int:
        return self.n_mels

    def _features_torch(self, power: Tensor) -> Tensor:
        return self._log_mel_torch(power)

    def _features_librosa(self, power: np.ndarray) -> np.ndarray:
        return self._log_mel_librosa(power)


@register("frontend", "spectrogram")
class Spectrogram(Frontend):
    """Log power spectrum ``log(|STFT|^2 + log_offset)``, ``D = n_fft // 2 + 1`` (257 at 16 kHz / 25 ms).

    Args:
        backend: ``torchaudio`` (batched, any device) or ``librosa`` (per utterance, CPU).
        sample_rate: Hz of the input waves.
        frame_length_ms: analysis window; ``n_fft`` is the next power of two.
        frame_shift_ms: hop between frames.
        window: ``hann`` | ``hamming`` | ``povey``.
        scale: waves are multiplied by this first (32768 gives Kaldi's int16 scale).
        log_offset: added before the log, so silence stays finite.
        normalize: per-utterance mean/std normalisation (one scalar each, as KoSpeech).
        del_silence: cut stretches quieter than ``top_db`` below the loudest (librosa.effects.split).
        top_db: threshold for ``del_silence``.
        input_reverse: reverse the time axis (KoSpeech's option for some LAS set-ups).
        dither: std of Gaussian noise added to the wave (0 = off; makes the output random).
    """

    name = "spectrogram"

    def __init__(
        self,
        *,
        backend: Literal["torchaudio", "librosa"] = "torchaudio",
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        window: Literal["hann", "hamming", "povey"] = "hann",
        scale: float = 1.0,
        log_offset: float = 1e-6,
        normalize: bool = False,
        del_silence: bool = False,
        top_db: float = 30.0,
        input_reverse: bool = False,
        dither: float = 0.0,
    ) -> None:
        super().__init__(**_arguments(locals()))

    @property
    def output_dim(self) -> int:
        return self.n_freqs

    def _features_torch(self, power: Tensor) -> Tensor:
        return torch.log(power + self.log_offset)

    def _features_librosa(self, power: np.ndarray) -> np.ndarray:
        return np.log(power + np.float32(self.log_offset))


@register("frontend", "mel")
class MelSpectrogram(_MelFrontend):
    """Log mel power spectrum with librosa's conventions (Slaney mel scale and filter normalisation).

    Args: as ``spectrogram``, plus
        n_mels: number of mel bands (the feature dimension).
        f_min, f_max: band edges in Hz (``f_max`` null = sample_rate / 2).
        mel_scale: ``slaney`` (librosa default) or ``htk``.
        mel_norm: ``slaney`` (each triangle has unit area) or null (unit peak).
    """

    name = "mel"

    def __init__(
        self,
        *,
        backend: Literal["torchaudio", "librosa"] = "torchaudio",
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: Literal["htk", "slaney"] = "slaney",
        mel_norm: Literal["slaney"] | None = "slaney",
        window: Literal["hann", "hamming", "povey"] = "hann",
        scale: float = 1.0,
        log_offset: float = 1e-6,
        normalize: bool = False,
        del_silence: bool = False,
        top_db: float = 30.0,
        input_reverse: bool = False,
        dither: float = 0.0,
    ) -> None:
        super().__init__(**_arguments(locals()))


@register("frontend", "fbank")
class FilterBank(_MelFrontend):
    """Kaldi-style log mel filterbank: HTK mel scale, unnormalised triangles, Povey window, int16 scale.

    Close to ``torchaudio.compliance.kaldi.fbank`` (what ESPnet/WeNet recipes train on) but
    batched, centred (``1 + S // hop`` frames) and identical in both backends; Kaldi's
    per-frame DC removal and pre-emphasis are left out, as the librosa backend cannot
    reproduce them through ``librosa.stft``. ``kaldi_fbank`` is Kaldi's own (what sherpa-onnx computes).

    Args: as ``mel``; defaults ``f_min`` 20 Hz, ``window`` povey, ``scale`` 32768.
    """

    name = "fbank"

    def __init__(
        self,
        *,
        backend: Literal["torchaudio", "librosa"] = "torchaudio",
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        n_mels: int = 80,
        f_min: float = 20.0,
        f_max: float | None = None,
        mel_scale: Literal["htk", "slaney"] = "htk",
        mel_norm: Literal["slaney"] | None = None,
        window: Literal["hann", "hamming", "povey"] = "povey",
        scale: float = 32768.0,
        log_offset: float = 1e-6,
        normalize: bool = False,
        del_silence: bool = False,
        top_db: float = 30.0,
        input_reverse: bool = False,
        dither: float = 0.0,
    ) -> None:
        super().__init__(**_arguments(locals()))


@register("frontend", "mfcc")
class MFCC(_MelFrontend):
    """MFCCs: orthonormal DCT-II of the ``mel`` frontend's log mel spectrum, first ``n_mfcc`` coefficients.

    KoSpeech passed its ``n_mels`` option as the number of coefficients; here the two are
    separate (``n_mfcc`` <= ``n_mels``), both 80 by default. Other args as ``mel``.
    """

    name = "mfcc"

    def __init__(
        self,
        *,
        backend: Literal["torchaudio", "librosa"] = "torchaudio",
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        n_mfcc: int = 80,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: Literal["htk", "slaney"] = "slaney",
        mel_norm: Literal["slaney"] | None = "slaney",
        window: Literal["hann", "hamming", "povey"] = "hann",
        scale: float = 1.0,
        log_offset: float = 1e-6,
        normalize: bool = False,
        del_silence: bool = False,
        top_db: float = 30.0,
        input_reverse: bool = False,
        dither: float = 0.0,
    ) -> None:
        args = _arguments(locals())
        n_mfcc = args.pop("n_mfcc")
        if not 0 < n_mfcc <= n_mels:
            raise ConfigError(f"mfcc frontend needs 0 < n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
        super().__init__(**args)
        self.config["n_mfcc"] = n_mfcc
        self.n_mfcc = int(n_mfcc)
        if self.backend == "torchaudio":
            import torchaudio.functional as AF

            self.register_buffer("dct", AF.create_dct(self.n_mfcc, self.n_mels, norm="ortho"), persistent=False)

    @property
    def output_dim(self) -> int:
        return self.n_mfcc

    def _features_torch(self, power: Tensor) -> Tensor:
        return self._log_mel_torch(power) @ self.dct.to(power.dtype)

    def _features_librosa(self, power: np.ndarray) -> np.ndarray:
        import librosa

        log_mel = self._log_mel_librosa(power)
        return librosa.feature.mfcc(S=log_mel.T, n_mfcc=self.n_mfcc, dct_type=2, norm="ortho", lifter=0).T


@register("frontend", "kaldi_fbank")
class KaldiFilterBank(Frontend):
    """Kaldi's log mel filterbank, as ``kaldi-native-fbank`` computes it in sherpa-onnx (and
    ``torchaudio.compliance.kaldi.fbank``, WeNet's and ESPnet's training feature): the frontend of a
    model meant to run outside KoSpeech (``kospeech export --format sherpa-onnx``).

    Per frame, in Kaldi's order: samples on the int16 scale (x 32768), Kaldi framing (``snip_edges``
    false: frames centred on ``hop * t + hop / 2``, reflected at both ends, ``(S + hop / 2) // hop``
    frames), DC offset removed, pre-emphasis 0.97 (the first sample against itself), Povey window,
    zero padding to 512, power spectrum, Kaldi's mel banks (triangles in the mel domain, from
    ``torchaudio.compliance.kaldi.get_mel_banks``, between ``low_freq`` and ``high_freq``; a
    ``high_freq`` <= 0 is an offset from Nyquist: the default -400 is 7600 Hz at 16 kHz), then
    ``log(max(energy, float32 eps))``. The defaults are what sherpa-onnx computes;
    why ``fbank`` stays separate: it is centred and batched through ``torch.stft``, with a librosa
    twin, and the recipes' models were trained on it.

    Args:
        sample_rate: Hz of the input waves.
        n_mels: mel bands (sherpa-onnx's ``feature_dim``).
        frame_length_ms, frame_shift_ms: window and hop (sherpa-onnx: 25 and 10).
        low_freq, high_freq: band edges in Hz (Kaldi's convention for ``high_freq`` <= 0).
        snip_edges: Kaldi's framing option (sherpa-onnx: false).
        dither: std of Gaussian noise added on the int16 scale: random in training mode, a fixed
            draw at inference (``kospeech.runtime.features.kaldi_dither_noise``, the runtime's too).
            1.0 because sherpa-onnx dithers so (measured on 2.0.1: its ``dither`` option has no
            effect), and a model must hear digital silence as the noise it gets there, not as the
            log floor: trained with 0, a model misread a quarter of clean synthetic utterances in
            sherpa-onnx that it read right in our runtime.
        dither_floor: None, or raise every band's log energy to this many natural-log units above
            the mean the dither alone gives it (``kaldi_dither_floor``; 5.0 in the mini recipe): digital
            silence then gives the same features whatever the dither draws, so sherpa-onnx's random
            dither no longer decides a transcript (the sherpa-onnx export puts the floor in its graph).
    """

    name = "kaldi_fbank"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_mels: int = 80,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = -400.0,
        snip_edges: bool = False,
        dither: float = 1.0,
        dither_floor: float | None = None,
    ) -> None:
        args = _arguments(locals())
        super().__init__(backend="torchaudio", sample_rate=sample_rate, frame_length_ms=frame_length_ms,
                         frame_shift_ms=frame_shift_ms, window="povey", scale=32768.0, log_offset=0.0,
                         normalize=False, del_silence=False, top_db=30.0, input_reverse=False, dither=0.0)
        self.config = {"name": self.name, **args}
        nyquist = self.sample_rate / 2
        top = float(high_freq) if high_freq > 0 else nyquist + float(high_freq)
        if not 0 <= low_freq < top <= nyquist:
            raise ConfigError(f"kaldi_fbank needs 0 <= low_freq < high_freq <= sample_rate/2 (high_freq <= 0: "
                              f"Nyquist minus it), got low_freq={low_freq}, high_freq={high_freq}")
        self.n_mels, self.low_freq, self.high_freq = int(n_mels), float(low_freq), float(high_freq)
        self.snip_edges, self.kaldi_dither = bool(snip_edges), float(dither)
        from torchaudio.compliance.kaldi import get_mel_banks

        banks = get_mel_banks(self.n_mels, self.n_fft, float(self.sample_rate), self.low_freq, self.high_freq,
                              100.0, -500.0, 1.0)
        banks = banks[0] if isinstance(banks, tuple) else banks  # (n_mels, n_fft / 2): no Nyquist bin
        fb = F.pad(banks.double(), (0, 1)).T.float().contiguous()  # (n_freqs, n_mels), Nyquist weight 0
        self.register_buffer("mel_fb", fb, persistent=False)
        self.register_buffer("_mel_fb_pairs", fb.repeat_interleave(2, dim=0), persistent=False)
        if dither_floor is not None and not dither > 0:
            raise ConfigError(f"kaldi_fbank's dither_floor lies above the dither's energy, so it needs dither > 0, "
                              f"got dither={dither}")
        floor = (None if dither_floor is None else torch.from_numpy(kaldi_dither_floor(
            self._window_np, fb.double().numpy(), self.n_fft, float(dither), float(dither_floor))).float())
        self.register_buffer("floor", floor, persistent=False)  # (n_mels,) log energies, or None

    @property
    def output_dim(self) -> int:
        return self.n_mels

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, win={self.win_length}, hop={self.hop_length}, snip_edges={self.snip_edges}"

    def feature_lengths(self, wave_lengths: Tensor) -> Tensor:
        return kaldi_num_frames(wave_lengths.long(), self.hop_length, self.win_length, self.snip_edges)

    def forward(self, waves: Tensor, wave_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S) waves, (B,) lengths -> (B, T, n_mels) features (zero beyond each length), (B,) lengths.

        Batched by gathering every frame's samples at once; the reflection at an utterance's end
        uses that utterance's own length, so a padded batch gives what each utterance gives alone."""
        if waves.dim() != 2:
            raise DataError(f"frontend expects waves of shape (batch, samples), got {tuple(waves.shape)}")
        wave_lengths = wave_lengths.to(waves.device).long()
        if bool((wave_lengths <= 0).any()):
            raise DataError("frontend got an empty wave (length 0); drop it from the data dir")
        lengths = self.feature_lengths(wave_lengths)
        max_t = max(1, int(lengths.max()))
        x = waves.float() * self.scale
        if self.kaldi_dither > 0 and self.training:
            x = x + torch.randn_like(x) * self.kaldi_dither
        elif self.kaldi_dither > 0:  # the runtime's fixed noise, per utterance: batched as alone, repeatable
            noise = torch.zeros_like(x)
            for b, n in enumerate(wave_lengths.tolist()):
                noise[b, :n] = torch.from_numpy(kaldi_dither_noise(n, self.kaldi_dither)).to(x.device)
            x = x + noise
        first = int(kaldi_frame_starts(1, self.hop_length, self.win_length, self.snip_edges)[0])
        span = (max_t - 1) * self.hop_length + self.win_length  # samples from the first frame's start to the last's end
        signal = self._reflected(x, wave_lengths, first, span)  # (B, span): frame t at [t * hop, t * hop + win)
        # Kaldi removes each frame's mean, then pre-emphasises within the frame. Both are linear, so they
        # are done once on the signal instead of on every (overlapping) frame: pre-emphasis of (frame - m)
        # is the pre-emphasised signal minus m (1 - p) at every sample but the frame's first, whose
        # previous sample is the frame's own: no fix needed, Povey's window (this frontend's) is 0 there.
        means = F.avg_pool1d(signal[:, None], self.win_length, self.hop_length)[:, 0, :, None]  # (B, T, 1)
        emphasised = torch.cat([signal[:, :1], torch.add(signal[:, 1:], signal[:, :-1], alpha=-KALDI_PREEMPH)], dim=1)
        frames = emphasised.unfold(1, self.win_length, self.hop_length)  # (B, T, W), a view
        window = self.window.to(x.dtype)
        padded = frames.new_empty(*frames.shape[:2], self.n_fft)  # the FFT's zero padding written once, here
        padded[..., self.win_length :] = 0.0
        windowed = padded[..., : self.win_length]
        torch.sub(frames, means * (1 - KALDI_PREEMPH), out=windowed).mul_(window)
        # |X|^2 summed into mel bands by one product over (real, imag) pairs: no pass to add the squares
        squares = torch.view_as_real(torch.fft.rfft(padded)).square_().flatten(-2)
        feats = (squares @ self._mel_fb_pairs.to(squares.dtype)).clamp_min_(KALDI_ENERGY_FLOOR).log_()
        if self.floor is not None:
            feats = torch.maximum(feats, self.floor.to(feats.dtype))
        mask = length_mask(lengths, max_t)[..., None]
        return feats.masked_fill(~mask, 0.0), lengths

    def _reflected(self, x: Tensor, wave_lengths: Tensor, first: int, span: int) -> Tensor:
        """Samples ``first .. first + span`` of every wave, reflected about both of its ends as Kaldi
        does (repeatedly if need be). Only the ends are gathered: the samples before 0 and one
        window's worth after each wave's own length (the last frame of a wave ends within half a window of
        it); the rest is the wave itself, or lies under frames beyond the wave's length, which are masked."""
        n = wave_lengths[:, None]
        end = self.win_length + max(0, -first)
        positions = torch.cat([torch.arange(first, 0, device=x.device)[None, :].expand(x.shape[0], -1),
                               n + torch.arange(end, device=x.device)[None, :]], dim=1)
        idx = torch.remainder(positions, 2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
        ends = x.gather(1, idx)
        head = max(0, -first)
        needed = max(first + head + span, head + x.shape[1] + end)
        signal = F.pad(x, (head, needed - head - x.shape[1]))
        signal[:, :head] = ends[:, :head]
        signal.scatter_(1, positions[:, head:] + head, ends[:, head:])
        return signal[:, first + head : first + head + span]

    @torch.no_grad()
    def extract(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise DataError(f"frontend.extract expects a non-empty mono wave, got shape {wave.shape}")
        feats, lengths = self.forward(torch.from_numpy(wave)[None].to(self.window.device), torch.tensor([wave.size]))
        return feats[0, : int(lengths[0])].cpu().numpy()


def build_frontend(cfg: Mapping[str, Any] | None = None, *, path: str = "frontend") -> Frontend:
    """Build a frontend from a ``{name: ..., ...}`` config (default: 80-dim ``fbank``)."""
    cfg = dict(cfg) if cfg else {"name": "fbank"}
    frontend = build("frontend", cfg, path=path)
    if not isinstance(frontend, Frontend):
        raise ConfigError(f"'{path}' built {type(frontend).__name__}, which is not a kospeech Frontend")
    return frontend


def frames_for_seconds(seconds: float, *, sample_rate: int = 16000, frame_shift_ms: float = 10.0) -> int:
    """Frames a centred frontend gives for ``seconds`` of audio (for lengths before extraction)."""
    hop = int(round(sample_rate * frame_shift_ms / 1000))
    return 1 + int(math.floor(seconds * sample_rate)) // hop
