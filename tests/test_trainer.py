"""The training loop on real espeak-ng speech: logs, checkpoints, exact resume, NaN skipping, errors.

Data go through the real path: a Kaldi data dir of espeak-ng waves, ``kospeech features dump``,
``FeatureDataset`` and the bucket sampler; the model is a small registered ``deepspeech2``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch

from kospeech.cli import main as cli_main
from kospeech.errors import ConfigError, DataError
from kospeech.registry import register

SMALL_DS2 = {
    "name": "deepspeech2",
    "encoder": {
        "name": "rnn",
        "rnn_type": "gru",
        "hidden_dim": 16,
        "num_layers": 2,
        "bidirectional": True,
        "dropout": 0.2,  # dropout draws from the RNG: exact resume must restore it
        "extractor": {"name": "none"},
    },
}
FRONTEND = {"name": "fbank", "n_mels": 40}


@register("augment", "test_nan_injector", override=True)
class NanInjector:
    """Test plugin: puts a NaN frame into the features of one utterance, to poison its batch."""

    domain = "feature"

    def __init__(self, *, utt_id: str = "") -> None:
        self.utt_id = utt_id

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.utt_id in batch["utt_ids"]:
            batch["features"][batch["utt_ids"].index(self.utt_id), 0, 0] = float("nan")
        return batch


def make_corpus(root: Path, utterances: list[tuple[str, Any]]) -> dict[str, Path]:
    """Data dir of real waves, a character lang dir and feature dumps (train with CMVN, dev)."""
    from kospeech.data.datadir import write_data_dir
    from kospeech.text.tokenizers import train_tokenizer

    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    wav, text, spk, dur = {}, {}, {}, {}
    for i, (sentence, wave) in enumerate(utterances):
        utt = f"spk{i % 2}-utt{i:02d}"
        path = wav_dir / f"{utt}.wav"
        sf.write(path, wave, 16000)
        wav[utt], text[utt], spk[utt], dur[utt] = str(path), sentence, f"spk{i % 2}", len(wave) / 16000
    meta = {"corpus": "espeak", "transcript": "spelling"}
    write_data_dir(root / "data/train", wav=wav, text=text, utt2spk=spk, utt2dur=dur, **meta)
    dev = sorted(wav)[:4]
    write_data_dir(
        root / "data/dev",
        wav={u: wav[u] for u in dev},
        text={u: text[u] for u in dev},
        utt2spk={u: spk[u] for u in dev},
        corpus="espeak",
        transcript="spelling",
    )
    train_tokenizer("character", text.values(), root / "data/lang")
    conf = root / "frontend.yaml"
    conf.write_text(json.dumps({"frontend": FRONTEND}), encoding="utf-8")
    for name, extra in (("train", ["--cmvn"]), ("dev", [])):
        args = ["features", "dump", "--data", str(root / "data" / name), "--out", str(root / "dump" / name)]
        assert cli_main([*args, "--config", str(conf), "--nj", "1", *extra]) == 0
    return {"root": root, "lang": root / "data/lang", "train": root / "dump/train", "dev": root / "dump/dev"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, korean_utterances: list) -> dict[str, Path]:
    """Made once per session; tests/test_ddp.py shares it."""
    return make_corpus(tmp_path_factory.mktemp("corpus"), korean_utterances)


def base_config(corpus: dict[str, Path], **train: Any) -> dict[str, Any]:
    return {
        "seed": 7,
        "data": {
            "train": str(corpus["train"]),
            "valid": str(corpus["dev"]),
            "lang": str(corpus["lang"]),
            "batch_frames": 500,
            "num_buckets": 2,
        },
        "frontend": FRONTEND,
        "model": copy.deepcopy(SMALL_DS2),
        "optimizer": {"name": "adam", "lr": 0.01},
        "scheduler": {"name": "noam", "warmup_steps": 4},
        "train": {"max_epochs": 2, "log_every": 1, "keep_last": 3, "device": "cpu", "plot": False, **train},
    }


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def read_log(exp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (exp / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def cer_by_hand(checkpoint: Path, data: Path, texts: Path, out: Path) -> float:
    """The CER of ``checkpoint`` on ``data`` (a dump or data dir), decoded greedily by
    ``kospeech decode`` and scored here against the data dir's ``texts`` with the test's own edit
    distance (characters without spaces): an expectation for the trainer's validation CER that
    shares neither its decoding loop nor kospeech.metrics."""
    from tests.test_recipes import _edit_distance, _read_utt_lines

    args = ["decode", str(checkpoint), "--data", str(data), "--out", str(out), "--search", "ctc_greedy"]
    assert cli_main([*args, "--device", "cpu"]) == 0
    refs, hyps = _read_utt_lines(texts), _read_utt_lines(out / "hyp.trn")
    assert sorted(hyps) == sorted(refs)
    errors = sum(_edit_distance(refs[u].replace(" ", ""), hyps[u].replace(" ", "")) for u in refs)
    return 100.0 * errors / sum(len(r.replace(" ", "")) for r in refs.values())


def test_cli_training_writes_config_logs_plot_and_checkpoints(corpus: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    from kospeech.inference.loading import load_for_inference
    from kospeech.train.checkpoint import list_checkpoints, load_checkpoint

    cfg_path = tmp_path / "conf.yaml"
    cfg = base_config(corpus)
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    exp = tmp_path / "exp"
    overrides = ["train.save_every=1", "train.max_epochs=2", "train.plot=true", "data.batch_frames=1000"]
    assert cli_main(["train", "--config", str(cfg_path), "--exp-dir", str(exp), *overrides]) == 0
    saved = yaml.safe_load((exp / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["save_every"] == 1 and saved["model"] == SMALL_DS2

    records = read_log(exp)
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    steps = train[-1]["step"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    for key in ("epoch", "loss", "ctc", "lr", "grad_norm", "audio_sec_per_sec", "padding", "skipped_batches"):
        assert key in train[0], key
    assert all(math.isfinite(r["loss"]) and r["audio_sec_per_sec"] > 0 and 0 <= r["padding"] < 1 for r in train)
    assert [r["epoch"] for r in valid] == [1, 2] and all(0 <= r["cer"] for r in valid)
    assert valid[0]["utterances"] == 4
    assert (exp / "train.png").stat().st_size > 1000

    ckpts = list_checkpoints(exp / "checkpoints")
    assert len(ckpts) == 3  # keep_last
    last = load_checkpoint(exp / "checkpoints/last.pt")
    assert last["step"] == steps and last["epoch"] == 2
    for key in ("model", "config", "cmvn", "tokenizer", "optimizer", "scheduler", "scaler", "sampler", "rng"):
        assert key in last, key
    assert set(last["rng"]) >= {"python", "numpy", "torch"}
    best = load_checkpoint(exp / "checkpoints/best.pt")
    assert best["metrics"]["valid_cer"] == min(r["cer"] for r in valid)
    # the last validation's CER is the last checkpoint's, decoded and scored independently
    dev_text = corpus["root"] / "data/dev/text"
    assert valid[-1]["cer"] == pytest.approx(cer_by_hand(exp / "checkpoints/last.pt", corpus["dev"], dev_text,
                                                         tmp_path / "dec"), abs=1e-6)

    bundle = load_for_inference(exp / "checkpoints/best.pt")
    assert bundle.frontend is not None and bundle.frontend.output_dim == 40
    assert bundle.cmvn is not None and bundle.config["model"] == SMALL_DS2


def test_exact_resume_mid_epoch_gives_identical_weights(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.checkpoint import load_checkpoint
    from kospeech.train.trainer import Trainer

    # spec_augment draws from a generator of its own: the checkpoint must carry it too
    spec = [{"name": "spec_augment", "freq_mask_width": 8, "time_mask_ratio": 0.1}]
    cfg = {**base_config(corpus, max_steps=6, max_epochs=5), "augment": spec}
    straight = Trainer(cfg, tmp_path / "a")
    per_epoch = len(straight._epoch_batches(straight.train_sampler, 0))
    assert 3 < per_epoch < 6, per_epoch  # step 3 is mid-epoch, step 6 in the next epoch
    straight.train()
    assert straight.step == 6

    first = Trainer({**base_config(corpus, max_steps=3, max_epochs=5), "augment": spec}, tmp_path / "b")
    first.train()
    ckpt = load_checkpoint(tmp_path / "b/checkpoints/last.pt")
    assert ckpt["step"] == 3 and ckpt["epoch"] == 0 and ckpt["sampler"]["position"] == 3
    resumed = Trainer(cfg, tmp_path / "b", resume=True)
    assert resumed.step == 3 and resumed.batches_done == 3
    resumed.train()
    a, b = weights(straight.raw_model), weights(resumed.raw_model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    # the log has no duplicated steps
    steps = [r["step"] for r in read_log(tmp_path / "b") if r["kind"] == "train"]
    assert steps == sorted(set(steps)) == list(range(1, 7))


def test_nan_batch_is_skipped_counted_and_never_applied(
    corpus: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kospeech.train.checkpoint import load_checkpoint
    from kospeech.train.trainer import Trainer
    from tests.fixtures.deploy import MODEL as CONV_CTC  # batch norm: running statistics a NaN forward moves

    cfg = base_config(corpus, max_epochs=1, max_grad_norm=0.0)
    cfg["model"] = copy.deepcopy(CONV_CTC)
    victim = sorted(Path(corpus["train"], "utt2num_frames").read_text().split()[::2])[3]
    cfg["augment"] = [{"name": "test_nan_injector", "utt_id": victim}]
    trainer = Trainer(cfg, tmp_path / "exp")
    n_batches = len(trainer._epoch_batches(trainer.train_sampler, 0))
    summary = trainer.train()
    assert summary["skipped_batches"] == 1
    assert trainer.step == n_batches - 1  # the poisoned batch made no update
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())
    # nor left NaN in batch norm's running statistics (its forward pass had moved them)
    stats = [b for n, b in trainer.raw_model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.isfinite(b).all() for b in stats)
    assert load_checkpoint(tmp_path / "exp/checkpoints/last.pt")["metrics"]["skipped_batches"] == 1
    assert any("non-finite loss" in r.message and victim in r.message for r in caplog.records)


def test_gradient_accumulation_counts_updates(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.trainer import Trainer

    trainer = Trainer(base_config(corpus, max_epochs=1, accum_grad=2), tmp_path / "exp")
    n_batches = len(trainer._epoch_batches(trainer.train_sampler, 0))
    trainer.train()
    assert trainer.step == math.ceil(n_batches / 2)


def test_errors_are_clear(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.trainer import Trainer

    cfg = base_config(corpus)
    cfg["data"]["train"] = str(tmp_path / "no_such_dump")
    with pytest.raises(DataError, match=r"data.train: .*no_such_dump does not exist; make a feature dump"):
        Trainer(cfg, tmp_path / "e1")

    with pytest.raises(ConfigError, match=r"unknown option 'train.max_epoch'. Did you mean 'max_epochs'"):
        Trainer(base_config(corpus, max_epoch=3), tmp_path / "e2")

    exp = tmp_path / "e3"
    Trainer(base_config(corpus, max_steps=1), exp).train()
    with pytest.raises(ConfigError, match="already holds checkpoints; pass --resume"):
        Trainer(base_config(corpus), exp)

    # a different tokenizer (one more unit) cannot resume this run
    from kospeech.text.tokenizers import load_tokenizer, train_tokenizer

    texts = [line.split(maxsplit=1)[1] for line in (corpus["root"] / "data/train/text").read_text().splitlines()]
    train_tokenizer("character", [*texts, "뷁"], tmp_path / "lang2")
    assert load_tokenizer(tmp_path / "lang2").vocab_size == load_tokenizer(corpus["lang"]).vocab_size + 1
    cfg = base_config(corpus)
    cfg["data"]["lang"] = str(tmp_path / "lang2")
    with pytest.raises(DataError, match=r"output units but the tokenizer in .*lang2 has"):
        Trainer(cfg, exp, resume=True)


def test_raw_audio_mode_runs_frontend_cmvn_and_wave_augments(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.data.cmvn import load_cmvn
    from kospeech.train.checkpoint import load_checkpoint
    from kospeech.train.trainer import Trainer

    cfg = base_config(corpus, max_steps=2, max_epochs=1)
    cfg["data"].update(train=str(corpus["root"] / "data/train"), valid=str(corpus["root"] / "data/dev"))
    cfg["augment"] = [{"name": "speed", "factors": [0.9, 1.1]}, {"name": "spec_augment", "freq_mask_width": 8}]
    trainer = Trainer(cfg, tmp_path / "exp")
    assert trainer.mode == "datadir" and trainer.input_dim == 40
    # statistics computed through the on-the-fly frontend match those of the float16 dump
    mean, std = load_cmvn(corpus["train"] / "cmvn.npz")
    assert torch.allclose(trainer.inputs.cmvn.mean.cpu(), torch.from_numpy(mean), atol=0.02)
    assert torch.allclose(trainer.inputs.cmvn.std.cpu(), torch.from_numpy(std), rtol=0.02, atol=0.02)
    summary = trainer.train()
    assert summary["step"] == 2
    dev = corpus["root"] / "data/dev"
    by_hand = cer_by_hand(tmp_path / "exp/checkpoints/last.pt", dev, dev / "text", tmp_path / "dec")
    assert summary["valid_cer"] == pytest.approx(by_hand, abs=1e-6)
    ckpt = load_checkpoint(tmp_path / "exp/checkpoints/last.pt")
    assert torch.equal(ckpt["cmvn"]["mean"], trainer.inputs.cmvn.mean.cpu())

    dump_cfg = base_config(corpus)
    dump_cfg["augment"] = [{"name": "speed"}]
    with pytest.raises(ConfigError, match=r"augment\[0\] 'speed' works on waveforms, but data.train is a feature dump"):
        Trainer(dump_cfg, tmp_path / "exp2")


def test_wall_clock_budget_stops_and_checkpoints(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.trainer import Trainer

    trainer = Trainer(base_config(corpus, max_epochs=50, max_minutes=1e-6), tmp_path / "t")
    summary = trainer.train()
    trainer.close()
    # the budget is spent by the first update: one update, then validation and a checkpoint
    assert summary["step"] == 1
    assert summary["epoch"] == 0
    assert (tmp_path / "t" / "checkpoints" / "last.pt").exists()


def test_augmentation_starts_after_the_configured_update(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.data.dataset import collate
    from kospeech.train.trainer import Trainer

    spec = [{"name": "spec_augment", "freq_mask_width": 30, "num_freq_masks": 2}]
    for after, expect_changed in ((1000, False), (0, True)):
        cfg = {**base_config(corpus, max_steps=1, augment_after=after), "augment": spec}
        trainer = Trainer(cfg, tmp_path / str(after))
        raw = collate([trainer.train_set[i] for i in range(4)])
        clean = trainer._prepare(dict(raw), train=False)["features"]
        augmented = trainer._prepare(dict(raw), train=True)["features"]
        trainer.close()
        assert (not torch.equal(clean, augmented)) == expect_changed


def test_budget_decay_scheduler_gets_the_spent_share_from_the_trainer(corpus: dict[str, Path], tmp_path: Path) -> None:
    from kospeech.train.trainer import Trainer

    cfg = base_config(corpus, max_epochs=50, max_steps=8)
    cfg["scheduler"] = {"name": "budget_decay", "warmup_steps": 1, "decay_start": 0.5, "final_lr_scale": 0.0}
    trainer = Trainer(cfg, tmp_path / "b")
    trainer.train()
    trainer.close()
    lrs = [r["lr"] for r in read_log(tmp_path / "b") if r.get("kind") == "train"]
    assert len(lrs) == 8
    # the peak until half of max_steps, then a cosine that reaches zero at the last update
    assert lrs[:4] == pytest.approx([0.01] * 4)
    assert lrs[4] > lrs[5] > lrs[6] > lrs[7]
    assert lrs[7] == pytest.approx(0.0, abs=1e-12)


def test_tensorboard_event_files_mirror_the_log(corpus: dict[str, Path], tmp_path: Path) -> None:
    """train.tensorboard writes event files beside log.jsonl with its numbers and a few examples."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kospeech.train.trainer import Trainer

    exp = tmp_path / "tb"
    trainer = Trainer(base_config(corpus, max_epochs=1, tensorboard=True), exp)
    trainer.train()
    trainer.close()
    assert list(exp.glob("events.out.tfevents.*")), "no event file beside log.jsonl"
    records = read_log(exp)
    events = EventAccumulator(str(exp), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train], rel=1e-5)
    assert [e.value for e in events.Scalars("train/lr")] == pytest.approx([r["lr"] for r in train], rel=1e-5)
    cer = events.Scalars("valid/cer")
    assert [(e.step, e.value) for e in cer] == [(r["step"], pytest.approx(r["cer"], rel=1e-5)) for r in valid]
    assert "valid/examples/text_summary" in tags["tensors"]
    text = events.Tensors("valid/examples/text_summary")[-1].tensor_proto.string_val[0].decode("utf-8")
    shown = valid[-1]["examples"]
    assert len(shown) == 3 and all(e["ref"] in text and e["utt_id"] in text for e in shown)


