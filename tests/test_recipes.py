"""The recipes: every shipped config builds (and the small ones train a step), and the staged
``run.sh`` scripts run end to end on corpora synthesised in KsponSpeech's and Zeroth's real
on-disk layouts.

The end-to-end runs call the real ``kospeech`` console script once per stage, each a fresh
Python process, so most of their time is process start-up; the corpus is a few dozen
utterances and the model a tiny CTC network trained for one epoch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from kospeech.config import load_config
from kospeech.data.datadir import read_data_dir, write_data_dir
from kospeech.registry import build

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
RECIPE_NAMES = ("mini", "ksponspeech", "zeroth")
MODEL_FILES = ("las", "deepspeech2", "transformer", "conformer_ctc_attention", "conformer_transducer")
BIN = Path(sys.executable).parent

# A tiny CTC model for the end-to-end runs: what is tested is that the stages connect.
TINY_CONFIG = """
seed: 1
data: {train: dump/train, valid: dump/dev, lang: data/lang, batch_frames: 3000, max_frames: 3000}
frontend: {name: fbank, n_mels: 40}
augment: [{name: spec_augment, freq_mask_width: 5, num_freq_masks: 1, time_mask_ratio: 0.05, num_time_masks: 1}]
model:
  name: deepspeech2
  encoder: {name: rnn, rnn_type: gru, hidden_dim: 32, num_layers: 1, bidirectional: true, dropout: 0.0,
            extractor: {name: conv2d_subsampling, output_dim: 32, subsampling: 4, channels: 8}}
optimizer: {name: adam, lr: 0.001}
train: {max_epochs: 1, device: cpu, log_every: 1, keep_last: 2}
decode: {search: {name: ctc_greedy}}
"""


# A plugin that notes which kospeech command imported it: run.sh must pass --user-dir to each.
STAGE_LOG_PLUGIN = """
import os
import sys

if os.environ.get("STAGE_LOG"):
    with open(os.environ["STAGE_LOG"], "a", encoding="utf-8") as f:
        f.write(" ".join(sys.argv[1:3]) + "\\n")
