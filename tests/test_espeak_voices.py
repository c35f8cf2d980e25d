"""Made-up espeak-ng voices for the synthetic corpus: valid variant files, spoken through a private
data folder, used for training speakers only, without moving the test splits."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from kospeech.data.corpora import espeak_voices, synthetic, synthetic_plan
from kospeech.data.corpora.espeak_voices import data_path_with, random_variant
from kospeech.data.corpora.synthetic import voices_table
from kospeech.data.corpora.synthetic_plan import OTHER_VARIANTS, TRAIN_VARIANTS, Voice, plan_corpus
from kospeech.data.corpora.synthetic_render import espeak
from kospeech.errors import ConfigError, DataError
from kospeech.text.sentences import load_sentences

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_random_variants_are_drawn_within_the_shipped_ranges() -> None:
    a = random_variant("kospeech001", np.random.default_rng(4))
    assert a == random_variant("kospeech001", np.random.default_rng(4))  # the seed decides everything
    lines = a.splitlines()
    assert lines[:2] == ["language variant", "name kospeech001"]
    formants = [line.split() for line in lines if line.startswith("formant ")]
    assert [int(f[1]) for f in formants] == list(range(9))
    assert all(60 <= int(f[2]) <= 135 and 50 <= int(f[3]) <= 150 and 50 <= int(f[4]) <= 170 for f in formants)
    rng = np.random.default_rng(0)
    drawn = [random_variant(f"v{i}", rng) for i in range(400)]
    voicing = [int(line.split()[1]) for d in drawn for line in d.splitlines() if line.startswith("voicing ")]
    whispers = sum(v < 40 for v in voicing)
    assert 30 <= whispers <= 90  # ~15% whisper
    assert len({d.split("\n", 2)[2] for d in drawn}) == 400  # no two voices alike


@needs_espeak
def test_a_made_up_voice_speaks_differently_and_its_folder_goes_away() -> None:
    text = "오늘 날씨가 좋네요"
    definition = random_variant("kospeech900", np.random.default_rng(1))
    made_up = espeak(text, Voice("kospeech900", 160, 50, definition))
    shipped = espeak(text, Voice("adam", 160, 50))
    assert 0.8 < len(made_up) / 16000 < 3.0 and float(np.sqrt(np.mean(made_up**2))) > 0.01
    n = min(len(made_up), len(shipped))
    assert float(np.abs(made_up[:n] - shipped[:n]).mean()) > 0.01  # not the default voice
    folder = Path(data_path_with("kospeech900", definition))
    assert (folder / "espeak-ng-data" / "voices" / "!v" / "kospeech900").read_text(encoding="utf-8") == definition
    with pytest.raises(DataError, match="shipped espeak-ng variant"):
        data_path_with("adam", definition)
    espeak_voices.cleanup()
    assert not folder.exists()


def _plan(fraction: float = synthetic_plan.TRAIN_MADE_UP_VOICE_FRACTION) -> synthetic_plan.Plan:
    sentences = list(load_sentences())
    return plan_corpus("ksponspeech", "/nonexistent", total=700, seed=3, sentences=sentences, made_up_voices=fraction)


def test_made_up_voices_speak_training_only_and_leave_the_test_splits_alone() -> None:
    plan = _plan()
    train = [j.voice for j in plan.jobs["train"]]
    made_up = {v.variant for v in train if v.definition is not None}
    speakers = {v.variant for v in train}
    assert made_up and speakers - made_up <= set(TRAIN_VARIANTS)
    assert 0.2 <= len(made_up) / plan.speakers["train"] <= 0.6
    assert not (speakers & set(OTHER_VARIANTS))
    for split in ("dev", "eval_clean", "eval_other"):
        assert all(j.voice.definition is None for j in plan.jobs[split])
    assert set(synthetic_plan.made_up_variants(plan)) == made_up
    without = _plan(0.0)
    for split in ("dev", "eval_clean", "eval_other"):
        same = [dataclasses.astuple(j) for j in plan.jobs[split]]
        assert [dataclasses.astuple(j) for j in without.jobs[split]] == same
    # the same training sentences, speeds and pitches: only the voices changed
    assert [(j.raw, j.voice.speed, j.voice.pitch) for j in without.jobs["train"]] == [
        (j.raw, j.voice.speed, j.voice.pitch) for j in plan.jobs["train"]
    ]
    assert "kospeech" in voices_table(plan) and "kospeech" not in voices_table(without)


def test_the_share_is_checked_and_recorded(tmp_path: Path) -> None:
    from kospeech.cli import main

    with pytest.raises(ConfigError, match="made_up_voices must be a share"):
        synthetic.synthesize("ksponspeech", tmp_path / "bad", hours=0, max_utts=8, made_up_voices=1.5)
    out = tmp_path / "c"
    cmd = ["data", "synth", "--out", str(out), "--hours", "0", "--max-utts", "8", "--made-up-voices", "1"]
    assert main(cmd) == 0
    meta = yaml.safe_load((out / "synth.yaml").read_text(encoding="utf-8"))
    assert meta["made_up_voices"] == 1.0 and meta["voices"]["train"]
    assert all(v.startswith(synthetic_plan.MADE_UP_PREFIX) for v in meta["voices"]["train"])
    assert sorted(p.name for p in (out / synthetic.MADE_UP_DIR).iterdir()) == meta["voices"]["train"]
    # a corpus made with another share is not taken for this one, and the error says what differs
    with pytest.raises(DataError, match=r"made_up_voices: 1\.0 there, 0\.5 asked"):
        synthetic.synthesize("ksponspeech", out, hours=0, max_utts=8, made_up_voices=0.5)
    # one made before made-up voices existed (no such key in synth.yaml) had none
    del meta["made_up_voices"]
    (out / "synth.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    assert synthetic.synthesize("ksponspeech", out, hours=0, max_utts=8, made_up_voices=0.0).skipped_work
    with pytest.raises(DataError, match=r"made_up_voices: 0\.0 there, 0\.4 asked"):
        synthetic.synthesize("ksponspeech", out, hours=0, max_utts=8)
