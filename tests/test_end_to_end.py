"""A user's whole path through the CLI on a tiny corpus, with the reference text checked at every door.

Eight espeak-ng sentences (each clean and with silence around it) as a Kaldi data dir;
``kospeech tokenizer train`` -> ``kospeech train`` (stopped mid-epoch and ``--resume``d, which
must equal an uninterrupted run bit for bit) -> ``decode`` / ``score`` -> ``lm train`` -> ``pack``
-> ``transcribe`` -> ``kospeech.load`` -> ``export`` -> the torch-free runtime -> ``serve``. The
checkpoint is the trainer's own (not hand-assembled), and every door must give the clean
utterances their reference text and the packaged decoding's text for all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from kospeech.cli import main
from kospeech.files import read_utt_text

from .test_runtime import run_without_torch
from .test_serve import post, run_server, wav_bytes

CONFIG = {
    "seed": 1,
    "data": {"train": "data/train", "valid": "data/train", "lang": "data/lang", "batch_frames": 20000,
             "max_frames": 1500, "num_buckets": 1},
    "frontend": {"name": "fbank", "n_mels": 40},
    "model": {"name": "ctc", "encoder": {
        "name": "separable_conv", "dim": 96, "num_blocks": 3, "kernel_size": 11, "dropout": 0.0,
        "extractor": {"name": "conv2d_subsampling", "output_dim": 96, "subsampling": 4, "channels": 16}}},
    "optimizer": {"name": "adam", "lr": 0.004},
    "scheduler": {"name": "cosine", "warmup_steps": 20, "total_steps": 200},
    "train": {"max_epochs": 1000, "device": "cpu", "amp": "none", "log_every": 50, "valid_every": 0,
              "keep_last": 2, "plot": False},
    "decode": {"search": {"name": "ctc_greedy"}},
}
STEPS = 200


@pytest.fixture(scope="module")
def run(korean_utterances: list, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data" / "train"
    (root / "wav").mkdir()
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    scp, text, spk, dur = [], [], [], []
    for i, (sentence, wave) in enumerate(korean_utterances):
        gap = [np.zeros(int(rng.uniform(0.2, 0.8) * 16000), np.float32) for _ in range(2)]
        for kind, w in (("a", wave), ("b", np.concatenate([gap[0], wave, gap[1]]))):
            utt = f"s{i}{kind}"
            sf.write(root / "wav" / f"{utt}.wav", w, 16000, subtype="PCM_16")
            scp.append(f"{utt} {root / 'wav' / f'{utt}.wav'}\n")
            text.append(f"{utt} {sentence}\n")
            spk.append(f"{utt} spk{i}\n")
            dur.append(f"{utt} {len(w) / 16000:.3f}\n")
    for name, lines in (("wav.scp", scp), ("text", text), ("utt2spk", spk), ("utt2dur", dur)):
        (data / name).write_text("".join(sorted(lines)), encoding="utf-8")
    (data / "meta.yaml").write_text("corpus: espeak-test\ntranscript: phonetic\n", encoding="utf-8")
    config = root / "conf.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return {"root": root, "data": data, "config": config, "sentences": [s for s, _ in korean_utterances]}


def train(run: dict, exp: str, steps: int, *extra: str) -> Path:
    d = run["root"]
    args = ["train", "--config", str(run["config"]), "--exp-dir", str(d / exp), f"data.train={run['data']}",
            f"data.valid={run['data']}", f"data.lang={d / 'data' / 'lang'}", f"train.max_steps={steps}", *extra]
    assert main(args) == 0
    return d / exp / "checkpoints" / "last.pt"


def test_the_whole_path(run: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import kospeech

    root = run["root"]
    monkeypatch.chdir(root)
    assert main(["tokenizer", "train", "--name", "jamo", "--text", str(run["data"] / "text"),
                 "--out", str(root / "data" / "lang")]) == 0
    # training stopped mid-epoch and resumed equals one uninterrupted run, bit for bit
    straight = train(run, "exp/straight", STEPS)
    train(run, "exp/run", 105)
    resumed = train(run, "exp/run", STEPS, "--resume")
    a, b = (torch.load(p, weights_only=True)["model"] for p in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = str(resumed)
    # decode + score: the clean utterances come back as their references
    assert main(["decode", ckpt, "--data", str(run["data"]), "--out", str(root / "dec")]) == 0
    assert main(["score", "--dir", str(root / "dec")]) == 0
    greedy = read_utt_text(root / "dec" / "hyp.trn")
    assert [greedy[f"s{i}a"] for i in range(8)] == run["sentences"]
    # an n-gram, a decoding with it, and the package of that decoding
    assert main(["lm", "train", "--type", "ngram", "--order", "4", "--text", str(run["data"] / "text"),
                 "--lang", str(root / "data" / "lang"), "--out", str(root / "lm")]) == 0
    lm_opts = ["--search", "ctc_prefix_beam", "--lm", str(root / "lm"), "-o", "beam_size=4", "-o", "lm_weight=0.5"]
    assert main(["decode", ckpt, "--data", str(run["data"]), "--out", str(root / "dec_lm"), *lm_opts]) == 0
    assert main(["score", "--dir", str(root / "dec_lm")]) == 0
    assert main(["pack", ckpt, *lm_opts, "--scores", str(root / "dec_lm"), "--out", str(root / "pkg")]) == 0
    scored = read_utt_text(root / "dec_lm" / "hyp.trn")
    assert [scored[f"s{i}a"] for i in range(8)] == run["sentences"]
    utts = sorted(scored)
    paths = [str(root / "wav" / f"{u}.wav") for u in utts]
    expected = [scored[u] for u in utts]
    # transcribe, the Python API, export + the torch-free runtime, serve: the scored text everywhere
    capsys.readouterr()
    assert main(["transcribe", str(root / "pkg"), *paths]) == 0
    printed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert [printed[p] for p in paths] == expected
    assert [r.text for r in kospeech.load(root / "pkg").transcribe(paths)] == expected
    assert main(["export", str(root / "pkg"), "--out", str(root / "onnx")]) == 0
    out = run_without_torch(
        f"""
        import kospeech.runtime
        out = {{"texts": [r.text for r in kospeech.runtime.load({str(root / 'onnx')!r}).transcribe({paths!r})]}}
        """
    )
    assert out == {"texts": expected, "modules": []}
    from kospeech.serve.app import create_app, open_model

    model, _ = open_model(str(root / "pkg"))
    for server in run_server(create_app(model, name=model.name)):
        for path, text in list(zip(paths, expected))[::3]:
            wave, _ = sf.read(path, dtype="float32")
            status, body = post(f"{server}/transcribe", wav_bytes(wave))
            assert status == 200 and body["text"] == text
