"""Kaldi-style data dirs: the one interchange format between corpora and the rest of the toolkit.

A data dir holds one line per utterance in each of these files, sorted by utterance id
(byte order, as ``LC_ALL=C sort`` gives, which is Python's code-point order):

``wav.scp``
    ``utt-id path`` or ``utt-id command |`` (a Kaldi pipe whose output is audio). A ``.pcm`` path
    means KsponSpeech raw PCM (16-bit little-endian, mono, 16 kHz, no header); anything else is
    decoded by soundfile (wav, flac, ogg). Relative paths are read from the current directory,
    as in Kaldi; the corpus preparers write absolute ones. With a ``segments`` file
    (``utt-id recording-id start end``) wav.scp is keyed by recording and ``reco2dur`` may give
    the recordings' durations; :mod:`kospeech.data.kaldi_io` reads all of these.
``text``
    ``utt-id transcript`` (normalised; never empty).
``utt2spk`` / ``spk2utt``
    ``utt-id speaker`` and its inverse ``speaker utt-id utt-id ...``.
``utt2dur``
    ``utt-id seconds`` (optional; prep writes it from file sizes / headers).
``meta.yaml``
    ``corpus`` (name), ``transcript`` (``phonetic`` or ``spelling``: the KsponSpeech form the
    text is in, which scoring reports), ``sample_rate``. Optional: a plain Kaldi or ESPnet dir
    without it is read with :data:`PLAIN_KALDI_META`.

Writers sort and write each file to a temporary name, then rename it, so an interrupted
stage never leaves a half-written file that looks complete. :func:`validate_data_dir` is the
counterpart of Kaldi's ``utils/validate_data_dir.sh``; with ``fix=True`` it plays
``utils/fix_data_dir.sh``: sort, drop what is broken, keep the ids every list agrees on.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kospeech.errors import DataError
from kospeech.files import (
    decode_line,
    mixed_encoding_error,
    raw_lines,
    read_lines,
    read_scp,
    split_scp_line,
    write_atomic,
    write_scp,
)

logger = logging.getLogger(__name__)

TRANSCRIPT_FORMS: tuple[str, ...] = ("phonetic", "spelling")
UTT_FILES: tuple[str, ...] = ("wav.scp", "text", "utt2spk", "utt2dur")
REQUIRED_FILES: tuple[str, ...] = ("wav.scp", "text", "utt2spk")


# ---------------------------------------------------------------------------------------------
# plain readers and writers


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Invert utt2spk; utterance lists come out sorted."""
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return spk2utt


def _format_dur(seconds: float) -> str:
    return f"{seconds:.3f}"


def write_meta(
    path: str | os.PathLike[str],
    *,
    corpus: str,
    transcript: str,
    sample_rate: int = 16000,
    normalization: str | None = None,
) -> None:
    """``meta.yaml``; ``normalization`` (a name of ``kospeech.text.normalize.NORMALIZATIONS``)
    only when the corpus code chose one."""
    if transcript not in TRANSCRIPT_FORMS:
        raise DataError(f"transcript form '{transcript}' is not one of {', '.join(TRANSCRIPT_FORMS)}")
    meta: dict[str, Any] = {"corpus": corpus, "transcript": transcript, "sample_rate": int(sample_rate)}
    if normalization is not None:
        meta["normalization"] = normalization
    write_atomic(path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))


