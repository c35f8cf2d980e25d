"""Training-time augmentation (registry kind ``augment``): batch dict in, batch dict out.

Each augmentation is an ``nn.Module`` with ``domain`` = ``"feature"`` (works on
``features``/``feature_lengths``, after the frontend) or ``"wave"`` (works on
``waves``/``wave_lengths``, before an on-the-fly frontend). The trainer applies them to
training batches only (an augmentation in ``eval()`` mode returns the batch unchanged),
on whatever device the batch is on. Randomness comes from the module's own
``torch.Generator`` (``seed``; null = seeded from torch's global RNG on first use, so
``torch.manual_seed`` makes runs repeatable); random numbers are drawn on the CPU and
moved, so a run draws the same masks on CPU and GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from kospeech.data.frontends import speech_frames
from kospeech.errors import ConfigError, DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)


def _length_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _resample_rates(factor: float, sample_rate: int) -> tuple[int, int]:
    """Speed ``factor`` as a resampling ``orig -> new``: playing ``orig``-rate audio at ``new`` speeds it up."""
    return int(round(sample_rate * factor)), int(sample_rate)


def speed_perturb_wave(wave: np.ndarray, factor: float, *, sample_rate: int = 16000) -> np.ndarray:
    """Kaldi/ESPnet speed perturbation of one wave: resample so it plays ``factor`` times faster.

    Tempo and pitch change together (sox ``speed``); the length becomes ``ceil(len / factor)``.
    """
    if factor == 1.0:
        return np.asarray(wave, dtype=np.float32)
    import torchaudio.functional as AF

    orig, new = _resample_rates(factor, sample_rate)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), orig, new)
    return out.numpy()


class Augment(nn.Module):
    """Base: owns the generator; subclasses implement ``augment(batch)``."""

    domain: str = "feature"

    def __init__(self, *, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        self._generator: torch.Generator | None = None

    @property
    def generator(self) -> torch.Generator:
        if self._generator is None:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
            self._generator = torch.Generator().manual_seed(seed)
        return self._generator

    def rand(self, *shape: int) -> Tensor:
        """Uniform [0, 1) floats from this module's generator (CPU)."""
        return torch.rand(*shape, generator=self.generator)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.training:
            return batch
        return self.augment(dict(batch))

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _require(self, batch: dict[str, Any], *keys: str) -> None:
        missing = [k for k in keys if k not in batch]
        if missing:
            raise ConfigError(
                f"augment '{type(self).__name__}' ({self.domain} domain) needs batch keys {missing}; "
                + ("wave augmentations need raw-audio mode (an on-the-fly frontend)" if self.domain == "wave" else "")
            )


