"""A synthetic Korean corpus spoken by espeak-ng, written in KsponSpeech's or Zeroth's real layout.

Why: the mini recipe, the tests and CI need speech that exercises the whole real path (pcm
reading, CP949 transcripts, ``.trn`` lists, dual notation, FLAC, noise) on any machine in
minutes, with no licence to sign. ``kospeech data synth`` writes the corpus; ``kospeech data
prep --corpus ksponspeech|zeroth`` then reads it exactly as it would read the real one.

Text
    Raw notated sentences (``(70%)/(칠 십 퍼센트)``, fillers ``아/``, noise tags ``b/``) from
    :func:`kospeech.text.sentences.load_sentences`, or one per line from ``--text FILE``.
    :func:`~kospeech.text.sentences.split_sentences` splits them; train and dev speak the
    train side, eval_clean/eval_other (KsponSpeech) and test (Zeroth) speak the test side, so
    no evaluation sentence is ever trained on. The audio speaks the *phonetic* form
    (:func:`~kospeech.text.normalize.normalize_kspon`); KsponSpeech ``.txt``/``.trn`` files carry
    the raw notation (each ``.txt`` in CP949 as in the AI Hub release, the ``.trn`` lists in
    UTF-8 as the scripts package is usually read), Zeroth ``.trans.txt`` the clean spoken
    text. Sentences that normalise to nothing (only tags) are never spoken (counted, logged).
    Most training utterances speak new sentences instead of listed ones: conversational
    sentences that only training speaks (:data:`TRAIN_DIALOGUE_FRACTION`,
    ``kospeech/resources/dialogue_ko.txt``), everyday sentences generated from templates
    (:data:`TRAIN_GENERATED_FRACTION`, :mod:`kospeech.text.templates`) and word sequences
    recombined from the training sentences (:data:`TRAIN_RECOMBINED_FRACTION`), so the model
    hears thousands of words, not a few hundred sentences; none is spoken like a test sentence.

Voices (a synthetic speaker = espeak-ng ``ko+VARIANT`` with one speed and one pitch)
    * train/dev: variants from :data:`TRAIN_VARIANTS` (about 80 of espeak-ng's ~100), speed
      :data:`TRAIN_SPEED` words/min, pitch :data:`TRAIN_PITCH`; :data:`UTTS_PER_SPEAKER`
      utterances per speaker; dev speakers are distinct speakers drawn the same way.
    * ``made_up_voices`` (default :data:`TRAIN_MADE_UP_VOICE_FRACTION`) of the training
      speakers speak with a made-up variant instead (same speed and pitch ranges;
      :mod:`~kospeech.data.corpora.espeak_voices`: random formants, voicing, breath, tone, echo;
      some whisper), so the model hears more voices than espeak-ng ships. Their variant files
      are kept in ``made_up_voices/``.
    * eval_clean (and Zeroth test): new speakers drawn like the training ones, no noise.
    * eval_other: the robustness set. Variants from :data:`OTHER_VARIANTS` (never used in
      training), speeds from :data:`OTHER_SPEEDS` and pitches from :data:`OTHER_PITCHES` (outside
      the training ranges), and always noise.

Noise
    White, pink (1/f) or babble (three to five other sentences spoken by other voices,
    summed), added at a uniformly drawn SNR: to :data:`TRAIN_NOISY_FRACTION` of train/dev
    utterances at :data:`TRAIN_SNR` dB, to every eval_other utterance at :data:`OTHER_SNR` dB.
    Every utterance also gets 0.1-0.4 s of leading/trailing silence and a random peak level
    (0.3-0.9), so level and endpoints are not constant.

Size and determinism
    ``hours`` sets the number of utterances at :data:`SECONDS_PER_UTT` seconds each (the
    measured mean of the built-in sentences with padding: 2.74 s; the actual hours are logged
    and kept in ``synth.yaml``); ``max_utts`` caps it (tests). Speed, measured on 2 busy
    cores (load 7) with ``nj=2``: about 13 utterances (35 s of audio) per second, so one hour
    takes about 100 s; espeak-ng and the sinc resampling share the time about equally.
    Every random choice is drawn in the parent from ``seed`` before any work starts, and
    each utterance's noise from its own seed, so the output (file names and bytes) is the
    same for a seed whatever ``nj`` is. Work is parallel over utterances.
    The corpus is written into ``OUT.tmp`` and renamed when complete, with ``synth.yaml``
    recording the parameters; running again with the same parameters skips the work.
"""

