"""Audio files in, float32 mono waves out: wav/flac/ogg through soundfile, KsponSpeech raw PCM through numpy.

KsponSpeech ships headerless ``.pcm`` files: 16-bit signed little-endian samples, one channel,
16 kHz. Having no header, a ``.pcm`` file carries no rate or format: the suffix alone says how
to read it, and a file with an odd number of bytes is a truncated copy. Everything else goes
through soundfile (libsndfile), whose header gives the rate and the length, so
:func:`audio_duration` never decodes samples.

Every failure is a :class:`~kospeech.errors.DataError` that names the file and the problem,
because a corpus of 600k files is debugged from its error messages alone.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kospeech.errors import DataError

logger = logging.getLogger(__name__)

PCM_SAMPLE_RATE = 16000
"""KsponSpeech's raw PCM rate; a ``.pcm`` file is always read (and written) at this rate."""

PCM_SUFFIX = ".pcm"
_INT16_SCALE = 32768.0


def is_pcm(path: str | os.PathLike[str]) -> bool:
    """True for KsponSpeech headerless PCM (decided by the ``.pcm`` suffix, case-insensitive)."""
    return Path(path).suffix.lower() == PCM_SUFFIX


def _check_file(path: Path) -> int:
    """Size in bytes of an existing, non-empty file, or a DataError saying what is wrong."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"audio file {path} does not exist; check the path (relative ones start at the cwd)") from None
    if not path.is_file():
        raise DataError(f"audio file {path} is not a regular file")
    if size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes); re-copy it or drop the utterance")
    return size


def _check_pcm_file(path: Path) -> int:
    """Size in bytes of an existing ``.pcm`` file holding whole 16-bit samples."""
    size = _check_file(path)
    if size % 2:
        raise DataError(
            f"audio file {path} is a truncated 16-bit PCM file: {size} bytes is an odd count "
            "(each sample takes 2 bytes); re-copy it from the corpus or drop the utterance"
        )
    return size


def read_pcm(path: str | os.PathLike[str]) -> np.ndarray:
    """Samples of a KsponSpeech ``.pcm`` file as float32 in [-1, 1), at :data:`PCM_SAMPLE_RATE`."""
    path = Path(path)
    _check_pcm_file(path)
    samples = np.fromfile(path, dtype="<i2")
    return samples.astype(np.float32) / _INT16_SCALE


CANCEL_RATIO = 0.1
"""The channels' mean is taken as cancelled when its energy is below this share (-10 dB) of the
channels' average energy; identical channels give 1.0, uncorrelated ones 1/channels (0.5 for
stereo, 0.25 for four channels: still averaged), one inverted copy of the other about 0."""


def downmix_choice(wave: np.ndarray) -> int | None:
    """Which channel to keep of a ``(frames, channels)`` wave, or None to average them.

    Averaging is the usual downmix and right for most files. But channels in opposite phase
    (a miswired or inverted microphone, right = -left) cancel in the mean, and the speech
    with them: the file transcribes to empty text without a word. When the mean holds far less
    energy than the channels themselves (:data:`CANCEL_RATIO`), the loudest channel alone is
    the better mono. Silence (no energy anywhere) averages.
    """
    if wave.ndim != 2 or wave.shape[1] < 2:
        return None
    x = np.asarray(wave, dtype=np.float64)
    per_channel = np.mean(x * x, axis=0)
    average = float(per_channel.mean())
    if not average > 1e-12:  # silence (or NaN, which check_finite reports)
        return None
    mixed = x.mean(axis=1)
    if float(np.mean(mixed * mixed)) >= CANCEL_RATIO * average:
        return None
    return int(np.argmax(per_channel))


def _log_choice(name: str, channel: int, channels: int) -> None:
    logger.warning("%s: its %d channels cancel out when averaged (one is phase-inverted); using channel %d alone",
                   name, channels, channel + 1)


def downmix(wave: np.ndarray, name: str) -> np.ndarray:
    """``(frames, channels)`` -> mono: the channels' mean, or the loudest channel where the mean
    cancels (:func:`downmix_choice`, with a log line naming the file)."""
    if wave.shape[1] == 1:
        return wave[:, 0]
    channel = downmix_choice(wave)
    if channel is None:
        return wave.mean(axis=1)
    _log_choice(name, channel, wave.shape[1])
    return wave[:, channel]


def _decode_soundfile(source: Any, name: str) -> tuple[np.ndarray, int]:
    """soundfile's decode of a path or a file object -> float32 mono wave and its rate; ``name`` for errors."""
    import soundfile as sf

    try:
        wave, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        raise DataError(
            f"{name} is not audio that soundfile can decode (wav, flac, ogg; raw PCM needs a .pcm suffix): {err}"
        ) from None
    if wave.shape[0] == 0:
        raise DataError(f"{name} has a valid header but no samples")
    mono = downmix(wave, name)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    _check_file(path)
    return _decode_soundfile(str(path), f"audio file {path}")


