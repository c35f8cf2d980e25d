"""The Python API (``kospeech.load(...).transcribe(...)``), long audio, word times, formats,
valid Hangul output, and the one input pipeline shared with training.

Fast tests check the plumbing on an untrained model whose CTC head is biased away from blank
(so it emits units); the tests marked slow overfit a small CTC model on the eight synthesised
utterances and check what it recognises: long-file CER against per-utterance decoding, word
times against the known utterance boundaries, and memory that does not grow with the length.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import kospeech
from kospeech.cli import main
from kospeech.text.special import BLANK_ID, EOS_ID

from .conftest import SHORT_SENTENCES

FRONTEND = {"name": "fbank", "n_mels": 40}
CTC_GRU = {"name": "ctc", "encoder": {"name": "rnn", "rnn_type": "gru", "hidden_dim": 96, "num_layers": 2,
                                       "bidirectional": True, "dropout": 0.0, "extractor": {"name": "deepspeech2"}}}
TINY = {"d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1, "dropout": 0.0}
JOINT = {"name": "transformer", "encoder": {"name": "transformer", **TINY}, "decoder": {"name": "transformer", **TINY},
         "ctc_weight": 0.3}
TRANSDUCER = {"name": "rnnt", "encoder": {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 1},
              "predictor": {"name": "transducer", "embed_dim": 16, "hidden_dim": 32}, "joint_dim": 32}
ORPHAN = re.compile("[\u1100-\u11ff]")


def _features(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Model input for ``waves`` through the toolkit's own frontend, and the CMVN it used."""
    from kospeech.data.inputs import InputPipeline

    raw = InputPipeline.from_config(FRONTEND)
    feats, lens = raw.from_waves(waves)
    valid = torch.cat([f[: int(n)] for f, n in zip(feats, lens)]).double()
    mean, std = valid.mean(0).float().numpy(), valid.std(0).clamp(min=1e-5).float().numpy()
    return (feats - torch.from_numpy(mean)) / torch.from_numpy(std), lens, mean, std


def make_checkpoint(path: Path, lang: Path, model_cfg: dict, waves: list[np.ndarray]) -> Path:
    """An untrained checkpoint of ``model_cfg`` on ``lang`` with its output heads biased away from
    blank and eos, so that it emits units (CMVN from ``waves``)."""
    from kospeech.registry import build
    from kospeech.text import load_tokenizer, read_lang_dir
    from kospeech.torch_files import atomic_save

    tok = load_tokenizer(lang)
    feats, lens, mean, std = _features(waves)
    torch.manual_seed(0)
    model = build("model", model_cfg, path="model", input_dim=feats.size(-1), vocab_size=tok.vocab_size)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == tok.vocab_size and m.bias is not None:
                m.bias[BLANK_ID] -= 3.0
                m.bias[EOS_ID] -= 3.0
    ckpt = {
        "model": model.state_dict(),
        "config": {"model": model_cfg, "frontend": FRONTEND},
        "model_args": {"input_dim": int(feats.size(-1)), "vocab_size": tok.vocab_size},
        "cmvn": {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)},
        "tokenizer": read_lang_dir(lang),
    }
    return atomic_save(ckpt, path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, korean_utterances: list) -> dict:
    from kospeech.audio import write_audio
    from kospeech.text import train_tokenizer

    root = tmp_path_factory.mktemp("inference")
    audio = []
    for i, (_, wave) in enumerate(korean_utterances):
        audio.append(str(root / "audio" / f"utt{i:02d}{['.wav', '.flac', '.pcm'][i % 3]}"))
        write_audio(audio[-1], wave, 16000)
    waves = [w for _, w in korean_utterances]
    texts = [t for t, _ in korean_utterances]
    langs = {}
    for name in ("jamo", "character"):
        train_tokenizer(name, SHORT_SENTENCES, root / f"lang_{name}")
        langs[name] = root / f"lang_{name}"
    ckpts = {
        "jamo": make_checkpoint(root / "jamo.pt", langs["jamo"], CTC_GRU, waves),
        "joint": make_checkpoint(root / "joint.pt", langs["jamo"], JOINT, waves),
        "rnnt": make_checkpoint(root / "rnnt.pt", langs["jamo"], TRANSDUCER, waves),
        "char": make_checkpoint(root / "char.pt", langs["character"], CTC_GRU, waves),
    }
    return {"root": root, "audio": audio, "waves": waves, "texts": texts, "ckpt": ckpts, "lang": langs}


# ---------------------------------------------------------------------------------------------
# the API