from __future__ import annotations

import io
import logging
import math
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kospeech.audio import PCM_SAMPLE_RATE, resample_wave, write_audio
from kospeech.data.corpora import SetReport, check_transcript_form
from kospeech.errors import ConfigError, DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = ("ksponspeech", "zeroth")
SECONDS_PER_UTT = 2.75
UTTS_PER_SPEAKER = 20
TEST_FRACTION = 0.2
MARKER = "synth.yaml"
VOICES_FILE = "voices.tsv"
MADE_UP_DIR = "made_up_voices"  # espeak-ng variant files of the made-up training voices
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


# ---------------------------------------------------------------------------------------------
# rendering (runs in worker processes)


def espeak(text: str, voice: Voice, *, sample_rate: int = PCM_SAMPLE_RATE) -> np.ndarray:
    """``text`` spoken by espeak-ng (text via stdin, so nothing in it is taken for an option), float32."""
    import soundfile as sf

    cmd = ["espeak-ng", "-v", f"ko+{voice.variant}", "-s", str(voice.speed), "-p", str(voice.pitch), "--stdout"]
    if voice.definition is not None:
        from kospeech.data.corpora.espeak_voices import data_path_with

        cmd[1:1] = [f"--path={data_path_with(voice.variant, voice.definition)}"]
    try:
        proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True)
    except FileNotFoundError:
        raise DataError("espeak-ng is not installed; install it (apt-get install espeak-ng) to synthesise") from None
    except subprocess.CalledProcessError as err:
        stderr = err.stderr.decode(errors="replace")
        raise DataError(f"espeak-ng failed for voice {voice} on {text!r}: {stderr}") from None
    wave, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    if wave.ndim > 1:
        wave = wave.mean(axis=1)
    return resample_wave(wave, rate, sample_rate)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain (power falls 3 dB per octave)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / np.sqrt(freqs), n=n)


