"""Feature dumps: a data dir's audio through a frontend into float16 shards, read back by utterance id.

Layout of a dump dir (``kospeech features dump --data DATA --out DUMP``)::

    shards/feats.0000.f16     float16 rows of every utterance of shard 0, back to back (no header)
    shards/index.0000.tsv     utt <TAB> offset (in float16 values) <TAB> frames <TAB> dim
    shards/skipped.0000.tsv   utt <TAB> reason, for audio that could not be read
    shards/sha256.0000.txt    sha256 of feats.0000.f16, computed while writing it
    shards/verified.json      size and mtime of each shard when its checksum last matched
    shards/plan.json          what the shards hold (item list hash, shard count, frontend config)
    index.tsv                 utt <TAB> shard <TAB> offset <TAB> frames <TAB> dim (all shards)
    checksums.tsv             shards/feats.NNNN.f16 <TAB> sha256, for every shard
    utt2num_frames, text, utt2spk, frontend.yaml, skipped.txt, dump.yaml, [meta.yaml], [cmvn.npz]

Why this shape: float16 halves the disk and page-cache footprint of float32 (80-dim log-mel
values need ~3 significant digits, float16 keeps ~3.3); one flat file per shard means one
``np.memmap`` per shard and reading an utterance is a slice, no parsing and no per-file
open; shards let N workers write in parallel without locks, and each shard is a unit of
resumption: its rows and skip list are written under temporary names and its index is
renamed into place last. A shard counts as done only when its feats file holds exactly the
values its index names (:func:`shard_problem`): one cut short later (a full disk, a partial
copy) is extracted again on a rerun, and readers refuse it instead of reading it short.

Checksums: each shard's sha256 is computed as its rows are written (no second read) and kept
in ``checksums.tsv``. Opening a dump (training, decoding, CMVN) checks the sha256 of every
shard whose size or modification time differs from what ``verified.json`` recorded when its
checksum last matched: a shard just written, or opened before, costs nothing; one copied to
another machine, rewritten or restored is hashed once (about 1.7 GB/s here, so a
KsponSpeech-sized dump of ~60 GB costs a minute or two of disk reading, once). Damage that
keeps size and time (bit rot) is what ``kospeech features verify DUMP`` finds: it hashes
every shard, whatever the record says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import queue as queue_mod
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kospeech.data.datadir import read_scp
from kospeech.errors import DataError
from kospeech.files import sha256_files, write_atomic

logger = logging.getLogger(__name__)

SHARD_DIR = "shards"
INDEX_FILE = "index.tsv"
CHECKSUM_FILE = "checksums.tsv"
VERIFIED_FILE = "verified.json"
DTYPE = np.float16


def speed_id(utt: str, factor: float) -> str:
    """Kaldi/ESPnet's id for a speed-perturbed copy: ``sp0.9-UTT`` (factor 1.0 keeps the id)."""
    return utt if factor == 1.0 else f"sp{factor:g}-{utt}"


def _shard_name(kind: str, shard: int, suffix: str) -> str:
    return f"{kind}.{shard:04d}.{suffix}"


def _shard_extent(index_lines: list[str]) -> int:
    """float16 values a shard's feats file must hold for its index: the end of its last row."""
    end = 0
    for line in index_lines:
        _, offset, frames, dim = line.split("\t")
        end = max(end, int(offset) + int(frames) * int(dim))
    return end


def shard_problem(shard_dir: Path, shard: int) -> str | None:
    """Why shard ``shard`` is not complete (None when it is): no index yet, or a feats file
    whose size is not what the index says (cut by a full disk, a copy, a crash of the file system)."""
    index = shard_dir / _shard_name("index", shard, "tsv")
    feats = shard_dir / _shard_name("feats", shard, "f16")
    if not index.exists():
        return "not finished"
    try:
        expected = _shard_extent(index.read_text(encoding="utf-8").splitlines()) * DTYPE().itemsize
    except ValueError:
        return f"{index.name} is damaged"
    try:
        size = feats.stat().st_size
    except FileNotFoundError:
        return f"{feats.name} is missing"
    if size != expected:
        return f"{feats.name} has {size} bytes but its index needs {expected}"
    return None


