"""Kaldi data dirs as the field writes them: ``wav.scp`` pipes, ``segments`` and ``reco2dur``.

Everything that reads an utterance's audio from a data dir (feature dumps, on-the-fly training,
``kospeech decode``, validation, the lhotse export) goes through :func:`audio_items` (what to
read, per utterance) and :func:`read_item` (read it), so a pipe or a segment behaves the same
everywhere, and a failure is one failed utterance whose message names the line at fault.

``wav.scp`` values
    A file path (``.pcm`` = KsponSpeech raw PCM, anything else soundfile decodes), or a Kaldi
    pipe: a command ending in ``|`` whose standard output is an audio file (``sox x.flac -t wav
    - |``, ``flac -c -d -s x.flac |``, ``cat header.wav x.pcm |``). Commands run without a shell
    when they are a plain pipeline (``a | b``, split with :mod:`shlex`); anything a shell must
    interpret (``$VAR``, redirections, ``;``, ``&&``, globs) goes through ``/bin/sh -c``, as
    Kaldi would run it. A pipeline fails when any command in it fails (``pipefail``; the
    rightmost failure is reported, and a writer stopped by SIGPIPE is not one).
    ``cat FILE... |`` is read in-process: it is what our own KsponSpeech dirs hold, and a
    process per utterance is the one cost a pipe adds.
``segments``
    ``utt-id recording-id start end`` (seconds; ``end`` -1 = to the end of the recording):
    utterances cut from longer recordings; ``wav.scp`` is then keyed by recording. An end past
    the recording by up to :data:`MAX_OVERSHOOT` seconds is clipped, as Kaldi's
    ``extract-segments`` does; more is an error.
``reco2dur``
    ``recording-id seconds``: durations without running a pipe (lhotse reads it too).

A plain path with no segment stays a ``str`` item, so feature-dump plans (hashed item lists) of
dirs made before pipes were read are unchanged; pipes and segments become :class:`AudioRef`.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kospeech.errors import DataError

logger = logging.getLogger(__name__)

MAX_OVERSHOOT = 0.5
"""Seconds a segment's end may pass its recording's end (clipped), as in Kaldi's extract-segments."""

PIPE_TIMEOUT_S = 600.0
"""A wav.scp command that has not finished after this long fails its utterance (a hung network mount)."""

_SHELL_CHARS = frozenset("$`;&<>(){}*?[]~#\n")
"""Characters that only a shell gives meaning to; a command holding one runs through ``/bin/sh -c``."""


class AudioRef(NamedTuple):
    """What to read for one utterance: a wav.scp value, optionally cut (a ``segments`` line).

    A tuple, so a feature dump's plan (a JSON list) and its worker processes carry it as is.
    """

    source: str
    """The wav.scp value: a path, or a command ending in ``|``."""
    start: float = 0.0
    """Seconds into the recording (segments)."""
    end: float = -1.0
    """Seconds; -1 (or any value <= 0): to the end of the recording."""
    where: str = ""
    """The line it comes from (``DIR/segments:12 'utt'``), for error messages."""


AudioItem = str | AudioRef
"""A plain path (the common case, kept a str) or an :class:`AudioRef`."""


# ---------------------------------------------------------------------------------------------
# pipes


def is_pipe(value: str) -> bool:
    """True for a Kaldi pipe in wav.scp (``cmd |``)."""
    return value.rstrip().endswith("|")


def pipe_command(value: str) -> str:
    """The command of a wav.scp pipe, without its trailing ``|``."""
    return value.rstrip()[:-1].strip()


