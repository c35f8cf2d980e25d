"""Planning a synthetic corpus: every choice (sentences, voices, noise, file names) drawn in the parent.

:func:`plan_corpus` turns a layout, a size, a seed and raw sentences into a :class:`Plan`: one
:class:`Job` per utterance (what to say, in which voice, with which noise) and the transcript
lists to write beside the audio. It draws all randomness, so the workers that render the jobs
(:mod:`kospeech.data.corpora.synthetic_render`) decide nothing, and the same seed gives the same
plan whatever the number of workers. :mod:`kospeech.data.corpora.synthetic` describes the corpus
(text, voices, noise, size) and writes it.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kospeech.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("ksponspeech", "zeroth")
UTTS_PER_SPEAKER = 20
TEST_FRACTION = 0.2
# Every sentence the training side may speak (the listed training sentences and the training-only
# conversational pool; none is spoken like a test sentence), in raw notation: text for a language
# model beyond the utterances that were spoken (`kospeech lm train --text ... --transcript`).
LM_TEXT_FILE = "lm_text.txt"


OTHER_VARIANTS: tuple[str, ...] = (
    "klatt4", "klatt5", "klatt6", "croak", "grandma", "grandpa", "Storm", "Tweaky",
    "robosoft6", "robosoft7", "RicishayMax3", "AnxiousAndy", "Marco", "Lee", "whisperf",
)  # fmt: skip
_EXCLUDED_VARIANTS: tuple[str, ...] = ("Demonic", "whisper")  # too far from speech to be useful anywhere
TRAIN_VARIANTS: tuple[str, ...] = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave",
    "announcer", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta",
    "linda", "marcelo", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Mr", "Nguyen", "pablo",
    "paul", "pedro", "quincy", "RicishayMax", "RicishayMax2", "rob", "robert", "robosoft", "robosoft2",
    "robosoft3", "robosoft4", "robosoft5", "robosoft8", "steph", "steph2", "steph3", "UniRobot", "zac",
    "anika", "anikaRobot", "fast", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "norbert", "sandro", "shelby", "travis", "victor",
)  # fmt: skip
FEMALE_VARIANTS = frozenset(
    "Alicia Andrea Annie aunty belinda linda steph steph2 steph3 anika anikaRobot f1 f2 f3 f4 f5 shelby "
    "grandma whisperf".split()
)
TRAIN_SPEED: tuple[int, int] = (145, 185)
TRAIN_PITCH: tuple[int, int] = (30, 70)
OTHER_SPEEDS: tuple[tuple[int, int], ...] = ((115, 135), (200, 220))
OTHER_PITCHES: tuple[tuple[int, int], ...] = ((5, 22), (78, 95))
TRAIN_NOISY_FRACTION = 0.3
# Shares of training utterances that speak, instead of a listed sentence, a conversational
# sentence of the training-only pool (kospeech.text.sentences.DIALOGUE_SENTENCES), a sentence
# generated from everyday templates with new words and numbers (kospeech.text.templates), or a
# new word sequence (head of one training sentence + tail of another,
# kospeech.text.sentences.recombine).
TRAIN_DIALOGUE_FRACTION = 0.4
TRAIN_GENERATED_FRACTION = 0.25
TRAIN_RECOMBINED_FRACTION = 0.05
# Share of training speakers whose voice is made up (kospeech.data.corpora.espeak_voices: a random
# espeak-ng variant, a share of them whispering) instead of one of TRAIN_VARIANTS: unseen voices,
# not unseen sentences, are what the robustness set fails on.
TRAIN_MADE_UP_VOICE_FRACTION = 0.4  # the default of ``made_up_voices``
MADE_UP_PREFIX = "kospeech"
TRAIN_SNR: tuple[float, float] = (10.0, 30.0)
OTHER_SNR: tuple[float, float] = (5.0, 20.0)
NOISE_TYPES: tuple[str, ...] = ("white", "pink", "babble")
SPLIT_SHARES: dict[str, dict[str, float]] = {
    "ksponspeech": {"train": 0.86, "dev": 0.04, "eval_clean": 0.05, "eval_other": 0.05},
    "zeroth": {"train": 0.9, "test": 0.1},
}
_TEST_SIDE = {"eval_clean", "eval_other", "test"}


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker's voice: espeak-ng variant, speed (words/min) and pitch (0-99)."""

    variant: str
    speed: int
    pitch: int
    definition: str | None = None  # an espeak-ng variant file's text, for a made-up voice


def _is_female(voice: Voice) -> bool:
    if voice.definition is not None:
        return "gender female" in voice.definition
    return voice.variant in FEMALE_VARIANTS