def test_tensorboard_without_the_package_is_a_clear_error(
    corpus: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from kospeech.train.trainer import Trainer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"train.tensorboard: true needs the tensorboard package"):
        Trainer(base_config(corpus, max_epochs=1, tensorboard=True), tmp_path / "x")


def test_tensorboard_resume_continues_the_curves(corpus: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kospeech.train.trainer import Trainer

    exp = tmp_path / "tb"
    for epochs, resume in ((1, False), (2, True)):
        trainer = Trainer(base_config(corpus, max_epochs=epochs, tensorboard=True), exp, resume=resume)
        trainer.train()
        trainer.close()
    steps = [e.step for e in EventAccumulator(str(exp)).Reload().Scalars("train/loss")]
    logged = [r["step"] for r in read_log(exp) if r["kind"] == "train"]
    assert steps == sorted(set(steps)) == logged  # one event per logged step, in order
    assert [e.step for e in EventAccumulator(str(exp)).Reload().Scalars("valid/cer")] == [
        r["step"] for r in read_log(exp) if r["kind"] == "valid"
    ]


def test_keep_best_spares_the_best_checkpoints_and_average_best_uses_them(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    """ESPnet's keep_nbest_models: rotation keeps the last checkpoint plus the 2 best by validation
    loss, which a too-high rate scatters (so "best" and "last" differ); the kept ones are
    what ``kospeech average --best 2`` averages."""
    from kospeech.train.average import select_best
    from kospeech.train.checkpoint import list_checkpoints, load_checkpoint
    from kospeech.train.trainer import Trainer

    exp = tmp_path / "exp"
    cfg = base_config(corpus, max_steps=6, max_epochs=5, valid_every=1, keep_last=1, keep_best=2,
                      keep_best_by="valid_loss")
    cfg["optimizer"] = {"name": "adam", "lr": 0.3}
    cfg.pop("scheduler")
    trainer = Trainer(cfg, exp)
    trainer.train()
    trainer.close()
    valid = [r for r in read_log(exp) if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == list(range(1, 7))
    best = select_best([(r["step"], r["loss"]) for r in valid], 2)
    # the constructed case: a best checkpoint older than the last two, which keep_last alone would delete
    assert min(best) < 5, [r["loss"] for r in valid]
    kept = {int(load_checkpoint(p)["step"]): p for p in list_checkpoints(exp / "checkpoints")}
    assert sorted(kept) == sorted({*best, 6})
    for step, path in kept.items():  # each carries its own validation's numbers
        metrics = load_checkpoint(path)["metrics"]
        assert metrics["valid_step"] == step and metrics["valid_loss"] == valid[step - 1]["loss"]
    assert cli_main(["average", "--exp-dir", str(exp), "--best", "2", "--metric", "valid_loss", "--out", "b.pt"]) == 0
    avg = load_checkpoint(exp / "b.pt")
    assert [Path(p).name for p in avg["averaged_from"]] == [kept[s].name for s in sorted(best)]
    with pytest.raises(ConfigError, match="keep_best_by"):
        Trainer(base_config(corpus, keep_best=2, keep_best_by="valid_acc"), tmp_path / "bad")
