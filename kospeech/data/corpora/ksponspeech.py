"""KsponSpeech (AI Hub, 969 h of spontaneous Korean) as released, into data dirs ``train dev eval_clean eval_other``.

Release layout under ``--root``::

    KsponSpeech_01 .. KsponSpeech_05/KsponSpeech_NNNN/KsponSpeech_NNNNNN.pcm  (+ .txt beside each)
    KsponSpeech_eval/{eval_clean,eval_other}/KsponSpeech_ENNNNN.pcm            (+ .txt)
    KsponSpeech_scripts/{train,dev,eval_clean,eval_other}.trn   (or scripts/, ESPnet's place)

Some copies put the five training folders under ``KsponSpeech_train/``; both are accepted.
The lists are looked for in ``KsponSpeech_scripts/``, then ``scripts/``; the log says which
folder and which lists were found.
A ``.trn`` line is ``relative/path.pcm :: transcript`` with the path relative to the root
(``KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm``,
``KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm``).

When ``KsponSpeech_scripts/`` exists its lists define the splits and give the transcripts (the
official dev set is drawn from the training folders). Without it the folders are walked and
each ``.txt`` read; dev is then the last speaker folders, at least ``dev_fraction`` of the
training utterances (whole speakers, so dev speakers are unseen in training). The release's
eval folders hold no ``.txt``: their transcripts are only in ``eval_clean.trn`` /
``eval_other.trn``, and prep stops with a DataError that names the missing list.

Transcripts (``.txt`` and ``.trn``) are CP949 in the release and UTF-8 in many re-packed
copies: each file is tried as UTF-8 strictly, then CP949; one that is neither is a DataError
naming it. Text goes through the chosen normalisation (``standard``:
:func:`kospeech.text.normalize.normalize_kspon`; ``kospeech``: the original KoSpeech's rules)
in the chosen form (``phonetic`` or ``spelling``); ``meta.yaml`` records both.

Skipped, counted, logged and listed in ``<out>/<set>/skipped.txt`` with the reason: a
malformed ``.trn`` line, a ``.trn`` entry whose audio is missing, an empty or truncated (odd
byte count) ``.pcm``, a missing ``.txt`` (walk mode), a transcript that is empty after
normalisation (only noise tags, say), a ``.txt`` in neither UTF-8 nor CP949. A ``.trn`` list that
mixes the two encodings, or has a line in neither, fails its split with the line named; the
other splits are still prepared.

``wav.scp`` (``wav_scp="pipe"``, the default) reads each ``.pcm`` as a WAV through
``cat SPLIT/pcm_header.wav x.pcm |``: a 44-byte "streamed" WAV header (sizes 0xFFFFFFFF, which
Kaldi's wave reader reads to the end of the stream and libsndfile to the end of the data)
written once per split, so Kaldi, ESPnet and lhotse (``lhotse kaldi import``) open the dirs with
nothing but ``cat``, no audio is converted or copied, and ``reco2dur`` (= ``utt2dur``) spares them
running the pipe for durations. This toolkit reads that pipe without a process
(:mod:`kospeech.data.kaldi_io`). ``wav_scp="pcm"`` lists the bare ``.pcm`` paths (readable here only).

Speakers: the ``KsponSpeech_NNNN`` folder of a training utterance (the release groups one
session's files per folder, and utterance ids sort with it). The eval sets carry no speaker
information, so each eval utterance is its own speaker (per-utterance CMVN, if anyone asks).
Durations come from the file size (2 bytes a sample, 16 kHz), so nothing is decoded.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kospeech.audio import PCM_SAMPLE_RATE, audio_duration, is_pcm
from kospeech.data.corpora import (
    SetReport,
    Skip,
    Utterance,
    check_root_path,
    check_transcript_form,
    decode_transcript,
    parallel_map,
    read_transcript,
    write_split,
)
from kospeech.errors import ConfigError, DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "eval_clean", "eval_other")
EVAL_SPLITS: tuple[str, ...] = ("eval_clean", "eval_other")
SCRIPTS_DIR = "KsponSpeech_scripts"
SCRIPTS_DIRS: tuple[str, ...] = (SCRIPTS_DIR, "scripts")  # the release's name, then ESPnet's
EVAL_DIR = "KsponSpeech_eval"
TRAIN_PARTS: tuple[str, ...] = tuple(f"KsponSpeech_{i:02d}" for i in range(1, 6))
TRN_SEPARATOR = "::"
_TRAIN_PARENT_ALIASES: tuple[str, ...] = ("", "KsponSpeech_train")
_SPEAKER_DIR = re.compile(r"^KsponSpeech_\d{4}$")
WAV_SCP_FORMS: tuple[str, ...] = ("pipe", "pcm")
PCM_HEADER = "pcm_header.wav"
"""The streamed WAV header each split's wav.scp pipes put before a ``.pcm`` (see the module docstring)."""


