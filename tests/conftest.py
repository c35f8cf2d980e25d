"""Shared fixtures: real Korean speech from espeak-ng, real fbank features, deterministic seeds.

Area-specific fixtures live in ``tests/fixtures/<area>.py`` and are listed in
``pytest_plugins`` so that helpers of one area never edit another's file.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

pytest_plugins: list[str] = ["tests.fixtures.corpus", "tests.fixtures.deploy"]

SAMPLE_RATE = 16000
SHORT_SENTENCES = [
    "안녕하세요",
    "오늘 날씨가 좋네요",
    "밥 먹었어요",
    "지금 몇 시예요",
    "학교에 가요",
    "커피 한 잔 주세요",
    "감사합니다",
    "내일 만나요",
]


def espeak_wave(text: str, voice: str = "ko", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return float32 mono audio at 16 kHz."""
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    wave, rate = sf.read(io.BytesIO(out), dtype="float32")
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def espeak_available() -> bool:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed; `make test` installs it (apt-get install espeak-ng)")
    return True


@pytest.fixture(scope="session")
def korean_utterances(espeak_available: bool) -> list[tuple[str, np.ndarray]]:
    """Eight short real utterances (text, 16 kHz float32 wave)."""
    return [(t, espeak_wave(t, voice="ko" if i % 2 else "ko+f2")) for i, t in enumerate(SHORT_SENTENCES)]


@pytest.fixture(scope="session")
def fbank_batch(korean_utterances: list[tuple[str, np.ndarray]]) -> dict:
    """A padded batch of 80-dim Kaldi fbank features with character targets.

    Built without the toolkit's own data code so model tests do not depend on it: keys
    ``features`` (B, T, 80), ``feature_lengths``, ``targets`` (B, L) padded with <pad>,
    ``target_lengths``, ``vocab_size``.
    """
    from torchaudio.compliance.kaldi import fbank

    from kospeech.text.special import NUM_SPECIAL, PAD_ID

    feats = [fbank(torch.from_numpy(w)[None] * 32768, num_mel_bins=80, dither=0.0) for _, w in korean_utterances]
    mean = torch.cat(feats).mean(0)
    std = torch.cat(feats).std(0)
    feats = [(f - mean) / std for f in feats]
    chars = sorted({c for t, _ in korean_utterances for c in t})
    ids = [[NUM_SPECIAL + chars.index(c) for c in t] for t, _ in korean_utterances]
    B = len(feats)
    features = torch.zeros(B, max(f.size(0) for f in feats), 80)
    targets = torch.full((B, max(len(i) for i in ids)), PAD_ID, dtype=torch.long)
    for b, (f, i) in enumerate(zip(feats, ids)):
        features[b, : f.size(0)] = f
        targets[b, : len(i)] = torch.tensor(i)
    return {
        "features": features,
        "feature_lengths": torch.tensor([f.size(0) for f in feats]),
        "targets": targets,
        "target_lengths": torch.tensor([len(i) for i in ids]),
        "vocab_size": NUM_SPECIAL + len(chars),
        "texts": [t for t, _ in korean_utterances],
        "chars": chars,
    }