@dataclass(frozen=True)
class Job:
    """Everything needed to render one utterance; drawn in the parent so workers decide nothing."""

    path: str
    txt_path: str | None
    raw: str
    spoken: str
    voice: Voice
    noise: str | None
    snr_db: float
    babble: tuple[tuple[str, Voice], ...]
    peak: float
    pad: tuple[int, int]
    seed: int


def _uniform_int(rng: np.random.Generator, ranges: Sequence[tuple[int, int]]) -> int:
    lo, hi = ranges[int(rng.integers(len(ranges)))]
    return int(rng.integers(lo, hi + 1))


def _draw_voice(rng: np.random.Generator, split: str, variant: str) -> Voice:
    if split == "eval_other":
        return Voice(variant, _uniform_int(rng, OTHER_SPEEDS), _uniform_int(rng, OTHER_PITCHES))
    return Voice(variant, _uniform_int(rng, [TRAIN_SPEED]), _uniform_int(rng, [TRAIN_PITCH]))


def _with_made_up_voices(voices: list[Voice], seed: int, fraction: float) -> list[Voice]:
    """``voices`` with about ``fraction`` of them replaced by made-up voices
    (same speed and pitch). Drawn from their own generator, so the test splits (drawn from the
    corpus's) stay the same utterances whatever this share."""
    from kospeech.data.corpora.espeak_voices import random_variant

    rng = np.random.default_rng([seed, 1729])
    out: list[Voice] = []
    for voice in voices:
        if rng.random() < fraction:
            name = f"{MADE_UP_PREFIX}{len(out) + 1:03d}"
            voice = Voice(name, voice.speed, voice.pitch, random_variant(name, rng))
        out.append(voice)
    return out


def check_share(value: float, name: str) -> float:
    """``value`` as a float in [0, 1], or a ConfigError naming ``name``."""
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"{name} must be a share between 0 and 1, got {value}")
    return share


def _cycle(rng: np.random.Generator, pool: Sequence[Any], n: int) -> list[Any]:
    """``n`` items that cover ``pool`` evenly: concatenated random permutations."""
    out: list[Any] = []
    while len(out) < n:
        out += [pool[i] for i in rng.permutation(len(pool))]
    return out[:n]


def split_counts(layout: str, total: int) -> dict[str, int]:
    """Utterances per split for ``total`` utterances; every split gets at least one."""
    shares = SPLIT_SHARES[layout]
    if total < len(shares):
        raise ConfigError(f"a {layout} synthetic corpus needs at least {len(shares)} utterances, got {total}")
    counts = {s: max(1, int(round(total * f))) for s, f in shares.items() if s != "train"}
    counts = {"train": total - sum(counts.values()), **counts}
    if counts["train"] < 1:
        raise ConfigError(f"{total} utterances are too few for a {layout} synthetic corpus")
    return counts


@dataclass
class _Sentence:
    raw: str
    spoken: str


@dataclass
class Plan:
    """Jobs per split plus the transcript lists to write once the audio exists."""

    jobs: dict[str, list[Job]] = field(default_factory=dict)
    lists: dict[str, str] = field(default_factory=dict)  # relative path -> content (UTF-8)
    speakers: dict[str, int] = field(default_factory=dict)
    dropped_sentences: int = 0

    @property
    def all_jobs(self) -> list[Job]:
        return [j for jobs in self.jobs.values() for j in jobs]


def load_text(text_file: str | os.PathLike[str] | None) -> list[str]:
    """Raw notated sentences: the built-in set, or one per line of ``text_file`` (UTF-8 or CP949)."""
    if text_file is None:
        from kospeech.text.sentences import load_sentences

        return list(load_sentences())
    from kospeech.data.corpora import decode_transcript

    path = Path(text_file)
    if not path.exists():
        raise DataError(f"--text {path}: no such file")
    lines = [" ".join(x.split()) for x in decode_transcript(path.read_bytes(), path).splitlines()]
    sentences = [x for x in lines if x]
    if not sentences:
        raise DataError(f"--text {path}: no sentences (one per line expected)")
    return sentences


def _prepare_sentences(sentences: Sequence[str], layout: str) -> tuple[list[_Sentence], int]:
    from kospeech.text.normalize import normalize_kspon

    kept: list[_Sentence] = []
    dropped = 0
    for raw in sentences:
        spoken = normalize_kspon(raw, "phonetic")
        if not spoken.strip():
            dropped += 1
            logger.warning("synthetic: sentence %r is empty once normalised; not spoken", raw)
            continue
        if layout == "ksponspeech":
            try:
                raw.encode("cp949")
            except UnicodeEncodeError:
                dropped += 1
                logger.warning("synthetic: sentence %r cannot be written in CP949; not spoken", raw)
                continue
        kept.append(_Sentence(raw, spoken))
    return kept, dropped