def read_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A data dir's or feature dump's ``meta.yaml`` (corpus, transcript form, sample rate), {} when
    there is none; read like every text file (UTF-8 or CP949), checked like :func:`write_meta` writes it."""
    path = Path(directory) / "meta.yaml"
    if not path.exists():
        return {}
    try:
        meta = yaml.safe_load("\n".join(read_lines(path)))
    except yaml.YAMLError as err:
        raise DataError(f"{path}: YAML syntax error: {err}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a mapping with corpus, transcript, sample_rate")
    if meta.get("transcript") not in TRANSCRIPT_FORMS:
        raise DataError(
            f"{path}: 'transcript' is {meta.get('transcript')!r}; it must be one of {', '.join(TRANSCRIPT_FORMS)}"
        )
    return meta


@dataclass
class DataDir:
    """The contents of a data dir, in memory (all mappings keyed by utterance id)."""

    wav: dict[str, str]
    text: dict[str, str]
    utt2spk: dict[str, str]
    utt2dur: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def utt_ids(self) -> list[str]:
        return sorted(self.wav)

    def __len__(self) -> int:
        return len(self.wav)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.utt2dur.values()))


def write_data_dir(
    directory: str | os.PathLike[str],
    *,
    wav: Mapping[str, str],
    text: Mapping[str, str],
    utt2spk: Mapping[str, str],
    utt2dur: Mapping[str, float] | None = None,
    corpus: str,
    transcript: str,
    sample_rate: int = 16000,
    normalization: str | None = None,
    reco2dur: Mapping[str, float] | None = None,
) -> Path:
    """Write a complete data dir (every file sorted, each written atomically); returns its path.

    The id sets must agree; an id missing from one mapping is a bug in the caller, reported
    with the first few ids so it can be found. ``reco2dur`` (recordings are the utterances
    here) is for wav.scp pipes, whose durations a reader could only learn by running them.
    Values hold no whitespace, except wav.scp's pipes (``cmd args |``).
    """
    directory = Path(directory)
    ids = set(wav)
    for name, mapping in (("text", text), ("utt2spk", utt2spk), ("utt2dur", utt2dur), ("reco2dur", reco2dur)):
        if mapping is None:
            continue
        if set(mapping) != ids:
            diff = sorted(ids.symmetric_difference(mapping))[:5]
            raise DataError(f"write_data_dir({directory}): wav.scp and {name} disagree on ids, e.g. {diff}")
    for utt, line in text.items():
        if not line.strip():
            raise DataError(f"write_data_dir({directory}): utterance '{utt}' has an empty transcript")
    from kospeech.data.kaldi_io import is_pipe

    for name, mapping in (("wav.scp", wav), ("utt2spk", utt2spk)):
        for key, value in mapping.items():
            spaced = any(c.isspace() for c in str(value)) and not (name == "wav.scp" and is_pipe(str(value)))
            if not value or spaced or any(c.isspace() for c in key) or "\n" in str(value):
                raise DataError(f"write_data_dir({directory}): {name} entry '{key}' -> '{value}' has whitespace")
    directory.mkdir(parents=True, exist_ok=True)
    write_scp(directory / "wav.scp", wav)
    write_scp(directory / "text", {k: " ".join(v.split()) for k, v in text.items()})
    write_scp(directory / "utt2spk", utt2spk)
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    write_scp(directory / "spk2utt", {s: " ".join(u) for s, u in spk2utt.items()})
    if utt2dur is not None:
        write_scp(directory / "utt2dur", {k: _format_dur(v) for k, v in utt2dur.items()})
    if reco2dur is not None:
        write_scp(directory / "reco2dur", {k: _format_dur(v) for k, v in reco2dur.items()})
    write_meta(directory / "meta.yaml", corpus=corpus, transcript=transcript, sample_rate=sample_rate,
               normalization=normalization)
    return directory


def read_data_dir(directory: str | os.PathLike[str]) -> DataDir:
    """Read a data dir strictly (any malformed line is a DataError naming file and line)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data dir {directory} does not exist")
    wav = read_scp(directory / "wav.scp")
    text = read_scp(directory / "text")
    utt2spk = read_scp(directory / "utt2spk")
    utt2dur: dict[str, float] = {}
    if (directory / "utt2dur").exists():
        for utt, value in read_scp(directory / "utt2dur").items():
            try:
                utt2dur[utt] = float(value)
            except ValueError:
                raise DataError(f"{directory / 'utt2dur'}: '{utt}' has a non-numeric duration '{value}'") from None
    meta = read_meta(directory)
    for name, mapping in (("text", text), ("utt2spk", utt2spk)):
        if set(mapping) != set(wav):
            diff = sorted(set(wav).symmetric_difference(mapping))[:5]
            raise DataError(
                f"{directory}: wav.scp and {name} list different utterances (e.g. {diff}); "
                f"run `kospeech data validate {directory} --fix`"
            )
    return DataDir(wav=wav, text=text, utt2spk=utt2spk, utt2dur=utt2dur, meta=meta)


