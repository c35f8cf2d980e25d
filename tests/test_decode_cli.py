"""decode / score / compare / transcribe on a real data dir, feature dump and checkpoint.

The checkpoint holds a small untrained Transformer (CTC + attention) whose CTC output is
biased away from blank, so that its hypotheses are non-empty and alignments have something
to place; the tests check the plumbing (files, formats, agreement between the paths), not
accuracy (`-m slow` trains a model and checks its error rate).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kospeech.cli import main
from kospeech.text.special import BLANK_ID, EOS_ID

from .conftest import SHORT_SENTENCES

TINY = {"d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1, "dropout": 0.0}
MODEL = {"name": "transformer", "encoder": {"name": "transformer", **TINY}, "decoder": {"name": "transformer", **TINY},
         "ctc_weight": 0.3}
TRANSDUCER = {"name": "rnnt", "encoder": {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 1},
              "predictor": {"name": "transducer", "embed_dim": 16, "hidden_dim": 32}, "joint_dim": 32}
FRONTEND = {"name": "fbank", "n_mels": 80}


def _save_checkpoint(path: Path, model_cfg: dict, lang: Path, cmvn: tuple[np.ndarray, np.ndarray]) -> Path:
    from kospeech.registry import build
    from kospeech.text import load_tokenizer, read_lang_dir
    from kospeech.torch_files import atomic_save

    tok = load_tokenizer(lang)
    torch.manual_seed(0)
    model = build("model", model_cfg, path="model", input_dim=80, vocab_size=tok.vocab_size)
    with torch.no_grad():  # make the untrained heads emit units rather than blank / eos
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == tok.vocab_size and m.bias is not None:
                m.bias[BLANK_ID] -= 3.0
                m.bias[EOS_ID] -= 3.0
    ckpt = {
        "model": model.state_dict(),
        "config": {"model": model_cfg, "frontend": FRONTEND, "decode": {"search": {"name": "ctc_greedy"}}},
        "model_args": {"input_dim": 80, "vocab_size": tok.vocab_size},
        "cmvn": {"mean": torch.from_numpy(cmvn[0]), "std": torch.from_numpy(cmvn[1])},
        "tokenizer": read_lang_dir(lang),
    }
    return atomic_save(ckpt, path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, korean_utterances: list) -> dict:
    from kospeech.audio import write_audio
    from kospeech.data.cmvn import load_cmvn
    from kospeech.data.datadir import write_data_dir
    from kospeech.data.dump import dump_features
    from kospeech.text import train_tokenizer

    root = tmp_path_factory.mktemp("decode")
    audio = {}
    for i, (_, wave) in enumerate(korean_utterances):
        suffix = [".wav", ".flac", ".pcm"][i % 3]
        audio[f"utt{i:02d}"] = str(root / "audio" / f"utt{i:02d}{suffix}")
        write_audio(audio[f"utt{i:02d}"], wave, 16000)
    texts = {f"utt{i:02d}": t for i, (t, _) in enumerate(korean_utterances)}
    data = write_data_dir(root / "data" / "test", wav=audio, text=texts, utt2spk={u: "spk" for u in audio},
                          utt2dur={u: 1.0 for u in audio}, corpus="espeak", transcript="phonetic")
    dump = root / "dump" / "test"
    dump_features(data, dump, FRONTEND, cmvn=True)
    lang = root / "lang"
    train_tokenizer("character", SHORT_SENTENCES, lang)
    cmvn = load_cmvn(dump / "cmvn.npz")
    ckpt = _save_checkpoint(root / "model.pt", MODEL, lang, cmvn)
    rnnt = _save_checkpoint(root / "rnnt.pt", TRANSDUCER, lang, cmvn)
    return {"root": root, "data": data, "dump": dump, "ckpt": ckpt, "rnnt": rnnt, "texts": texts, "audio": audio}


def _trn(path: Path) -> dict[str, str]:
    from kospeech.files import read_utt_text

    return read_utt_text(path)


def test_decode_dump_writes_trn_and_metadata(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "exp" / "decode_dump"
    rc = main(["decode", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["dump"]), "--out", str(out),
               "--search", "ctc_prefix_beam", "beam_size=3", "--batch-size", "3", "--device", "cpu"])
    assert rc == 0
    assert "decoded 8 utterances" in capsys.readouterr().out
    hyps, refs = _trn(out / "hyp.trn"), _trn(out / "ref.trn")
    assert refs == setup["texts"]
    lines = (out / "hyp.trn").read_text(encoding="utf-8").splitlines()
    assert [ln.split()[0] for ln in lines] == sorted(setup["texts"])
    assert sum(bool(h) for h in hyps.values()) >= 6
    info = yaml.safe_load((out / "decode.yaml").read_text(encoding="utf-8"))
    assert info["search"] == {"name": "ctc_prefix_beam", "beam_size": 3}
    assert info["test_set"]["kind"] == "dump" and info["model"] == "transformer"
    assert info["timing"]["real_time_factor"] > 0 and info["timing"]["audio_seconds"] > 1

    # the CLI's hypotheses are exactly what the search gives on the dump's features + CMVN
    from kospeech.data.dump import FeatureDump
    from kospeech.data.inputs import pad_arrays as pad_batch
    from kospeech.decode import build_search
    from kospeech.inference.loading import load_for_inference

    bundle = load_for_inference(setup["ckpt"])
    dump = FeatureDump(setup["dump"])
    feats, lens = pad_batch([dump["utt03"]])
    ids = build_search(bundle.model, {"name": "ctc_prefix_beam", "beam_size": 3}).decode(bundle.cmvn(feats, lens), lens)
    assert hyps["utt03"] == bundle.tokenizer.decode(ids[0])


def test_decode_data_dir_matches_transcribe(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = setup["root"] / "exp" / "decode_audio"
    rc = main(["decode", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["data"]), "--out", str(out),
               "--search", "joint_ctc_attention", "beam_size=2", "max_len_ratio=0.5", "--batch-size", "1",
               "--device", "cpu"])
    assert rc == 0
    info = yaml.safe_load((out / "decode.yaml").read_text(encoding="utf-8"))
    assert info["test_set"]["kind"] == "datadir" and info["test_set"]["transcript"] == "phonetic"
    assert info["test_set"]["corpus"] == "espeak"
    hyps = _trn(out / "hyp.trn")
    capsys.readouterr()
    files = [setup["audio"][u] for u in ("utt00", "utt01", "utt02")]  # wav, flac, pcm
    rc = main(["transcribe", str(setup["ckpt"]), *files, "--search", "joint_ctc_attention", "beam_size=2",
               "max_len_ratio=0.5", "--batch-size", "1", "--device", "cpu"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == files
    for ln, u in zip(lines, ("utt00", "utt01", "utt02")):
        assert ln.split("\t")[1] == hyps[u]


def test_transcribe_json_timestamps(setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import soundfile as sf
    import torchaudio.functional as AF

    # the same speech at 8 kHz must be resampled on the way in
    wave = sf.read(setup["audio"]["utt00"], dtype="float32")[0]
    low = tmp_path / "low.wav"
    sf.write(low, AF.resample(torch.from_numpy(wave), 16000, 8000).numpy(), 8000)
    rc = main(["transcribe", str(setup["ckpt"]), setup["audio"]["utt00"], str(low), "--json", "--device", "cpu"])
    assert rc == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [r["path"] for r in rows] == [setup["audio"]["utt00"], str(low)]
    for r in rows:
        words, syllables = r["words"], r["syllables"]
        assert words and r["error"] is None, r
        assert " ".join(w["text"] for w in words) == r["text"]
        assert "".join(s["text"] for s in syllables) == r["text"].replace(" ", "")
        for spans in (words, syllables):
            assert all(0 <= t["start"] < t["end"] <= r["duration"] + 0.05 for t in spans)
            assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))


def test_transcribe_without_ctc_head_gives_text_without_times(setup: dict, transducer_checkpoint: dict,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A trained transducer (tests/fixtures/deploy.py: greedy gives its eight texts in memory)
    through the CLI, on the files of three formats: the reference texts, and no word times."""
    utts = ("utt00", "utt01", "utt02")  # wav, flac, pcm
    rc = main(["transcribe", str(transducer_checkpoint["path"]), *[setup["audio"][u] for u in utts], "--json",
               "--search", "transducer_greedy", "--device", "cpu"])
    assert rc == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [r["text"] for r in rows] == [setup["texts"][u] for u in utts]
    assert all(r["error"] is None and r["words"] == [] for r in rows)