def split_pipeline(command: str) -> list[list[str]] | None:
    """``a x | b y`` -> ``[["a", "x"], ["b", "y"]]``, or None when only a shell can run it.

    A ``|`` inside quotes stays an argument (shlex); ``||`` and the characters in
    :data:`_SHELL_CHARS` anywhere in the command send it to the shell, which is always correct,
    only slower.
    """
    if any(c in _SHELL_CHARS for c in command) or "||" in command:
        return None
    if not any(c in command for c in "'\"\\"):  # nothing quoted: a plain split (shlex costs 100 us a line)
        tokens = command.replace("|", " | ").split()
    else:
        lexer = shlex.shlex(command, posix=True, punctuation_chars="|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError:  # unbalanced quotes: let the shell say what is wrong
            return None
    stages: list[list[str]] = [[]]
    for token in tokens:
        if token == "|":
            stages.append([])
        else:
            stages[-1].append(token)
    if any(not stage for stage in stages):
        return None
    return stages


def _cat_files(stages: list[list[str]]) -> list[str] | None:
    """The files of a lone ``cat FILE...`` (no options), which is read without a process."""
    if len(stages) != 1 or stages[0][0] != "cat" or len(stages[0]) < 2:
        return None
    files = stages[0][1:]
    return None if any(f.startswith("-") for f in files) else files


def _stderr_tail(data: bytes, limit: int = 300) -> str:
    text = " ".join(data.decode("utf-8", "replace").split())
    return text if len(text) <= limit else "..." + text[-limit:]


def run_pipe(value: str, where: str = "") -> bytes:
    """The standard output of a wav.scp pipe; a DataError naming ``where`` and the command when
    it cannot start, fails (any command of the pipeline) or prints nothing."""
    command = pipe_command(value)
    label = f"{where}: " if where else ""
    if not command:
        raise DataError(f"{label}an empty command before '|'")
    stages = split_pipeline(command)
    files = _cat_files(stages) if stages else None
    if files is not None:
        try:
            data = b"".join(Path(f).read_bytes() for f in files)
        except OSError as err:
            raise DataError(f"{label}`{command}` failed: {err.filename or ''}: {err.strerror or err}") from None
    else:
        data = _run_processes(command, stages, label)
    if not data:
        raise DataError(f"{label}`{command}` printed no audio")
    return data


def _run_processes(command: str, stages: list[list[str]] | None, label: str) -> bytes:
    """Run a pipeline (without a shell when ``stages`` is given) and return its output."""
    argvs: list[list[str]] = stages if stages is not None else [["/bin/sh", "-c", command]]
    procs: list[subprocess.Popen[bytes]] = []
    errs: list[tempfile._TemporaryFileWrapper[bytes]] = []
    try:
        previous = subprocess.DEVNULL
        for argv in argvs:
            err = tempfile.TemporaryFile()
            errs.append(err)  # type: ignore[arg-type]
            try:
                proc = subprocess.Popen(argv, stdin=previous, stdout=subprocess.PIPE, stderr=err)
            except FileNotFoundError:
                raise DataError(f"{label}`{command}`: the program '{argv[0]}' is not installed (not on PATH)") from None
            except OSError as e:
                raise DataError(f"{label}`{command}`: cannot run '{argv[0]}': {e.strerror or e}") from None
            if procs and procs[-1].stdout is not None:
                procs[-1].stdout.close()  # the next command owns it now: SIGPIPE reaches the writer
            procs.append(proc)
            previous = proc.stdout  # type: ignore[assignment]
        try:
            data, _ = procs[-1].communicate(timeout=PIPE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"{label}`{command}` did not finish in {PIPE_TIMEOUT_S:.0f} s") from None
        codes = [proc.wait(timeout=PIPE_TIMEOUT_S) for proc in procs]
        # the rightmost failure is the cause (bash's pipefail); a writer killed by SIGPIPE because a
        # later command stopped reading (`cat x | head -c 44`) is no failure of its own
        failed = [k for k, code in enumerate(codes) if code != 0 and not (code == -13 and k < len(codes) - 1)]
        if failed:
            k = failed[-1]
            errs[k].seek(0)
            tail = _stderr_tail(errs[k].read())
            name = argvs[k][0] if stages is not None else "the shell"
            raise DataError(f"{label}`{command}` failed: {name} exited with status {codes[k]}"
                            + (f": {tail}" if tail else ""))
        return data
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for err in errs:
            err.close()


# ---------------------------------------------------------------------------------------------
# a streamed WAV header: what makes headerless PCM readable through `cat`


def streamed_wav_header(sample_rate: int = 16000, channels: int = 1) -> bytes:
    """A 44-byte 16-bit PCM WAV header whose RIFF and data sizes are 0xFFFFFFFF ("streamed").

    ``cat header.wav x.pcm`` is then a WAV file of any length: Kaldi's wave reader reads such a
    header to the end of the stream (its "stream mode" needs both sizes all ones), and libsndfile
    (soundfile, hence lhotse) takes the data size from what is there. One such file serves a
    whole corpus of headerless PCM, so nothing is converted or copied.
    """
    block = 2 * channels
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF)