def _dialogue_pool(pool: Sequence[_Sentence], test_side: Sequence[_Sentence], layout: str) -> list[_Sentence]:
    """The packaged training-only conversational sentences, less any spoken like a listed sentence
    of either side (so a test sentence is never trained on, and a listed one not twice)."""
    from kospeech.text.sentences import DIALOGUE_SENTENCES, load_sentences

    taken = {s.spoken for s in (*pool, *test_side)}
    dialogue, _ = _prepare_sentences(load_sentences(resource=DIALOGUE_SENTENCES), layout)
    return [d for d in dialogue if d.spoken not in taken]


def _with_new_sentences(
    texts: list[_Sentence],
    pool: Sequence[_Sentence],
    test_side: Sequence[_Sentence],
    dialogue: Sequence[_Sentence],
    layout: str,
    seed: int,
) -> list[_Sentence]:
    """Swap the last ``TRAIN_DIALOGUE_FRACTION + TRAIN_GENERATED_FRACTION +
    TRAIN_RECOMBINED_FRACTION`` of ``texts`` for training-only conversational, template-generated
    and recombined sentences, none spoken like a test sentence.

    ``texts`` cycles through ``pool`` first, so every listed sentence is still spoken as long as
    the kept share covers the pool. The draws have their own seeds, so the test splits (drawn
    from the corpus's generator) do not change with these shares. The conversational pool is
    spoken in a shuffled order without repeats until it runs out (``dialogue``: from
    :func:`_dialogue_pool`).
    """
    from kospeech.text.normalize import normalize_kspon
    from kospeech.text.sentences import recombine
    from kospeech.text.templates import generate_sentences

    new_share = TRAIN_DIALOGUE_FRACTION + TRAIN_GENERATED_FRACTION + TRAIN_RECOMBINED_FRACTION
    n_new = min(int(round(len(texts) * new_share)), max(0, len(texts) - len(pool)))
    if n_new == 0:
        return texts
    n_dialogue = int(round(n_new * TRAIN_DIALOGUE_FRACTION / new_share))
    n_generated = int(round(n_new * TRAIN_GENERATED_FRACTION / new_share))
    forbidden = {normalize_kspon(s.raw, "phonetic") for s in test_side}
    dialogue = list(dialogue)
    random.Random(f"dialogue:{seed}").shuffle(dialogue)
    spoken_dialogue = [dialogue[i % len(dialogue)] for i in range(n_dialogue)] if dialogue else []
    generated = [
        g for g in generate_sentences(n_generated, seed=seed) if normalize_kspon(g, "phonetic") not in forbidden
    ]
    n_recombined = n_new - len(spoken_dialogue) - n_generated
    new_raw = recombine([s.raw for s in pool], n_recombined, seed=seed, forbidden=[s.raw for s in test_side])
    new, _ = _prepare_sentences(new_raw + generated, layout)
    new = spoken_dialogue + new
    return texts[: len(texts) - len(new)] + new