# ---------------------------------------------------------------------------------------------
# validation


@dataclass
class ValidationReport:
    """What :func:`validate_data_dir` found (``problems``) and, with ``fix``, what it removed."""

    directory: Path
    problems: list[str] = field(default_factory=list)
    removed: Counter[str] = field(default_factory=Counter)
    num_utts: int = 0
    fixed: bool = False
    backup: Path | None = None
    regenerated: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, message: str) -> None:
        self.problems.append(message)

    def summary(self) -> str:
        lines = [f"{self.directory}: {self.num_utts} utterances, {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        if self.fixed:
            total = sum(self.removed.values())
            lines.append(f"  fixed: removed {total} utterance(s); kept {self.num_utts}")
            lines += [f"    {reason}: {count}" for reason, count in sorted(self.removed.items())]
            if self.regenerated:
                lines.append(f"  durations measured again: {self.regenerated}")
            if self.backup is not None:
                lines.append(f"  the files as they were are in {self.backup}")
        return "\n".join(lines)


@dataclass
class _Parsed:
    entries: dict[str, str]
    duplicate_lines: int
    blank_lines: int
    undecodable_lines: int = 0
    encoding: str = "utf-8"


def _parse_tolerant(path: Path, report: ValidationReport, *, max_listed: int = 5) -> _Parsed:
    """Read ``key value`` lines, reporting (not raising) blank lines, duplicates, disorder and
    lines in neither UTF-8 nor CP949; files are read as the corpus readers read them."""
    entries: dict[str, str] = {}
    duplicates = 0
    bad = 0
    undecodable = 0
    listed = 0
    previous: str | None = None
    unsorted_line = 0
    first: dict[str, int] = {}
    counts = Counter[str]()

    def note(msg: str) -> None:
        nonlocal listed
        if listed < max_listed:
            report.add(msg)
        listed += 1

    try:
        data = path.read_bytes()
    except OSError as err:
        report.add(f"{path}: cannot be read ({err.strerror or err})")
        return _Parsed({}, 0, 0)
    for n, raw in enumerate(raw_lines(data), start=1):
        decoded = decode_line(raw)
        if decoded is None:
            note(f"{path}:{n}: neither UTF-8 nor CP949 (EUC-KR)")
            undecodable += 1
            continue
        line, encoding = decoded
        if not raw.isascii():
            counts[encoding] += 1
            first.setdefault(encoding, n)
        key, value = split_scp_line(line)
        if not key:
            note(f"{path}:{n}: blank line")
            bad += 1
            continue
        if key in entries:
            note(f"{path}:{n}: duplicate id '{key}' (first seen earlier in the file)")
            duplicates += 1
            continue
        if previous is not None and key < previous and not unsorted_line:
            unsorted_line = n
        previous = key
        entries[key] = value
    if unsorted_line:
        report.add(f"{path}:{unsorted_line}: not sorted by id (LC_ALL=C order); first out-of-order line")
    if listed > max_listed:
        report.add(f"{path}: ... and {listed - max_listed} more line problem(s)")
    encoding = "mixed" if len(counts) > 1 else next(iter(counts), "utf-8")
    if encoding == "mixed":
        report.add(f"{mixed_encoding_error(first, counts, path)}; --fix rewrites the file as UTF-8")
    elif encoding != "utf-8":
        report.add(f"{path}: {encoding.upper()} text (data dir files are UTF-8); --fix rewrites it as UTF-8")
    return _Parsed(entries, duplicates, bad, undecodable, encoding)


BACKUP_DIR = ".backup"
"""Where ``validate --fix`` copies the files it is about to rewrite (Kaldi's fix_data_dir.sh does the same)."""


def _backup(directory: Path, names: Iterable[str]) -> Path:
    """Copy ``names`` into ``DIR/.backup/`` (``.backup/2/``, ``3/``... when an earlier fix left one there)."""
    import shutil

    root = directory / BACKUP_DIR
    target, k = root, 1
    while target.exists() and any(p.is_file() for p in target.iterdir()):
        k += 1
        target = root / str(k)
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (directory / name).is_file():
            shutil.copy2(directory / name, target / name)
    return target


def _refusal(directory: Path, bad: Mapping[str, str], wav: Mapping[str, str], total: int) -> DataError | None:
    """A DataError when one reason would remove most utterances: the cause is then almost always
    outside the data (an encoding, a working directory, an unmounted disk), not broken utterances."""
    removed = Counter(bad.values())
    if not removed or not total:
        return None
    reason, count = removed.most_common(1)[0]
    if count * 2 <= total:
        return None
    examples = sorted(u for u, r in bad.items() if r == reason)[:3]
    hint = ""
    if reason == "missing audio file":
        relative = [u for u in examples if u in wav and not Path(wav[u]).is_absolute()]
        if relative:
            hint = (
                f"; wav.scp has relative paths ({wav[relative[0]]}), read from the current directory "
                f"{Path.cwd()}: run from the directory they are relative to"
            )
        else:
            hint = "; is the disk holding the audio mounted?"
    return DataError(
        f"{directory}: --fix would remove {count} of {total} utterances for one reason ({reason}, e.g. "
        f"{', '.join(examples)}){hint}. Nothing was changed; fix the cause, or pass --force to remove them"
    )


def _audio_header_problem(path: Path) -> str | None:
    """Why ``path`` is not usable audio, judged from its header alone (as ``soundfile.info`` reads
    it, plus a WAV's data chunk against the file size), or None.

    A file of random bytes named ``.wav`` exists and is not empty, so the size checks pass it;
    training and decoding then skip it one utterance at a time. Reading the header costs a few
    hundred bytes per file, not a decode, so validating a 600k-file corpus stays cheap.
    """
    from kospeech.audio import audio_duration, check_wav_complete

    try:
        check_wav_complete(path)
        if audio_duration(path) <= 0:
            return f"audio file {path} has a valid header but no samples"
    except DataError as err:
        return str(err)
    return None


@functools.lru_cache(maxsize=256)
def _which(program: str) -> str | None:
    """``shutil.which``, once per program (a 600k-line wav.scp runs a handful of programs)."""
    import shutil

    return shutil.which(program)


def _wav_problem(value: str) -> tuple[str, str, str] | None:
    """``(kind, reason, message)`` for a wav.scp value that cannot be read, judged without decoding
    it (``message`` follows ``'id'``), or None.

    A pipe is not run (as Kaldi's validate_data_dir.sh does not): its programs must be installed,
    and the files of a ``cat FILE... |`` must exist; a pipe that fails later fails its utterance.
    KsponSpeech's ``cat pcm_header.wav x.pcm |`` gets the checks of a bare ``.pcm``.
    """
    from kospeech.data.kaldi_io import headed_pcm, is_pipe, pipe_command, split_pipeline

    if not value:
        return "nopath", "no audio path", " has no path"
    pcm = headed_pcm(value)
    if pcm is not None:  # KsponSpeech's `cat pcm_header.wav x.pcm |`: the .pcm is checked as if listed bare
        value = pcm[0]
    elif is_pipe(value):
        stages = split_pipeline(pipe_command(value))
        if stages is None:  # a shell pipeline: run as written when read
            return None
        for argv in stages:
            if _which(argv[0]) is None:
                return "pipeprog", "pipe program not installed", (
                    f": the pipe '{value}' runs '{argv[0]}', which is not installed (not on PATH)")
        if stages[0][0] == "cat" and len(stages) == 1:
            for f in stages[0][1:]:
                if not Path(f).is_file():
                    return ("missing", "missing audio file",
                            f": audio file {f} (read by the pipe '{value}') does not exist")
        return None
    p = Path(value)
    try:
        size = p.stat().st_size
    except OSError:
        return "missing", "missing audio file", f": audio file {value} does not exist"
    if size == 0:
        return "emptyaudio", "empty audio file", f": audio file {value} is empty"
    if p.suffix.lower() == ".pcm" and size % 2:
        return "oddpcm", "truncated pcm", f": {value} is truncated ({size} bytes, odd)"
    if p.suffix.lower() != ".pcm" and (problem := _audio_header_problem(p)):
        return "badaudio", "unreadable audio", f": {problem}"
    return None


PLAIN_KALDI_META: dict[str, Any] = {"corpus": None, "transcript": "spelling", "sample_rate": 16000}
"""What a data dir without ``meta.yaml`` (a plain Kaldi or ESPnet dir) is read as: the corpus is
unknown, the text is taken as written (spelling), the audio is resampled to 16 kHz where it differs."""


def validate_data_dir(directory: str | os.PathLike[str], *, fix: bool = False, force: bool = False) -> ValidationReport:
    """Check a data dir like Kaldi's ``validate_data_dir.sh --no-feats``.

    Checks: required files exist; lines are well formed, unique, sorted and UTF-8; wav.scp's files
    exist and are not empty (a ``.pcm`` must have an even size; any other file needs an audio
    header soundfile can read, and a WAV the data its header announces) and its pipes' programs
    are installed; ``segments`` lines name a recording of wav.scp, with ``0 <= start < end`` (within
    ``reco2dur`` where it is given); text is not empty; utt2dur and reco2dur are positive numbers;
    every list names the same utterances; spk2utt is the inverse of utt2spk; a meta.yaml names a
    transcript form. A plain Kaldi/ESPnet dir without meta.yaml is valid: it is read with
    :data:`PLAIN_KALDI_META` (a log line says so).

    With ``fix=True`` the dir is rewritten sorted and in UTF-8, keeping only the utterances that
    are valid in every list (first occurrence of a duplicate id wins), spk2utt regenerated,
    wav.scp and reco2dur cut to the recordings kept segments use, and missing or invalid
    durations measured again from the audio; the report counts what was removed, by reason. A
    fixed dir validates clean. Nothing the user had is lost: the files are copied into
    ``DIR/.backup/`` first, and when one reason would remove more than half of the utterances
    nothing is written and a DataError says why (``force=True`` writes anyway).
    """
    from kospeech.data.kaldi_io import MAX_OVERSHOOT, parse_segment

    directory = Path(directory)
    report = ValidationReport(directory=directory)
    if not directory.is_dir():
        report.add(f"{directory}: no such data dir")
        return report
    for name in REQUIRED_FILES:
        if not (directory / name).exists():
            report.add(f"{directory / name}: missing (required)")
    if not report.ok:
        return report

    names = [*UTT_FILES, "segments", "reco2dur"]
    parsed = {name: _parse_tolerant(directory / name, report) for name in names if (directory / name).exists()}
    wav, text, utt2spk = parsed["wav.scp"].entries, parsed["text"].entries, parsed["utt2spk"].entries
    utt2dur = parsed["utt2dur"].entries if "utt2dur" in parsed else None
    seg_lines = parsed["segments"].entries if "segments" in parsed else None
    reco2dur = parsed["reco2dur"].entries if "reco2dur" in parsed else None
    bad: dict[str, str] = {}  # utt -> first reason it cannot be kept
    redo_dur: set[str] = set()  # durations --fix measures again
    redo_reco: set[str] = set()  # recording durations --fix measures again

    def mark(utt: str, reason: str) -> None:
        bad.setdefault(utt, reason)

    listed = Counter[str]()

    def note(kind: str, msg: str) -> None:
        listed[kind] += 1
        if listed[kind] <= 5:
            report.add(msg)

    reco_bad: dict[str, str] = {}
    for reco, value in wav.items():
        problem = _wav_problem(value)
        if problem is not None:
            kind, reason, message = problem
            note(kind, f"{directory / 'wav.scp'}: '{reco}'{message}")
            reco_bad[reco] = reason
    reco_dur: dict[str, float] = {}
    if reco2dur is not None:
        for reco, value in reco2dur.items():
            try:
                reco_dur[reco] = float(value)
            except ValueError:
                pass
            if reco_dur.get(reco, 0.0) <= 0:
                note("recodur",
                     f"{directory / 'reco2dur'}: '{reco}' has an invalid duration '{value}' (--fix measures it)")
                redo_reco.add(reco)
                reco_dur.pop(reco, None)
        for reco in sorted(set(wav) - set(reco2dur)):
            note("recodur", f"{directory / 'reco2dur'}: lacks recording '{reco}' of wav.scp (--fix measures it)")
            redo_reco.add(reco)
    utt_source: dict[str, str] = {}  # utt -> its wav.scp value (for --fix's refusal hint)
    if seg_lines is None:
        utt_source = dict(wav)
        for reco, reason in reco_bad.items():
            mark(reco, reason)
    else:
        for utt, value in seg_lines.items():
            try:
                seg = parse_segment(value, f"{directory / 'segments'}: '{utt}'")
            except DataError as err:
                note("segment", str(err))
                mark(utt, "malformed segment")
                continue
            if seg.recording not in wav:
                note("segreco", f"{directory / 'segments'}: '{utt}' is cut from recording '{seg.recording}', which "
                                "wav.scp does not list")
                mark(utt, "segment of an unlisted recording")
                continue
            utt_source[utt] = wav[seg.recording]
            if seg.recording in reco_bad:
                mark(utt, reco_bad[seg.recording])
            elif seg.recording in reco_dur and max(seg.start, seg.end) > reco_dur[seg.recording] + MAX_OVERSHOOT:
                note("segend", f"{directory / 'segments'}: '{utt}' ({seg.start}-{seg.end} s) goes past the end of "
                               f"recording '{seg.recording}' ({reco_dur[seg.recording]} s in reco2dur)")
                mark(utt, "segment past the end of its recording")
    for utt, line in text.items():
        if not line:
            note("emptytext", f"{directory / 'text'}: '{utt}' has an empty transcript")
            mark(utt, "empty transcript")
    for utt, spk in utt2spk.items():
        if not spk or len(spk.split()) != 1:
            note("spk", f"{directory / 'utt2spk'}: '{utt}' needs exactly one speaker id, got '{spk}'")
            mark(utt, "bad speaker")
    if utt2dur is not None:
        for utt, value in utt2dur.items():
            try:
                ok = float(value) > 0
            except ValueError:
                ok = False
            if not ok:
                note("dur", f"{directory / 'utt2dur'}: '{utt}' has an invalid duration '{value}' (--fix measures it)")
                redo_dur.add(utt)

    audio_list = "wav.scp" if seg_lines is None else "segments"
    lists = {audio_list: wav if seg_lines is None else seg_lines, "text": text, "utt2spk": utt2spk}
    if utt2dur is not None:
        lists["utt2dur"] = utt2dur
    all_ids = set().union(*[set(m) for m in lists.values()])
    for name, mapping in lists.items():
        missing = sorted(all_ids - set(mapping))
        if missing:
            others = [o for o in lists if o != name]
            regenerated = " (--fix measures their durations)" if name == "utt2dur" else ""
            report.add(
                f"{directory / name}: lacks {len(missing)} utterance(s) that other lists ({', '.join(others)}) "
                f"have, e.g. {missing[:3]}{regenerated}"
            )
            for utt in missing:
                if name == "utt2dur":
                    redo_dur.add(utt)
                else:
                    mark(utt, f"not in {name}")

    # spk2utt must be the exact inverse of utt2spk
    spk2utt_path = directory / "spk2utt"
    expected = {s: " ".join(u) for s, u in utt2spk_to_spk2utt(utt2spk).items()}
    if not spk2utt_path.exists():
        report.add(f"{spk2utt_path}: missing (it is generated from utt2spk; --fix writes it)")
    else:
        spk_parsed = _parse_tolerant(spk2utt_path, report)
        if spk_parsed.entries != expected:
            diff = sorted(set(expected.items()).symmetric_difference(spk_parsed.entries.items()))
            report.add(
                f"{spk2utt_path}: not consistent with utt2spk ({len(diff)} differing speaker line(s), "
                f"e.g. speaker '{diff[0][0]}'); --fix regenerates it"
            )

    meta_path = directory / "meta.yaml"
    if meta_path.exists():
        try:
            read_meta(directory)
        except DataError as err:
            report.add(str(err))
    else:
        logger.info("%s: no meta.yaml: a plain Kaldi/ESPnet data dir, read with the defaults corpus unknown, "
                    "transcript %s (the text as written), sample_rate %d", directory,
                    PLAIN_KALDI_META["transcript"], PLAIN_KALDI_META["sample_rate"])

    if not fix:
        report.num_utts = len(lists[audio_list])
        return report
    if report.ok:
        report.fixed = True
        report.num_utts = len(lists[audio_list])
        return report

    from kospeech.data.kaldi_io import AudioRef, item_duration

    durations: dict[str, float] = {}
    if utt2dur is not None:
        for utt in sorted(redo_dur & set(utt_source) - set(bad)):
            item: Any = utt_source[utt]
            if seg_lines is not None:
                seg = parse_segment(seg_lines[utt], utt)
                item = AudioRef(utt_source[utt], seg.start, seg.end)
            try:
                durations[utt] = item_duration(item)
            except DataError:
                mark(utt, "unreadable audio")
    refusal = _refusal(directory, bad, utt_source, len(all_ids))
    if refusal is not None and not force:
        raise refusal
    keep = sorted(all_ids - set(bad))
    report.num_utts = len(keep)
    for reason in bad.values():
        report.removed[reason] += 1
    for name, p in parsed.items():
        if p.duplicate_lines:
            report.removed[f"duplicate line in {name}"] += p.duplicate_lines
        if p.blank_lines:
            report.removed[f"blank line in {name}"] += p.blank_lines
        if p.undecodable_lines:
            report.removed[f"line in neither UTF-8 nor CP949 in {name}"] += p.undecodable_lines
    report.backup = _backup(directory, [*names, "spk2utt"])
    if utt2dur is not None:
        report.regenerated = len(durations)
        utt2dur.update({u: _format_dur(d) for u, d in durations.items()})
    for name, mapping in lists.items():
        write_scp(directory / name, {u: mapping[u] for u in keep})
    if seg_lines is not None:  # the recordings kept segments are cut from
        used = {seg_lines[u].split()[0] for u in keep}
        write_scp(directory / "wav.scp", {r: wav[r] for r in used})
    else:
        used = set(keep)
    if reco2dur is not None:
        for reco in sorted(redo_reco & used):
            try:
                reco2dur[reco] = _format_dur(item_duration(wav[reco]))
            except DataError as err:
                logger.warning("%s: recording '%s': duration not measured: %s", directory, reco, err)
        write_scp(directory / "reco2dur", {r: reco2dur[r] for r in used if r in reco2dur})
    kept_spk = {u: utt2spk[u] for u in keep}
    write_scp(spk2utt_path, {s: " ".join(u) for s, u in utt2spk_to_spk2utt(kept_spk).items()})
    if not meta_path.exists():
        logger.info("%s: no meta.yaml; not invented by --fix (a plain Kaldi dir is read with the defaults)", directory)
    report.fixed = True
    logger.info(
        "fixed %s: kept %d, removed %d (%s); originals in %s",
        directory,
        len(keep),
        sum(report.removed.values()),
        dict(report.removed),
        report.backup,
    )
    return report


def filter_ids(mapping: Mapping[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    """The entries of ``mapping`` whose key is in ``keep``."""
    keep_set = set(keep)
    return {k: v for k, v in mapping.items() if k in keep_set}
