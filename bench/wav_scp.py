"""What KsponSpeech's wav.scp form costs: a ``cat pcm_header.wav x.pcm |`` pipe against converted WAV files.

Writes N utterances of KsponSpeech's mean length (969 h / 622,545 utterances = 5.6 s; 16 kHz
16-bit mono headerless PCM) into a temporary folder, then measures:

- prep: the extra disk and time of each form (the pipe: one 44-byte header per split and longer
  wav.scp lines; WAV: a full copy of every file with a header, done here as fast as it can be
  done, header + bytes, no decoding);
- reading: seconds per utterance for this toolkit (the pipe is read in-process), for a Kaldi or
  lhotse user (one ``cat`` process per utterance, as Kaldi's popen and lhotse's ``shell=True``
  run it) and for a converted WAV file; page-cache warm, so these are the CPU overheads that a
  cold disk adds its reading time to (the same bytes for every form).

Prints each number and its extrapolation to KsponSpeech's 622,545 utterances. Run:
``python bench/wav_scp.py [N]`` (N=300 takes about ten seconds).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kospeech.audio import read_audio  # noqa: E402
from kospeech.data.kaldi_io import AudioRef, pcm_pipe, pipe_command, read_item, streamed_wav_header  # noqa: E402

KSPON_UTTS = 622_545
KSPON_HOURS = 969.0
MEAN_SECONDS = KSPON_HOURS * 3600 / KSPON_UTTS


def _timed(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def main(n: int = 300) -> None:
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="kospeech_wav_scp_"))
    try:
        pcms = []
        for i in range(n):
            seconds = max(1.0, rng.normal(MEAN_SECONDS, 2.0))
            path = root / "pcm" / f"KsponSpeech_{i:06d}.pcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng.integers(-3000, 3000, int(seconds * 16000), dtype=np.int16).tofile(path)
            pcms.append(path)
        pcm_bytes = sum(p.stat().st_size for p in pcms)
        header = root / "pcm_header.wav"

        t = time.perf_counter()
        header.write_bytes(streamed_wav_header(16000))
        pipes = [pcm_pipe(header, p) for p in pcms]
        pipe_prep = (time.perf_counter() - t) / n
        extra_line = np.mean([len(v) - len(str(p)) for v, p in zip(pipes, pcms)])

        wav_dir = root / "wav"
        wav_dir.mkdir()
        t = time.perf_counter()
        wavs = []
        for p in pcms:
            data = p.read_bytes()
            head = bytearray(streamed_wav_header(16000))
            head[4:8] = (36 + len(data)).to_bytes(4, "little")
            head[40:44] = len(data).to_bytes(4, "little")
            out = wav_dir / (p.stem + ".wav")
            out.write_bytes(bytes(head) + data)
            wavs.append(out)
        wav_prep = (time.perf_counter() - t) / n
        wav_bytes = sum(w.stat().st_size for w in wavs)

        read_pcm_s = _timed(lambda p: read_audio(p), pcms)
        read_pipe_s = _timed(lambda v: read_item(AudioRef(v)), pipes)
        read_wav_s = _timed(lambda w: read_audio(w), wavs)
        cat_s = _timed(lambda v: subprocess.run(pipe_command(v), shell=True, check=True, capture_output=True), pipes)

        scale = KSPON_UTTS
        print(f"{n} utterances, mean {pcm_bytes / n / 32000:.2f} s ({pcm_bytes / 1e6:.1f} MB of PCM); "
              f"extrapolated to KsponSpeech's {KSPON_UTTS:,} utterances ({KSPON_HOURS:.0f} h):")
        print(f"  pipe: extra disk {extra_line:.0f} B per wav.scp line + 44 B per split "
              f"= {extra_line * scale / 1e6:.0f} MB; prep {pipe_prep * 1e6:.1f} us/utt = {pipe_prep * scale:.1f} s")
        print(f"  wav copy: extra disk {wav_bytes / n / 1e3:.0f} kB per utt = {wav_bytes / n * scale / 1e9:.0f} GB; "
              f"prep {wav_prep * 1e3:.2f} ms/utt = {wav_prep * scale / 60:.1f} min (warm cache; a cold disk reads and "
              f"writes {wav_bytes / n * scale / 1e9:.0f} GB more)")
        print(f"  reading here: pcm {read_pcm_s * 1e3:.3f} ms/utt, pipe {read_pipe_s * 1e3:.3f} ms/utt "
              f"(+{(read_pipe_s - read_pcm_s) * scale / 60:.1f} min per pass over the corpus), "
              f"wav {read_wav_s * 1e3:.3f} ms/utt")
        print(f"  reading by Kaldi/lhotse (sh + cat per utterance): {cat_s * 1e3:.2f} ms/utt = "
              f"{cat_s * scale / 60:.1f} min per pass over the corpus, one core")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