def plan_corpus(
    layout: str,
    root: str | os.PathLike[str],
    *,
    total: int,
    seed: int,
    sentences: Sequence[str],
    made_up_voices: float = TRAIN_MADE_UP_VOICE_FRACTION,
) -> Plan:
    """Draw every choice (sentences, voices, noise) for ``total`` utterances under ``root``;
    ``made_up_voices`` of the training speakers get a made-up voice."""
    from kospeech.text.sentences import split_sentences

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout '{layout}'; one of {', '.join(LAYOUTS)}")
    root = Path(root)
    kept, dropped = _prepare_sentences(sentences, layout)
    train_side, test_side = split_sentences([s.raw for s in kept], test_fraction=TEST_FRACTION, seed=seed)
    if not train_side or not test_side:
        raise DataError(
            f"synthetic: {len(kept)} usable sentences split into {len(train_side)} train / {len(test_side)} test; "
            "both sides need at least one (give more sentences)"
        )
    by_raw = {s.raw: s for s in kept}
    sides = {False: [by_raw[r] for r in train_side], True: [by_raw[r] for r in test_side]}
    rng = np.random.default_rng(seed)
    plan = Plan(dropped_sentences=dropped)
    dialogue = _dialogue_pool(sides[False], sides[True], layout)  # read once: training text and LM text
    plan.lists[LM_TEXT_FILE] = "".join(f"{s.raw}\n" for s in (*sides[False], *dialogue))
    counts = split_counts(layout, total)
    speaker_no = 0
    utt_no = 0
    eval_no = 0
    for split, count in counts.items():
        pool = sides[split in _TEST_SIDE]
        texts = _cycle(rng, pool, count)
        if split == "train":
            texts = _with_new_sentences(texts, pool, sides[True], dialogue, layout, seed)
            texts = [texts[i] for i in rng.permutation(len(texts))]
        variant_pool = OTHER_VARIANTS if split == "eval_other" else TRAIN_VARIANTS
        per_speaker = UTTS_PER_SPEAKER if split not in ("eval_clean", "eval_other") else 10
        n_speakers = math.ceil(count / per_speaker)
        variants = _cycle(rng, variant_pool, n_speakers)
        voices = [_draw_voice(rng, split, v) for v in variants]
        if split == "train":
            voices = _with_made_up_voices(voices, seed, made_up_voices)
        plan.speakers[split] = n_speakers
        jobs: list[Job] = []
        list_lines: list[str] = []
        trans: dict[Path, list[str]] = {}
        for k, sentence in enumerate(texts):
            spk = k // per_speaker
            voice = voices[spk]
            if split == "eval_other":
                noise = NOISE_TYPES[int(rng.integers(len(NOISE_TYPES)))]
                snr = float(rng.uniform(*OTHER_SNR))
            elif split in ("train", "dev") and rng.random() < TRAIN_NOISY_FRACTION:
                noise = NOISE_TYPES[int(rng.integers(len(NOISE_TYPES)))]
                snr = float(rng.uniform(*TRAIN_SNR))
            else:
                noise, snr = None, 0.0
            babble: tuple[tuple[str, Voice], ...] = ()
            if noise == "babble":
                n_talkers = int(rng.integers(3, 6))
                babble = tuple(
                    (pool[int(rng.integers(len(pool)))].spoken, _draw_voice(rng, split, str(rng.choice(variant_pool))))
                    for _ in range(n_talkers)
                )
            pad = (int(rng.integers(1600, 6400)), int(rng.integers(1600, 6400)))
            peak = float(rng.uniform(0.3, 0.9))
            job_seed = int(rng.integers(2**31))
            if layout == "ksponspeech":
                if split in ("eval_clean", "eval_other"):
                    eval_no += 1
                    rel = Path("KsponSpeech_eval") / split / f"KsponSpeech_E{eval_no:05d}.pcm"
                else:
                    utt_no += 1
                    folder = speaker_no + spk + 1
                    rel = Path(f"KsponSpeech_{_part_of(folder, total):02d}") / f"KsponSpeech_{folder:04d}"
                    rel = rel / f"KsponSpeech_{utt_no:06d}.pcm"
                list_lines.append(f"{rel.as_posix()} :: {sentence.raw}\n")
                txt = str(root / rel.with_suffix(".txt"))
            else:
                reader = 100 + speaker_no + spk  # unique across splits
                script = 1 + (speaker_no + spk) // 10
                utt_id = f"{reader}_{script:03d}_{k % per_speaker + 1:04d}"
                folder_rel = Path(f"{split}_data_01") / f"{script:03d}" / str(reader)
                rel = folder_rel / f"{utt_id}.flac"
                trans.setdefault(folder_rel / f"{reader}_{script:03d}.trans.txt", []).append(
                    f"{utt_id} {sentence.spoken}\n"
                )
                txt = None
            jobs.append(
                Job(str(root / rel), txt, sentence.raw, sentence.spoken, voice, noise, snr, babble, peak, pad, job_seed)
            )
        speaker_no += n_speakers
        plan.jobs[split] = jobs
        if layout == "ksponspeech":
            plan.lists[f"KsponSpeech_scripts/{split}.trn"] = "".join(list_lines)
        else:
            for path, lines in trans.items():
                plan.lists[path.as_posix()] = "".join(lines)
    if layout == "zeroth":
        info = ["SPEAKERID|NAME|SEX|SCRIPTID|DATASET\n"]
        for split in ("train", "test"):
            seen: set[str] = set()
            for job in plan.jobs[split]:
                reader, script = Path(job.path).stem.split("_")[:2]
                if reader in seen:
                    continue
                seen.add(reader)
                sex = "f" if _is_female(job.voice) else "m"
                info.append(f"{reader}|espeak-{job.voice.variant}|{sex}|{script}|{split}\n")
        plan.lists["AUDIO_INFO"] = "".join(info)
    return plan


def _part_of(folder: int, total: int) -> int:
    """Which of KsponSpeech_01..05 a speaker folder goes in (folders spread evenly over the five)."""
    n_folders = max(1, math.ceil(total / UTTS_PER_SPEAKER))
    return min(5, 1 + (folder - 1) * 5 // n_folders)


def made_up_variants(plan: Plan) -> dict[str, str]:
    """Variant name -> espeak-ng variant text of every made-up voice the plan speaks with
    (babble talkers included)."""
    voices = [j.voice for j in plan.all_jobs] + [v for j in plan.all_jobs for _, v in j.babble]
    return {v.variant: v.definition for v in voices if v.definition is not None}