def pcm_pipe(header: str | os.PathLike[str], pcm: str | os.PathLike[str]) -> str:
    """The wav.scp value that reads a headerless PCM file as WAV: ``cat HEADER PCM |``."""
    return f"cat {shlex.quote(str(header))} {shlex.quote(str(pcm))} |"


# ---------------------------------------------------------------------------------------------
# reading one item


@functools.lru_cache(maxsize=64)
def _is_pcm_header(path: str) -> int:
    """The rate of a file holding exactly a :func:`streamed_wav_header` of 16-bit mono, else 0."""
    try:
        data = Path(path).read_bytes() if Path(path).stat().st_size == 44 else b""
    except OSError:
        return 0
    rate = int.from_bytes(data[24:28], "little") if len(data) == 44 else 0
    return rate if rate > 0 and data == streamed_wav_header(rate) else 0


def headed_pcm(value: str) -> tuple[str, int] | None:
    """``(pcm path, rate)`` of ``cat HEADER x.pcm |`` with a streamed 16-bit mono header (what our
    KsponSpeech prep writes), else None: such a pipe is read as the PCM file it is, memory-mapped
    or sized like any ``.pcm``, at the cost of reading a bare path."""
    if not is_pipe(value):
        return None
    stages = split_pipeline(pipe_command(value))
    files = _cat_files(stages) if stages else None
    if files is None or len(files) != 2 or not files[1].lower().endswith(".pcm"):
        return None
    rate = _is_pcm_header(files[0])
    return (files[1], rate) if rate else None


@functools.lru_cache(maxsize=2)
def _pipe_decoded(value: str) -> tuple[np.ndarray, int]:
    from kospeech.audio import read_audio_bytes

    return read_audio_bytes(run_pipe(value), f"the output of `{pipe_command(value)}`")


def pipe_wave(value: str, where: str = "") -> tuple[np.ndarray, int]:
    """A pipe's decoded output at its own rate (do not change it in place: it is shared).

    The last two outputs are kept, keyed by the wav.scp value alone, because a recording's
    segments come one after another and a pipe must be run whole for each.
    """
    try:
        return _pipe_decoded(value)
    except DataError as err:
        raise DataError(f"{where}: {err}" if where else str(err)) from None


def _file_range(path: str, first: float, stop: float) -> tuple[np.ndarray, int]:
    """Samples ``[first, stop)`` seconds of an audio file (memory-mapped PCM, or soundfile's seek)
    and its rate, without decoding the rest of a long recording."""
    import soundfile as sf

    from kospeech.audio import PCM_SAMPLE_RATE, downmix, is_pcm

    if is_pcm(path):
        rate = PCM_SAMPLE_RATE
        samples = np.memmap(path, dtype="<i2", mode="r")
        a, b = int(round(first * rate)), int(round(stop * rate))
        return samples[a:b].astype(np.float32) / 32768.0, rate
    rate = sf.info(path).samplerate
    a, b = int(round(first * rate)), int(round(stop * rate))
    wave, rate = sf.read(path, start=a, stop=b, dtype="float32", always_2d=True)
    return downmix(wave, path), int(rate)


