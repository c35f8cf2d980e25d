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

The work is three modules: :mod:`~kospeech.data.corpora.synthetic_plan` draws every choice
(sentences, voices, noise, paths: a :class:`~kospeech.data.corpora.synthetic_plan.Plan`),
:mod:`~kospeech.data.corpora.synthetic_render` renders the utterances in worker processes, and
this module writes the corpus (:func:`synthesize`) and registers it (``corpus: synthetic``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kospeech.audio import PCM_SAMPLE_RATE
from kospeech.data.corpora import SetReport, check_transcript_form
from kospeech.data.corpora.synthetic_plan import (
    LAYOUTS,
    TRAIN_DIALOGUE_FRACTION,
    TRAIN_GENERATED_FRACTION,
    TRAIN_MADE_UP_VOICE_FRACTION,
    TRAIN_RECOMBINED_FRACTION,
    Plan,
    check_share,
    load_text,
    made_up_variants,
    plan_corpus,
)
from kospeech.data.corpora.synthetic_render import init_worker, run_job
from kospeech.errors import ConfigError, DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)

SECONDS_PER_UTT = 2.75
MARKER = "synth.yaml"
VOICES_FILE = "voices.tsv"
MADE_UP_DIR = "made_up_voices"  # espeak-ng variant files of the made-up training voices


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



def voices_table(plan: Plan) -> str:
    """``voices.tsv``: who spoke each utterance and with what noise, so that errors can be broken
    down by voice (``recipes/mini/local/cer_by_voice.py``). The corpus layouts have no place for
    it (KsponSpeech's evaluation sets carry no speaker at all), so it sits beside ``synth.yaml``."""
    lines = ["split\tutt_id\tvariant\tspeed\tpitch\tnoise\tsnr_db\n"]
    for split, jobs in plan.jobs.items():
        for j in jobs:
            snr = f"{j.snr_db:.1f}" if j.noise else ""
            voice = f"{j.voice.variant}\t{j.voice.speed}\t{j.voice.pitch}"
            lines.append(f"{split}\t{Path(j.path).stem}\t{voice}\t{j.noise or ''}\t{snr}\n")
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

            with mp.get_context("fork").Pool(nj, initializer=init_worker) as pool:
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