@functools.lru_cache(maxsize=8)
def _resampler(orig_rate: int, new_rate: int) -> Any:
    import torchaudio.transforms as T

    return T.Resample(orig_rate, new_rate)


def resample_fft(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling in numpy alone (the spectrum cut or zero-padded), for the torch-free runtime.

    Exact for periodic signals; at the ends of a finite wave it leaks a few milliseconds of
    ringing, which is silence or noise in speech files.
    """
    wave = np.asarray(wave, dtype=np.float64)
    n_out = max(1, int(round(wave.size * new_rate / orig_rate)))
    spec = np.fft.rfft(wave)
    out_spec = np.zeros(n_out // 2 + 1, dtype=spec.dtype)
    keep = min(spec.size, out_spec.size)
    out_spec[:keep] = spec[:keep]
    return (np.fft.irfft(out_spec, n_out) * (n_out / wave.size)).astype(np.float32)


#: a larger sinc kernel (rates whose ratio reduces to big numbers, 44100 -> 16001) costs more memory
#: than the FFT's whole-spectrum resampling; :func:`resample_numpy` hands those to :func:`resample_fft`
_MAX_KERNEL_TAPS = 4_000_000


@functools.lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """torchaudio's ``sinc_interp_hann`` kernel (``torchaudio.functional.resample``'s defaults) for
    reduced rates ``orig`` -> ``new``: ``(kernel (new, taps) float32, width)``."""
    import math

    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t *= math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    return (kernel * window * (base / orig)).astype(np.float32), width


def resample_numpy(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """torchaudio's windowed-sinc resampling in numpy alone, for the light install (no torch).

    The same kernel, padding and length as ``torchaudio.transforms.Resample(orig, new)``, so a
    file decodes alike with or without torch (tests/test_install_light.py: within 1e-5).
    """
    import math

    gcd = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // gcd, int(new_rate) // gcd
    if new * (2 * math.ceil(6 * orig / (min(orig, new) * 0.99)) + orig) > _MAX_KERNEL_TAPS:
        return resample_fft(wave, orig_rate, new_rate)
    kernel, width = _sinc_kernel(orig, new)
    wave = np.ascontiguousarray(wave, dtype=np.float32)
    padded = np.pad(wave, (width, width + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    out = (frames @ kernel.T).reshape(-1)
    return np.ascontiguousarray(out[: math.ceil(new * wave.size / orig)], dtype=np.float32)


def resample_wave(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc); a no-op when the rates agree.

    The sinc kernel is built once per rate pair and cached (torchaudio.transforms.Resample):
    building it costs more than applying it to a few seconds of audio. Where torch is not
    installed (``kospeech.runtime`` in the light install), :func:`resample_numpy` computes the same.
    """
    if orig_rate == new_rate:
        return wave
    try:
        import torch
        import torchaudio  # noqa: F401
    except ImportError:
        return resample_numpy(wave, orig_rate, new_rate)

    with torch.no_grad():
        out = _resampler(int(orig_rate), int(new_rate))(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


def read_audio_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """An audio file's content (wav, flac, ogg) as a float32 mono wave and its rate; ``name`` for errors.

    For uploads and standard input, which have no path; raw PCM has no header, so the bytes
    must be a file format.
    """
    import io

    if not data:
        raise DataError(f"{name}: no audio bytes (empty input)")
    check_wav_bytes_complete(data, name)
    return _decode_soundfile(io.BytesIO(bytes(data)), name)


def read_audio(
    path: str | os.PathLike[str], *, sample_rate: int = PCM_SAMPLE_RATE, resample: bool = True
) -> np.ndarray:
    """Read ``path`` as a float32 mono wave at ``sample_rate``.

    ``.pcm`` means KsponSpeech raw PCM (16 kHz); any other suffix is decoded by soundfile and
    multi-channel audio is averaged to mono (or, where the channels cancel, the loudest one is
    kept: :func:`downmix`). A file at another rate is resampled, or, with
    ``resample=False``, rejected ("wrong sample rate") so that a pipeline that must not
    resample silently finds out.
    """
    path = Path(path)
    if is_pcm(path):
        wave, rate = read_pcm(path), PCM_SAMPLE_RATE
    else:
        check_wav_complete(path)
        wave, rate = _read_soundfile(path)
    check_finite(wave, str(path))
    if rate != sample_rate:
        if not resample:
            raise DataError(
                f"audio file {path} has the wrong sample rate: {rate} Hz, expected {sample_rate} Hz; "
                "resample it (or allow resampling)"
            )
        wave = resample_wave(wave, rate, sample_rate)
    return wave


def _to_int16(wave: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16 with clipping (round to nearest, so write/read round-trips exactly)."""
    scaled = np.rint(np.asarray(wave, dtype=np.float64) * _INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype("<i2")


def write_pcm(path: str | os.PathLike[str], wave: np.ndarray) -> None:
    """Write a float wave (16 kHz, values in [-1, 1]) as KsponSpeech headerless 16-bit LE PCM."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise DataError(f"write_pcm({path}): expected a mono 1-D wave, got shape {wave.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _to_int16(wave).tofile(path)


def write_audio(path: str | os.PathLike[str], wave: np.ndarray, sample_rate: int = PCM_SAMPLE_RATE) -> None:
    """Write a mono float wave; the suffix picks the format (``.pcm`` raw PCM, else soundfile, 16-bit)."""
    path = Path(path)
    if is_pcm(path):
        if sample_rate != PCM_SAMPLE_RATE:
            raise DataError(f"{path}: raw .pcm files are {PCM_SAMPLE_RATE} Hz by convention, got {sample_rate} Hz")
        write_pcm(path, wave)
        return
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), _to_int16(wave), sample_rate, subtype="PCM_16")


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Duration in seconds from the file size (``.pcm``) or the header (others), without decoding."""
    path = Path(path)
    if is_pcm(path):
        return _check_pcm_file(path) / (2 * PCM_SAMPLE_RATE)
    import soundfile as sf

    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, TypeError) as err:
        raise DataError(f"audio file {path} is not audio soundfile can decode: {err}") from None
    if info.samplerate <= 0:
        raise DataError(f"audio file {path} has an invalid sample rate in its header")
    return info.frames / info.samplerate


def check_finite(wave: np.ndarray, name: str) -> None:
    """NaN or inf samples (a broken converter, a float WAV gone wrong) would decode to empty or
    garbage text without a word; refuse them, naming the item and where the first one is."""
    bad = ~np.isfinite(wave)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"audio {name} has {int(bad.sum())} NaN/inf samples (the first at sample {first}); "
                        "the file is damaged")


def _wav_shortfall(f: Any, size: int) -> tuple[int, int] | None:
    """(bytes announced, bytes held) of a RIFF/WAVE data chunk cut short, else None; ``f`` is a binary file."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= size:
        f.seek(pos)
        chunk = f.read(8)
        declared = int.from_bytes(chunk[4:8], "little")
        if chunk[:4] == b"data":
            held = size - pos - 8
            return (declared, held) if declared != 0xFFFFFFFF and held < declared else None
        pos += 8 + declared + (declared & 1)
    return None


def check_wav_complete(path: str | os.PathLike[str]) -> None:
    """A WAV whose data chunk is shorter than its header says (a copy cut short) is refused.

    libsndfile reads such a file up to where it ends, so it would transcribe partially and
    silently; the header's own size tells us it is incomplete.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            short = _wav_shortfall(f, path.stat().st_size)
    except OSError as err:
        raise DataError(f"audio file {path} cannot be read: {err}") from None
    if short is not None:
        raise DataError(f"audio file {path} is cut short: its header announces {short[0]} bytes of audio but "
                        f"the file holds {short[1]}; re-copy it (or drop the utterance)")


def check_wav_bytes_complete(data: bytes, name: str) -> None:
    """:func:`check_wav_complete` for a file's bytes (standard input, uploads, API bytes)."""
    import io

    short = _wav_shortfall(io.BytesIO(bytes(data)), len(data))
    if short is not None:
        raise DataError(f"{name}: a WAV cut short: its header announces {short[0]} bytes of audio but only "
                        f"{short[1]} came; send the whole file")


def stream_audio(
    path: str | os.PathLike[str], *, sample_rate: int = PCM_SAMPLE_RATE, block_seconds: float = 30.0
) -> tuple[float, Iterator[np.ndarray]]:
    """``(seconds, blocks)``: a file of any length as float32 mono blocks at ``sample_rate``.

    Memory is one block whatever the file's length (``.pcm`` through a memory map, other formats
    through soundfile's block reader); each block is checked for NaN samples and resampled.
    """
    import soundfile as sf

    path = Path(path)
    if is_pcm(path):
        _check_pcm_file(path)
        samples = np.memmap(path, dtype="<i2", mode="r")
        rate, total = PCM_SAMPLE_RATE, len(samples)
        step = int(block_seconds * rate)

        def pcm_blocks() -> Iterator[np.ndarray]:
            for start in range(0, total, step):
                yield samples[start : start + step].astype(np.float32) / _INT16_SCALE

        blocks: Iterator[np.ndarray] = pcm_blocks()
    else:
        _check_file(path)
        check_wav_complete(path)
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError, TypeError) as err:
            raise DataError(f"audio file {path} is not audio that soundfile can decode (wav, flac, ogg; raw PCM "
                            f"needs a .pcm suffix): {err}") from None
        rate, total = int(info.samplerate), int(info.frames)
        if total == 0:
            raise DataError(f"audio file {path} has a valid header but no samples")

        def sf_blocks() -> Iterator[np.ndarray]:
            # the first block with sound in it decides the downmix for the whole file: a file that
            # switched between the mean and one channel would jump in level mid-stream
            channel: int | None = None
            decided = False
            for block in sf.blocks(str(path), blocksize=int(block_seconds * rate), dtype="float32", always_2d=True):
                if block.shape[1] == 1:
                    yield block[:, 0]
                    continue
                if not decided and float(np.mean(np.square(block, dtype=np.float64))) > 1e-8:  # above -80 dBFS
                    channel, decided = downmix_choice(block), True
                    if channel is not None:
                        _log_choice(f"audio file {path}", channel, block.shape[1])
                yield block.mean(axis=1) if channel is None else block[:, channel]

        blocks = sf_blocks()

    def checked() -> Iterator[np.ndarray]:
        for block in blocks:
            check_finite(block, str(path))
            yield resample_wave(np.ascontiguousarray(block, dtype=np.float32), rate, sample_rate)

    return total / rate, checked()
