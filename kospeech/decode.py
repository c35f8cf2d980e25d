"""Decoding a test set with a checkpoint: features or audio in, ``hyp.trn`` / ``ref.trn`` out.

The input is either a feature dump (``kospeech features dump``) or a Kaldi data dir; either
way it goes through the checkpoint's own input pipeline (:mod:`kospeech.data.inputs`) and the
same batched decoding as the Python API (:class:`kospeech.inference.Transcriber`). Utterances
are sorted by length and decoded in batches, so padding stays small.

An utterance whose audio cannot be read, or holds NaN samples, does not sink the set: it is
reported (``decode.yaml`` ``failed``, one warning each), written to ``hyp.trn`` with empty text
so scoring counts it as all deletions, and the CLI exits non-zero at the end.

Outputs in the decode dir: ``hyp.trn`` and ``ref.trn`` (``utt-id text`` per line, sorted by id),
and ``decode.yaml`` (checkpoint, search config, test set, transcript form, timing, failures).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kospeech.data.datadir import read_meta
from kospeech.data.inputs import DUMP, source_kind
from kospeech.errors import DataError
from kospeech.files import write_utt_text

logger = logging.getLogger(__name__)


def build_search(model: Any, cfg: Mapping[str, Any]) -> Any:
    from kospeech.registry import build

    return build("search", cfg, path="search", model=model)


# ---------------------------------------------------------------------------------------------
# test sets


@dataclass
class TestSet:
    """What to decode: utterance ids in length order, references, and where their input is."""

    path: Path
    kind: str  # "dump" or "datadir"
    utt_ids: list[str]
    refs: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # FeatureDump or wav.scp mapping


def open_test_set(path: str | Path) -> TestSet:
    """A feature dump or a Kaldi data dir (:func:`kospeech.data.inputs.source_kind`)."""
    from kospeech.files import read_scp

    path = Path(path)
    kind = source_kind(path, "test set")
    refs = read_scp(path / "text", allow_empty=True) if (path / "text").exists() else {}
    if kind == DUMP:
        from kospeech.data.dump import FeatureDump

        dump = FeatureDump(path)
        lengths = {u: float(dump.num_frames(u)) for u in dump.keys()}
        source: Any = dump
    else:
        from kospeech.data.kaldi_io import audio_items, known_durations

        source = audio_items(path)  # paths, wav.scp pipes, segments
        durs = known_durations(path)
        lengths = {u: durs.get(u, 0.0) for u in source}
    ids = sorted(lengths, key=lambda u: (-lengths[u], u))
    meta = read_meta(path)
    if not meta and kind != DUMP:  # a plain Kaldi/ESPnet dir: say what it is taken as
        from kospeech.data.datadir import PLAIN_KALDI_META

        meta = dict(PLAIN_KALDI_META)
        logger.info("%s: no meta.yaml: a plain Kaldi/ESPnet data dir, scored as corpus unknown, transcript %s "
                    "(the text as written); audio resampled to the model's rate where it differs", path,
                    meta["transcript"])
    return TestSet(path, kind, ids, refs, meta, source)


# ---------------------------------------------------------------------------------------------
# decoding


def _open_items(test: TestSet, ids: Sequence[str], rate: int,
                failed: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], float]:
    """What the transcriber gets for ``ids`` of a data dir: a plain file's path (streamed there),
    or the wave of a wav.scp pipe or segment (:func:`kospeech.data.kaldi_io.read_item`). An item
    that cannot be read is failed here, named, with empty text: one utterance, not the batch."""
    from kospeech.data.kaldi_io import is_pipe, read_item

    items: dict[str, Any] = {}
    results: dict[str, str] = {}
    for u in ids:
        item = test.source[u]
        if isinstance(item, str) and not is_pipe(item):
            items[u] = item
            continue
        try:
            items[u] = read_item(item, sample_rate=rate)
        except (DataError, OSError) as err:
            failed[u] = str(err)
            logger.warning("%s: utterance '%s': %s", test.path, u, err)
            results[u] = ""
    return items, results, 0.0


def decode_test_set(
    transcriber: Any,
    data: str | Path,
    out_dir: str | Path,
    search_cfg: Mapping[str, Any],
    *,
    batch_size: int = 16,
    checkpoint: str | Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode every utterance of ``data`` with a :class:`~kospeech.inference.Transcriber`;
    write ``hyp.trn``, ``ref.trn``, ``decode.yaml``.

    ``progress(n)`` is called after each batch with the number of utterances done in it (the
    CLI drives a tqdm bar with it). Returns the ``decode.yaml`` contents.
    """
    test = open_test_set(data)
    if not test.utt_ids:
        raise DataError(f"{data}: no utterances to decode")
    if test.kind == DUMP and not hasattr(transcriber, "decode_features"):
        raise DataError(f"{data}: a feature dump; the {transcriber.engine.kind} engine decodes audio: give the data "
                        "dir (wav.scp) instead, or a checkpoint or package to decode the dump")
    search = transcriber.search_for(search_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hyps: dict[str, str] = {}
    failed: dict[str, str] = {}
    audio_s = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(test.utt_ids), batch_size):
        ids = test.utt_ids[start : start + batch_size]
        if test.kind == DUMP:
            arrays = {u: test.source[u] for u in ids}
            results = {}
            for u in [u for u, a in arrays.items() if not np.isfinite(a).all()]:  # a damaged shard's bytes
                failed[u] = "its features hold NaN/inf values (the dump is damaged: dump it again)"
                logger.warning("%s: utterance '%s': %s", test.path, u, failed[u])
                results[u] = ""
                del arrays[u]
            secs = 0.0
            if arrays:
                outputs, secs = transcriber.decode_features(list(arrays.values()), search)
                results.update(zip(arrays, outputs))
        else:
            items, results, secs = _open_items(test, ids, transcriber.sample_rate, failed)
            decoded = transcriber.transcribe(list(items.values()), sample_rate=transcriber.sample_rate, search=search,
                                             timestamps=False, batch_size=len(ids), segment=False) if items else []
            for u, r in zip(items, decoded):
                if r.ok:
                    results[u] = r.text
                    secs += r.duration
                else:
                    failed[u] = r.error or "failed"
                    logger.warning("%s: utterance '%s': %s", test.path / "wav.scp", u, r.error)
                    results[u] = ""
        audio_s += secs
        hyps.update(results)
        if progress is not None:
            progress(len(ids))
    wall = time.perf_counter() - t0
    refs = {u: test.refs[u] for u in test.utt_ids if u in test.refs}
    if len(refs) < len(test.utt_ids):
        logger.warning("%d of %d utterances have no reference text in %s", len(test.utt_ids) - len(refs),
                       len(test.utt_ids), test.path)
    write_utt_text(out_dir / "hyp.trn", hyps)
    write_utt_text(out_dir / "ref.trn", refs)
    config = getattr(transcriber, "config", None)
    model_cfg = config.get("model", {}) if isinstance(config, Mapping) else {}
    bundle = getattr(transcriber, "bundle", None)
    info = {
        "checkpoint": ([str(c) for c in checkpoint] if isinstance(checkpoint, (list, tuple)) else str(checkpoint))
        if checkpoint else None,
        "model": model_cfg.get("name") if isinstance(model_cfg, Mapping) else None,
        "training_corpus": bundle.metadata.get("training_corpus") if bundle is not None else None,
        "search": dict(search_cfg),
        "test_set": {
            "path": str(test.path),
            "name": test.path.name,
            "kind": test.kind,
            "corpus": test.meta.get("corpus"),
            "transcript": test.meta.get("transcript"),
            "utterances": len(test.utt_ids),
        },
        "batch_size": batch_size,
        "device": str(transcriber.device),
        "engine": transcriber.engine.kind,
        "timing": {
            "wall_seconds": round(wall, 3),
            "audio_seconds": round(audio_s, 3),
            "real_time_factor": round(wall / audio_s, 5) if audio_s > 0 else None,
        },
        "failed": failed,
    }
    chunk_frames = getattr(transcriber.engine, "chunk_frames", None)
    if chunk_frames is not None and chunk_frames():  # chunk-wise attention: the CER is that chunk size's
        info["chunk_size"] = int(chunk_frames())
    from kospeech.files import write_atomic

    write_atomic(out_dir / "decode.yaml", yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
    return info
