"""The model package: every door decodes as the scored decoding did, LM included.

A trained CTC checkpoint decodes a test set of unseen renditions (another voice, speed and
pitch: transcripts that are partly wrong) with a prefix beam and an n-gram LM, as a recipe's
stage 4 does; the package made from that decoding must give the same text through
``kospeech transcribe``, ``kospeech.load``, ``kospeech serve`` and, exported to ONNX, the
torch-free runtime in a process where torch cannot be imported. The greedy search (what every
door served before packages) gives other text on the same set, so a door that dropped the LM
would fail here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from kospeech.cli import main
from kospeech.errors import DataError
from kospeech.files import read_utt_text

from .conftest import SHORT_SENTENCES, espeak_wave
from .test_runtime import run_without_torch
from .test_serve import post, run_server, wav_bytes

LM_OPTIONS = ["-o", "beam_size=8", "-o", "lm_weight=1.0", "-o", "length_bonus=1.0"]


@pytest.fixture(scope="module")
def scored(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A test set of unseen renditions, decoded with the LM and scored as a recipe does, then packed."""
    from kospeech.audio import write_audio
    from kospeech.lm.ngram import train_ngram
    from kospeech.text import load_tokenizer

    root = tmp_path_factory.mktemp("package")
    data = root / "data" / "test"
    data.mkdir(parents=True)
    scp, text = [], []
    for i, sentence in enumerate(SHORT_SENTENCES):
        wave = espeak_wave(sentence, voice="ko+m3", speed=135, pitch=30)
        path = data / f"utt{i}.wav"
        write_audio(path, wave, 16000)
        scp.append(f"utt{i} {path}\n")
        text.append(f"utt{i} {sentence}\n")
    (data / "wav.scp").write_text("".join(scp), encoding="utf-8")
    (data / "text").write_text("".join(text), encoding="utf-8")
    (data / "meta.yaml").write_text("corpus: espeak-test\ntranscript: phonetic\n", encoding="utf-8")
    lang = Path(ctc_checkpoint["root"]) / "lang"
    train_ngram(list(SHORT_SENTENCES), load_tokenizer(lang), root / "lm", order=4)
    decode_dir = root / "exp" / "decode_test"
    ckpt = str(ctc_checkpoint["path"])
    assert main(["decode", ckpt, "--data", str(data), "--out", str(decode_dir), "--search", "ctc_prefix_beam",
                 "--lm", str(root / "lm"), *LM_OPTIONS]) == 0
    assert main(["score", "--dir", str(decode_dir)]) == 0
    package = root / "exp" / "package"
    assert main(["pack", ckpt, "--search", "ctc_prefix_beam", "--lm", str(root / "lm"), *LM_OPTIONS,
                 "--scores", str(decode_dir), "--out", str(package)]) == 0
    paths = [line.split()[1] for line in scp]
    return {"root": root, "package": package, "hyp": read_utt_text(decode_dir / "hyp.trn"), "paths": paths,
            "decode_dir": decode_dir}


def texts(results: list) -> list[str]:
    assert all(r.ok for r in results), [r.error for r in results]
    return [r.text for r in results]


def test_package_holds_the_decoding_lm_and_card(scored: dict) -> None:
    pkg = scored["package"]
    info = yaml.safe_load((pkg / "package.yaml").read_text(encoding="utf-8"))
    search = info["decode"]["search"]
    assert search == {"name": "ctc_prefix_beam", "beam_size": 8, "lm": "lm", "lm_weight": 1.0, "length_bonus": 1.0}
    assert (pkg / "lm" / "lm.arpa").is_file() and (pkg / "lm" / "lm.yaml").is_file() and (pkg / "model.pt").is_file()
    assert info["transcript"] == "phonetic" and info["scores"][0]["utts"] == len(SHORT_SENTENCES)
    card = (pkg / "README.md").read_text(encoding="utf-8")
    assert "phonetic form" in card and f"{info['scores'][0]['cer']:.2f} [" in card and "lm_weight=1.0" in card


def test_every_torch_door_gives_the_scored_text(scored: dict, capsys: pytest.CaptureFixture) -> None:
    import kospeech

    hyp = [scored["hyp"][f"utt{i}"] for i in range(len(scored["paths"]))]
    greedy = texts(kospeech.load(scored["package"], search="ctc_greedy").transcribe(scored["paths"]))
    assert greedy != hyp, "the LM changes nothing on this set: the test could not catch a door that drops it"
    assert texts(kospeech.load(scored["package"]).transcribe(scored["paths"])) == hyp
    capsys.readouterr()
    assert main(["transcribe", str(scored["package"]), *scored["paths"]]) == 0
    printed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert [printed[p] for p in scored["paths"]] == hyp
    # decode with the package alone (no options) writes the very hyp.trn the recipe scored
    out = scored["root"] / "exp" / "decode_again"
    assert main(["decode", str(scored["package"]), "--data", str(scored["root"] / "data" / "test"),
                 "--out", str(out)]) == 0
    assert read_utt_text(out / "hyp.trn") == scored["hyp"]


