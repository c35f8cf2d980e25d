"""Rendering a synthetic corpus's utterances: espeak-ng speech, padding, noise and level.

Runs in worker processes: each :class:`~kospeech.data.corpora.synthetic_plan.Job` carries every
choice (drawn by :mod:`kospeech.data.corpora.synthetic_plan`), and its noise comes from its own
seed, so an utterance's bytes do not depend on which worker renders it.
"""

from __future__ import annotations

import io
import math
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kospeech.audio import PCM_SAMPLE_RATE, resample_wave, write_audio
from kospeech.data.corpora.synthetic_plan import NOISE_TYPES, Job, Voice
from kospeech.errors import DataError


def espeak(text: str, voice: Voice, *, sample_rate: int = PCM_SAMPLE_RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng (text via stdin, so nothing in it is taken for an option), float32."""
    import soundfile as sf

    cmd = ["espeak-ng", "-v", f"ko+{voice.variant}", "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout"]
    if voice.definition is not None:
        from kospeech.data.corpora.espeak_voices import data_path_with

        cmd[1:1] = [f"--path={data_path_with(voice.variant, voice.definition)}"]
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True)
    except FileNotFoundError:
        raise DataError("espeak-ng is not installed; install it (apt-get install espeak-ng) to synthesise") from None
    except subprocess.CalledProcessError as err:
        stderr = err.stderr.decode(errors="replace")
        raise DataError(f"espeak-ng failed for voice {voice} on {text!r}: {stderr}") from None
    wave, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return resample_wave(wave, rate, sample_rate)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (power falls 3 dB per octave)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n=n)


def make_noise(kind: str, n: int, rng: np.random.Generator, babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``n`` samples of ``white``, ``pink`` or ``babble`` (the given waves, tiled and summed) noise."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        if not babble:
            raise ValueError("babble noise needs at least one wave")
        out = np.zeros(n)
        for wave in babble:
            start = int(rng.integers(0, max(1, len(wave))))
            tiled = np.resize(np.roll(wave, -start), n)  # np.resize repeats the wave to length n
            out += tiled / (np.sqrt(np.mean(tiled**2)) + 1e-8)
        return out
    raise ValueError(f"unknown noise type {kind!r}; one of {', '.join(NOISE_TYPES)}")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + noise`` with the noise scaled so that speech power / noise power = ``snr_db``."""
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return speech + scale * noise


def render(job: Job) -> np.ndarray:
    """The finished 16 kHz wave of one job (speech, padding, noise, level)."""
    rng = np.random.default_rng(job.seed)
    speech = espeak(job.spoken, job.voice).astype(np.float64)
    speech = np.concatenate([np.zeros(job.pad[0]), speech, np.zeros(job.pad[1])])
    if job.noise is not None:
        babble = [espeak(text, voice) for text, voice in job.babble] if job.noise == "babble" else []
        speech = mix_at_snr(speech, make_noise(job.noise, len(speech), rng, babble), job.snr_db)
    peak = float(np.max(np.abs(speech))) or 1.0
    return (speech * (job.peak / peak)).astype(np.float32)


def run_job(job: Job) -> tuple[str, int]:
    """Render and write one utterance (audio plus, for KsponSpeech, its CP949 ``.txt``)."""
    wave = render(job)
    write_audio(job.path, wave, PCM_SAMPLE_RATE)
    if job.txt_path is not None:
        Path(job.txt_path).write_bytes((job.raw + "\n").encode("cp949"))
    return job.path, int(wave.shape[0])


def init_worker() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