def test_load_is_lazy_and_exported_from_the_package_top() -> None:
    code = "import sys, kospeech, kospeech.metadata, kospeech.inference.result; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert callable(kospeech.load) and kospeech.Result is not None and kospeech.Word is not None


def test_every_input_kind_gives_the_same_text(env: dict) -> None:
    asr = kospeech.load(env["ckpt"]["char"], device="cpu")
    from kospeech.audio import read_audio

    path = env["audio"][0]
    wave = read_audio(path)  # the file's own samples (16-bit), so every kind carries the same audio
    by_path = asr.transcribe(path)
    assert isinstance(by_path, kospeech.Result) and by_path.ok and by_path.text
    assert by_path.source == path and abs(by_path.duration - len(wave) / 16000) < 0.01
    with open(path, "rb") as f:
        data = f.read()
    assert asr.transcribe(data).text == by_path.text
    assert asr.transcribe(wave).text == by_path.text
    assert asr.transcribe(torch.from_numpy(wave)).text == by_path.text
    assert asr.transcribe(np.round(wave * 32768).astype(np.int16)).text == by_path.text
    # the same speech at 8 kHz is resampled on the way in, so it gives text too
    import torchaudio.functional as AF

    low = AF.resample(torch.from_numpy(wave), 16000, 8000).numpy()
    assert asr.transcribe(low, sample_rate=8000).ok
    both = asr.transcribe([path, env["audio"][1]])
    assert isinstance(both, list) and [r.text for r in both] == [by_path.text, asr.transcribe(env["audio"][1]).text]


def test_every_input_kind_gives_the_reference_text_on_a_trained_model(env: dict, ctc_checkpoint: dict) -> None:
    """The same doors on a trained model (tests/fixtures/deploy.py): each kind of input, and a
    list of files, gives the reference texts, not merely the same text as the others."""
    from kospeech.audio import read_audio

    asr = kospeech.load(ctc_checkpoint["path"], device="cpu")
    texts = env["texts"]
    path = env["audio"][0]
    wave = read_audio(path)
    with open(path, "rb") as f:
        data = f.read()
    kinds = [path, data, wave, torch.from_numpy(wave), np.round(wave * 32768).astype(np.int16)]
    assert [asr.transcribe(x).text for x in kinds] == [texts[0]] * len(kinds)
    assert [r.text for r in asr.transcribe(env["audio"])] == texts  # wav, flac and pcm files


def test_exp_dir_loads_its_last_checkpoint(env: dict, tmp_path: Path) -> None:
    import shutil

    (tmp_path / "checkpoints").mkdir()
    shutil.copy(env["ckpt"]["jamo"], tmp_path / "checkpoints" / "last.pt")
    assert kospeech.load(tmp_path, device="cpu").transcribe(env["audio"][0]).text == \
        kospeech.load(env["ckpt"]["jamo"], device="cpu").transcribe(env["audio"][0]).text


def test_a_bad_item_fails_alone(env: dict, tmp_path: Path) -> None:
    asr = kospeech.load(env["ckpt"]["jamo"], device="cpu")
    nan = env["waves"][1].copy()
    nan[100:110] = np.nan
    cut = tmp_path / "cut.wav"
    data = io.BytesIO()
    sf.write(data, env["waves"][2], 16000, format="WAV", subtype="PCM_16")
    cut.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])  # a copy cut short
    items = [env["audio"][0], str(tmp_path / "missing.wav"), nan, str(cut), b"not audio", np.zeros(160, np.float32)]
    results = asr.transcribe(items)
    assert [r.ok for r in results] == [True, False, False, False, False, True]
    assert results[0].text == asr.transcribe(env["audio"][0]).text
    assert "missing.wav does not exist" in results[1].error
    assert "NaN/inf samples" in results[2].error
    assert "cut short" in results[3].error and "cut.wav" in results[3].error
    assert "soundfile" in results[4].error
    assert all(r.text == "" for r in results[1:5])
    # 10 ms of audio is padded to the encoder's minimum rather than crashing
    assert results[5].duration == 0.01


def test_search_options_as_keywords_and_mapping(env: dict) -> None:
    asr = kospeech.load(env["ckpt"]["jamo"], device="cpu")
    assert asr.search_cfg["name"] == "ctc_prefix_beam"  # the best search for a CTC-only model
    beam1 = asr.transcribe(env["audio"][0], search="ctc_prefix_beam", beam_size=1, timestamps=False)
    greedy = asr.transcribe(env["audio"][0], search={"name": "ctc_greedy"}, timestamps=False)
    assert beam1.text == greedy.text
    with pytest.raises(kospeech.errors.ConfigError, match="beam_sise"):
        asr.transcribe(env["audio"][0], beam_sise=3)


