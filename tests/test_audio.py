"""kospeech.audio: real espeak-ng speech through pcm/wav/flac, resampling, and each documented error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kospeech.audio import audio_duration, read_audio, read_pcm, resample_wave, write_audio, write_pcm
from kospeech.errors import DataError


@pytest.fixture
def speech(korean_utterances: list[tuple[str, np.ndarray]]) -> np.ndarray:
    return korean_utterances[1][1]


def test_pcm_round_trip_is_16bit_le_headerless(tmp_path: Path, speech: np.ndarray) -> None:
    path = tmp_path / "a.pcm"
    write_pcm(path, speech)
    raw = path.read_bytes()
    assert len(raw) == 2 * len(speech)  # no header
    first = int.from_bytes(raw[0:2], "little", signed=True)
    assert first == int(np.clip(np.rint(speech[0] * 32768), -32768, 32767))
    back = read_audio(path)
    assert back.dtype == np.float32 and back.ndim == 1
    assert np.max(np.abs(back - speech)) <= 1 / 32768 + 1e-7
    assert audio_duration(path) == pytest.approx(len(speech) / 16000)


def test_wav_at_other_rate_is_resampled_or_rejected(tmp_path: Path, speech: np.ndarray) -> None:
    wave22 = resample_wave(speech, 16000, 22050)
    path = tmp_path / "a.wav"
    sf.write(path, wave22, 22050, subtype="PCM_16")
    back = read_audio(path)
    assert abs(len(back) - len(speech)) <= 2
    # the band-limited round trip keeps the speech: high correlation with the original
    n = min(len(back), len(speech))
    assert np.corrcoef(back[:n], speech[:n])[0, 1] > 0.98
    assert audio_duration(path) == pytest.approx(len(wave22) / 22050)
    with pytest.raises(DataError, match=r"a\.wav has the wrong sample rate: 22050 Hz, expected 16000 Hz"):
        read_audio(path, resample=False)


def test_flac_and_stereo(tmp_path: Path, speech: np.ndarray) -> None:
    flac = tmp_path / "a.flac"
    write_audio(flac, speech, 16000)
    assert sf.info(flac).format == "FLAC" and sf.info(flac).samplerate == 16000
    assert np.max(np.abs(read_audio(flac) - speech)) <= 1 / 32768 + 1e-7
    stereo = tmp_path / "s.wav"
    sf.write(stereo, np.stack([speech, np.zeros_like(speech)], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(stereo), speech / 2, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pcm", None, r"missing\.pcm does not exist"),
        ("empty.pcm", b"", r"empty\.pcm is empty \(0 bytes\)"),
        ("empty.flac", b"", r"empty\.flac is empty"),
        ("odd.pcm", b"\x01\x02\x03", r"odd\.pcm is a truncated 16-bit PCM file: 3 bytes is an odd count"),
        ("text.wav", "안녕하세요 이건 오디오가 아니에요".encode(), r"text\.wav is not audio that soundfile can decode"),
    ],
)
def test_bad_files_name_file_and_problem(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_audio(path)
    if name != "text.wav":
        with pytest.raises(DataError, match=message.split(" ")[0]):
            audio_duration(path)


def test_read_pcm_scale() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.pcm"
        np.array([-32768, 0, 16384, 32767], dtype="<i2").tofile(p)
        np.testing.assert_allclose(read_pcm(p), [-1.0, 0.0, 0.5, 32767 / 32768])


def test_write_pcm_clips_and_rejects_bad_shapes(tmp_path: Path) -> None:
    p = tmp_path / "c.pcm"
    write_pcm(p, np.array([2.0, -2.0], dtype=np.float32))
    assert np.fromfile(p, dtype="<i2").tolist() == [32767, -32768]
    with pytest.raises(DataError, match="mono 1-D"):
        write_pcm(p, np.zeros((2, 3)))
    with pytest.raises(DataError, match="16000 Hz by convention"):
        write_audio(tmp_path / "d.pcm", np.zeros(10), 8000)
