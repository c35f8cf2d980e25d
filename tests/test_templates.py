"""Template-generated training sentences: number readings, particles, speakable notated lines."""

from __future__ import annotations

import random
import re

import pytest

from kospeech.text.normalize import normalize_kspon
from kospeech.text.sentences import load_sentences, split_sentences
from kospeech.text.templates import attach, fill, generate_sentences, load_templates, native_number, sino_number


@pytest.mark.parametrize(
    ("n", "reading"),
    [(0, "영"), (1, "일"), (10, "십"), (15, "십 오"), (250, "이백 오십"), (1000, "천"), (2024, "이천 이십 사"),
     (15000, "만 오천"), (35000, "삼만 오천"), (120000, "십이만")],
)  # fmt: skip
def test_sino_korean_readings(n: int, reading: str) -> None:
    assert sino_number(n) == reading


def test_native_korean_readings() -> None:
    readings = ["한", "두", "세", "네", "스무", "스물 한", "스물 다섯"]
    assert [native_number(n) for n in (1, 2, 3, 4, 20, 21, 25)] == readings
    assert native_number(20, attributive=False) == "스물" and native_number(1, attributive=False) == "하나"
    with pytest.raises(ValueError):
        native_number(100)


@pytest.mark.parametrize(
    ("word", "particle", "form"),
    [("사과", "을", "를"), ("책", "을", "을"), ("친구", "이", "가"), ("동생", "은", "은"), ("엄마", "와", "와"),
     ("형", "와", "과"), ("서울", "로", "로"), ("부산", "로", "으로"), ("제주도", "로", "로"), ("민수", "아", "야"),
     ("지영", "아", "아"), ("십 층", "이에요", "이에요"), ("의사", "이에요", "예요"), ("빵", "랑", "이랑")],
)  # fmt: skip
def test_particles_follow_the_last_syllable(word: str, particle: str, form: str) -> None:
    assert attach(word, particle) == form


def test_fill_resolves_slots_and_number_notation() -> None:
    slots = {"food": ("김밥",), "person": ("형",)}
    rng = random.Random(0)
    assert fill("{person:와} {food:을} 먹었어", slots, rng) == "형과 김밥을 먹었어"
    line = fill("{floor:로} 올라오세요", {}, random.Random(1))
    assert re.fullmatch(r"\((\d+)층\)/\(([가-힣 ]+) 층\)으?로 올라오세요", line), line


def test_generated_sentences_are_speakable_varied_and_deterministic() -> None:
    lines = generate_sentences(2000, seed=5)
    assert lines == generate_sentences(2000, seed=5) and lines != generate_sentences(2000, seed=6)
    spoken = [normalize_kspon(s, "phonetic") for s in lines]
    bad = [s for s, p in zip(lines, spoken) if not re.fullmatch(r"[가-힣]+(?: [가-힣]+)*", p) or "{" in s]
    assert bad == []
    for s in lines:
        s.encode("cp949")  # the KsponSpeech layout writes CP949 transcripts
    assert len(set(spoken)) > 1700
    # new words: most of the vocabulary is not in the packaged sentence list
    listed = {w for s in load_sentences() for w in normalize_kspon(s, "phonetic").split()}
    words = {w for p in spoken for w in p.split()}
    assert len(words - listed) > 600


def test_templates_name_only_known_slots() -> None:
    slots, templates = load_templates()
    assert len(templates) >= 150 and {"person", "place", "food", "thing"} <= set(slots)


def test_synthetic_training_side_mixes_listed_dialogue_generated_and_recombined() -> None:
    from kospeech.data.corpora import synthetic_plan
    from kospeech.text.sentences import DIALOGUE_SENTENCES

    sentences = load_sentences()
    plan = synthetic_plan.plan_corpus("ksponspeech", "/nonexistent", total=3000, seed=1, sentences=sentences)
    train_side, test_side = split_sentences(sentences, test_fraction=synthetic_plan.TEST_FRACTION, seed=1)
    listed = set(train_side)
    dialogue = set(load_sentences(resource=DIALOGUE_SENTENCES))
    raws = [j.raw for j in plan.jobs["train"]]
    generated = set(generate_sentences(3000, seed=1))
    listed_share = sum(r in listed for r in raws) / len(raws)
    dialogue_raws = [r for r in raws if r in dialogue]
    generated_share = sum(r not in listed and r not in dialogue and r in generated for r in raws) / len(raws)
    s = synthetic_plan
    new_shares = s.TRAIN_DIALOGUE_FRACTION + s.TRAIN_GENERATED_FRACTION + s.TRAIN_RECOMBINED_FRACTION
    assert listed_share == pytest.approx(1 - new_shares, abs=0.02)
    assert len(dialogue_raws) / len(raws) == pytest.approx(synthetic_plan.TRAIN_DIALOGUE_FRACTION, abs=0.02)
    assert len(set(dialogue_raws)) == len(dialogue_raws)  # no repeats while the pool lasts
    assert generated_share == pytest.approx(synthetic_plan.TRAIN_GENERATED_FRACTION, abs=0.02)
    test_spoken = {normalize_kspon(s, "phonetic") for s in test_side}
    assert not test_spoken & {normalize_kspon(r, "phonetic") for r in raws}
    assert {j.raw for j in plan.jobs["eval_clean"]} <= set(test_side)
    # the language-model text: every listed training sentence and the whole pool, no test sentence
    lm_text = plan.lists[synthetic_plan.LM_TEXT_FILE].splitlines()
    assert listed <= set(lm_text) and len(set(lm_text) & dialogue) > len(set(dialogue_raws))
    assert not test_spoken & {normalize_kspon(r, "phonetic") for r in lm_text}
    # the test sets do not depend on the training mix: the same utterances with no dialogue pool
    saved = synthetic_plan.TRAIN_DIALOGUE_FRACTION
    try:
        synthetic_plan.TRAIN_DIALOGUE_FRACTION = 0.0
        without = synthetic_plan.plan_corpus("ksponspeech", "/nonexistent", total=3000, seed=1, sentences=sentences)
    finally:
        synthetic_plan.TRAIN_DIALOGUE_FRACTION = saved
    for split in ("eval_clean", "eval_other"):
        assert [(j.raw, j.voice, j.noise) for j in without.jobs[split]] == [
            (j.raw, j.voice, j.noise) for j in plan.jobs[split]
        ]
