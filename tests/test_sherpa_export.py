"""``kospeech export --format sherpa-onnx``, decoded by the real ``sherpa_onnx`` package.

A tiny CTC model is trained on the ``kaldi_fbank`` frontend (the deploy fixtures' recipe), exported
twice, for our runtime and for sherpa-onnx, and both decode the same synthetic utterances: clean
ones the model was trained on and unseen variants (other espeak-ng speeds and voices, added
noise), so that some transcripts are wrong. sherpa-onnx computes its own features
(kaldi-native-fbank) and applies nothing else, so equal transcripts show that the frontend, the
CMVN folded into the graph, tokens.txt and the metadata all match.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kospeech.cli import main
from kospeech.data.frontends import build_frontend
from kospeech.errors import ConfigError
from tests.conftest import espeak_wave

sherpa_onnx = pytest.importorskip("sherpa_onnx")


def kaldi_reference(wave: np.ndarray, **options: Any) -> np.ndarray:
    """torchaudio's Kaldi-compatible fbank with sherpa-onnx's settings (kaldi-native-fbank's defaults there)."""
    import torchaudio.compliance.kaldi as K

    return K.fbank(torch.from_numpy(wave)[None] * 32768, num_mel_bins=options.get("n_mels", 80), low_freq=20.0,
                   high_freq=-400.0, dither=0.0, energy_floor=0.0, snip_edges=options.get("snip_edges", False),
                   window_type="povey", preemphasis_coefficient=0.97, remove_dc_offset=True).numpy()


@pytest.mark.parametrize("options", [{}, {"n_mels": 40}, {"snip_edges": True}])
def test_kaldi_fbank_is_kaldis_fbank(options: dict, korean_utterances: list) -> None:
    """Against torchaudio.compliance.kaldi (kaldi-native-fbank is not installed with sherpa-onnx), without
    dither: the same frame count and values to float rounding, batched as alone, and the runtime's numpy
    the same. (Checked once by hand against kaldi-native-fbank 1.23 too: max 1.5e-4, mean 5e-6.)"""
    from kospeech.export.onnx import frontend_arrays
    from kospeech.runtime.features import NumpyFrontend

    fe = build_frontend({"name": "kaldi_fbank", "dither": 0.0, **options}).eval()
    numpy_fe = NumpyFrontend(fe.config, frontend_arrays(fe))
    rng = np.random.default_rng(0)
    waves = [w for _, w in korean_utterances[:3]] + [rng.normal(0, 0.1, n).astype(np.float32) for n in (401, 4567)]
    for wave in waves:
        ours, ref = fe.extract(wave), kaldi_reference(wave, **options)
        assert ours.shape == ref.shape
        # log energies, so relative error: the bounds of tests/test_frontends.py for float rounding (the
        # largest differences sit in near-silent bands); a wrong step (DC, pre-emphasis, banks) moves them > 0.05
        for other in (ref, numpy_fe(wave)):
            assert np.abs(ours - other).max() < 1e-2 and np.abs(ours - other).mean() < 1e-4
    tiny = rng.normal(0, 0.1, 90).astype(np.float32)  # shorter than the window: no reference (torchaudio refuses
    assert fe.extract(tiny).shape == numpy_fe(tiny).shape  # it); without snip_edges, reflected more than once
    assert np.abs(fe.extract(tiny) - numpy_fe(tiny)).max(initial=0.0) < 1e-3
    waves.append(tiny)
    x = torch.zeros(len(waves), max(w.size for w in waves))
    for b, w in enumerate(waves):
        x[b, : w.size] = torch.from_numpy(w)
    feats, lengths = fe(x, torch.tensor([w.size for w in waves]))
    for b, w in enumerate(waves):
        assert int(lengths[b]) == fe.extract(w).shape[0]
        np.testing.assert_allclose(feats[b, : lengths[b]].numpy(), fe.extract(w), atol=1e-4)
        assert not feats[b, lengths[b]:].any()


def test_kaldi_fbank_dithers_as_sherpa_onnx_and_repeatably(korean_utterances: list) -> None:
    """Digital silence becomes noise of std 1 on the int16 scale (sherpa-onnx's features), not the log
    floor; at inference the noise is a fixed draw, the same in the torch frontend and the runtime."""
    from kospeech.export.onnx import frontend_arrays
    from kospeech.runtime.features import KALDI_ENERGY_FLOOR, NumpyFrontend

    fe = build_frontend({"name": "kaldi_fbank"}).eval()
    assert fe.config["dither"] == 1.0
    wave = np.concatenate([np.zeros(8000, np.float32), korean_utterances[0][1]])
    feats = fe.extract(wave)
    np.testing.assert_array_equal(feats, fe.extract(wave))
    assert np.abs(NumpyFrontend(fe.config, frontend_arrays(fe))(wave) - feats).max() < 1e-2
    silence = feats[5:45]
    assert silence.min() > np.log(KALDI_ENERGY_FLOOR) + 5 and 0 < silence.mean() < 8
    fe.train()
    assert not np.array_equal(fe.extract(wave), feats)  # random while training


def test_dither_floor_makes_digital_silence_repeatable(korean_utterances: list) -> None:
    """Under ``dither_floor`` two random dither draws give digital silence the very same features (without
    it, none), the runtime's numpy frontend applies the same floor, and the sherpa-onnx graph applies it to
    the features sherpa-onnx computes without it."""
    from kospeech.export.onnx import frontend_arrays
    from kospeech.export.sherpa import _CmvnModel
    from kospeech.runtime.features import NumpyFrontend

    wave = np.concatenate([np.zeros(8000, np.float32), korean_utterances[0][1], np.zeros(8000, np.float32)])
    x, n = torch.from_numpy(wave)[None], torch.tensor([wave.size])
    floored = build_frontend({"name": "kaldi_fbank", "dither_floor": 5.0}).train()
    plain = build_frontend({"name": "kaldi_fbank"}).train()
    silence = slice(0, 40)  # the first 0.4 s
    assert torch.equal(floored(x, n)[0][0, silence], floored(x, n)[0][0, silence])
    assert not torch.equal(plain(x, n)[0][0, silence], plain(x, n)[0][0, silence])
    speech = floored(x, n)[0][0, 60:-60]
    assert (speech > floored.floor).float().mean() > 0.5  # speech lies above the floor
    floored.eval()
    numpy_fe = NumpyFrontend(floored.config, frontend_arrays(floored))
    assert np.abs(floored.extract(wave) - numpy_fe(wave)).max() < 1e-3
    probe = _CmvnModel(torch.nn.Identity(), None, floored.floor)
    probe.model.encode = lambda f, lengths: (f, lengths)  # type: ignore[attr-defined]
    assert torch.equal(probe.encode(plain.eval()(x, n)[0], n)[0], torch.maximum(plain(x, n)[0], floored.floor))
    with pytest.raises(ConfigError, match="dither > 0"):
        build_frontend({"name": "kaldi_fbank", "dither": 0.0, "dither_floor": 5.0})


def test_kaldi_fbank_differs_from_our_fbank(korean_utterances: list) -> None:
    """Why a second frontend: the default fbank is not what sherpa-onnx computes (frame times, values)."""
    wave = korean_utterances[0][1]
    ours = build_frontend({"name": "fbank"}).extract(wave)
    ref = kaldi_reference(wave)
    n = min(len(ours), len(ref))
    assert np.abs(ours[:n] - ref[:n]).mean() > 0.5


@pytest.fixture(scope="module")
def kaldi_checkpoint(kaldi_ctc_checkpoint: dict) -> dict:
    return kaldi_ctc_checkpoint


@pytest.fixture(scope="module")
def exports(kaldi_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sherpa")
    ckpt = str(kaldi_checkpoint["path"])
    assert main(["export", ckpt, "--format", "sherpa-onnx", "--out", str(root / "sherpa"), "--quantize", "int8"]) == 0
    assert main(["export", ckpt, "--out", str(root / "onnx")]) == 0
    return {"sherpa": root / "sherpa", "onnx": root / "onnx"}


def test_the_directory_is_what_sherpa_onnx_reads(exports: dict[str, Path], kaldi_checkpoint: dict) -> None:
    import onnx

    d = exports["sherpa"]
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "model.int8.onnx", "model.onnx", "sherpa.yaml",
                                                   "tokens.txt"]
    lines = (d / "tokens.txt").read_text(encoding="utf-8").splitlines()
    units = (Path(kaldi_checkpoint["root"]) / "lang" / "units.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<blank> 0" and len(lines) == len(units)
    assert [line.rsplit(" ", 1)[1] for line in lines] == [str(i) for i in range(len(units))]
    assert f"\u2581 {units.index('|')}" in lines and not any(line.startswith("| ") for line in lines)
    meta = {p.key: p.value for p in onnx.load(str(d / "model.onnx")).metadata_props}
    assert meta["model_type"] == "wenet_ctc" and meta["vocab_size"] == str(len(units))
    assert meta["subsampling_factor"] == "4" and meta["feature_dim"] == "40" and meta["nfc"] == "1"
    assert {p.key: p.value for p in onnx.load(str(d / "model.int8.onnx")).metadata_props} == meta
    # CMVN is inside: the graph takes raw Kaldi fbank, where our export takes normalised features
    inputs = [i.name for i in onnx.load(str(d / "model.onnx")).graph.input]
    assert inputs == ["features", "feature_lengths"]


def utterances(kaldi_checkpoint: dict) -> list[tuple[str, np.ndarray]]:
    """The training utterances, then unseen variants: other speeds and voices over a quiet microphone's
    noise floor (1e-3, 33 on the int16 scale), and louder noise.

    Why a noise floor under the variants: sherpa-onnx's own dither is random on every run, and this tiny
    model's unseen variants sit near ties even in speech, where ``dither_floor`` does not reach (the clean
    training utterances are kept, exact zeros and all: the model is sure of them).
    """
    texts, waves = kaldi_checkpoint["texts"], kaldi_checkpoint["waves"]
    rng = np.random.default_rng(1)
    out = list(zip(texts, waves))
    for t in texts:
        for speed in (140, 185):
            w = espeak_wave(t, voice="ko", speed=speed)
            out.append((t, (w + rng.normal(0, 1e-3, w.size)).astype(np.float32)))
    out += [(t, (w + rng.normal(0, 0.01, w.size)).astype(np.float32)) for t, w in zip(texts, waves)]
    return out


def sherpa_transcribe(recognizer: Any, waves: list[np.ndarray]) -> list[tuple[str, list[str]]]:
    """(text after NFC, tokens) per wave, one stream at a time."""
    results = []
    for wave in waves:
        stream = recognizer.create_stream()
        stream.accept_waveform(16000, wave)
        recognizer.decode_stream(stream)
        results.append((" ".join(unicodedata.normalize("NFC", stream.result.text).split()), list(stream.result.tokens)))
    return results


def test_sherpa_onnx_transcribes_as_our_runtime(exports: dict[str, Path], kaldi_checkpoint: dict) -> None:
    """The same tokens, so the same transcripts once sherpa-onnx's text is read as our detokenizer reads
    jamo (NFC; orphan jamo, which a wrong transcript has, dropped: README.md of the export shows how)."""
    from kospeech import runtime
    from kospeech.text.hangul import to_valid_text

    items = utterances(kaldi_checkpoint)
    refs, waves = [t for t, _ in items], [w for _, w in items]
    ours_model = runtime.load(exports["onnx"], num_threads=1, search="ctc_greedy")
    start = time.perf_counter()
    results = ours_model.transcribe(waves, sample_rate=16000, batch_size=1)
    ours_seconds = time.perf_counter() - start
    ours = [r.text for r in results]
    d = exports["sherpa"]
    recognizer = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(d / "model.onnx"), tokens=str(d / "tokens.txt"),
                                                             feature_dim=40, sample_rate=16000, num_threads=1)
    start = time.perf_counter()
    passes = [sherpa_transcribe(recognizer, waves) for _ in range(3)]
    sherpa_seconds = (time.perf_counter() - start) / len(passes)
    answers = passes[0]
    unit = ours_model.tokenizer.id_to_token
    our_tokens = [[" " if unit(i) == "|" else unit(i) for i in r.tokens] for r in results]
    theirs = [" ".join(to_valid_text(text).split()) for text, _ in answers]
    audio = sum(w.size for w in waves) / 16000
    same_tokens = sum(a == b for a, (_, b) in zip(our_tokens, answers))
    same = sum(a == b for a, b in zip(ours, theirs))
    same_nfc = sum(a == text for a, (text, _) in zip(ours, answers))
    # sherpa-onnx dithers at random on every run (2.0.1, whatever its option says), which flips this
    # tiny model's near ties between its own runs: ours must be one of the answers it gives
    among = sum(tokens in [p[i][1] for p in passes] for i, tokens in enumerate(our_tokens))
    itself = sum(all(p[i] == answers[i] for p in passes) for i in range(len(waves)))
    right = [i for i, (o, r) in enumerate(zip(ours, refs)) if o == r]
    print(f"\n{len(waves)} utterances, {audio:.1f} s: tokens equal {same_tokens} (among sherpa-onnx's 3 passes "
          f"{among}, which agree on {itself}), transcripts equal {same} (NFC alone {same_nfc}); ours right "
          f"{len(right)}; RTF runtime {ours_seconds / audio:.4f}, sherpa-onnx {sherpa_seconds / audio:.4f}")
    assert len(right) >= len(kaldi_checkpoint["texts"])  # the model learned; and some variants are wrong:
    assert len(right) < len(waves)  # so equality below is tested on errors too
    assert among >= 0.95 * len(waves), [(a, b) for a, (_, b) in zip(our_tokens, answers) if a != b]
    assert same_tokens >= 0.9 * len(waves) and same >= 0.9 * len(waves), [(a, b) for a, b in zip(ours, theirs)
                                                                             if a != b]
    assert all(theirs[i] == refs[i] == answers[i][0] for i in right)  # right ones need no more than NFC
    int8 = sherpa_onnx.OfflineRecognizer.from_wenet_ctc(model=str(d / "model.int8.onnx"), tokens=str(d / "tokens.txt"),
                                                        feature_dim=40, num_threads=1)
    int8_texts = [text for text, _ in sherpa_transcribe(int8, waves[:8])]
    print(f"int8 in sherpa-onnx: {sum(a == b for a, b in zip(int8_texts, refs))} / 8 training utterances right")
    assert all(int8_texts)  # loads and decodes; int8 costs accuracy (recipes/mini/RESULTS.md), not asserted here


def test_a_model_on_another_frontend_is_refused_in_one_line(ctc_checkpoint: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from kospeech.export.sherpa import check_frontend

    assert main(["export", str(ctc_checkpoint["path"]), "--format", "sherpa-onnx", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frontend 'fbank'" in err and "kaldi_fbank" in err
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="snip_edges=True"):
        check_frontend(build_frontend({"name": "kaldi_fbank", "snip_edges": True}).config, "m.pt")
    check_frontend(build_frontend({"name": "kaldi_fbank", "n_mels": 23, "sample_rate": 8000}).config, "m.pt")


def test_short_audio_is_padded_for_kaldi_framing(exports: dict[str, Path], kaldi_checkpoint: dict) -> None:
    """Kaldi framing gives one frame fewer than centred framing for the same samples: both engines pad
    short audio to what the encoder needs under it, so tiny inputs decode (to nothing) instead of failing."""
    import kospeech
    from kospeech import runtime

    tiny = np.zeros(50, np.float32)
    for model in (runtime.load(exports["onnx"]), kospeech.load(str(kaldi_checkpoint["path"]))):
        result = model.transcribe(tiny, sample_rate=16000)
        assert result.ok, result.error
