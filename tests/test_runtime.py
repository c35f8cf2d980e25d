"""``kospeech.runtime`` without torch: a whole transcribe in a subprocess where ``import torch`` fails,
and its numpy parts (frontend, CTC searches, resampling) against the PyTorch ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.cli import main

REPO = Path(__file__).resolve().parents[1]

# Imports of these fail in the subprocess, as on a machine without them; the runtime must not need them.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = ("torch", "torchaudio", "librosa", "kospeech.registry", "kospeech.train", "kospeech.nn",
               "kospeech.models", "kospeech.data", "kospeech.search", "kospeech.text.tokenizers")
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in BLOCKED or name.startswith(tuple(b + "." for b in BLOCKED)):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, Blocker())
    """
)


def run_without_torch(body: str, timeout: int = 120) -> dict:
    """Run ``body`` (Python that sets ``out``, a JSON-able dict) in a subprocess where torch, the
    registry and the other BLOCKED modules cannot be imported; returns ``out`` with ``modules``, the
    heavy modules that got imported anyway (a test expects none)."""
    script = BLOCKER + textwrap.dedent(
        """
        import json
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported despite the blocker")
        """
    ) + textwrap.dedent(body) + textwrap.dedent(
        """
        out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "librosa")
                                or m.startswith(("kospeech.registry", "kospeech.text.tokenizers")))
        print(json.dumps(out, ensure_ascii=False))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runtime") / "onnx"
    assert main(["export", str(ctc_checkpoint["path"]), "--out", str(out)]) == 0
    return out


def test_transcribe_in_a_process_without_torch(exported: Path, ctc_checkpoint: dict, tmp_path: Path) -> None:
    from kospeech.audio import write_audio

    paths = []
    for i, wave in enumerate(ctc_checkpoint["waves"][:4]):
        paths.append(str(tmp_path / f"utt{i}.{'wav' if i % 2 else 'flac'}"))
        write_audio(paths[-1], wave, 16000)
    # one file at 22.05 kHz: resampled by numpy, as torchaudio is absent
    import soundfile as sf

    from kospeech.audio import resample_wave

    sf.write(str(tmp_path / "22k.wav"), resample_wave(ctc_checkpoint["waves"][4], 16000, 22050), 22050)
    paths.append(str(tmp_path / "22k.wav"))
    out = run_without_torch(
        f"""
        import kospeech.runtime
        model = kospeech.runtime.load({str(exported)!r})
        results = model.transcribe({paths!r})
        beam = model.transcribe({paths[0]!r}, search="ctc_prefix_beam", beam_size=4)
        out = {{"texts": [r.text for r in results], "errors": [r.error for r in results],
               "words": [[w.text, w.start, w.end] for w in results[0].words], "beam": beam.text}}
        """
    )
    assert out["modules"] == []
    assert out["errors"] == [None] * 5
    assert out["texts"] == ctc_checkpoint["texts"][:5]
    assert out["beam"] == ctc_checkpoint["texts"][0]
    assert [w[0] for w in out["words"]] == ctc_checkpoint["texts"][0].split()


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "fbank", "n_mels": 80},
        {"name": "mel", "n_mels": 64, "normalize": True},
        {"name": "mfcc", "n_mfcc": 40, "input_reverse": True},
        {"name": "spectrogram", "frame_length_ms": 20.0},
        {"name": "fbank", "backend": "librosa", "n_mels": 40},
    ],
    ids=["fbank", "mel-normalize", "mfcc-reverse", "spectrogram", "fbank-librosa"],
)
def test_numpy_frontend_matches_the_module(cfg: dict, korean_utterances: list) -> None:
    """Same frames, features within float rounding (the bound of tests/test_frontends.py's backend parity)."""
    from kospeech.data.frontends import build_frontend
    from kospeech.export.onnx import frontend_arrays
    from kospeech.runtime.features import NumpyFrontend

    module = build_frontend(cfg).eval()
    ours = NumpyFrontend(module.config, frontend_arrays(module))
    assert ours.output_dim == module.output_dim
    for _, wave in korean_utterances[:3]:
        ref = module.extract(wave)
        got = ours(wave)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-2 and np.abs(got - ref).mean() < 1e-4


def test_numpy_ctc_searches_match_torch() -> None:
    from kospeech.runtime import ctc
    from kospeech.search.ctc import ctc_best_path, ctc_prefix_beam_search

    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        T, V = int(torch.randint(5, 40, (1,), generator=gen)), 9
        logits = torch.randn(T, V, generator=gen) * 3
        logits[:, 0] += 1.5  # blank-heavy, as trained CTC is
        lp = torch.log_softmax(logits, -1)
        ids, _ = ctc_best_path(lp[None], torch.tensor([T]))
        tokens, spans = ctc.greedy(lp.numpy())
        assert tokens == ids[0] and [s[0] for s in spans] == tokens
        ref = ctc_prefix_beam_search(lp[None], torch.tensor([T]), 4)[0]
        got = ctc.prefix_beam(lp.numpy(), 4)
        assert got[0][0] == ref[0].tokens
        assert got[0][1] == pytest.approx(ref[0].score, abs=1e-4)
        aligned = ctc.align(lp.numpy(), tokens)
        assert aligned is not None and [s[0] for s in aligned] == tokens
        assert all(a[2] <= b[1] for a, b in zip(aligned, aligned[1:]))
    assert ctc.align(np.log(np.full((2, 8), 0.125)), [5, 5, 5]) is None  # 3 tokens (2 repeats) need 5 frames


def test_alignment_follows_a_peaky_path() -> None:
    from kospeech.runtime import ctc

    path = [0, 5, 5, 0, 6, 0, 0, 6, 6, 0]
    lp = np.log(np.full((len(path), 8), 0.01))
    lp[np.arange(len(path)), path] = np.log(0.93)
    tokens, spans = ctc.greedy(lp)
    assert tokens == [5, 6, 6] and [(s, e) for _, s, e, _ in spans] == [(1, 3), (4, 5), (7, 9)]
    assert [(s, e) for _, s, e, _ in ctc.align(lp, tokens)] == [(1, 3), (4, 5), (7, 9)]


def test_fft_resampling_keeps_a_tone() -> None:
    from kospeech.audio import resample_fft, resample_wave

    t = np.arange(44100) / 44100
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = resample_fft(tone, 44100, 16000)
    assert out.size == 16000
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(out - ref)[200:-200].max() < 1e-3
    assert np.abs(out - resample_wave(tone, 44100, 16000))[200:-200].max() < 2e-2


@pytest.mark.parametrize("name,options", [("character", {}), ("jamo", {}), ("sentencepiece", {"vocab_size": 60})])
def test_detokenizer_decodes_as_the_tokenizer(name: str, options: dict, tmp_path: Path) -> None:
    from kospeech.runtime.tokens import Detokenizer
    from kospeech.text import train_tokenizer

    from .conftest import SHORT_SENTENCES

    tok = train_tokenizer(name, SHORT_SENTENCES, tmp_path / "lang", **options)
    ours = Detokenizer(tmp_path / "lang")
    assert ours.vocab_size == tok.vocab_size
    assert [ours.id_to_token(i) for i in range(tok.vocab_size)] == [tok.id_to_token(i) for i in range(tok.vocab_size)]
    rng = np.random.default_rng(0)
    for text in SHORT_SENTENCES:
        ids = tok.encode(text)
        assert ours.decode(ids) == tok.decode(ids) == text
    for _ in range(20):  # arbitrary id sequences, orphan jamo and specials included
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(1, 15))).tolist()
        assert ours.decode(ids) == tok.decode(ids)