"""

# ---------------------------------------------------------------------------------------------
# configs


def _config_files() -> list[Path]:
    return [RECIPES / r / "conf" / f"{m}.yaml" for r in RECIPE_NAMES for m in MODEL_FILES]


def _id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}"


def test_every_recipe_has_the_model_configs() -> None:
    for recipe in RECIPE_NAMES:
        conf = RECIPES / recipe / "conf"
        missing = [m for m in (*MODEL_FILES, "base") if not (conf / f"{m}.yaml").is_file()]
        assert not missing, f"{conf} lacks {missing}"
        for m in MODEL_FILES:  # model files stay short: the shared parts come from base.yaml
            assert "extends: base.yaml" in (conf / f"{m}.yaml").read_text(encoding="utf-8")


def _build_all(path: Path, vocab_size: int) -> tuple[dict, torch.nn.Module, torch.optim.Optimizer, object]:
    from kospeech.train.options import TrainOptions

    cfg = load_config(path)
    for key in ("data", "frontend", "augment", "model", "optimizer", "train", "decode"):
        assert key in cfg, f"{path}: no '{key}' section"
    TrainOptions.from_config(cfg["train"])  # unknown or mistyped train options fail here
    frontend = build("frontend", cfg["frontend"], path="frontend")
    for i, spec in enumerate(cfg["augment"]):
        build("augment", spec, path=f"augment[{i}]")
    model = build("model", cfg["model"], path="model", input_dim=frontend.output_dim, vocab_size=vocab_size)
    optimizer = build("optimizer", cfg["optimizer"], path="optimizer", params=model.parameters())
    scheduler = build("scheduler", cfg["scheduler"], path="scheduler", optimizer=optimizer)
    build("search", cfg["decode"]["search"], path="decode.search", model=model)
    return cfg, model, optimizer, scheduler


@pytest.mark.parametrize("path", [p for p in _config_files() if p.parent.parent.name != "mini"], ids=_id)
def test_full_size_config_builds(path: Path) -> None:
    cfg, model, _, _ = _build_all(path, vocab_size=5000)
    n_params = sum(p.numel() for p in model.parameters())
    assert 10e6 < n_params < 120e6, f"{_id(path)}: {n_params / 1e6:.1f}M parameters"
    assert any(a["name"] == "spec_augment" for a in cfg["augment"])
    assert cfg["frontend"]["n_mels"] == 80
    if "conformer" in path.stem or "transformer" in path.stem:
        assert cfg["scheduler"]["name"] == "noam"


def test_las_configs_are_the_seed_model() -> None:
    """Every recipe's las.yaml keeps KoSpeech's architecture (VGG, BiLSTM listener, 8-head attention)."""
    for recipe in RECIPE_NAMES:
        model = load_config(RECIPES / recipe / "conf" / "las.yaml")["model"]
        assert model["name"] == "las"
        assert model["encoder"]["extractor"] == {"name": "vgg"}
        assert model["encoder"]["rnn_type"] == "lstm" and model["encoder"]["bidirectional"] is True
        assert model["decoder"]["attention"] == {"name": "scaled_dot", "num_heads": 8}
        if recipe != "mini":
            assert (model["encoder"]["hidden_dim"], model["encoder"]["num_layers"]) == (256, 3)
            assert (model["decoder"]["hidden_dim"], model["decoder"]["num_layers"]) == (512, 2)


@pytest.mark.parametrize("path", [p for p in _config_files() if p.parent.parent.name == "mini"], ids=_id)
def test_mini_config_trains_a_step(path: Path) -> None:
    vocab = 72  # about the jamo inventory plus the specials
    cfg, model, optimizer, scheduler = _build_all(path, vocab_size=vocab)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 9e6, f"{_id(path)}: {n_params / 1e6:.1f}M parameters is too big for CPU"
    assert {a["name"] for a in cfg["augment"]} >= {"spec_augment", "noise"}
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 160, 80, generator=g)
    feat_lens = torch.tensor([160, 120])
    targets = torch.randint(5, vocab, (2, 9), generator=g)
    target_lens = torch.tensor([9, 6])
    targets[1, 6:] = 1  # <pad>
    model.train()
    out = model(feats, feat_lens, targets, target_lens)
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), f"{_id(path)}: loss {loss}"
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g_ is not None and g_.abs().sum() > 0 for g_ in grads)
    optimizer.step()
    scheduler.step()


def test_mini_default_is_a_small_jamo_ctc_model() -> None:
    text = (RECIPES / "mini" / "run.sh").read_text(encoding="utf-8")
    assert "config=conf/conv_ctc.yaml" in text and "tokenizer=jamo" in text
    cfg = load_config(RECIPES / "mini" / "conf" / "conv_ctc.yaml")
    model = build("model", cfg["model"], path="model", input_dim=80, vocab_size=72)
    assert model.has_ctc and not model.has_decoder
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    # the CPU recipe's time bound is wall-clock: 15 minutes from nothing leave ~12 for training
    assert 0 < cfg["train"]["max_minutes"] <= 12


# ---------------------------------------------------------------------------------------------
# zeroth dev carving


def _fake_zeroth(directory: Path, speakers: int, per_speaker: int) -> None:
    utts = [f"{100 + s}_001_{i:04d}" for s in range(speakers) for i in range(per_speaker)]
    write_data_dir(
        directory,
        wav={u: f"/corpus/{u}.flac" for u in utts},
        text={u: f"문장 {u[-2:]}" for u in utts},
        utt2spk={u: u.split("_")[0] for u in utts},
        utt2dur={u: 2.5 for u in utts},
        corpus="zeroth",
        transcript="spelling",
    )


def _make_dev(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RECIPES / "zeroth" / "local" / "make_dev.py"), *map(str, args)],
        capture_output=True,
        text=True,
    )


def test_zeroth_dev_is_carved_by_speaker_deterministically(tmp_path: Path) -> None:
    _fake_zeroth(tmp_path / "train", speakers=40, per_speaker=5)
    outs = []
    for run in ("a", "b"):
        res = _make_dev(
            "--src", tmp_path / "train", "--train", tmp_path / run / "nodev", "--dev", tmp_path / run / "dev"
        )
        assert res.returncode == 0, res.stderr
        outs.append((read_data_dir(tmp_path / run / "nodev"), read_data_dir(tmp_path / run / "dev")))
    (train, dev), (train2, dev2) = outs
    assert dev.wav == dev2.wav and train.wav == train2.wav  # the same split every time
    assert set(train.wav).isdisjoint(dev.wav)
    assert set(train.wav) | set(dev.wav) == set(read_data_dir(tmp_path / "train").wav)
    assert set(train.utt2spk.values()).isdisjoint(dev.utt2spk.values())  # whole speakers held out
    assert len(set(dev.utt2spk.values())) == 1  # 3% of 40 speakers, rounded
    assert dev.meta["corpus"] == "zeroth" and dev.meta["transcript"] == "spelling"
    assert (tmp_path / "train" / "wav.scp").read_text().count("\n") == 200  # source untouched


def test_zeroth_dev_needs_two_speakers(tmp_path: Path) -> None:
    _fake_zeroth(tmp_path / "train", speakers=1, per_speaker=4)
    res = _make_dev("--src", tmp_path / "train", "--train", tmp_path / "nodev", "--dev", tmp_path / "dev")
    assert res.returncode == 1
    assert "1 speaker(s)" in res.stderr and "dev set of your own" in res.stderr


# ---------------------------------------------------------------------------------------------
# end to end


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str | Path], cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> str:
    env = _env()
    env.update(extra_env or {})
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    )
    return res.stdout + res.stderr


def _copy_recipes(dest: Path) -> Path:
    """The recipes into ``dest`` (run.sh works in its own folder), without any outputs of earlier runs."""
    shutil.copytree(RECIPES, dest / "recipes", ignore=shutil.ignore_patterns("data", "dump", "exp", "corpus"))
    return dest / "recipes"


def _synth(out: Path, layout: str, utts: int) -> Path:
    _run([BIN / "kospeech", "data", "synth", "--layout", layout, "--out", out, "--max-utts", str(utts), "--nj", "1"])
    return out


def _read_utt_lines(path: Path) -> dict[str, str]:
    """``utt text`` lines (a Kaldi ``text`` file or a trn as decode writes it); an empty text is ""."""
    rows = [line.split(" ", 1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r[0]: (r[1] if len(r) > 1 else "").strip() for r in rows}


def _edit_distance(ref: str, hyp: str) -> int:
    """Levenshtein distance by the textbook recurrence (the test's own, not kospeech.metrics)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def _assert_scores(exp: Path, test_sets: list[str], tag: str = "default") -> None:
    """Each test set's scores.json holds the CER of its hypotheses against the prepared data
    dir's reference texts, recomputed here from the files (characters without spaces, as the
    recipe scores by default): a wrong reference, a lost or extra utterance, or a wrong count
    fails, where the old check (any finite CER >= 0) let garbage through.

    The CER itself cannot be bounded below 100 here: the synthetic corpus never trains on an
    evaluation sentence, and the recipe's model is a tiny CTC network trained for one epoch on
    ~25 utterances (what is tested is that the stages connect), so it recognises none of the
    evaluation sentences (measured: CER 100.0 on both KsponSpeech sets, one unit per utterance).
    That a trained model's transcripts come out right through the CLI is tests/test_end_to_end.py's."""
    recipe = exp.parents[1]
    for s in test_sets:
        scores_file = exp / f"decode_{s}_{tag}" / "scores.json"
        assert scores_file.is_file(), f"no {scores_file}"
        scores = json.loads(scores_file.read_text(encoding="utf-8"))
        refs = _read_utt_lines(recipe / "data" / s / "text")
        hyps = _read_utt_lines(scores_file.parent / "hyp.trn")
        assert refs and _read_utt_lines(scores_file.parent / "ref.trn") == refs
        assert sorted(hyps) == sorted(refs), f"{s}: hypotheses for other utterances than the test set's"
        ref_chars = sum(len(r.replace(" ", "")) for r in refs.values())
        errors = sum(_edit_distance(refs[u].replace(" ", ""), hyps[u].replace(" ", "")) for u in refs)
        assert (scores["n_utts"], scores["ref_chars"]) == (len(refs), ref_chars)
        assert scores["cer"] == pytest.approx(100.0 * errors / ref_chars, abs=1e-6), (s, errors, ref_chars)
        assert math.isfinite(scores["cer"]) and scores["cer_spaces"] is False
        assert (scores_file.parent / "result.txt").is_file()
    assert (exp / "compare.csv").is_file()


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


@pytest.fixture(scope="module")
def kspon_run(tmp_path_factory: pytest.TempPathFactory, espeak_available: bool) -> tuple[Path, Path, str]:
    """The KsponSpeech recipe, stages 1-5, on a 30-utterance corpus in KsponSpeech's layout."""
    if not espeak_available:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("kspon")
    corpus = _synth(root / "KsponSpeech", "ksponspeech", 30)
    recipes = _copy_recipes(root)
    (root / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    (root / "plugins").mkdir()
    (root / "plugins" / "stage_log.py").write_text(STAGE_LOG_PLUGIN, encoding="utf-8")
    out = _run(
        [
            "bash",
            recipes / "ksponspeech" / "run.sh",
            "--corpus-root",
            corpus,
            "--config",
            root / "tiny.yaml",
            "--vocab-size",
            "250",
            "--nj",
            "1",
            "--user-dir",
            "plugins",  # relative: taken from where run.sh is started, not the recipe folder
        ],
        cwd=root,
        extra_env={"STAGE_LOG": str(root / "stages.log")},
    )
    return recipes / "ksponspeech", root / "tiny.yaml", out


def test_ksponspeech_recipe_end_to_end(kspon_run: tuple[Path, Path, str]) -> None:
    recipe, _, out = kspon_run
    for n in range(1, 6):
        assert f"stage {n}:" in out
    assert (recipe / "data" / "lang" / "tokenizer.yaml").read_text().startswith("name: sentencepiece")
    for s in ("train", "dev", "eval_clean", "eval_other"):
        assert (recipe / "dump" / s / "utt2num_frames").is_file()
    assert (recipe / "dump" / "train" / "cmvn.npz").is_file()
    _assert_scores(recipe / "exp" / "tiny", ["eval_clean", "eval_other"])
    # the score table, which says the training corpus and the KsponSpeech transcript form scored
    assert "| tiny | deepspeech2 | ksponspeech | ksponspeech | eval_clean | phonetic |" in out
    # --user-dir reached every kospeech command of every stage
    stages = (recipe.parents[1] / "stages.log").read_text(encoding="utf-8").splitlines()
    model = "exp/tiny/checkpoints/best.pt"
    expected = ["data prep", "tokenizer train", *["features dump"] * 4, "train --config", f"decode {model}",
                f"decode {model}", "score --dir", "score --dir", "compare exp/tiny/decode_eval_clean_default",
                f"pack {model}"]
    assert stages == expected, stages
    # the last stage packs the model with the decoding stage 4 scored, and the package says what it scored
    info = yaml.safe_load((recipe / "exp" / "tiny" / "package" / "package.yaml").read_text(encoding="utf-8"))
    assert info["decode"]["search"]["name"] == "ctc_greedy" and info["transcript"] == "phonetic"
    assert [r["test_set"] for r in info["scores"]] == ["eval_clean", "eval_other"]


def test_stage3_resumes_from_existing_features(kspon_run: tuple[Path, Path, str]) -> None:
    recipe, config, _ = kspon_run
    exp = recipe / "exp" / "tiny"
    step_before = _ckpt_step(exp / "checkpoints" / "last.pt")
    log_before = (exp / "log.jsonl").read_bytes()
    last_before = (exp / "checkpoints" / "last.pt").read_bytes()
    dumps = {p: p.stat().st_mtime_ns for p in (recipe / "dump").rglob("*") if p.is_file()}
    data = {p: p.stat().st_mtime_ns for p in (recipe / "data").rglob("*") if p.is_file()}
    out = _run(["bash", recipe / "run.sh", "--config", config, "--stage", "3", "--stop-stage", "3"])
    assert "stage 3:" in out
    assert "stage 1:" not in out and "stage 2:" not in out and "stage 4:" not in out
    assert {p: p.stat().st_mtime_ns for p in dumps} == dumps  # features were not redone
    assert {p: p.stat().st_mtime_ns for p in data} == data
    # the run had finished (max_epochs 1), so a resume trains nothing: the same step, the same
    # checkpoint and log, byte for byte; a restart would train the epoch again and log its steps
    assert f"resumed from exp/tiny/checkpoints/last.pt: step {step_before}, epoch 1" in out
    assert _ckpt_step(exp / "checkpoints" / "last.pt") == step_before
    assert (exp / "log.jsonl").read_bytes() == log_before
    assert (exp / "checkpoints" / "last.pt").read_bytes() == last_before
    # a second pass over stages 4-5 reuses the decodes of the unchanged checkpoint
    out = _run(["bash", recipe / "run.sh", "--config", config, "--stage", "4"])
    assert out.count("done, skipped") == 2
    _assert_scores(exp, ["eval_clean", "eval_other"])
    # the same search with other options is decoded again, never taken from the earlier run
    runs = [("ctc_prefix_beam beam_size=2", 0), ("ctc_prefix_beam beam_size=3", 0), ("ctc_prefix_beam beam_size=3", 2)]
    for search, skipped in runs:
        args = ["--config", config, "--stage", "4", "--stop-stage", "4", "--search", search]
        out = _run(["bash", recipe / "run.sh", *args])
        assert out.count("done, skipped") == skipped
        assert (exp / "decode_eval_clean_ctc_prefix_beam" / "search.txt").read_text() == search


@pytest.mark.slow
def test_ksponspeech_lm_stage_trains_a_transformer_lm_and_decodes_with_it(kspon_run: tuple[Path, Path, str]) -> None:
    """Stage 6 (after the others: --stage 3 keeps meaning training) trains the Transformer LM as
    ESPnet's recipe does, on the training text with the same units; stage 4 fuses it."""
    recipe, config, _ = kspon_run
    tiny = "--layers 1 --d-model 16 --num-heads 2 --ff-dim 32 --embed-dim 8 --epochs 1 --batch-tokens 2000"
    args = ["--config", config, "--stage", "6", "--lm", "transformer", "--lm-opts", tiny]
    out = _run(["bash", recipe / "run.sh", *args])
    assert "stage 6: transformer language model" in out
    assert not any(f"stage {n}:" in out for n in range(1, 6))
    ckpt = torch.load(recipe / "exp" / "lm_transformer" / "lm.pt", weights_only=True)
    assert ckpt["config"]["name"] == "transformer" and ckpt["config"]["num_layers"] == 1
    from kospeech.text import load_tokenizer

    assert ckpt["vocab_size"] == load_tokenizer(recipe / "data" / "lang").vocab_size
    # the recipe's default LM options are ESPnet's 16 x 512 LM
    recipe_text = (recipe / "run.sh").read_text()
    assert "--layers 16 --d-model 512 --num-heads 8 --ff-dim 2048 --embed-dim 128 --pos-enc none" in recipe_text
    args = ["--config", config, "--stage", "4", "--stop-stage", "4", "--lm", "transformer", "--lm-weight", "0.3",
            "--search", "ctc_prefix_beam beam_size=2"]
    _run(["bash", recipe / "run.sh", *args])
    for s in ("eval_clean", "eval_other"):
        dec = recipe / "exp" / "tiny" / f"decode_{s}_ctc_prefix_beam_lm_transformer"
        assert (dec / "search.txt").read_text() == "ctc_prefix_beam beam_size=2 lm=exp/lm_transformer lm_weight=0.3"
        assert "lm_transformer" in (dec / "decode.yaml").read_text() and (dec / "hyp.trn").is_file()


def test_average_by_metric_and_espnet_scoring_options(kspon_run: tuple[Path, Path, str]) -> None:
    """--average N --average-by METRIC decodes the mean of the N best checkpoints (its own decode
    dirs), and --score-opts --cer-spaces scores ESPnet's way (spaces counted), said in scores.json."""
    recipe, config, _ = kspon_run
    exp = recipe / "exp" / "tiny"
    args = ["--config", config, "--stage", "4", "--average", "1", "--average-by", "valid_cer"]
    out = _run(["bash", recipe / "run.sh", *args, "--score-opts", "--cer-spaces"])
    assert "averaging the 1 best checkpoints by valid_cer" in out
    avg = torch.load(exp / "model_best1_valid_cer.pt", map_location="cpu", weights_only=False)
    assert avg["averaged_by"] == "valid_cer" and len(avg["averaged_from"]) == 1
    spaced = json.loads((exp / "decode_eval_clean_default_best1_valid_cer" / "scores.json").read_text("utf-8"))
    plain = json.loads((exp / "decode_eval_clean_default" / "scores.json").read_text("utf-8"))
    assert spaced["cer_spaces"] is True and plain["cer_spaces"] is False
    assert spaced["ref_chars"] > plain["ref_chars"]  # the spaces between words are counted


def test_recipe_rejects_unknown_options_and_missing_config(tmp_path: Path) -> None:
    recipes = _copy_recipes(tmp_path)
    res = subprocess.run(
        ["bash", str(recipes / "zeroth" / "run.sh"), "--bogus", "1"], env=_env(), capture_output=True, text=True
    )
    assert res.returncode == 2 and "unknown option --bogus" in res.stderr
    res = subprocess.run(
        ["bash", str(recipes / "zeroth" / "run.sh"), "--config", "conf/nope.yaml"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "config not found: conf/nope.yaml" in res.stderr
    res = subprocess.run(
        ["bash", str(recipes / "zeroth" / "run.sh"), "--stop-stage", "1"], env=_env(), capture_output=True, text=True
    )
    assert res.returncode == 2 and "--corpus-root" in res.stderr


@pytest.mark.slow
def test_zeroth_recipe_end_to_end(tmp_path: Path, espeak_available: bool) -> None:
    if not espeak_available:
        pytest.skip("espeak-ng is not installed")
    corpus = _synth(tmp_path / "zeroth_korean", "zeroth", 60)
    recipes = _copy_recipes(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    out = _run(
        [
            "bash",
            recipes / "zeroth" / "run.sh",
            "--corpus-root",
            corpus,
            "--config",
            tmp_path / "tiny.yaml",
            "--tokenizer",
            "character",
            "--nj",
            "1",
        ]
    )
    recipe = recipes / "zeroth"
    train, dev = read_data_dir(recipe / "data" / "train_nodev"), read_data_dir(recipe / "data" / "dev")
    assert len(dev) > 0 and set(train.utt2spk.values()).isdisjoint(dev.utt2spk.values())
    assert "spelling" in out
    _assert_scores(recipe / "exp" / "tiny", ["test"])


@pytest.mark.slow
def test_mini_recipe_stages_connect(tmp_path: Path, espeak_available: bool) -> None:
    """The mini recipe as shipped (its default config, raw-audio training with noise), cut to
    40 utterances and 3 updates (MINI_UPDATES; --train-opts add to it)."""
    if not espeak_available:
        pytest.skip("espeak-ng is not installed")
    recipes = _copy_recipes(tmp_path)
    out = _run(
        ["bash", recipes / "mini" / "run.sh", "--nj", "1", "--train-opts", "train.max_epochs=1"],
        extra_env={"MINI_MAX_UTTS": "40", "MINI_HOURS": "0.03", "MINI_UPDATES": "3"},
    )
    assert "stage 2: skipped" in out
    # the default decoding: prefix beam with the 6-gram LM that stage 4 builds
    assert "building the ngram LM first" in out and (recipes / "mini" / "exp" / "lm_ngram" / "lm.arpa").is_file()
    _assert_scores(recipes / "mini" / "exp" / "conv_ctc", ["eval_clean", "eval_other"], "ctc_prefix_beam_lm_ngram")
    assert "| conv_ctc |" in out  # the score table
    assert re.search(r"training: 3 updates, [0-9.]+ min", out), out[-2000:]  # and the updates behind it
    # stage 7: the package decodes each test set, with no option, to the hyp.trn that stage 5 scored
    exp = recipes / "mini" / "exp" / "conv_ctc"
    for s in ("eval_clean", "eval_other"):
        _run(["kospeech", "decode", exp / "package", "--data", recipes / "mini" / "data" / s,
              "--out", tmp_path / f"again_{s}"])
        scored = exp / f"decode_{s}_ctc_prefix_beam_lm_ngram" / "hyp.trn"
        assert (tmp_path / f"again_{s}" / "hyp.trn").read_text(encoding="utf-8") == scored.read_text(encoding="utf-8")


def test_cer_by_voice_breaks_a_decode_down_by_voice_and_noise(tmp_path: Path) -> None:
    corpus, decode = tmp_path / "corpus", tmp_path / "decode"
    corpus.mkdir()
    decode.mkdir()
    (corpus / "voices.tsv").write_text(
        "split\tutt_id\tvariant\tspeed\tpitch\tnoise\tsnr_db\n"
        "eval_other\tE1\tcroak\t128\t13\twhite\t7.5\n"
        "eval_other\tE2\tcroak\t128\t13\t\t\n"
        "eval_other\tE3\twhisperf\t200\t93\twhite\t12.0\n",
        encoding="utf-8",
    )
    (decode / "ref.trn").write_text("E1 가나\nE2 다라\nE3 마바사아\n", encoding="utf-8")
    (decode / "hyp.trn").write_text("E1 가나\nE2 다\nE3 자\n", encoding="utf-8")
    script = RECIPES / "mini" / "local" / "cer_by_voice.py"
    out = _run([sys.executable, script, corpus, decode])
    assert f"### {decode}: CER 62.50% over 3 utterances" in out  # (0 + 1 + 4) / 8
    assert "| voice | whisperf (speed 200, pitch 93) | 1 | 100.0 | 1 | 3 | 0 |" in out
    assert "| voice | croak (speed 128, pitch 13) | 2 | 25.0 | 0 | 1 | 0 |" in out
    assert "| noise | white | 2 | 66.7 | 1 | 3 | 0 |" in out and "| noise | none | 1 | 50.0 |" in out
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if "whisperf" in x)) < lines.index(next(x for x in lines if "croak" in x))
    (corpus / "voices.tsv").write_text("split\tutt_id\tvariant\tspeed\tpitch\tnoise\tsnr_db\n", encoding="utf-8")
    res = subprocess.run([sys.executable, str(script), str(corpus), str(decode)], capture_output=True, text=True)
    assert res.returncode != 0 and "3 utterances are not in voices.tsv" in res.stderr
