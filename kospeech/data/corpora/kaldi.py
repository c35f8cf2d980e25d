"""A Kaldi or ESPnet data dir someone else prepared, taken in as ours (``kospeech data prep --corpus kaldi``).

``--root`` is one data dir (``wav.scp`` with paths or pipes, optional ``segments`` and
``reco2dur``, ``text``, ``utt2spk``), or a folder whose sub-folders are data dirs
(``data/train``, ``data/dev``...); each becomes ``OUT/<its name>``. The dirs can be used as they
are (validate, dump, train and decode read them); what prep adds is what the toolkit would
otherwise work out on every run: ``utt2dur`` (from utt2dur, segments or reco2dur where the dir
states them, else measured, which runs each pipe once) and ``meta.yaml``. An utterance whose
audio cannot be read while measuring is left out, counted and listed in ``skipped.txt``, as
every preparer does; ``wav.scp``, ``segments`` and ``reco2dur`` are copied for the utterances kept
(``reco2dur`` written whole where recordings are utterances, as the pipes' readers want it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kospeech.data.corpora import SetReport, Skip, check_transcript_form, parallel_map
from kospeech.errors import DataError
from kospeech.registry import register

logger = logging.getLogger(__name__)


def _measure(job: tuple[str, Any]) -> tuple[str, float | str]:
    """(utt, seconds) or (utt, why not): runs in worker processes with --nj."""
    from kospeech.data.kaldi_io import item_duration

    utt, item = job
    try:
        return utt, item_duration(item)
    except (DataError, OSError) as err:
        return utt, str(err)


@register("corpus", "kaldi")
class KaldiDataDir:
    """An existing Kaldi/ESPnet data dir (or a folder of them) -> data dirs with utt2dur and meta.yaml.

    Args:
        transcript: the form the text is in (``spelling``: as written, the default; ``phonetic``
            for KsponSpeech-style phonetic transcripts).
        nj: worker processes for measuring durations the dir does not state.
    """

    name = "kaldi"

    def __init__(self, *, transcript: str = "spelling", nj: int = 1) -> None:
        self.transcript = check_transcript_form(transcript)
        self.nj = max(1, int(nj))

    def prepare(self, root: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, SetReport]:
        root, out = Path(root), Path(out)
        if (root / "wav.scp").is_file():
            dirs = [root]
        else:
            dirs = sorted(d for d in root.iterdir() if (d / "wav.scp").is_file()) if root.is_dir() else []
        if not dirs:
            raise DataError(f"kaldi: {root} is not a data dir (no wav.scp) and holds none; pass --root a data dir "
                            "or the folder of data dirs")
        return {d.name: self._one(d, out / d.name) for d in dirs}

    def _one(self, src: Path, dst: Path) -> SetReport:
        from kospeech.data.datadir import (
            _format_dur,
            filter_ids,
            read_scp,
            utt2spk_to_spk2utt,
            write_atomic,
            write_meta,
            write_scp,
        )
        from kospeech.data.kaldi_io import audio_items, known_durations, recording_ids

        if src.resolve() == dst.resolve():
            raise DataError(f"kaldi: --out would overwrite the source {src}; choose another folder")
        items = audio_items(src)
        text = read_scp(src / "text", allow_empty=True)
        utt2spk = read_scp(src / "utt2spk")
        known = known_durations(src)
        skipped: list[Skip] = []
        for utt in sorted(set(items) - set(text)):
            skipped.append(Skip(utt, "no transcript"))
        for utt in sorted(set(items) - set(utt2spk)):
            skipped.append(Skip(utt, "no speaker (not in utt2spk)"))
        bad = {s.key for s in skipped}
        keep = [u for u in sorted(items) if u not in bad and text[u].strip()]
        skipped += [Skip(u, "empty transcript") for u in sorted(items) if u not in bad and not text[u].strip()]
        durations = {u: known[u] for u in keep if u in known}
        todo = [(u, items[u]) for u in keep if u not in durations]
        if todo:
            logger.info("kaldi %s: measuring %d duration(s) the dir does not state", src, len(todo))
        for utt, result in parallel_map(_measure, todo, nj=self.nj, chunksize=16):
            if isinstance(result, str):
                skipped.append(Skip(utt, "unreadable audio", result))
            else:
                durations[utt] = result
        keep = [u for u in keep if u in durations]
        if not keep:
            raise DataError(f"kaldi {src}: no usable utterances ({len(skipped)} skipped)")
        dst.mkdir(parents=True, exist_ok=True)
        wav = read_scp(src / "wav.scp")
        recos = recording_ids(src, dict.fromkeys(keep))
        used = {recos[u] for u in keep}
        write_scp(dst / "wav.scp", {r: wav[r] for r in used})
        if (src / "segments").exists():
            write_scp(dst / "segments", filter_ids(read_scp(src / "segments"), keep))
        if not (src / "segments").exists():  # recordings are the utterances: reco2dur is utt2dur
            write_scp(dst / "reco2dur", {u: _format_dur(durations[u]) for u in keep})
        elif (src / "reco2dur").exists():
            reco2dur = filter_ids(read_scp(src / "reco2dur"), used)
            if set(reco2dur) == used:
                write_scp(dst / "reco2dur", reco2dur)
            else:  # half a reco2dur would be a validation problem; none is fine
                logger.warning("kaldi %s: reco2dur lacks %d recording(s); not copied", src, len(used - set(reco2dur)))
        write_scp(dst / "text", {u: " ".join(text[u].split()) for u in keep})
        kept_spk = {u: utt2spk[u] for u in keep}
        write_scp(dst / "utt2spk", kept_spk)
        write_scp(dst / "spk2utt", {s: " ".join(u) for s, u in utt2spk_to_spk2utt(kept_spk).items()})
        write_scp(dst / "utt2dur", {u: _format_dur(durations[u]) for u in keep})
        write_meta(dst / "meta.yaml", corpus=src.name, transcript=self.transcript)
        write_atomic(dst / "skipped.txt", "".join(f"{s.key}\t{s.reason}\t{s.detail}\n" for s in skipped))
        report = SetReport(name=src.name, directory=dst, num_utts=len(keep), seconds=sum(durations[u] for u in keep))
        for n, s in enumerate(skipped):
            report.skipped[s.reason] += 1
            if n < 20:
                logger.warning("kaldi %s: skipped %s: %s %s", src.name, s.key, s.reason, s.detail)
        logger.info("kaldi %s", report.summary())
        return report