# ---------------------------------------------------------------------------------------------
# the CLI over the same object


def test_cli_search_before_positionals_stdin_and_per_file_errors(env: dict, tmp_path: Path, monkeypatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(env["ckpt"]["jamo"])
    expect = kospeech.load(ckpt, device="cpu").transcribe(env["audio"][0], search="ctc_prefix_beam",
                                                          beam_size=3).text
    assert main(["transcribe", "--search", "ctc_prefix_beam", "-o", "beam_size=3", ckpt, env["audio"][0],
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == expect
    assert main(["transcribe", ckpt, env["audio"][0], "--search", "ctc_prefix_beam", "beam_size=3",
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == expect
    with open(env["audio"][0], "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f.read())))
    assert main(["transcribe", ckpt, "-", "--search", "ctc_prefix_beam", "-o", "beam_size=3", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == expect
    rc = main(["transcribe", ckpt, env["audio"][0], str(tmp_path / "nope.wav"), env["audio"][1], "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and "nope.wav" in captured.err and "does not exist" in captured.err
    lines = captured.out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [env["audio"][0], env["audio"][1]]


def _parse_clock(text: str) -> float:
    h, m, s = text.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def test_every_format_parses_back(env: dict, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = str(env["ckpt"]["char"])
    files = env["audio"][:2]
    results = kospeech.load(ckpt, device="cpu").transcribe(files)
    for fmt in ("text", "json", "srt", "vtt", "ctm"):
        assert main(["transcribe", ckpt, *files, "--format", fmt, "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        if fmt == "text":
            assert [ln.split("\t", 1)[1] for ln in out.strip().splitlines()] == [r.text for r in results]
        elif fmt == "json":
            rows = [json.loads(ln) for ln in out.strip().splitlines()]
            assert [r["text"] for r in rows] == [r.text for r in results]
            assert rows[0]["words"] == [{"text": w.text, "start": w.start, "end": w.end, "score": w.score}
                                        for w in results[0].words]
        elif fmt in ("srt", "vtt"):
            body = out.removeprefix("WEBVTT\n\n") if fmt == "vtt" else out
            if fmt == "vtt":
                assert out.startswith("WEBVTT\n\n")
            cues = [c for c in body.strip().split("\n\n") if c]
            texts = []
            for cue in cues:
                lines = cue.splitlines()
                if fmt == "srt":
                    assert lines[0].isdigit()
                    lines = lines[1:]
                start, end = (_parse_clock(t) for t in lines[0].split(" --> "))
                assert 0 <= start < end
                texts.append(" ".join(lines[1:]))
            assert " ".join(texts) == " ".join(r.text for r in results if r.text)
        else:
            rows = [ln.split() for ln in out.strip().splitlines()]
            assert all(len(r) == 6 and r[1] == "1" and float(r[3]) >= 0 for r in rows)
            assert [r[4] for r in rows] == [w.text for r in results for w in r.words]


# ---------------------------------------------------------------------------------------------
# Korean text out


def test_word_and_syllable_times_cover_the_text(env: dict) -> None:
    for name in ("jamo", "char", "joint"):
        r = kospeech.load(env["ckpt"][name], device="cpu").transcribe(env["audio"][3])
        assert r.text and r.words, name
        assert " ".join(w.text for w in r.words) == r.text
        assert "".join(s.text for s in r.syllables) == r.text.replace(" ", "")
        for spans in (r.words, r.syllables):
            assert all(0 <= s.start < s.end <= r.duration + 0.05 for s in spans)
            assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("model,searches", [
    ("jamo", ["ctc_greedy", "ctc_prefix_beam"]),
    ("joint", ["greedy", "beam", "joint_ctc_attention", "attention_rescoring", "ctc_greedy"]),
    ("rnnt", ["transducer_greedy", "transducer_beam"]),
])
def test_no_search_emits_orphan_jamo(env: dict, model: str, searches: list[str]) -> None:
    asr = kospeech.load(env["ckpt"][model], device="cpu")
    for search in searches:
        for r in asr.transcribe(env["audio"], search=search):
            assert r.ok and not ORPHAN.search(r.text), (search, r.text)
            assert not any(ORPHAN.search(w.text) for w in r.words + r.syllables)


def test_every_tokenizer_decodes_any_id_sequence_to_valid_text(env: dict, tmp_path: Path) -> None:
    from kospeech.text import load_tokenizer, train_tokenizer

    toks = [load_tokenizer(env["lang"]["jamo"]), load_tokenizer(env["lang"]["character"]),
            train_tokenizer("sentencepiece", SHORT_SENTENCES * 20, tmp_path / "spm", vocab_size=60)]
    rng = np.random.default_rng(0)
    for tok in toks:
        for _ in range(300):
            ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(1, 30))).tolist()
            assert not ORPHAN.search(tok.decode(ids)), (tok.name, ids)


def test_orphans_are_dropped_and_syllables_kept() -> None:
    from kospeech.text.hangul import decompose, to_valid_text

    assert to_valid_text("\u1161\u11ab녕하세요") == "녕하세요"  # a vowel and tail without an onset
    assert to_valid_text("\u110b물릅") == "물릅"  # a lone onset
    assert to_valid_text("ㅋㅋ " + decompose("좋아요")) == "ㅋㅋ 좋아요"  # compatibility jamo are text
    for s in SHORT_SENTENCES:
        assert to_valid_text(decompose(s)) == s and to_valid_text(s) == s


# ---------------------------------------------------------------------------------------------
# one input pipeline


def test_training_and_decoding_make_the_same_features(env: dict, tmp_path: Path) -> None:
    from kospeech.audio import read_audio
    from kospeech.data.datadir import write_data_dir
    from kospeech.data.dataset import collate
    from kospeech.train.trainer import Trainer

    audio = {f"utt{i}": p for i, p in enumerate(env["audio"])}
    data = write_data_dir(tmp_path / "data", wav=audio, text={f"utt{i}": t for i, t in enumerate(env["texts"])},
                          utt2spk={u: "spk" for u in audio}, corpus="espeak", transcript="phonetic")
    cfg = {"data": {"train": str(data), "lang": str(env["lang"]["jamo"])}, "frontend": FRONTEND, "model": CTC_GRU,
           "optimizer": {"name": "adam", "lr": 1e-3}, "train": {"max_steps": 1, "device": "cpu", "plot": False},
           "augment": [{"name": "spec_augment"}]}
    trainer = Trainer(cfg, tmp_path / "exp")
    trainer.save_checkpoint()
    trainer.close()
    i = trainer.train_set.utt_ids.index("utt4")
    trained_on = trainer._prepare(collate([trainer.train_set[i]]), train=False)["features"][0]
    asr = kospeech.load(tmp_path / "exp", device="cpu")
    decoded_on, _ = asr.inputs.from_waves([read_audio(audio["utt4"], sample_rate=asr.sample_rate)])
    assert torch.equal(trained_on, decoded_on[0])
    assert asr.bundle.metadata["kind"] == "checkpoint" and asr.bundle.metadata["format_version"] >= 1


# ---------------------------------------------------------------------------------------------
# long audio


def _concatenate(waves: list[np.ndarray], repeats: int, gap: float = 0.4) -> tuple[np.ndarray, list]:
    pieces, spans, t = [], [], 0.0
    silence = np.zeros(int(gap * 16000), np.float32)
    for _ in range(repeats):
        for w in waves:
            spans.append((t, t + len(w) / 16000))
            pieces += [w, silence]
            t += (len(w) + len(silence)) / 16000
    return np.concatenate(pieces), spans


def test_long_audio_is_cut_in_the_pauses(env: dict) -> None:
    from kospeech.inference.segment import segment_stream

    wave, spans = _concatenate(env["waves"], 3)
    blocks = [wave[i : i + 16000 * 7] for i in range(0, len(wave), 16000 * 7)]  # 7 s blocks
    segments = list(segment_stream(blocks, 16000, max_seconds=8.0, min_seconds=2.0))
    assert np.array_equal(np.concatenate([s for _, s in segments]), wave)
    assert all(len(s) <= 8 * 16000 for _, s in segments) and len(segments) > 3
    for start, _ in segments[1:]:
        t = start / 16000
        assert not any(a + 0.05 < t < b - 0.05 for a, b in spans), t  # never inside an utterance


def test_long_file_decodes_in_pieces_with_times_on_the_whole_file(env: dict, tmp_path: Path) -> None:
    wave, spans = _concatenate(env["waves"], 2)
    path = tmp_path / "long.flac"
    sf.write(path, wave, 16000)
    asr = kospeech.load(env["ckpt"]["jamo"], device="cpu", max_segment_seconds=6.0)
    r = asr.transcribe(str(path), batch_size=3)
    assert r.ok and len(r.segments) > 2 and abs(r.duration - len(wave) / 16000) < 0.01
    assert r.segments[0][0] == 0.0 and abs(r.segments[-1][1] - r.duration) < 0.01
    assert all(a.end <= b.start for a, b in zip(r.words, r.words[1:]))
    assert r.words[-1].end > r.duration / 2  # times are on the whole file, not per piece


@pytest.fixture(scope="module")
def trained(ctc_checkpoint_running_speech: dict) -> Path:
    """A small CTC model trained on the eight utterances, copies with pauses around them and
    pairs of them: it recognises them, alone or in running speech (tests/fixtures/deploy.py)."""
    return ctc_checkpoint_running_speech["path"]


@pytest.mark.slow
def test_long_file_matches_per_utterance_decoding(env: dict, trained: Path, tmp_path: Path) -> None:
    from kospeech.metrics import score_corpus

    asr = kospeech.load(trained, device="cpu", search="ctc_greedy")
    # each utterance as it sits in the long file: with half of the pause on either side
    half_gap = np.zeros(int(0.2 * 16000), np.float32)
    single = [r.text for r in asr.transcribe([np.concatenate([half_gap, w, half_gap]) for w in env["waves"]])]
    refs = {str(i): t for i, t in enumerate(env["texts"])}
    per_utt = score_corpus(refs, {str(i): t for i, t in enumerate(single)}).cer
    assert per_utt < 20.0, single  # it recognises the utterances (an untrained model is at ~100)
    repeats = 8  # about 2.5 minutes
    wave, spans = _concatenate(env["waves"], repeats)
    path = tmp_path / "long.wav"
    sf.write(path, wave, 16000)
    r = asr.transcribe(str(path))
    long_cer = score_corpus({"all": " ".join(env["texts"] * repeats)}, {"all": r.text}).cer
    assert long_cer <= per_utt + 1.0, (long_cer, per_utt)  # cutting and stitching costs at most a point
    for w in r.words:
        assert any(a - 0.3 <= w.start and w.end <= b + 0.3 for a, b in spans), w


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_length(env: dict, trained: Path, tmp_path: Path) -> None:
    code = (
        "import resource, sys, kospeech\n"
        "asr = kospeech.load(sys.argv[1], device='cpu', search='ctc_greedy')\n"
        "asr.transcribe(sys.argv[2])\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    peaks = {}
    for minutes in (1, 6):
        wave, _ = _concatenate(env["waves"], 1)
        reps = int(np.ceil(minutes * 60 * 16000 / len(wave)))
        path = tmp_path / f"{minutes}.wav"
        sf.write(path, np.tile(wave, reps), 16000)
        out = subprocess.run([sys.executable, "-c", code, str(trained), str(path)], capture_output=True, text=True,
                             check=True).stdout
        peaks[minutes] = int(out.strip().splitlines()[-1]) / 1024  # MiB
    # 5 more minutes of 16 kHz float32 audio would be 18 MiB held at once; streaming keeps it out
    assert peaks[6] - peaks[1] < 12, peaks


def test_decode_keeps_going_past_a_bad_utterance(env: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from kospeech.data.datadir import write_data_dir

    audio = {f"utt{i}": p for i, p in enumerate(env["audio"][:4])}
    audio["utt9"] = str(tmp_path / "gone.wav")  # listed in wav.scp, missing on disk
    texts = {u: "안녕하세요" for u in audio}
    data = write_data_dir(tmp_path / "data", wav=audio, text=texts, utt2spk={u: "spk" for u in audio},
                          corpus="espeak", transcript="phonetic")
    out = tmp_path / "decode"
    rc = main(["decode", "--checkpoint", str(env["ckpt"]["jamo"]), "--data", str(data), "--out", str(out),
               "--search", "ctc_greedy", "--device", "cpu"])
    assert rc == 1 and "utt9" in capsys.readouterr().err
    hyps = dict(ln.split(" ", 1) if " " in ln else (ln, "") for ln in (out / "hyp.trn").read_text().splitlines())
    asr = kospeech.load(env["ckpt"]["jamo"], device="cpu", search="ctc_greedy")
    expected = [r.text for r in asr.transcribe(env["audio"][:4])]
    assert hyps["utt9"] == "" and [hyps[f"utt{i}"] for i in range(4)] == expected
    info = yaml.safe_load((out / "decode.yaml").read_text())
    assert list(info["failed"]) == ["utt9"] and "gone.wav" in info["failed"]["utt9"]