def test_served_text_is_the_transcribed_text(scored: dict) -> None:
    from kospeech.serve.app import create_app, open_model

    model, workers = open_model(str(scored["package"]))
    assert workers == 1 and model.name == "exp"
    import soundfile as sf

    for server in run_server(create_app(model, name=model.name)):
        for i, path in enumerate(scored["paths"][:4]):
            wave, _ = sf.read(path, dtype="float32")
            status, body = post(f"{server}/transcribe", wav_bytes(wave))
            assert status == 200 and body["text"] == scored["hyp"][f"utt{i}"]
        import urllib.request

        with urllib.request.urlopen(f"{server}/health") as resp:
            raw = resp.read()
        assert json.loads(raw)["model"] == "exp" and str(scored["root"]) not in raw.decode("utf-8")
        with urllib.request.urlopen(f"{server}/transcribe", data=wav_bytes(wave)) as resp:
            assert "\\u" not in resp.read().decode("utf-8")  # UTF-8 JSON, not escapes


def test_exported_package_decodes_the_same_without_torch(scored: dict) -> None:
    export = scored["root"] / "onnx"
    assert main(["export", str(scored["package"]), "--out", str(export)]) == 0
    manifest = yaml.safe_load((export / "model.yaml").read_text(encoding="utf-8"))
    assert manifest["decode"]["search"]["lm"] == "lm" and (export / "lm" / "lm.arpa").is_file()
    out = run_without_torch(
        f"""
        import kospeech.runtime
        model = kospeech.runtime.load({str(export)!r})
        greedy = kospeech.runtime.load({str(export)!r}, search="ctc_greedy")
        out = {{"texts": [r.text for r in model.transcribe({scored['paths']!r})],
               "greedy": [r.text for r in greedy.transcribe({scored['paths']!r})]}}
        """
    )
    hyp = [scored["hyp"][f"utt{i}"] for i in range(len(scored["paths"]))]
    assert out["modules"] == [] and out["texts"] == hyp and out["greedy"] != hyp


def test_lm_alone_is_never_ignored(scored: dict, ctc_checkpoint: dict) -> None:
    import kospeech

    asr = kospeech.load(ctc_checkpoint["path"], lm=str(scored["root"] / "lm"))  # the checkpoint's search is greedy
    assert asr.search_cfg["name"] == "ctc_prefix_beam" and asr.search_cfg["lm_weight"] == 0.5
    greedy = texts(kospeech.load(ctc_checkpoint["path"]).transcribe(scored["paths"]))
    assert texts(asr.transcribe(scored["paths"])) != greedy


def test_audio_where_the_model_goes_says_so(scored: dict, capsys: pytest.CaptureFixture) -> None:
    import kospeech

    with pytest.raises(DataError, match="the model comes first"):
        kospeech.load(scored["paths"][0])
    assert main(["transcribe", scored["paths"][0], str(scored["package"])]) == 1
    assert "the model comes first" in capsys.readouterr().err


def test_out_never_replaces_a_folder_it_did_not_write(scored: dict, ctc_checkpoint: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    keep = tmp_path / "run"
    (keep / "checkpoints").mkdir(parents=True)
    (keep / "config.yaml").write_text("seed: 1\n", encoding="utf-8")
    for command in (["export", str(ctc_checkpoint["path"])], ["pack", str(ctc_checkpoint["path"])]):
        assert main([*command, "--out", str(keep)]) == 1
        assert "not replaced" in capsys.readouterr().err
        assert (keep / "config.yaml").is_file() and (keep / "checkpoints").is_dir()
    cwd = os.getcwd()
    try:
        os.chdir(keep)  # `--out .` was a traceback; now it is the folder, refused as it is not an export
        assert main(["export", str(ctc_checkpoint["path"]), "--out", "."]) == 1
    finally:
        os.chdir(cwd)
    assert "not replaced" in capsys.readouterr().err


def test_int_pcm_arrays_and_cut_short_bytes(scored: dict, ctc_checkpoint: dict) -> None:
    import kospeech

    asr = kospeech.load(ctc_checkpoint["path"])
    wave = ctc_checkpoint["waves"][1]
    as_float = asr.transcribe(wave, sample_rate=16000).text
    for dtype, scale in ((np.int16, 32768), (np.int32, 2**31)):
        pcm = np.clip(np.round(wave * scale), -scale, scale - 1).astype(dtype)
        assert asr.transcribe(pcm, sample_rate=16000).text == as_float == ctc_checkpoint["texts"][1]
    data = wav_bytes(wave)
    cut = asr.transcribe(data[: len(data) // 2])
    assert not cut.ok and "cut short" in cut.error
    out = asr.transcribe([wave, np.array(["a", "b"])], sample_rate=16000)  # one bad item does not sink the list
    assert out[0].text == as_float and not out[1].ok and "expected audio samples" in out[1].error


def test_hotwords_reach_both_engines_alike(scored: dict) -> None:
    """Hotwords given at call time change the text, and the torch and onnx engines agree on it."""
    import kospeech

    export = scored["root"] / "onnx_hotwords"
    assert main(["export", str(scored["package"]), "--out", str(export)]) == 0
    words = ["밥 먹었어요", "몇 시예요"]
    torch_engine, onnx_engine = kospeech.load(scored["package"]), kospeech.load(export)
    assert onnx_engine.engine.kind == "onnx" and torch_engine.engine.kind == "torch"
    plain = texts(torch_engine.transcribe(scored["paths"]))
    biased = texts(torch_engine.transcribe(scored["paths"], hotwords=words, hotword_weight=3.0))
    assert biased != plain
    assert texts(onnx_engine.transcribe(scored["paths"], hotwords=words, hotword_weight=3.0)) == biased