def test_score_and_compare(setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # a decode dir whose hypotheses we know: one substitution, one deletion
    d = tmp_path / "run_a" / "decode_test_known"
    d.mkdir(parents=True)
    refs = setup["texts"]
    hyps = dict(refs)
    hyps["utt00"] = "안녕하세유"
    hyps["utt06"] = "감사합니"
    (d / "ref.trn").write_text("".join(f"{u} {t}\n" for u, t in refs.items()), encoding="utf-8")
    (d / "hyp.trn").write_text("".join(f"{u} {t}\n" for u, t in hyps.items()), encoding="utf-8")
    (d / "decode.yaml").write_text(yaml.safe_dump({"model": "conformer", "search": {"name": "beam"},
                                                   "test_set": {"name": "test", "corpus": "espeak",
                                                                "transcript": "spelling"}}), encoding="utf-8")
    assert main(["score", "--dir", str(d)]) == 0
    assert "CER" in capsys.readouterr().out
    scores = json.loads((d / "scores.json").read_text(encoding="utf-8"))
    n_chars = sum(len(t.replace(" ", "")) for t in refs.values())
    assert scores["cer"] == pytest.approx(200.0 / n_chars)
    assert scores["substitutions"] == 1 and scores["deletions"] == 1 and scores["insertions"] == 0
    assert scores["transcript"] == "spelling" and scores["search"] == "beam" and scores["model"] == "conformer"
    assert sum(scores["per_utt"]["char_errors"]) == 2
    result = (d / "result.txt").read_text(encoding="utf-8")
    assert "id: (utt00)" in result and "Eval:" in result

    # a real decode dir, scored, then both compared
    real = setup["root"] / "exp" / "decode_dump"
    if not (real / "hyp.trn").exists():
        main(["decode", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["dump"]), "--out", str(real),
              "--search", "ctc_greedy", "--device", "cpu"])
    assert main(["score", "--dir", str(real)]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["compare", str(d / "scores.json"), str(real), "--out", str(out), "--bootstrap", "200"]) == 0
    table = capsys.readouterr().out
    assert "| run | model | trained on | corpus |" in table and "run_a" in table and "[" in table
    rows = (out / "compare.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 3
    known = next(r for r in rows if "run_a" in r).split(",")
    lo, hi = float(known[10]), float(known[11])
    assert lo <= 200.0 / n_chars <= hi
    assert (out / "compare.png").stat().st_size > 1000


def test_errors_name_what_is_wrong(setup: dict, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc = main(["decode", "--checkpoint", str(setup["ckpt"]), "--data", str(tmp_path / "nope"), "--out",
               str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 1 and "nope does not exist" in capsys.readouterr().err
    rc = main(["decode", "--checkpoint", str(setup["rnnt"]), "--data", str(setup["dump"]), "--out",
               str(tmp_path / "o"), "--search", "beam", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "search 'beam' needs an attention decoder" in err and "RNNT" in err.upper()
    rc = main(["decode", "--checkpoint", str(setup["ckpt"]), "--data", str(setup["dump"]), "--out",
               str(tmp_path / "o"), "--search", "beam", "beam_sise=3", "--device", "cpu"])
    assert rc == 1 and "Did you mean 'beam_size'" in capsys.readouterr().err
    assert main(["score", "--dir", str(tmp_path)]) == 1
    assert "ref.trn does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_trained_ctc_model_decodes_its_training_set(setup: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Overfit a small CTC model on the 8 utterances, then decode, score, and fuse an LM."""
    from kospeech.data.cmvn import load_cmvn
    from kospeech.data.dump import FeatureDump
    from kospeech.data.inputs import pad_arrays as pad_batch
    from kospeech.registry import build
    from kospeech.text import load_tokenizer, read_lang_dir
    from kospeech.torch_files import atomic_save

    lang = setup["root"] / "lang"
    tok = load_tokenizer(lang)
    cfg = {"name": "deepspeech2", "encoder": {"name": "rnn", "rnn_type": "gru", "hidden_dim": 96, "num_layers": 2,
                                              "bidirectional": True, "dropout": 0.0,
                                              "extractor": {"name": "deepspeech2"}}}
    torch.manual_seed(0)
    model = build("model", cfg, path="model", input_dim=80, vocab_size=tok.vocab_size)
    mean, std = load_cmvn(setup["dump"] / "cmvn.npz")
    dump = FeatureDump(setup["dump"])
    ids = sorted(setup["texts"])
    feats, lens = pad_batch([(dump[u] - mean) / std for u in ids])
    targets = [tok.encode(setup["texts"][u]) for u in ids]
    tgt = torch.full((len(ids), max(map(len, targets))), 1, dtype=torch.long)
    for i, t in enumerate(targets):
        tgt[i, : len(t)] = torch.tensor(t)
    tlen = torch.tensor([len(t) for t in targets])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    from kospeech.metrics import score_corpus
    from kospeech.search.ctc import ctc_best_path

    def greedy_cer() -> float:  # the model's own greedy CTC on its training batch, before any CLI is involved
        model.eval()
        with torch.no_grad():
            enc, enc_lens = model.encode(feats, lens)
            seqs, _ = ctc_best_path(model.ctc_log_probs(enc), enc_lens)
        return score_corpus(dict(zip(ids, [setup["texts"][u] for u in ids])),
                            dict(zip(ids, [tok.decode(s) for s in seqs]))).cer

    trained_cer = 100.0
    for step in range(1, 701):  # until the model knows its 8 utterances (a bound with margin below)
        model.train()
        loss = model(feats, lens, tgt, tlen)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 250 and step % 50 == 0 and (trained_cer := greedy_cer()) < 5.0:
            break
    assert trained_cer < 5.0, f"greedy CER {trained_cer:.2f} on the training batch after {step} steps"
    ckpt = {"model": model.state_dict(), "config": {"model": cfg, "frontend": FRONTEND},
            "model_args": {"input_dim": 80, "vocab_size": tok.vocab_size},
            "cmvn": {"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)}, "tokenizer": read_lang_dir(lang)}
    path = atomic_save(ckpt, tmp_path / "ds2.pt")
    out = tmp_path / "decode"
    assert main(["decode", "--checkpoint", str(path), "--data", str(setup["dump"]), "--out", str(out),
                 "--search", "ctc_prefix_beam", "beam_size=4", "--device", "cpu"]) == 0
    assert main(["score", "--dir", str(out)]) == 0
    cer = json.loads((out / "scores.json").read_text(encoding="utf-8"))["cer"]
    assert cer < 10.0, capsys.readouterr().out  # the CLI decodes what the model knows (< 5 greedy in memory)
    text = tmp_path / "lm_text"
    text.write_text("".join(f"u{i} {SHORT_SENTENCES[i % 8]}\n" for i in range(64)), encoding="utf-8")
    assert main(["lm", "train", "--text", str(text), "--lang", str(lang), "--out", str(tmp_path / "lm"),
                 "--epochs", "15", "--hidden", "64", "--layers", "1", "--lr", "0.01", "--device", "cpu"]) == 0
    fused = tmp_path / "decode_lm"
    assert main(["decode", "--checkpoint", str(path), "--data", str(setup["dump"]), "--out", str(fused),
                 "--search", "ctc_prefix_beam", "beam_size=4", f"lm={tmp_path / 'lm' / 'lm.pt'}", "lm_weight=0.5",
                 "--device", "cpu"]) == 0
    assert main(["score", "--dir", str(fused)]) == 0
    assert json.loads((fused / "scores.json").read_text(encoding="utf-8"))["cer"] <= cer


def test_compare_across_corpora_names_runs_by_path_and_training_corpus(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The same exp name in two recipes: the run column tells them apart, "trained on" comes from
    decode.yaml or else the checkpoint's metadata, and a CER over 100% gives CRR 0, not < 0."""
    from kospeech.metadata import make_metadata

    refs = {"u1": "안녕하세요", "u2": "감사합니다"}
    ckpt = tmp_path / "zeroth" / "exp" / "conv_ctc" / "checkpoints" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    zeroth = {"corpus": "zeroth", "transcript": "spelling", "path": "/data/zeroth/train"}
    torch.save({"metadata": make_metadata("checkpoint", training_corpus=zeroth)}, ckpt)
    runs = {
        "mini": ({"u1": "안녕하세요", "u2": "감사합니다"}, {"training_corpus": {"corpus": "synthetic"}}),
        "zeroth": ({"u1": "안녕하세요 안녕하세요 안녕", "u2": "감사합니다 감사합니다 감사"}, {"checkpoint": str(ckpt)}),
    }
    for recipe, (hyps, extra) in runs.items():
        d = tmp_path / recipe / "exp" / "conv_ctc" / "decode_eval"
        d.mkdir(parents=True)
        (d / "ref.trn").write_text("".join(f"{u} {t}\n" for u, t in refs.items()), encoding="utf-8")
        (d / "hyp.trn").write_text("".join(f"{u} {t}\n" for u, t in hyps.items()), encoding="utf-8")
        info = {"model": "ctc", "search": {"name": "ctc_greedy"},
                "test_set": {"name": "eval", "corpus": "ksponspeech", "transcript": "phonetic"}, **extra}
        (d / "decode.yaml").write_text(yaml.safe_dump(info, allow_unicode=True), encoding="utf-8")
        assert main(["score", "--dir", str(d)]) == 0
    capsys.readouterr()
    zscores = json.loads((tmp_path / "zeroth/exp/conv_ctc/decode_eval/scores.json").read_text(encoding="utf-8"))
    assert zscores["training_corpus"] == zeroth and zscores["cer"] > 100 and zscores["crr"] == 0.0
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "mini"), str(tmp_path / "zeroth"), "--out", str(out),
                 "--bootstrap", "50"]) == 0
    table = capsys.readouterr().out
    assert "| run | model | trained on | corpus |" in table
    assert "| mini/exp/conv_ctc | ctc | synthetic | ksponspeech |" in table
    assert "| zeroth/exp/conv_ctc | ctc | zeroth | ksponspeech |" in table
    zrow = next(line for line in table.splitlines() if line.startswith("| zeroth"))
    assert "| 0.00 [0.00, 0.00] |" in zrow  # CRR and its interval clamped at 0
    with open(out / "compare.csv", encoding="utf-8") as f:
        import csv

        rows = {r["run"]: r for r in csv.DictReader(f)}
    assert rows["zeroth/exp/conv_ctc"]["trained_on"] == "zeroth"
    assert rows["zeroth/exp/conv_ctc"]["run_path"] == str((tmp_path / "zeroth/exp/conv_ctc").resolve())


def test_nan_bytes_in_a_dump_fail_their_utterance_only(setup: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A dump whose shard bytes turned to NaN (same size, so the size check passes) is refused by
    its checksum, naming the shard; where there is no checksum to catch it (a dump made before
    checksums), the NaN utterance fails by name and the others decode as from the sound dump."""
    import shutil

    dump = tmp_path / "dump"
    shutil.copytree(setup["dump"], dump)
    fields = next(ln.split("\t") for ln in (dump / "index.tsv").read_text().splitlines() if ln.startswith("utt03"))
    shard = dump / "shards" / f"feats.{int(fields[1]):04d}.f16"
    values = np.memmap(shard, dtype=np.float16, mode="r+")
    values[int(fields[2]) : int(fields[2]) + 40] = np.nan
    values.flush()
    del values
    sound, damaged = tmp_path / "sound", tmp_path / "damaged"
    assert main(["decode", str(setup["ckpt"]), "--data", str(setup["dump"]), "--out", str(sound)]) == 0
    capsys.readouterr()
    assert main(["decode", str(setup["ckpt"]), "--data", str(dump), "--out", str(damaged)]) == 1
    assert f"{shard} does not match its sha256" in capsys.readouterr().err
    (dump / "checksums.tsv").unlink()
    assert main(["decode", str(setup["ckpt"]), "--data", str(dump), "--out", str(damaged)]) == 1
    assert "utt03" in capsys.readouterr().err
    info = yaml.safe_load((damaged / "decode.yaml").read_text(encoding="utf-8"))
    assert list(info["failed"]) == ["utt03"] and "NaN" in info["failed"]["utt03"]
    expected = {u: t for u, t in _trn(sound / "hyp.trn").items() if u != "utt03"}
    assert {u: t for u, t in _trn(damaged / "hyp.trn").items() if u != "utt03"} == expected