def _bounds(start: float, end: float, total: float, where: str) -> tuple[float, float]:
    """``(start, end)`` of a segment checked against its recording's ``total`` seconds."""
    stop = total if end <= 0 else end
    if stop > total:
        if stop - total > MAX_OVERSHOOT:
            raise DataError(f"{where}: the segment ends at {end:.3f} s but its recording lasts {total:.3f} s")
        stop = total
    if start >= stop:
        raise DataError(f"{where}: the segment starts at {start:.3f} s, at or after its end ({stop:.3f} s; the "
                        f"recording lasts {total:.3f} s)")
    return start, stop


def read_item(item: AudioItem, *, sample_rate: int = 16000) -> np.ndarray:
    """One utterance's audio as a float32 mono wave at ``sample_rate``: a path (as
    :func:`kospeech.audio.read_audio`), a pipe (run, its output decoded), either cut to a segment.

    Every failure is a DataError naming the wav.scp or segments line, so callers that skip bad
    utterances (dump, training, decoding) skip this one alone.
    """
    from kospeech.audio import audio_duration, check_finite, check_wav_complete, read_audio, resample_wave

    if isinstance(item, str) and not is_pipe(item):
        return read_audio(item, sample_rate=sample_rate)
    ref = item if isinstance(item, AudioRef) else AudioRef(item)
    where = ref.where or ref.source
    pcm = headed_pcm(ref.source)
    if pcm is not None:  # `cat header.wav x.pcm |`: the .pcm itself, at the header's rate
        ref = ref._replace(source=pcm[0])
        if pcm[1] != 16000:
            raise DataError(f"{where}: a header of {pcm[1]} Hz before a .pcm (KsponSpeech PCM is 16 kHz)")
    if is_pipe(ref.source):
        wave, rate = pipe_wave(ref.source, ref.where)
        if ref.start > 0 or ref.end > 0:
            first, stop = _bounds(ref.start, ref.end, len(wave) / rate, where)
            wave = wave[int(round(first * rate)) : int(round(stop * rate))]
        wave = np.array(wave, dtype=np.float32)  # a copy: the cached wave must not change under a caller
    elif ref.start > 0 or ref.end > 0:
        try:
            total = audio_duration(ref.source)
            check_wav_complete(ref.source)
        except DataError as err:
            raise DataError(f"{ref.where}: {err}" if ref.where else str(err)) from None
        first, stop = _bounds(ref.start, ref.end, total, where)
        wave, rate = _file_range(ref.source, first, stop)
    else:
        try:
            return read_audio(ref.source, sample_rate=sample_rate)
        except DataError as err:
            raise DataError(f"{ref.where}: {err}" if ref.where else str(err)) from None
    if wave.size == 0:
        raise DataError(f"{where}: no samples")
    check_finite(wave, where)
    return resample_wave(np.ascontiguousarray(wave, dtype=np.float32), rate, sample_rate)


def item_duration(item: AudioItem) -> float:
    """Seconds of one item: a file's header or size, a segment's bounds, else the pipe's output."""
    from kospeech.audio import audio_duration

    if isinstance(item, str) and not is_pipe(item):
        return audio_duration(item)
    ref = item if isinstance(item, AudioRef) else AudioRef(item)
    if ref.end > 0:
        return ref.end - ref.start
    pcm = headed_pcm(ref.source)
    if pcm is not None:
        ref = ref._replace(source=pcm[0])
    if not is_pipe(ref.source):
        return audio_duration(ref.source) - ref.start
    wave, rate = pipe_wave(ref.source, ref.where)
    return len(wave) / rate - ref.start


# ---------------------------------------------------------------------------------------------
# a data dir's items


class Segment(NamedTuple):
    """One ``segments`` line."""

    recording: str
    start: float
    end: float
    line: int


def read_segments(path: str | os.PathLike[str]) -> dict[str, Segment]:
    """``segments`` (``utt reco start end``) by utterance; a malformed line is a DataError naming it."""
    from kospeech.data.datadir import read_scp

    path = Path(path)
    out: dict[str, Segment] = {}
    for n, (utt, value) in enumerate(read_scp(path).items(), start=1):
        out[utt] = parse_segment(value, f"{path}:{n}: '{utt}'", n)
    return out


