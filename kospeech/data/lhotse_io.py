"""lhotse manifests in and out: icefall's corpora here, and ours there (``kospeech data to-lhotse/from-lhotse``).

Out (:func:`data_dir_to_lhotse`): a data dir -> ``recordings.jsonl.gz`` + ``supervisions.jsonl.gz``.
A recording is a wav.scp entry: a file soundfile reads is a ``file`` source, a wav.scp pipe a
``command`` source (lhotse runs it), a bare KsponSpeech ``.pcm`` a ``cat pcm_header.wav x.pcm``
command whose header is written beside the manifests. A supervision is an utterance: its
segment (or its whole recording), text and speaker. Durations come from the dir
(:func:`kospeech.data.kaldi_io.known_durations`) and are measured only where it has none.

In (:func:`lhotse_to_data_dir`): recordings + supervisions, or a CutSet, -> a data dir. A
supervision (or a cut) is an utterance; ``segments`` is written unless every utterance is a
whole recording of its own. ``file`` sources become paths, ``command`` sources pipes; sources
this toolkit cannot open from a wav.scp line (``url``, ``memory``, ``shar``), recordings with
audio transforms other than resampling (speed, volume, reverb: they would change the audio
silently), and supervisions without text are left out, each counted, logged and listed in
``skipped.txt`` with its reason, as the corpus preparers do.

lhotse is an optional dependency (``pip install kospeech[lhotse]``), imported only here.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kospeech.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RECORDINGS = "recordings.jsonl.gz"
SUPERVISIONS = "supervisions.jsonl.gz"
LANGUAGE = "Korean"


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError:
        raise ConfigError("lhotse is not installed; `pip install kospeech[lhotse]` (or `pip install lhotse`)") from None
    return lhotse


@dataclass
class ConversionReport:
    """What a conversion wrote and what it left out (reason -> count, and the ids with reasons)."""

    out: Path
    recordings: int = 0
    utterances: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_ids: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, key: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        self.skipped_ids.append((key, reason + (f": {detail}" if detail else "")))
        if len(self.skipped_ids) <= 20:
            logger.warning("%s: left out %s: %s%s", self.out, key, reason, f" ({detail})" if detail else "")

    def summary(self) -> str:
        reasons = ", ".join(f"{r}: {c}" for r, c in sorted(self.skipped.items())) or "none"
        left_out = sum(self.skipped.values())
        return (f"{self.out}: {self.recordings} recordings, {self.utterances} utterances; "
                f"left out {left_out} ({reasons})")


# ---------------------------------------------------------------------------------------------
# data dir -> lhotse


def _recording(lhotse: Any, reco: str, value: str, duration: float | None, sample_rate: int, header: Path) -> Any:
    """One wav.scp entry as a lhotse Recording (DataError when its audio cannot be described)."""
    from kospeech.audio import PCM_SAMPLE_RATE, audio_duration, check_wav_complete, is_pcm
    from kospeech.data.kaldi_io import is_pipe, pcm_pipe, pipe_command, pipe_wave, streamed_wav_header

    AudioSource, Recording = lhotse.AudioSource, lhotse.Recording
    if is_pipe(value):
        command = pipe_command(value)
        rate = sample_rate
        if duration is None:  # the dir states none: run the pipe once to learn both
            wave, rate = pipe_wave(value, f"wav.scp '{reco}'")
            duration = len(wave) / rate
        source = AudioSource(type="command", channels=[0], source=command)
    elif is_pcm(value):
        if not header.exists():
            from kospeech.files import write_atomic

            write_atomic(header, streamed_wav_header(PCM_SAMPLE_RATE))
        duration = audio_duration(value)  # from the size: also checks the file is there and whole
        rate = PCM_SAMPLE_RATE
        source = AudioSource(type="command", channels=[0], source=pipe_command(pcm_pipe(header, Path(value).resolve())))
    else:
        import soundfile as sf

        check_wav_complete(value)
        duration = audio_duration(value)
        info = sf.info(value)
        rate = int(info.samplerate)
        source = AudioSource(type="file", channels=list(range(info.channels)), source=str(Path(value).resolve()))
    num_samples = int(round(duration * rate))
    return Recording(id=reco, sources=[source], sampling_rate=rate, num_samples=num_samples,
                     duration=num_samples / rate, channel_ids=list(source.channels))


def data_dir_to_lhotse(directory: str | os.PathLike[str], out: str | os.PathLike[str]) -> ConversionReport:
    """Write ``out/recordings.jsonl.gz`` and ``out/supervisions.jsonl.gz`` for a data dir.

    A recording that cannot be described (its file missing or unreadable, a pipe that fails
    where its duration must be measured) is left out with its utterances, each named in the
    log and in ``out/skipped.txt``; the rest are written.
    """
    from kospeech.data.datadir import PLAIN_KALDI_META, read_meta
    from kospeech.data.kaldi_io import audio_items, known_durations, read_segments
    from kospeech.files import read_scp, write_atomic

    lhotse = _lhotse()
    directory, out = Path(directory), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ConversionReport(out)
    meta = read_meta(directory) or PLAIN_KALDI_META
    sample_rate = int(meta.get("sample_rate") or 16000)
    wav = read_scp(directory / "wav.scp")
    items = audio_items(directory)  # checks segments against wav.scp
    durations = known_durations(directory)
    segments = read_segments(directory / "segments") if (directory / "segments").exists() else None
    reco2dur: dict[str, float] = {}
    if (directory / "reco2dur").exists():
        reco2dur = {k: float(v) for k, v in read_scp(directory / "reco2dur").items()}
    text = read_scp(directory / "text", allow_empty=True) if (directory / "text").exists() else {}
    utt2spk = read_scp(directory / "utt2spk") if (directory / "utt2spk").exists() else {}

    recordings: dict[str, Any] = {}
    bad_reco: dict[str, str] = {}
    for reco, value in wav.items():
        known = reco2dur.get(reco, durations.get(reco) if segments is None else None)
        try:
            recordings[reco] = _recording(lhotse, reco, value, known, sample_rate, out / "pcm_header.wav")
        except DataError as err:
            bad_reco[reco] = str(err)
            report.skip(reco, "recording left out", str(err))
    sups = []
    for utt in items:
        reco = segments[utt].recording if segments is not None else utt
        if reco in bad_reco:
            report.skip(utt, "its recording was left out", reco)
            continue
        rec = recordings[reco]
        start = segments[utt].start if segments is not None else 0.0
        end = segments[utt].end if segments is not None else -1.0
        stop = min(rec.duration, end) if end > 0 else rec.duration
        if utt not in text or not text[utt].strip():
            report.skip(utt, "no transcript")
            continue
        sups.append(lhotse.SupervisionSegment(
            id=utt, recording_id=reco, start=start, duration=round(stop - start, 6), channel=0,
            text=text[utt], speaker=utt2spk.get(utt), language=LANGUAGE,
        ))
    lhotse.RecordingSet.from_recordings(recordings.values()).to_file(out / RECORDINGS)
    lhotse.SupervisionSet.from_segments(sups).to_file(out / SUPERVISIONS)
    write_atomic(out / "skipped.txt", "".join(f"{k}\t{r}\n" for k, r in report.skipped_ids))
    report.recordings, report.utterances = len(recordings), len(sups)
    logger.info("%s", report.summary())
    return report


# ---------------------------------------------------------------------------------------------
# lhotse -> data dir


def _wav_value(rec: Any) -> str:
    """The wav.scp value of a lhotse Recording; a DataError for what a wav.scp line cannot hold."""
    if len(rec.sources) != 1:
        raise DataError(f"{len(rec.sources)} audio sources (one per channel); a wav.scp line holds one")
    transforms = [t.to_dict() if hasattr(t, "to_dict") else t for t in (rec.transforms or [])]
    others = [t.get("name", str(t)) if isinstance(t, dict) else str(t) for t in transforms
              if not (isinstance(t, dict) and t.get("name") == "Resample")]
    if others:
        raise DataError(f"audio transforms {others} (only resampling is redone here)")
    src = rec.sources[0]
    if src.type == "file":
        path = str(Path(src.source).resolve())
        return f"cat {shlex.quote(path)} |" if any(c.isspace() for c in path) else path
    if src.type == "command":
        return f"{src.source.strip()} |"
    raise DataError(f"a '{src.type}' audio source (a wav.scp line holds a file or a command)")


def _clean_id(key: str) -> bool:
    return bool(key) and not any(c.isspace() for c in key)


def lhotse_to_data_dir(
    out: str | os.PathLike[str],
    *,
    recordings: str | os.PathLike[str] | None = None,
    supervisions: str | os.PathLike[str] | None = None,
    cuts: str | os.PathLike[str] | None = None,
    corpus: str = "lhotse",
    transcript: str = "spelling",
) -> ConversionReport:
    """Write a data dir from lhotse manifests: ``recordings`` + ``supervisions``, or ``cuts``.

    A supervision (a cut) is an utterance with its recording, start and duration; a cut's text
    is its supervisions' texts joined, its speaker the first one's. ``meta.yaml`` records
    ``corpus``, ``transcript`` (what form the text is in; lhotse does not say) and the
    recordings' most common sampling rate.
    """
    from kospeech.data.datadir import _format_dur as fmt
    from kospeech.data.datadir import utt2spk_to_spk2utt, write_meta
    from kospeech.files import write_atomic, write_scp

    lhotse = _lhotse()
    out = Path(out)
    if cuts is not None and (recordings is not None or supervisions is not None):
        raise ConfigError("give either a CutSet (--cuts) or recordings and supervisions, not both")
    if cuts is None and (recordings is None or supervisions is None):
        raise ConfigError("give a CutSet (--cuts), or both --recordings and --supervisions")
    # (utt, recording, start, duration, text, speaker) per utterance
    rows: list[tuple[str, Any, float, float, str, str | None]] = []
    report = ConversionReport(out)
    if cuts is not None:
        for cut in lhotse.load_manifest(cuts):
            if not getattr(cut, "has_recording", False):
                report.skip(cut.id, "a cut without a recording")
                continue
            texts = [s.text for s in cut.supervisions if s.text]
            speaker = next((s.speaker for s in cut.supervisions if s.speaker), None)
            rows.append((cut.id, cut.recording, float(cut.start), float(cut.duration), " ".join(texts), speaker))
    else:
        recs = lhotse.load_manifest(recordings)
        for sup in lhotse.load_manifest(supervisions):
            if sup.recording_id not in recs:
                report.skip(sup.id, "its recording is not in the recordings manifest", sup.recording_id)
                continue
            rows.append((sup.id, recs[sup.recording_id], float(sup.start), float(sup.duration), sup.text or "",
                         sup.speaker))

    wav: dict[str, str] = {}
    reco2dur: dict[str, float] = {}
    rates: Counter[int] = Counter()
    bad_reco: dict[str, str] = {}
    kept: list[tuple[str, str, float, float, str, str]] = []
    for utt, rec, start, duration, text, speaker in rows:
        if not _clean_id(utt) or not _clean_id(rec.id):
            report.skip(utt or "<empty id>", "an id with whitespace (Kaldi ids are single words)", rec.id)
            continue
        if rec.id not in wav and rec.id not in bad_reco:
            try:
                wav[rec.id] = _wav_value(rec)
                reco2dur[rec.id] = float(rec.duration)
                rates[int(rec.sampling_rate)] += 1
            except DataError as err:
                bad_reco[rec.id] = str(err)
                report.skip(rec.id, "recording left out", str(err))
        if rec.id in bad_reco:
            report.skip(utt, "its recording was left out", rec.id)
            continue
        if not " ".join(text.split()):
            report.skip(utt, "no transcript")
            continue
        if duration <= 0:
            report.skip(utt, "no duration", f"{duration} s")
            continue
        kept.append((utt, rec.id, start, duration, " ".join(text.split()), speaker or utt))
    ids = [k[0] for k in kept]
    dupes = sorted(u for u, n in Counter(ids).items() if n > 1)
    if dupes:
        raise DataError(f"{out}: utterance ids appear more than once in the manifests, e.g. {dupes[:3]}")
    if not kept:
        raise DataError(f"{out}: no usable utterances in the manifests ({dict(report.skipped)})")
    per_reco = Counter(k[1] for k in kept)
    whole = all(k[0] == k[1] and per_reco[k[1]] == 1 and k[2] == 0 and abs(k[3] - reco2dur[k[1]]) < 1e-3
                for k in kept)
    out.mkdir(parents=True, exist_ok=True)
    used = {k[1] for k in kept}
    if whole:
        write_scp(out / "wav.scp", {k[0]: wav[k[1]] for k in kept})
        (out / "segments").unlink(missing_ok=True)
    else:
        write_scp(out / "wav.scp", {r: wav[r] for r in used})
        write_scp(out / "segments", {k[0]: f"{k[1]} {fmt(k[2])} {fmt(k[2] + k[3])}" for k in kept})
    write_scp(out / "reco2dur", {r: fmt(reco2dur[r]) for r in used})
    write_scp(out / "utt2dur", {k[0]: fmt(k[3]) for k in kept})
    write_scp(out / "text", {k[0]: k[4] for k in kept})
    utt2spk = {k[0]: k[5] for k in kept}
    write_scp(out / "utt2spk", utt2spk)
    write_scp(out / "spk2utt", {s: " ".join(u) for s, u in utt2spk_to_spk2utt(utt2spk).items()})
    write_meta(out / "meta.yaml", corpus=corpus, transcript=transcript, sample_rate=rates.most_common(1)[0][0])
    write_atomic(out / "skipped.txt", "".join(f"{k}\t{r}\n" for k, r in report.skipped_ids))
    report.recordings, report.utterances = len(used), len(kept)
    logger.info("%s", report.summary())
    return report