@register("augment", "spec_augment")
class SpecAugment(Augment):
    """SpecAugment (Park et al. 2019): frequency masks, time masks and an optional time warp.

    Vectorised over the batch; masks stay inside each utterance's length, and masked values
    are set to ``fill`` (0 = the mean after CMVN).

    Args:
        freq_mask_width: F, the largest frequency-mask width (bins); each width is uniform in [0, F].
        num_freq_masks: frequency masks per utterance.
        time_mask_ratio: T as a fraction of the utterance length; each width is uniform in [0, T].
        time_mask_width: T as an absolute number of frames (ESPnet's ``time_mask_width_range``
            upper end, Park et al.'s T=100/40); when set it replaces ``time_mask_ratio``, so a
            mask is as long in seconds in a 2 s and a 20 s utterance. Widths are capped by the
            utterance length. Null = use the ratio.
        num_time_masks: time masks per utterance.
        time_warp: W, the largest warp distance in frames (0 = no warp).
        fill: value written into masked cells.
        seed: generator seed (null = from torch's global RNG).
    """

    domain = "feature"

    def __init__(
        self,
        *,
        freq_mask_width: int = 27,
        num_freq_masks: int = 2,
        time_mask_ratio: float = 0.05,
        time_mask_width: int | None = None,
        num_time_masks: int = 2,
        time_warp: int = 0,
        fill: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        if freq_mask_width < 0 or num_freq_masks < 0 or num_time_masks < 0 or time_warp < 0:
            raise ConfigError("spec_augment widths and counts must be >= 0")
        if not 0 <= time_mask_ratio <= 1:
            raise ConfigError(f"spec_augment time_mask_ratio must be in [0, 1], got {time_mask_ratio}")
        if time_mask_width is not None and time_mask_width < 0:
            raise ConfigError(f"spec_augment time_mask_width must be >= 0 frames (or null), got {time_mask_width}")
        self.freq_mask_width = freq_mask_width
        self.num_freq_masks = num_freq_masks
        self.time_mask_ratio = time_mask_ratio
        self.time_mask_width = time_mask_width
        self.num_time_masks = num_time_masks
        self.time_warp = time_warp
        self.fill = fill

    def _masks(self, sizes: Tensor, max_width: Tensor, count: int, axis_len: int) -> Tensor:
        """(B, axis_len) bool: ``count`` intervals per row, width U[0, max_width], inside [0, sizes)."""
        b = sizes.size(0)
        width = (self.rand(b, count) * (max_width[:, None].float() + 1)).floor().long()
        width = torch.minimum(width, sizes[:, None])
        start = (self.rand(b, count) * (sizes[:, None] - width + 1).float()).floor().long()
        pos = torch.arange(axis_len)[None, None, :]
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])
        return inside.any(dim=1)

    def warp(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """Piecewise-linear time warp: the point ``c`` moves to ``c + w``, both halves stretched linearly."""
        b, t_max, _ = feats.shape
        w_max = self.time_warp
        ok = lengths > 2 * w_max + 1  # too short to warp: left as is
        lens = lengths.cpu()
        centre = w_max + (self.rand(b) * (lens - 2 * w_max).clamp_min(1).float()).floor()
        shift = (self.rand(b) * (2 * w_max + 1)).floor() - w_max
        shift = torch.where(ok.cpu(), shift, torch.zeros_like(shift))
        dest = centre + shift
        t = torch.arange(t_max, dtype=torch.float32)[None, :]
        lf = lens.float()[:, None]
        c, d = centre[:, None], dest[:, None]
        left = t * c / d.clamp_min(1)
        right = c + (t - d) * (lf - c) / (lf - d).clamp_min(1)
        src = torch.where(t < d, left, right).clamp(0, None)
        src = torch.minimum(src, (lf - 1).clamp_min(0))
        src = torch.where(t < lf, src, t).to(feats.device)
        lo = src.floor().long().clamp_max(t_max - 1)
        hi = (lo + 1).clamp_max(t_max - 1)
        frac = (src - lo.float())[..., None].to(feats.dtype)
        d_dim = feats.size(2)
        f_lo = feats.gather(1, lo[..., None].expand(-1, -1, d_dim))
        f_hi = feats.gather(1, hi[..., None].expand(-1, -1, d_dim))
        return f_lo + frac * (f_hi - f_lo)

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._require(batch, "features", "feature_lengths")
        feats: Tensor = batch["features"]
        lengths: Tensor = batch["feature_lengths"]
        b, t_max, dim = feats.shape
        if self.time_warp > 0:
            feats = self.warp(feats, lengths)
        lens = lengths.cpu().long()
        mask = torch.zeros(b, t_max, dim, dtype=torch.bool)
        if self.num_freq_masks and self.freq_mask_width:
            fm = self._masks(torch.full((b,), dim), torch.full((b,), self.freq_mask_width), self.num_freq_masks, dim)
            mask |= fm[:, None, :]
        absolute = self.time_mask_width is not None
        if self.num_time_masks and (self.time_mask_width if absolute else self.time_mask_ratio) > 0:
            if absolute:
                widths = torch.full_like(lens, self.time_mask_width)
            else:
                widths = (lens.float() * self.time_mask_ratio).floor().long()
            tm = self._masks(lens, widths, self.num_time_masks, t_max)
            mask |= tm[:, :, None]
        mask &= _length_mask(lens, t_max)[..., None]
        batch["features"] = feats.masked_fill(mask.to(feats.device), self.fill)
        return batch


def _read_noise_list(noise_files: str | Sequence[str]) -> list[str]:
    """A list of paths, or one text file with a path per line (``id path`` lines, as wav.scp, work too)."""
    if isinstance(noise_files, (list, tuple)):
        return [str(p) for p in noise_files]
    path = Path(noise_files)
    if not path.exists():
        raise DataError(f"noise list {path} does not exist")
    if path.suffix.lower() in (".wav", ".flac", ".pcm"):
        return [str(path)]
    paths = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2:
            raise DataError(f"{path}:{n}: expected 'path' or 'id path', got {line!r}")
        paths.append(parts[-1])
    if not paths:
        raise DataError(f"noise list {path} names no files")
    return paths


BABBLE_TALKERS = 3


@register("augment", "noise")
class NoiseAugment(Augment):
    """Add noise to a fraction of the waves at a random SNR (KoSpeech's NoiseAugment, batched).

    The noise comes from ``noise_files`` (a list of audio paths or a text file listing them;
    all are loaded once and joined into one bank, from which each utterance takes a random
    stretch, wrapping around) or, without files, is generated: ``white`` or ``pink`` (1/f
    power) Gaussian noise, or ``babble``: three other utterances of the same batch, each from a
    random point (wrapping around), summed. Background talk is the noise a recogniser most
    often meets and the one that is hardest to ignore, and the batch holds speech to make it
    from at no cost. The SNR is uniform in ``snr_db`` and measured over each utterance's
    valid samples.

    Args:
        noise_files: audio files or a list file; null = generated noise.
        noise_type: ``white`` | ``pink`` | ``babble`` when there are no files.
        prob: fraction of utterances that get noise.
        snr_db: [low, high] signal-to-noise ratio range in dB.
        sample_rate: rate noise files are read at.
        seed: generator seed (null = from torch's global RNG).
    """

    domain = "wave"

    def __init__(
        self,
        *,
        noise_files: str | list[str] | None = None,
        noise_type: Literal["white", "pink", "babble"] = "white",
        prob: float = 0.5,
        snr_db: list[float] = [5.0, 20.0],
        sample_rate: int = 16000,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        if not 0 <= prob <= 1:
            raise ConfigError(f"noise augment prob must be in [0, 1], got {prob}")
        if len(snr_db) != 2 or snr_db[0] > snr_db[1]:
            raise ConfigError(f"noise augment snr_db must be [low, high], got {snr_db}")
        if noise_type not in ("white", "pink", "babble"):
            raise ConfigError(f"noise augment noise_type must be 'white', 'pink' or 'babble', got {noise_type!r}")
        self.noise_paths = _read_noise_list(noise_files) if noise_files else []
        self.noise_type = noise_type
        self.prob = float(prob)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.sample_rate = sample_rate
        self._bank: Tensor | None = None

    def bank(self) -> Tensor:
        """All noise files joined (loaded on first use; unreadable files are an error naming the file)."""
        if self._bank is None:
            from kospeech.audio import read_audio

            waves = [torch.from_numpy(read_audio(p, sample_rate=self.sample_rate)) for p in self.noise_paths]
            self._bank = torch.cat(waves)
            logger.info("noise bank: %d files, %.1f s", len(waves), self._bank.numel() / self.sample_rate)
        return self._bank

    def make_noise(self, rows: Tensor, s: int, waves: Tensor | None = None) -> Tensor:
        """(len(rows), s) noise on the CPU for the batch rows ``rows``, from the bank or the
        generator (``babble``: from the other rows of ``waves``). Only the rows that get noise
        are made: a pink FFT over the whole batch cost more than the model's forward pass."""
        n = rows.numel()
        if self.noise_type == "babble" and not self.noise_paths:
            assert waves is not None
            b = waves.size(0)
            noise = torch.zeros(n, s)
            cpu = waves.detach().float().cpu()
            for k in range(1, min(BABBLE_TALKERS, b - 1) + 1):  # a batch of one has nobody to overhear
                start = (self.rand(n) * s).long()
                idx = (start[:, None] + torch.arange(s)[None, :]) % s
                noise += cpu[(rows - k) % b].gather(1, idx)  # row i hears row i - k, as roll(k)
            return noise
        if self.noise_paths:
            bank = self.bank()
            start = (self.rand(n) * bank.numel()).long()
            idx = (start[:, None] + torch.arange(s)[None, :]) % bank.numel()
            return bank[idx]
        if self.noise_type != "pink":
            return torch.randn(n, s, generator=self.generator)
        size = 1 << max(0, s - 1).bit_length()  # a power of two: an FFT of a padded length with a
        spec = torch.fft.rfft(torch.randn(n, size, generator=self.generator), dim=1)  # large prime factor is slow
        f = torch.arange(spec.size(1), dtype=torch.float32).clamp_min(1.0)
        return torch.fft.irfft(spec / f.sqrt(), n=size, dim=1)[:, :s]

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._require(batch, "waves", "wave_lengths")
        waves: Tensor = batch["waves"]
        lengths: Tensor = batch["wave_lengths"]
        b, s = waves.shape
        chosen = self.rand(b) < self.prob
        if not bool(chosen.any()):
            return batch
        lo, hi = self.snr_db
        rows = chosen.nonzero().flatten()
        snr = (lo + (hi - lo) * self.rand(rows.numel())).to(waves.device, waves.dtype)
        noise = self.make_noise(rows, s, waves).to(waves.device, waves.dtype)
        rows = rows.to(waves.device)
        picked = waves.index_select(0, rows)
        mask = _length_mask(lengths.to(waves.device).index_select(0, rows), s).to(waves.dtype)
        count = mask.sum(1).clamp_min(1)
        p_sig = (picked.square() * mask).sum(1) / count
        p_noise = (noise.square() * mask).sum(1) / count
        gain = torch.sqrt(p_sig / (p_noise.clamp_min(1e-12) * 10 ** (snr / 10)))
        batch["waves"] = waves.index_copy(0, rows, picked + gain[:, None] * noise * mask)
        return batch


@register("augment", "trim_edges")
class TrimEdges(Augment):
    """Cut the silence before and after the speech of a share of the utterances down to a random
    0 to ``max_seconds``.

    Corpora put silence around every utterance (the synthetic one 0.1-0.4 s), and a model that
    only ever hears speech start after a pause drops the first syllable of a clip that starts
    right on it (a tightly cut recording, a stream piece, a clip from another tool). Speech is
    found on 10 ms frames (20 ms windows) within ``top_db`` of the utterance's loudest frame.
    Put it first, so that speed perturbation and noise then apply to the trimmed wave.

    Args:
        prob: share of the utterances trimmed.
        max_seconds: the silence kept at each end is uniform in [0, max_seconds].
        top_db: frames quieter than the loudest by more than this are silence.
        sample_rate: rate of the waves.
        seed: generator seed (null = from torch's global RNG).
    """

    domain = "wave"

    def __init__(
        self,
        *,
        prob: float = 0.3,
        max_seconds: float = 0.05,
        top_db: float = 35.0,
        sample_rate: int = 16000,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed=seed)
        if not 0 <= prob <= 1:
            raise ConfigError(f"trim_edges augment prob must be in [0, 1], got {prob}")
        if max_seconds < 0 or top_db <= 0:
            raise ConfigError(f"trim_edges augment needs max_seconds >= 0 and top_db > 0, got {max_seconds}, {top_db}")
        self.prob = float(prob)
        self.max_seconds = float(max_seconds)
        self.top_db = float(top_db)
        self.sample_rate = int(sample_rate)

    def speech_bounds(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B,) first and one-past-last sample of each wave's speech (the frontends' silence
        detector on 20 ms frames every 10 ms); (0, length) when it keeps nothing. Found on the
        frames: a per-sample mask cost more than the rest of the augmentation."""
        hop = max(1, self.sample_rate // 100)
        keep = speech_frames(waves, lengths, top_db=self.top_db, frame_length=2 * hop, hop_length=hop)
        starts = torch.arange(keep.size(1), device=waves.device) * hop
        keep = (keep & (starts[None, :] < lengths[:, None])).int()  # frames holding a real sample
        found = keep.any(dim=1)
        first = torch.argmax(keep, dim=1) * hop
        end = torch.minimum((keep.size(1) - torch.argmax(keep.flip(1), dim=1)) * hop, lengths)
        return torch.where(found, first, torch.zeros_like(first)), torch.where(found, end, lengths)

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._require(batch, "waves", "wave_lengths")
        waves: Tensor = batch["waves"]
        lengths: Tensor = batch["wave_lengths"].long().to(waves.device)
        b = waves.size(0)
        chosen = (self.rand(b) < self.prob).to(waves.device)
        keep = self.max_seconds * self.sample_rate
        lead, tail = (self.rand(b) * keep).long().to(waves.device), (self.rand(b) * keep).long().to(waves.device)
        if not bool(chosen.any()):
            return batch
        rows = chosen.nonzero().flatten()  # the speech of the chosen utterances only
        start, end = torch.zeros_like(lengths), lengths.clone()
        found_start, found_end = self.speech_bounds(waves.index_select(0, rows), lengths.index_select(0, rows))
        start[rows] = (found_start - lead[rows]).clamp_min(0)
        end[rows] = torch.minimum(found_end + tail[rows], lengths[rows])
        new_lengths = end - start
        max_len = int(new_lengths.max())
        inside = _length_mask(new_lengths, max_len)
        out = waves[:, :max_len].masked_fill(~inside, 0.0)  # the utterances left whole: no gather
        idx = (start[rows, None] + torch.arange(max_len, device=waves.device)[None]).clamp_max(waves.size(1) - 1)
        out[rows] = waves.index_select(0, rows).gather(1, idx).masked_fill_(~inside[rows], 0.0)
        batch["waves"] = out
        batch["wave_lengths"] = new_lengths.to(batch["wave_lengths"].dtype)
        return batch


@register("augment", "speed")
class SpeedPerturb(Augment):
    """Speed perturbation of raw waves (resample-based, tempo and pitch together, as Kaldi/ESPnet).

    Each utterance gets one factor drawn uniformly from ``factors``; utterances sharing a
    factor are resampled together (one batched resample per distinct factor), and
    ``wave_lengths`` become ``ceil(len / factor)``.

    Args:
        factors: speed factors to draw from (1.0 = unchanged).
        sample_rate: rate of the waves.
        seed: generator seed (null = from torch's global RNG).
    """

    domain = "wave"

    def __init__(
        self, *, factors: list[float] = [0.9, 1.0, 1.1], sample_rate: int = 16000, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        if not factors or any(f <= 0 for f in factors):
            raise ConfigError(f"speed augment factors must be positive, got {factors}")
        self.factors = [float(f) for f in factors]
        self.sample_rate = sample_rate
        self._resamplers: dict[tuple[float, torch.device], nn.Module] = {}  # not submodules: no state

    def _resampler(self, factor: float, device: torch.device) -> nn.Module:
        """torchaudio's resampler for ``factor`` (its sinc kernel built once, not on every batch)."""
        key = (factor, device)
        if key not in self._resamplers:
            import torchaudio.transforms as AT

            self._resamplers[key] = AT.Resample(*_resample_rates(factor, self.sample_rate)).to(device)
        return self._resamplers[key]

    def augment(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._require(batch, "waves", "wave_lengths")
        waves: Tensor = batch["waves"]
        lengths: Tensor = batch["wave_lengths"].long()
        b = waves.size(0)
        pick = (self.rand(b) * len(self.factors)).long().clamp_max(len(self.factors) - 1)
        outs: list[tuple[Tensor, Tensor, Tensor]] = []
        for k, factor in enumerate(self.factors):  # a loop over the few factors, not utterances
            rows = (pick == k).nonzero().flatten()
            if rows.numel() == 0:
                continue
            rows_dev = rows.to(waves.device)
            sub = waves.index_select(0, rows_dev)
            sub_len = lengths.index_select(0, rows_dev)
            if factor != 1.0:
                orig, new = _resample_rates(factor, self.sample_rate)
                sub_max = int(sub_len.max())
                sub = self._resampler(factor, waves.device)(sub[:, :sub_max])
                sub_len = torch.ceil(sub_len.double() * new / orig).long().clamp_max(sub.size(1))
            outs.append((rows_dev, sub, sub_len))
        max_len = max(int(sub_len.max()) for _, _, sub_len in outs)
        new_waves = waves.new_zeros(b, max_len)
        new_lengths = lengths.new_zeros(b)
        for rows_dev, sub, sub_len in outs:
            sub = sub[:, :max_len]
            new_waves[rows_dev, : sub.size(1)] = sub
            new_lengths[rows_dev] = sub_len
        new_waves = new_waves.masked_fill(~_length_mask(new_lengths, max_len), 0.0)
        batch["waves"] = new_waves
        batch["wave_lengths"] = new_lengths
        batch["speed_factors"] = torch.tensor(self.factors)[pick]
        return batch


def build_augments(cfgs: Sequence[Any] | None, *, path: str = "augment") -> nn.ModuleList:
    """A list of ``{name: ...}`` configs (the training YAML's ``augment:``) as modules, in order."""
    from kospeech.registry import build

    mods = []
    for i, cfg in enumerate(cfgs or []):
        mods.append(build("augment", cfg, path=f"{path}[{i}]"))
    return nn.ModuleList(mods)