def make_noise(kind: str, n: int, rng: np.random.Generator, babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``n`` samples of ``white``, ``pink`` or ``babble`` (the given waves, tiled and summed) noise."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return pink_noise(n, rng)
    if kind == "babble":
        if not babble:
            raise ValueError("babble noise needs at least one wave")
        out = np.zeros(n)
        for wave in babble:
            start = int(rng.integers(0, max(1, len(wave))))
            tiled = np.resize(np.roll(wave, -start), n)  # np.resize repeats the wave to length n
            out += tiled / (np.sqrt(np.mean(tiled**2)) + 1e-8)
        return out
    raise ValueError(f"unknown noise type {kind!r}; one of {', '.join(NOISE_TYPES)}")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + noise`` with the noise scaled so that speech power / noise power = ``snr_db``."""
    p_speech = float(np.mean(speech.astype(np.float64) ** 2))
    p_noise = float(np.mean(noise**2)) + 1e-12
    scale = math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return speech + scale * noise


def render(job: Job) -> np.ndarray:
    """The finished 16 kHz wave of one job (speech, padding, noise, level)."""
    rng = np.random.default_rng(job.seed)
    speech = espeak(job.spoken, job.voice).astype(np.float64)
    speech = np.concatenate([np.zeros(job.pad[0]), speech, np.zeros(job.pad[1])])
    if job.noise is not None:
        babble = [espeak(text, voice) for text, voice in job.babble] if job.noise == "babble" else []
        speech = mix_at_snr(speech, make_noise(job.noise, len(speech), rng, babble), job.snr_db)
    peak = float(np.max(np.abs(speech))) or 1.0
    return (speech * (job.peak / peak)).astype(np.float32)


def run_job(job: Job) -> tuple[str, int]:
    """Render and write one utterance (audio plus, for KsponSpeech, its CP949 ``.txt``)."""
    wave = render(job)
    write_audio(job.path, wave, PCM_SAMPLE_RATE)
    if job.txt_path is not None:
        Path(job.txt_path).write_bytes((job.raw + "\n").encode("cp949"))
    return job.path, int(wave.shape[0])


def _init_worker() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


# ---------------------------------------------------------------------------------------------
# planning (parent process, all randomness)


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


# ---------------------------------------------------------------------------------------------
# the whole corpus


@dataclass
class SynthReport:
    root: Path
    layout: str
    num_utts: int
    seconds: float
    wall_seconds: float
    skipped_work: bool = False
    per_split: dict[str, int] = field(default_factory=dict)

    @property
    def utts_per_second(self) -> float:
        return self.num_utts / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def made_up_variants(plan: Plan) -> dict[str, str]:
    """Variant name -> espeak-ng variant text of every made-up voice the plan speaks with
    (babble talkers included)."""
    voices = [j.voice for j in plan.all_jobs] + [v for j in plan.all_jobs for _, v in j.babble]
    return {v.variant: v.definition for v in voices if v.definition is not None}


def voices_table(plan: Plan) -> str:
    """``voices.tsv``: who spoke each utterance and with what noise, so that errors can be broken
    down by voice (``recipes/mini/local/cer_by_voice.py``). The corpus layouts have no place for
    it (KsponSpeech's evaluation sets carry no speaker at all), so it sits beside ``synth.yaml``."""
    lines = ["split\tutt_id\tvariant\tspeed\tpitch\tnoise\tsnr_db\n"]
    for split, jobs in plan.jobs.items():
        for j in jobs:
            snr = f"{j.snr_db:.1f}" if j.noise else ""
            lines.append(
                f"{split}\t{Path(j.path).stem}\t{j.voice.variant}\t{j.voice.speed}\t{j.voice.pitch}\t{j.noise or ''}\t{snr}\n"
            )
    return "".join(lines)


def synthesize(
    layout: str,
    out: str | os.PathLike[str],
    *,
    hours: float = 1.0,
    seed: int = 1,
    text_file: str | os.PathLike[str] | None = None,
    nj: int = 1,
    max_utts: int | None = None,
    progress: Callable[[int], None] | None = None,
    made_up_voices: float = TRAIN_MADE_UP_VOICE_FRACTION,
) -> SynthReport:
    """Write a synthetic corpus in ``layout`` at ``out`` (see the module docstring); skip if already done.

    ``progress(n)`` is called in this process as utterances finish (the CLI passes a tqdm bar's
    ``update``); the library itself only logs.
    """
    import time

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout '{layout}'; one of {', '.join(LAYOUTS)}")
    if shutil.which("espeak-ng") is None:
        raise DataError("espeak-ng is not installed; install it (apt-get install espeak-ng) to synthesise")
    out = Path(out)
    total = int(round(hours * 3600 / SECONDS_PER_UTT))
    if max_utts is not None:
        total = min(total, int(max_utts)) if hours > 0 else int(max_utts)
    made_up_voices = check_share(made_up_voices, "made_up_voices")
    params = {
        "layout": layout,
        "utterances": total,
        "seed": int(seed),
        "text": str(text_file) if text_file else None,
        "made_up_voices": made_up_voices,
    }
    marker = out / MARKER
    if marker.exists():
        done = yaml.safe_load(marker.read_text(encoding="utf-8")) or {}
        done.setdefault("made_up_voices", 0.0)  # corpora made before there were made-up voices had none
        differ = [f"{k}: {done.get(k)!r} there, {v!r} asked" for k, v in params.items() if done.get(k) != v]
        if not differ:
            logger.info("synthetic: %s is complete (%s); nothing to do", out, marker)
            return SynthReport(out, layout, total, float(done.get("seconds", 0.0)), 0.0, skipped_work=True)
        raise DataError(
            f"{out} holds a synthetic corpus made with other parameters ({'; '.join(differ)}); "
            "remove it or choose another --out"
        )
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not a finished synthetic corpus (no {MARKER}); remove it first")
    start = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    plan = plan_corpus(
        layout, tmp, total=total, seed=seed, sentences=load_text(text_file), made_up_voices=made_up_voices
    )
    jobs = plan.all_jobs
    for d in sorted({str(Path(j.path).parent) for j in jobs}):
        Path(d).mkdir(parents=True, exist_ok=True)
    made_up = made_up_variants(plan)
    from kospeech.data.corpora import espeak_voices

    n_samples = 0
    try:
        espeak_voices.prepare(made_up)  # before the fork: the workers share one folder
        if nj > 1 and len(jobs) > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(nj, initializer=_init_worker) as pool:
                for _, n in pool.imap_unordered(run_job, jobs, chunksize=4):
                    n_samples += n
                    if progress:
                        progress(1)
        else:
            for job in jobs:
                n_samples += run_job(job)[1]
                if progress:
                    progress(1)
    finally:
        espeak_voices.cleanup()
    for name, definition in made_up.items():  # the variant files, to listen to or reuse
        (tmp / MADE_UP_DIR).mkdir(exist_ok=True)
        (tmp / MADE_UP_DIR / name).write_text(definition, encoding="utf-8")
    for rel, content in plan.lists.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    seconds = n_samples / PCM_SAMPLE_RATE
    wall = time.perf_counter() - start
    summary = {
        **params,
        "hours": round(seconds / 3600, 4),
        "seconds": round(seconds, 3),
        "splits": {s: len(j) for s, j in plan.jobs.items()},
        "speakers": plan.speakers,
        "dropped_sentences": plan.dropped_sentences,
        "dialogue_train_fraction": TRAIN_DIALOGUE_FRACTION,
        "generated_train_fraction": TRAIN_GENERATED_FRACTION,
        "recombined_train_fraction": TRAIN_RECOMBINED_FRACTION,
        "made_up_voice_files": {"count": len(made_up), "folder": MADE_UP_DIR},
        "voices": {s: sorted({j.voice.variant for j in jobs}) for s, jobs in plan.jobs.items()},
    }
    (tmp / VOICES_FILE).write_text(voices_table(plan), encoding="utf-8")
    (tmp / MARKER).write_text(yaml.safe_dump(summary, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(tmp, out)
    report = SynthReport(out, layout, len(jobs), seconds, wall, per_split={s: len(j) for s, j in plan.jobs.items()})
    logger.info(
        "synthetic %s: %d utterances, %.2f h of audio in %.1f s (%.1f utt/s, nj=%d) -> %s",
        layout,
        report.num_utts,
        seconds / 3600,
        wall,
        report.utts_per_second,
        nj,
        out,
    )
    return report


@register("corpus", "synthetic")
class SyntheticCorpus:
    """An espeak-ng Korean corpus, synthesised into ``root`` (if not there yet) and prepared like the real one.

    Args:
        layout: ``ksponspeech`` (pcm, CP949 .txt, .trn lists; splits train, dev, eval_clean,
            eval_other) or ``zeroth`` (flac, .trans.txt; splits train, test).
        hours: audio to synthesise (the built-in sentences average 2.75 s per utterance).
        seed: every choice (text, voices, noise) follows from it; same seed, same bytes.
        max_utts: cap on the number of utterances (small corpora for tests).
        text: a file of raw notated sentences, one per line, instead of the built-in set.
        transcript: ``phonetic`` or ``spelling`` form for the prepared text (KsponSpeech layout).
        nj: worker processes for synthesis and preparation.
        made_up_voices: share of the training speakers given a made-up voice.
    """

    name = "synthetic"

    def __init__(
        self,
        *,
        layout: str = "ksponspeech",
        hours: float = 1.0,
        seed: int = 1,
        max_utts: int | None = None,
        text: str | None = None,
        transcript: str = "phonetic",
        nj: int = 1,
        made_up_voices: float = TRAIN_MADE_UP_VOICE_FRACTION,
    ) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"unknown synthetic layout '{layout}'; one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self.hours = float(hours)
        self.seed = int(seed)
        self.max_utts = max_utts
        self.text = text
        self.transcript = check_transcript_form(transcript)
        self.nj = max(1, int(nj))
        self.made_up_voices = check_share(made_up_voices, "made_up_voices")

    def synthesize(self, root: str | os.PathLike[str], progress: Callable[[int], None] | None = None) -> SynthReport:
        return synthesize(
            self.layout,
            root,
            hours=self.hours,
            seed=self.seed,
            text_file=self.text,
            nj=self.nj,
            max_utts=self.max_utts,
            progress=progress,
            made_up_voices=self.made_up_voices,
        )

    def prepare(self, root: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, SetReport]:
        """Synthesise into ``root`` unless it is already complete, then prepare data dirs under ``out``."""
        self.synthesize(root)
        if self.layout == "ksponspeech":
            from kospeech.data.corpora.ksponspeech import KsponSpeech

            return KsponSpeech(transcript=self.transcript, nj=self.nj).prepare(root, out)
        from kospeech.data.corpora.zeroth import Zeroth

        return Zeroth(nj=self.nj).prepare(root, out)
