"""Datasets over feature dumps and raw audio, and the batch ``collate`` of docs/contracts.md.

``FeatureDataset`` reads a dump (``kospeech features dump``); ``RawAudioDataset`` reads a
Kaldi data dir's audio for the on-the-fly frontend. Both expose ``lengths`` for the
:class:`~kospeech.data.sampler.BucketBatchSampler` and drop, count and log the utterances a
model cannot learn from (no transcript, a transcript that encodes to nothing, too long),
because one bad utterance among 600k should cost a log line, not a crashed epoch.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from kospeech.data.datadir import read_scp
from kospeech.errors import DataError
from kospeech.text.special import PAD_ID

logger = logging.getLogger(__name__)


def _tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object, or a lang dir path to load one from."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from kospeech.text import load_tokenizer

        return load_tokenizer(tokenizer)
    if not hasattr(tokenizer, "encode"):
        raise DataError(f"expected a tokenizer (with .encode) or a lang dir, got {type(tokenizer).__name__}")
    return tokenizer


def _log_drops(where: Path, kept: int, dropped: Counter[str]) -> None:
    if dropped:
        reasons = ", ".join(f"{n} {why}" for why, n in dropped.most_common())
        logger.warning("%s: kept %d utterances, dropped %d (%s)", where, kept, sum(dropped.values()), reasons)
    else:
        logger.info("%s: %d utterances", where, kept)


def keep_at_least(dataset: Any, min_length: int, reason: str) -> int:
    """Drop (and count under ``reason``) the items of ``dataset`` shorter than ``min_length`` (in its
    ``length_unit``); returns how many were dropped. Too short for the model's subsampling, an
    utterance would crash its batch at a random step instead."""
    keep = [i for i, n in enumerate(dataset.lengths) if n >= min_length]
    dropped = len(dataset.lengths) - len(keep)
    if dropped:
        for name in ("utt_ids", "lengths", "targets", "paths"):
            if hasattr(dataset, name):
                values = getattr(dataset, name)
                setattr(dataset, name, [values[i] for i in keep])
        dataset.dropped[reason] += dropped
        _log_drops(dataset.directory, len(keep), dataset.dropped)
    return dropped


class FeatureDataset(Dataset):
    """Utterances of a feature dump with their token ids.

    Args:
        dump_dir: a finished dump (``index.tsv``, ``text``).
        tokenizer: a tokenizer or a lang dir; targets are ``tokenizer.encode(text)`` (no sos/eos).
        cmvn: ``cmvn.npz`` path or ``(mean, std)`` arrays applied to every item; None = raw
            features (the trainer may normalise on the device instead, with ``GlobalCMVN``).
        max_frames: utterances longer than this are dropped (and counted).

    Attributes:
        utt_ids, lengths (frames, for the sampler), dropped (reason -> count).
    """

    length_unit = "frames"

    def __init__(
        self,
        dump_dir: str | os.PathLike[str],
        tokenizer: Any,
        *,
        cmvn: str | os.PathLike[str] | tuple[Any, Any] | Mapping[str, Any] | None = None,
        max_frames: int | None = None,
    ) -> None:
        from kospeech.data.dump import FeatureDump

        self.directory = Path(dump_dir)
        self.dump = FeatureDump(self.directory)
        self.tokenizer = _tokenizer(tokenizer)
        text = read_scp(self.directory / "text", allow_empty=True)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        if cmvn is not None:
            from kospeech.data.cmvn import load_cmvn

            self.mean, self.std = load_cmvn(cmvn)
            if self.mean.shape[0] != self.dump.dim:
                raise DataError(f"CMVN has {self.mean.shape[0]} dims but {self.directory} has {self.dump.dim}")
        self.utt_ids: list[str] = []
        self.lengths: list[int] = []
        self.targets: list[list[int]] = []
        self.dropped: Counter[str] = Counter()
        for utt in sorted(self.dump.keys()):
            frames = self.dump.num_frames(utt)
            if utt not in text:
                self.dropped["without transcript"] += 1
                continue
            if max_frames is not None and frames > max_frames:
                self.dropped[f"longer than max_frames={max_frames}"] += 1
                continue
            ids = list(self.tokenizer.encode(text[utt]))
            if not ids:
                self.dropped["with an empty target"] += 1
                continue
            self.utt_ids.append(utt)
            self.lengths.append(frames)
            self.targets.append(ids)
        _log_drops(self.directory, len(self.utt_ids), self.dropped)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.utt_ids[i]
        feats = self.dump[utt]
        if self.mean is not None:
            feats = (feats - self.mean) / self.std
        return {
            "utt_id": utt,
            "features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            "target": torch.tensor(self.targets[i], dtype=torch.long),
        }


class RawAudioDataset(Dataset):
    """Utterances of a Kaldi data dir as waves, for an on-the-fly frontend.

    ``lengths`` are in samples (``length_unit = "samples"``), from ``utt2dur`` when the data
    dir has one, else from each file's header. Files that cannot be read are dropped here
    (counted and logged) when their header is already broken; a file that fails later, in
    ``__getitem__``, comes back as ``{"utt_id", "error"}``: :func:`collate` leaves it out of
    the batch and lists it under ``failed``, so one bad file costs one utterance, not the run.
    ``known_bad`` (utterance ids) are reported so without reading them again (a resumed run).

    Args:
        data_dir: Kaldi data dir (``wav.scp``, ``text``).
        tokenizer: a tokenizer or a lang dir.
        sample_rate: waves are resampled to this rate.
        max_seconds: longer utterances are dropped (None = keep all).
    """

    length_unit = "samples"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        tokenizer: Any,
        *,
        sample_rate: int = 16000,
        max_seconds: float | None = None,
    ) -> None:
        from kospeech.data.kaldi_io import audio_items, item_duration, known_durations

        self.directory = Path(data_dir)
        if not (self.directory / "wav.scp").exists():
            raise DataError(f"{self.directory} has no wav.scp; is it a Kaldi data dir?")
        self.sample_rate = int(sample_rate)
        self.tokenizer = _tokenizer(tokenizer)
        wav = audio_items(self.directory)  # paths, pipes and segments alike (kaldi_io.read_item reads them)
        text = read_scp(self.directory / "text", allow_empty=True)
        durations = known_durations(self.directory)  # utt2dur, segments, reco2dur
        self.utt_ids: list[str] = []
        self.paths: list[Any] = []
        self.lengths: list[int] = []
        self.targets: list[list[int]] = []
        self.dropped: Counter[str] = Counter()
        self.known_bad: set[str] = set()
        for utt in sorted(wav):
            if utt not in text:
                self.dropped["without transcript"] += 1
                continue
            ids = list(self.tokenizer.encode(text[utt]))
            if not ids:
                self.dropped["with an empty target"] += 1
                continue
            seconds = durations.get(utt)
            if seconds is None:
                try:
                    seconds = item_duration(wav[utt])
                except DataError as err:
                    logger.warning("dropping %s: %s", utt, err)
                    self.dropped["unreadable"] += 1
                    continue
            if max_seconds is not None and seconds > max_seconds:
                self.dropped[f"longer than max_seconds={max_seconds}"] += 1
                continue
            self.utt_ids.append(utt)
            self.paths.append(wav[utt])
            self.lengths.append(max(1, int(round(seconds * self.sample_rate))))
            self.targets.append(ids)
        _log_drops(self.directory, len(self.utt_ids), self.dropped)

    def __len__(self) -> int:
        return len(self.utt_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from kospeech.data.kaldi_io import read_item

        utt = self.utt_ids[i]
        if utt in self.known_bad:
            return {"utt_id": utt, "error": "unreadable earlier in this run"}
        try:
            wave = read_item(self.paths[i], sample_rate=self.sample_rate)
        except (DataError, OSError) as err:  # a pipe's or segment's error names its line already
            where = f"{self.directory / 'wav.scp'}: " if isinstance(self.paths[i], str) else ""
            return {"utt_id": utt, "error": f"{where}{err}"}
        return {
            "utt_id": utt,
            "wave": torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
            "target": torch.tensor(self.targets[i], dtype=torch.long),
        }


def _pad(seqs: Sequence[Tensor], value: float) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([s.size(0) for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), value)
    for b, s in enumerate(seqs):  # one copy per utterance
        out[b, : s.size(0)] = s
    return out, lengths


def collate(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Items -> the batch dict of docs/contracts.md.

    ``features`` (B, T, D) float32 zero-padded + ``feature_lengths``; or, for raw audio,
    ``waves`` (B, S) + ``wave_lengths`` (the trainer fills ``features`` with the frontend);
    ``targets`` (B, L) padded with ``<pad>`` (no sos/eos) + ``target_lengths``; ``utt_ids``.
    Items that could not be read (``error``) are left out and listed as ``failed``
    (``[(utt_id, error)]``); a batch of nothing but those has no ``utt_ids``.
    """
    if not items:
        raise DataError("collate got an empty list of items")
    failed = [(it["utt_id"], it["error"]) for it in items if "error" in it]
    items = [it for it in items if "error" not in it]
    batch: dict[str, Any] = {"utt_ids": [it["utt_id"] for it in items]}
    if failed:
        batch["failed"] = failed
    if not items:
        return batch
    if "features" in items[0]:
        batch["features"], batch["feature_lengths"] = _pad([it["features"].float() for it in items], 0.0)
    if "wave" in items[0]:
        batch["waves"], batch["wave_lengths"] = _pad([it["wave"].float() for it in items], 0.0)
    batch["targets"], batch["target_lengths"] = _pad([it["target"].long() for it in items], PAD_ID)
    return batch


def padding_fraction(batch: Mapping[str, Any]) -> float:
    """Share of padded positions in the batch's inputs (features, else waves)."""
    if "features" in batch and "feature_lengths" in batch:
        lengths, total = batch["feature_lengths"], batch["features"].shape[:2]
    elif "waves" in batch:
        lengths, total = batch["wave_lengths"], batch["waves"].shape[:2]
    else:
        raise DataError("padding_fraction needs a batch with features or waves")
    cells = int(total[0]) * int(total[1])
    return 1.0 - float(lengths.sum()) / cells if cells else 0.0