def parse_segment(value: str, where: str, line: int = 0) -> Segment:
    """``reco start end`` -> :class:`Segment`, or a DataError saying what is wrong with it."""
    parts = value.split()
    if len(parts) != 3:
        raise DataError(f"{where}: expected 'utt-id recording-id start end', got '{value}'")
    try:
        start, end = float(parts[1]), float(parts[2])
    except ValueError:
        raise DataError(f"{where}: start and end must be seconds, got '{parts[1]}' '{parts[2]}'") from None
    if start < 0 or (end > 0 and end <= start) or (end <= 0 and end != -1):
        raise DataError(f"{where}: start {start} and end {end} do not make a segment (0 <= start < end, or end -1)")
    return Segment(parts[0], start, end, line)


def audio_items(directory: str | os.PathLike[str]) -> dict[str, AudioItem]:
    """Per utterance of a data dir, what :func:`read_item` reads: wav.scp's value, or its segment.

    Raises a DataError naming the line for a malformed wav.scp or segments line, or a segment
    whose recording wav.scp does not list (``kospeech data validate --fix`` drops those).
    """
    from kospeech.data.datadir import read_scp

    directory = Path(directory)
    scp = directory / "wav.scp"
    if not scp.exists():
        raise DataError(f"{directory} has no wav.scp; is it a Kaldi data dir?")
    wav = read_scp(scp)
    line = {key: n for n, key in enumerate(wav, start=1)}  # read_scp refuses blank lines: index = line
    seg_path = directory / "segments"
    if not seg_path.exists():
        return {u: AudioRef(v, where=f"{scp}:{line[u]} '{u}'") if is_pipe(v) else v for u, v in wav.items()}
    items: dict[str, AudioItem] = {}
    for utt, seg in read_segments(seg_path).items():
        if seg.recording not in wav:
            raise DataError(f"{seg_path}:{seg.line}: '{utt}' is cut from recording '{seg.recording}', which "
                            f"{scp} does not list; run `kospeech data validate {directory} --fix`")
        where = f"{seg_path}:{seg.line} '{utt}' (recording '{seg.recording}', {scp}:{line[seg.recording]})"
        items[utt] = AudioRef(wav[seg.recording], seg.start, seg.end, where)
    return items


def _float_map(path: Path) -> dict[str, float]:
    from kospeech.data.datadir import read_scp

    out: dict[str, float] = {}
    for n, (key, value) in enumerate(read_scp(path).items(), start=1):
        try:
            out[key] = float(value)
        except ValueError:
            raise DataError(f"{path}:{n}: '{key}' has a non-numeric duration '{value}'") from None
    return out


def known_durations(directory: str | os.PathLike[str]) -> dict[str, float]:
    """Utterance durations a data dir states without reading audio: ``utt2dur``, else a segment's
    bounds (its end -1: ``reco2dur`` minus its start), else ``reco2dur`` (recording = utterance)."""
    directory = Path(directory)
    out: dict[str, float] = {}
    reco2dur = _float_map(directory / "reco2dur") if (directory / "reco2dur").exists() else {}
    if (directory / "segments").exists():
        for utt, seg in read_segments(directory / "segments").items():
            if seg.end > 0:
                out[utt] = seg.end - seg.start
            elif seg.recording in reco2dur:
                out[utt] = reco2dur[seg.recording] - seg.start
    else:
        out.update(reco2dur)
    if (directory / "utt2dur").exists():
        out.update(_float_map(directory / "utt2dur"))
    return out


def recording_ids(directory: str | os.PathLike[str], utts: Mapping[str, object]) -> dict[str, str]:
    """Utterance -> recording: its segment's recording, or itself where there is no segments file."""
    seg_path = Path(directory) / "segments"
    if not seg_path.exists():
        return {u: u for u in utts}
    segments = read_segments(seg_path)
    return {u: segments[u].recording for u in utts if u in segments}