@dataclass(frozen=True)
class _Item:
    """One utterance to check: audio path, transcript (None: read the .txt beside the audio)."""

    utt_id: str
    path: str
    raw: str | None
    speaker: str
    form: str
    normalization: str = "standard"


def _process(item: _Item) -> Utterance | Skip:
    """Check one utterance's audio and transcript (runs in worker processes with --nj)."""
    from kospeech.text.normalize import normalize

    path = Path(item.path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Skip(item.utt_id, "audio file missing", item.path)
    if size == 0:
        return Skip(item.utt_id, "empty audio file", item.path)
    if is_pcm(path):
        if size % 2:
            return Skip(item.utt_id, "truncated pcm (odd byte count)", f"{item.path} ({size} bytes)")
        duration = size / (2 * PCM_SAMPLE_RATE)
    else:
        try:
            duration = audio_duration(path)
        except DataError as err:
            return Skip(item.utt_id, "unreadable audio", str(err))
    raw = item.raw
    if raw is None:
        txt = path.with_suffix(".txt")
        if not txt.exists():
            return Skip(item.utt_id, "transcript file missing", str(txt))
        try:
            raw = read_transcript(txt)
        except DataError as err:  # one unreadable transcript costs its utterance, not the split
            return Skip(item.utt_id, "transcript neither UTF-8 nor CP949", str(err))
    text = normalize(raw, item.form, item.normalization, utt_id=item.utt_id)
    if not text.strip():
        return Skip(item.utt_id, "empty transcript after normalisation", raw)
    return Utterance(item.utt_id, str(path), text, item.speaker, duration)


def read_trn(path: str | os.PathLike[str]) -> tuple[list[tuple[int, str, str]], list[Skip]]:
    """``(line number, relative path, raw transcript)`` per well-formed line, and a Skip per malformed one."""
    path = Path(path)
    text = decode_transcript(path.read_bytes(), path)
    entries: list[tuple[int, str, str]] = []
    bad: list[Skip] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rel, sep, raw = line.partition(TRN_SEPARATOR)
        rel = rel.strip()
        if not sep or not rel or any(c.isspace() for c in rel):
            bad.append(Skip(f"{path.name}:{n}", "malformed .trn line (expected 'path.pcm :: transcript')", line[:80]))
            continue
        entries.append((n, rel, raw.strip()))
    return entries, bad


def _speaker_of(rel: Path, split: str, utt_id: str) -> str:
    if split in EVAL_SPLITS:
        return utt_id
    parent = rel.parent.name
    return parent if _SPEAKER_DIR.match(parent) else utt_id


@register("corpus", "ksponspeech")
class KsponSpeech:
    """KsponSpeech as released (pcm + CP949/UTF-8 transcripts + .trn lists) -> train, dev, eval_clean, eval_other.

    Args:
        transcript: ``phonetic`` (how it was said: ``칠 십 퍼센트``) or ``spelling`` (how it is
            written: ``70%``); the side of each ``(spelling)/(phonetic)`` pair that is kept.
        nj: worker processes for checking files and normalising text.
        dev_fraction: share of training utterances held out as dev (whole speaker folders)
            when there is no ``KsponSpeech_scripts/dev.trn`` to define it.
        normalization: ``standard`` (this toolkit's rules) or ``kospeech`` (the original
            KoSpeech's preprocessing, to compare with its published numbers).
        wav_scp: ``pipe`` (``cat pcm_header.wav x.pcm |``: readable by Kaldi, ESPnet and lhotse)
            or ``pcm`` (the bare ``.pcm`` paths, which only this toolkit reads).
    """

    name = "ksponspeech"
    splits = SPLITS

    def __init__(
        self, *, transcript: str = "phonetic", nj: int = 1, dev_fraction: float = 0.005,
        normalization: str = "standard", wav_scp: str = "pipe",
    ) -> None:
        from kospeech.text.normalize import NORMALIZATIONS

        if normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization '{normalization}' is not one of {', '.join(NORMALIZATIONS)}")
        if wav_scp not in WAV_SCP_FORMS:
            raise ConfigError(f"wav_scp '{wav_scp}' is not one of {', '.join(WAV_SCP_FORMS)}")
        self.wav_scp = wav_scp
        self.normalization = normalization
        self.transcript = check_transcript_form(transcript)
        self.nj = max(1, int(nj))
        self.dev_fraction = float(dev_fraction)

    # -- listing ------------------------------------------------------------------------------

    def _resolve(self, root: Path, rel: str) -> Path | None:
        for parent in _TRAIN_PARENT_ALIASES:
            candidate = root / parent / rel
            if candidate.exists():
                return candidate
        return None

    def _items_from_trn(self, root: Path, split: str, trn: Path) -> tuple[list[_Item], list[Skip]]:
        entries, skipped = read_trn(trn)
        items: list[_Item] = []
        for n, rel, raw in entries:
            rel_path = Path(rel)
            utt_id = rel_path.stem
            path = self._resolve(root, rel)
            if path is None:
                skipped.append(Skip(utt_id, "audio file missing", f"{trn.name}:{n}: {rel}"))
                continue
            items.append(_Item(utt_id, str(path), raw, _speaker_of(rel_path, split, utt_id), self.transcript,
                               self.normalization))
        return items, skipped

    def _walk_train(self, root: Path) -> list[Path]:
        speaker_dirs: list[Path] = []
        for parent in _TRAIN_PARENT_ALIASES:
            for part in TRAIN_PARTS:
                folder = root / parent / part
                if folder.is_dir():
                    speaker_dirs += sorted(d for d in folder.iterdir() if d.is_dir())
        return speaker_dirs

    def _items_from_walk(self, root: Path) -> dict[str, list[_Item]]:
        """Folder walk when there are no .trn lists: train/dev by speaker folder, eval by folder."""
        speaker_dirs = self._walk_train(root)
        per_speaker = [
            [_Item(p.stem, str(p), None, d.name, self.transcript, self.normalization) for p in sorted(d.glob("*.pcm"))]
            for d in speaker_dirs
        ]
        total = sum(len(x) for x in per_speaker)
        n_dev_spk, n_dev = 0, 0
        while len(per_speaker) - n_dev_spk > 1 and n_dev < self.dev_fraction * total:
            n_dev_spk += 1
            n_dev += len(per_speaker[-n_dev_spk])
        cut = len(per_speaker) - n_dev_spk
        out = {
            "train": [i for x in per_speaker[:cut] for i in x],
            "dev": [i for x in per_speaker[cut:] for i in x],
        }
        for split in EVAL_SPLITS:
            folder = root / EVAL_DIR / split
            pcms = sorted(folder.glob("*.pcm")) if folder.is_dir() else []
            if pcms and not any(folder.glob("*.txt")):
                raise DataError(
                    f"ksponspeech: {folder} has {len(pcms)} .pcm files and no .txt transcripts; the release "
                    f"gives them only in {split}.trn: put {split}.trn into {root / SCRIPTS_DIR} (or "
                    f"{root / 'scripts'}) with the other lists"
                )
            out[split] = [_Item(p.stem, str(p), None, p.stem, self.transcript, self.normalization) for p in pcms]
        return out

    # -- preparing ----------------------------------------------------------------------------

    @staticmethod
    def _as_pipes(directory: Path, utterances: list[Utterance]) -> list[Utterance]:
        """Each ``.pcm`` path as ``cat DIR/pcm_header.wav x.pcm |``, the header written once into DIR."""
        from dataclasses import replace

        from kospeech.data.kaldi_io import pcm_pipe, streamed_wav_header
        from kospeech.files import write_atomic

        header = (directory / PCM_HEADER).resolve()
        write_atomic(header, streamed_wav_header(PCM_SAMPLE_RATE))
        return [replace(u, path=pcm_pipe(header, u.path)) if is_pcm(u.path) else u for u in utterances]

    def prepare(self, root: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, SetReport]:
        """Write ``out/{train,dev,eval_clean,eval_other}``; a split with no source is left out (logged)."""
        root = check_root_path(root)
        out = Path(out)
        scripts = next((root / d for d in SCRIPTS_DIRS if (root / d).is_dir()), None)
        plan: dict[str, tuple[list[_Item], list[Skip]]] = {}
        failed: dict[str, DataError] = {}  # splits whose list cannot be read; the others go on
        if scripts is not None:
            found = [s for s in SPLITS if (scripts / f"{s}.trn").exists()]
            missing = [f"{s}.trn" for s in SPLITS if s not in found]
            logger.info("ksponspeech: lists found in %s: %s%s", scripts, ", ".join(f"{s}.trn" for s in found) or "none",
                        f" (missing: {', '.join(missing)})" if missing else "")
            for split in SPLITS:
                trn = scripts / f"{split}.trn"
                if split not in found:
                    logger.warning("ksponspeech: %s is missing; split '%s' is not prepared", trn, split)
                    continue
                try:
                    plan[split] = self._items_from_trn(root, split, trn)
                except DataError as err:
                    logger.error("ksponspeech: split '%s' is not prepared: %s", split, err)
                    failed[split] = err
        else:
            logger.info("ksponspeech: no %s folder; walking the audio folders and reading each .txt",
                        " or ".join(str(root / d) for d in SCRIPTS_DIRS))
            for split, items in self._items_from_walk(root).items():
                if items:
                    plan[split] = (items, [])
                else:
                    logger.warning("ksponspeech: no audio found for split '%s' under %s", split, root)
        if not plan and not failed:
            raise DataError(
                f"ksponspeech: nothing to prepare under {root}: expected {SCRIPTS_DIR}/*.trn (or scripts/*.trn) or the "
                f"{TRAIN_PARTS[0]}..05 and {EVAL_DIR} folders"
            )
        reports: dict[str, SetReport] = {}
        for split, (items, skipped) in plan.items():
            utterances: list[Utterance] = []
            skipped = list(skipped)
            for result in parallel_map(_process, items, nj=self.nj, chunksize=256):
                if isinstance(result, Skip):
                    skipped.append(result)
                else:
                    utterances.append(result)
            if self.wav_scp == "pipe" and utterances:
                utterances = self._as_pipes(out / split, utterances)
            reports[split] = write_split(
                out / split, utterances, skipped, name=split, corpus=self.name, transcript=self.transcript,
                normalization=self.normalization,
            )
        if failed:
            done = f"; prepared {', '.join(reports)}" if reports else ""
            raise DataError(
                "ksponspeech: " + "; ".join(f"split '{k}' not prepared: {v}" for k, v in failed.items()) + done
            )
        return reports