# ---------------------------------------------------------------------------------------------
# checksums


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def read_checksums(directory: str | os.PathLike[str]) -> dict[str, str]:
    """``shards/feats.NNNN.f16`` -> sha256 from a dump's ``checksums.tsv`` ({} for a dump made before checksums)."""
    path = Path(directory) / CHECKSUM_FILE
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) != 2 or len(parts[1]) != 64:
            raise DataError(f"{path}:{n}: expected 'shards/feats.NNNN.f16 <TAB> sha256', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def _read_verified(directory: Path) -> dict[str, list[int]]:
    try:
        record = json.loads((directory / SHARD_DIR / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_verified(directory: Path, record: Mapping[str, list[int]]) -> None:
    try:
        write_atomic(directory / SHARD_DIR / VERIFIED_FILE, json.dumps(dict(sorted(record.items())), indent=0))
    except OSError as err:  # a read-only dump (shared storage) is still usable; it is hashed again next time
        logger.debug("cannot record verified shards in %s: %s", directory, err)


def verify_dump(
    directory: str | os.PathLike[str], *, everything: bool = False, progress: Callable[[int], Any] | None = None
) -> list[str]:
    """The shards of a dump whose bytes do not match their sha256 (empty when all match).

    Only shards whose size or modification time changed since their checksum last matched are
    hashed, unless ``everything``; matches are recorded in ``shards/verified.json``.
    ``progress(n)`` gets the bytes hashed.
    """
    directory = Path(directory)
    checksums = read_checksums(directory)
    record = _read_verified(directory)
    bad: list[str] = []
    changed = False
    for name, expected in checksums.items():
        path = directory / name
        try:
            stamp = _stamp(path)
        except FileNotFoundError:
            bad.append(f"{path} is missing")
            continue
        if not everything and record.get(name) == stamp:
            continue
        if sha256_files(path, progress=progress) != expected:
            bad.append(f"{path} does not match its sha256 in {directory / CHECKSUM_FILE}")
            record.pop(name, None)
        else:
            record[name] = stamp
        changed = True
    if changed:
        _write_verified(directory, record)
    return bad


# ---------------------------------------------------------------------------------------------
# reading


class FeatureDump:
    """Random access to a dump by utterance id, through memory-mapped shards.

    ``dump[utt]`` is a float32 copy (T, D); :meth:`raw` is the float16 memory-mapped view.
    Picklable (for DataLoader workers): the memory maps are reopened lazily in each process.
    Opening checks the shards' checksums where they changed since last checked (:func:`verify_dump`);
    ``verify=False`` skips that (``kospeech features verify`` checks them itself, with a progress bar).
    """

    def __init__(self, directory: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX_FILE
        if not index_path.exists():
            raise DataError(
                f"{self.directory} is not a finished feature dump (no {INDEX_FILE}); run or resume "
                f"`kospeech features dump --out {self.directory}`"
            )
        self._index: dict[str, tuple[int, int, int, int]] = {}
        self._extent: dict[int, int] = {}  # shard -> float16 values its feats file must hold
        for n, line in enumerate(index_path.read_text(encoding="utf-8").splitlines(), start=1):
            parts = line.split("\t")
            if len(parts) != 5:
                raise DataError(f"{index_path}:{n}: expected 'utt shard offset frames dim', got {line!r}")
            try:
                shard, offset, frames, dim = (int(x) for x in parts[1:])
            except ValueError:
                raise DataError(f"{index_path}:{n}: non-integer field in {line!r}") from None
            self._index[parts[0]] = (shard, offset, frames, dim)
            self._extent[shard] = max(self._extent.get(shard, 0), offset + frames * dim)
        self._maps: dict[int, np.ndarray] = {}
        if verify:
            for shard in self._extent:  # sizes first: a shard cut short is named as such, not as a checksum
                self._checked_shard(shard)
            bad = verify_dump(self.directory)
            if bad:
                raise DataError(f"{bad[0]}: the dump is damaged (changed since it was written); rerun "
                                f"`kospeech features dump --out {self.directory}` (it redoes the shard)")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def _checked_shard(self, shard: int) -> tuple[Path, int]:
        """Path and size of a shard's feats file, refused when missing or not the size its index needs."""
        path = self.directory / SHARD_DIR / _shard_name("feats", shard, "f16")
        rerun = f"the dump is damaged: rerun `kospeech features dump --out {self.directory}` (it redoes the shard)"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise DataError(f"feature shard {path} is missing; {rerun}") from None
        expected = self._extent.get(shard, 0) * DTYPE().itemsize
        if size != expected:  # a truncated shard is refused, never read short (CMVN, training)
            raise DataError(f"feature shard {path} has {size} bytes but the index needs {expected}; {rerun}")
        return path, size

    def _shard(self, shard: int) -> np.ndarray:
        mm = self._maps.get(shard)
        if mm is None:
            path, size = self._checked_shard(shard)
            mm = np.memmap(path, dtype=DTYPE, mode="r") if size else np.zeros(0, DTYPE)
            self._maps[shard] = mm
        return mm

    def _entry(self, utt: str) -> tuple[int, int, int, int]:
        try:
            return self._index[utt]
        except KeyError:
            msg = f"utterance '{utt}' is not in the feature dump {self.directory} ({len(self)} utts)"
            raise KeyError(msg) from None

    def raw(self, utt: str) -> np.ndarray:
        """The float16 (T, D) rows of ``utt``, memory-mapped (no copy; read-only)."""
        shard, offset, frames, dim = self._entry(utt)
        mm = self._shard(shard)
        end = offset + frames * dim
        if end > mm.shape[0]:
            raise DataError(f"feature shard {shard} of {self.directory} is shorter than its index says ('{utt}')")
        return mm[offset:end].reshape(frames, dim)

    def __getitem__(self, utt: str) -> np.ndarray:
        return np.asarray(self.raw(utt), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, utt: object) -> bool:
        return utt in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def keys(self) -> list[str]:
        return list(self._index)

    def num_frames(self, utt: str) -> int:
        return self._entry(utt)[2]

    @property
    def dim(self) -> int:
        return next(iter(self._index.values()))[3] if self._index else 0

    def frontend_config(self) -> dict[str, Any]:
        path = self.directory / "frontend.yaml"
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}

    def shard_arrays(self) -> Iterator[np.ndarray]:
        """Every shard as one (rows, dim) float16 array: fast whole-dump statistics (CMVN)."""
        shards = sorted({e[0] for e in self._index.values()})
        dim = self.dim
        for s in shards:
            mm = self._shard(s)
            yield mm[: (mm.shape[0] // dim) * dim].reshape(-1, dim)


# ---------------------------------------------------------------------------------------------
# writing


@dataclass
class DumpStats:
    """What a dump run did (also written to ``dump.yaml``)."""

    utterances: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    skipped: int = 0
    shards: int = 0
    shards_reused: int = 0
    dim: int = 0

    @property
    def real_time_speedup(self) -> float:
        """Seconds of audio processed per wall second of the shards done in this run."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("nan")


@dataclass
class _ShardResult:
    shard: int
    utterances: int = 0
    frames: int = 0
    audio_seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stamp: list[int] = field(default_factory=list)  # size and mtime of the feats file just written


_PROGRESS: Any = None  # a multiprocessing queue in workers, a callable in-process
_FRONTENDS: dict[str, Any] = {}


def _init_worker(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    import torch

    torch.set_num_threads(1)


def _report(n: int) -> None:
    if _PROGRESS is None:
        return
    if callable(_PROGRESS):
        _PROGRESS(n)
    else:
        _PROGRESS.put(n)


def _frontend(cfg: Mapping[str, Any]) -> Any:
    key = json.dumps(cfg, sort_keys=True)
    if key not in _FRONTENDS:
        from kospeech.data.frontends import build_frontend

        _FRONTENDS[key] = build_frontend(cfg)
    return _FRONTENDS[key]


def _dump_shard(job: tuple[int, list[tuple[str, Any, float]], dict[str, Any], str]) -> _ShardResult:
    """Extract one shard: rows to a temp file, then skip list, then the index (the completion marker)."""
    shard, items, frontend_cfg, shard_dir_str = job
    from kospeech.data.augment import speed_perturb_wave
    from kospeech.data.kaldi_io import read_item

    shard_dir = Path(shard_dir_str)
    frontend = _frontend(frontend_cfg)
    sample_rate = frontend.sample_rate
    result = _ShardResult(shard)
    feats_path = shard_dir / _shard_name("feats", shard, "f16")
    tmp_feats = feats_path.with_name(feats_path.name + ".tmp")
    index_lines: list[str] = []
    offset = 0
    digest = hashlib.sha256()
    with open(tmp_feats, "wb") as fh:
        for out_id, path, factor in items:
            try:
                wave = read_item(path, sample_rate=sample_rate)  # a path, a wav.scp pipe or a segment
                if factor != 1.0:
                    wave = speed_perturb_wave(wave, factor, sample_rate=sample_rate)
                feats = frontend.extract(wave).astype(DTYPE)
                if not np.isfinite(feats).all():
                    raise DataError(f"features of {path} are not finite (silent file with log_offset 0, or overflow)")
            except (DataError, OSError) as err:
                result.skipped.append((out_id, " ".join(str(err).split())))
                _report(1)
                continue
            row_bytes = feats.tobytes()
            fh.write(row_bytes)
            digest.update(row_bytes)
            index_lines.append(f"{out_id}\t{offset}\t{feats.shape[0]}\t{feats.shape[1]}\n")
            offset += feats.size
            result.utterances += 1
            result.frames += feats.shape[0]
            result.audio_seconds += wave.size / sample_rate
            _report(1)
    os.replace(tmp_feats, feats_path)
    result.stamp = _stamp(feats_path)
    write_atomic(shard_dir / _shard_name("sha256", shard, "txt"), digest.hexdigest() + "\n")
    write_atomic(shard_dir / _shard_name("skipped", shard, "tsv"), "".join(f"{u}\t{r}\n" for u, r in result.skipped))
    write_atomic(shard_dir / _shard_name("index", shard, "tsv"), "".join(index_lines))
    return result


def _plan_items(wav: Mapping[str, Any], factors: Sequence[float]) -> list[tuple[str, Any, float]]:
    items = [(speed_id(utt, f), path, float(f)) for utt, path in wav.items() for f in factors]
    return sorted(items)


def _split(items: Sequence[Any], num_shards: int) -> list[list[Any]]:
    n = len(items)
    return [list(items[k * n // num_shards : (k + 1) * n // num_shards]) for k in range(num_shards)]


def dump_features(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    frontend_cfg: Mapping[str, Any],
    *,
    nj: int = 1,
    cmvn: bool = False,
    speed_factors: Sequence[float] = (1.0,),
    shard_size: int = 500,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int, int], None] | None = None,
) -> DumpStats:
    """Extract every utterance of ``data_dir`` into ``out_dir`` with ``nj`` worker processes.

    Finished shards of an earlier, interrupted run with the same items and frontend are kept.
    ``progress(n)`` is called as utterances finish; ``total(todo, done)`` once with the number
    of utterances to extract in this run and the number already done.
    """
    from kospeech.data.frontends import build_frontend

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "wav.scp").exists():
        raise DataError(f"{data_dir} has no wav.scp; is it a Kaldi data dir? (`kospeech data prep` makes one)")
    factors = [float(f) for f in speed_factors] or [1.0]
    if any(f <= 0 for f in factors) or len(set(factors)) != len(factors):
        raise DataError(f"speed perturbation factors must be distinct and positive, got {factors}")
    frontend = build_frontend(frontend_cfg)
    cfg = dict(frontend.config)
    from kospeech.data.kaldi_io import audio_items

    wav = audio_items(data_dir)  # wav.scp's paths and pipes, cut by segments where the dir has them
    items = _plan_items(wav, factors)
    if not items:
        raise DataError(f"{data_dir / 'wav.scp'} lists no utterances")

    shard_dir = out_dir / SHARD_DIR
    plan = {
        "items": hashlib.sha1(json.dumps(items).encode()).hexdigest(),
        "count": len(items),
        "frontend": cfg,
        "num_shards": max(1, min(len(items), max(nj, math.ceil(len(items) / shard_size)))),
    }
    plan_path = shard_dir / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in ("items", "frontend")} == {k: plan[k] for k in ("items", "frontend")}:
            plan["num_shards"] = old["num_shards"]  # resume with the earlier layout, whatever nj is now
        else:
            logger.warning("%s holds shards of other audio or another frontend; starting the dump over", shard_dir)
            shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(plan_path, json.dumps(plan, indent=1, ensure_ascii=False))
    (out_dir / INDEX_FILE).unlink(missing_ok=True)  # the dump is unfinished until the index is rewritten

    num_shards = plan["num_shards"]
    shards = _split(items, num_shards)
    todo = []
    for k in range(num_shards):
        problem = shard_problem(shard_dir, k) or _shard_checksum_problem(shard_dir, k)
        if problem is None:
            continue
        if problem != "not finished":  # counted as done before; its feats do not match its index
            logger.warning("%s: shard %d is incomplete (%s); extracting it again", out_dir, k, problem)
            (shard_dir / _shard_name("index", k, "tsv")).unlink(missing_ok=True)
        todo.append(k)
    done_utts = sum(len(shards[k]) for k in range(num_shards) if k not in set(todo))
    if done_utts:
        logger.info("resuming %s: %d of %d shards already complete", out_dir, num_shards - len(todo), num_shards)
    if total is not None:
        total(sum(len(shards[k]) for k in todo), done_utts)
    jobs = [(k, shards[k], cfg, str(shard_dir)) for k in todo]

    start = time.perf_counter()
    results = _run_jobs(jobs, nj=nj, progress=progress)
    wall = time.perf_counter() - start

    stats = DumpStats(wall_seconds=wall, shards=num_shards, shards_reused=num_shards - len(todo))
    stats.audio_seconds = sum(r.audio_seconds for r in results)
    _assemble(data_dir, out_dir, num_shards, cfg, factors, stats, {r.shard: r.stamp for r in results})
    if cmvn:
        from kospeech.data.cmvn import CMVNStats

        acc = CMVNStats()
        for rows in FeatureDump(out_dir).shard_arrays():
            acc.add(rows)
        acc.save(out_dir / "cmvn.npz")
    logger.info(
        "dumped %d utterances (%d frames, dim %d) to %s; %d skipped (see skipped.txt); "
        "%.1f s of audio in %.1f s = %.0fx real time",
        stats.utterances,
        stats.frames,
        stats.dim,
        out_dir,
        stats.skipped,
        stats.audio_seconds,
        stats.wall_seconds,
        stats.real_time_speedup,
    )
    return stats


def _run_jobs(jobs: list[Any], *, nj: int, progress: Callable[[int], None] | None) -> list[_ShardResult]:
    global _PROGRESS
    if not jobs:
        return []
    if nj <= 1 or len(jobs) == 1:
        _PROGRESS = progress
        try:
            return [_dump_shard(job) for job in jobs]
        finally:
            _PROGRESS = None
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    q = ctx.Queue()
    with ctx.Pool(min(nj, len(jobs)), initializer=_init_worker, initargs=(q,)) as pool:
        pending = pool.map_async(_dump_shard, jobs, chunksize=1)
        while True:
            try:
                n = q.get(timeout=0.1)
            except queue_mod.Empty:
                if pending.ready():
                    break
                continue
            if progress is not None:
                progress(n)
        results = pending.get()
    while True:  # late progress messages
        try:
            n = q.get_nowait()
        except queue_mod.Empty:
            break
        if progress is not None:
            progress(n)
    return results


def _shard_checksum_problem(shard_dir: Path, shard: int) -> str | None:
    """Why a shard that looks complete must be extracted again: its bytes changed since they were written."""
    sha_file = shard_dir / _shard_name("sha256", shard, "txt")
    if not sha_file.is_file():
        return None  # written before checksums existed: _assemble hashes it as it stands
    name = f"{SHARD_DIR}/{_shard_name('feats', shard, 'f16')}"
    stamp = _read_verified(shard_dir.parent).get(name)
    feats = shard_dir / _shard_name("feats", shard, "f16")
    if stamp == _stamp(feats):
        return None
    if sha256_files(feats) != sha_file.read_text(encoding="utf-8").strip():
        return f"{feats.name} does not match its sha256"
    return None


def _assemble(
    data_dir: Path,
    out_dir: Path,
    num_shards: int,
    cfg: Mapping[str, Any],
    factors: Sequence[float],
    stats: DumpStats,
    written: Mapping[int, list[int]],
) -> None:
    """Merge the shard indexes and write the side files; checksums, then index.tsv last.

    ``written`` holds the stamps of the shards extracted in this run: their checksums were taken
    from the bytes as written, so they count as verified without a second read.
    """
    shard_dir = out_dir / SHARD_DIR
    checksums: dict[str, str] = {}
    verified = _read_verified(out_dir)
    for k in range(num_shards):
        name = f"{SHARD_DIR}/{_shard_name('feats', k, 'f16')}"
        sha_file = shard_dir / _shard_name("sha256", k, "txt")
        if not sha_file.is_file():  # a shard from before checksums: hash it as it stands
            write_atomic(sha_file, sha256_files(out_dir / name) + "\n")
            verified[name] = _stamp(out_dir / name)
        checksums[name] = sha_file.read_text(encoding="utf-8").strip()
        if k in written:
            verified[name] = written[k]
    write_atomic(out_dir / CHECKSUM_FILE, "".join(f"{n}\t{h}\n" for n, h in checksums.items()))
    _write_verified(out_dir, verified)
    index_lines: list[str] = []
    frames: dict[str, int] = {}
    skipped: list[str] = []
    for k in range(num_shards):
        problem = shard_problem(shard_dir, k)
        if problem is not None:
            raise DataError(f"{shard_dir}: shard {k} is incomplete after extraction ({problem}); rerun the dump")
        for line in (shard_dir / _shard_name("index", k, "tsv")).read_text(encoding="utf-8").splitlines():
            utt, offset, n_frames, dim = line.split("\t")
            index_lines.append(f"{utt}\t{k}\t{offset}\t{n_frames}\t{dim}\n")
            frames[utt] = int(n_frames)
            stats.dim = int(dim)
        skip_path = shard_dir / _shard_name("skipped", k, "tsv")
        if skip_path.exists():
            skipped.extend(line for line in skip_path.read_text(encoding="utf-8").splitlines() if line)
    stats.utterances = len(frames)
    stats.frames = sum(frames.values())
    stats.skipped = len(skipped)
    for line in skipped[:5]:
        logger.warning("skipped %s", line.replace("\t", ": "))
    if len(skipped) > 5:
        logger.warning("... and %d more skipped utterances, listed in %s", len(skipped) - 5, out_dir / "skipped.txt")

    write_atomic(out_dir / "utt2num_frames", "".join(f"{u} {frames[u]}\n" for u in sorted(frames)))
    write_atomic(out_dir / "skipped.txt", "".join(f"{s}\n" for s in sorted(skipped)))
    for name, prefix_values in (("text", False), ("utt2spk", True)):
        src = data_dir / name
        if not src.exists():
            if name == "text":
                logger.warning("%s has no text file; the dump can be used for decoding only", data_dir)
            continue
        mapping = read_scp(src)
        lines = []
        for utt, value in mapping.items():
            for f in factors:
                out_id = speed_id(utt, f)
                if out_id in frames:
                    lines.append(f"{out_id} {speed_id(value, f) if prefix_values else value}\n")
        write_atomic(out_dir / name, "".join(sorted(lines)))
    write_atomic(out_dir / "frontend.yaml", yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True))
    if (data_dir / "meta.yaml").exists():  # corpus and transcript form travel on to decode and score
        write_atomic(out_dir / "meta.yaml", (data_dir / "meta.yaml").read_text(encoding="utf-8"))
    info = asdict(stats)
    info["speed_factors"] = list(factors)
    info["real_time_speedup"] = round(stats.real_time_speedup, 1) if stats.wall_seconds > 0 else None
    write_atomic(out_dir / "dump.yaml", yaml.safe_dump(info, sort_keys=False))
    write_atomic(out_dir / INDEX_FILE, "".join(index_lines))
