"""File primitives every layer uses: atomic writes, text lines in UTF-8 or CP949, utt-id text
(Kaldi ``text``, ``.trn``), YAML, checksums.

The ground floor of the package: it imports nothing of kospeech but its errors, so any module
(tokenizers, LMs, data dirs, checkpoints, exports) can write and read files the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from kospeech.errors import ConfigError, DataError


def write_stream_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    A rename within one file system is atomic, so a crash or a kill at any moment leaves the old
    file or the new one, never half of one under the final name. The temporary name is unique
    (pid and a random token, created exclusively) and the file is created like any other output
    (mode 0666 less the umask; ``mkstemp`` would make it 0600). On any failure it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or bytes) to ``path`` atomically (:func:`write_stream_atomic`).

    Every text or in-memory file the toolkit writes goes through here; ``torch.save`` streams
    use :func:`kospeech.torch_files.atomic_save`, which adds the full-disk translation torch needs.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    return write_stream_atomic(path, lambda fh: fh.write(data))


TEXT_ENCODINGS: tuple[str, ...] = ("utf-8", "cp949")
"""Encodings of text files tried in order, per line: KsponSpeech is released in CP949 (EUC-KR),
re-packed copies and everything this toolkit writes are UTF-8."""

_BOM = b"\xef\xbb\xbf"


def decode_line(raw: bytes) -> tuple[str, str] | None:
    """``(text, encoding)`` of one line, UTF-8 (strictly) first, then CP949; None when neither."""
    for encoding in TEXT_ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    return None


def raw_lines(data: bytes) -> list[bytes]:
    return (data[len(_BOM) :] if data.startswith(_BOM) else data).splitlines()


def mixed_encoding_error(first: Mapping[str, int], counts: Counter[str], path: str | os.PathLike[str]) -> DataError:
    minority = min(counts, key=lambda e: (counts[e], e))
    majority = max(counts, key=lambda e: (counts[e], e))
    return DataError(
        f"{path}:{first[minority]}: this line is {minority.upper()} but the file is otherwise "
        f"{majority.upper()} (line {first[majority]}); a file must use one encoding: convert the line"
    )


def decode_lines(data: bytes, path: str | os.PathLike[str]) -> tuple[list[str], str]:
    """The lines of a text file and its encoding (``utf-8`` or ``cp949``), as corpus readers read them.

    Each line is tried as UTF-8 (strictly), then CP949; a leading UTF-8 byte-order mark is
    dropped. Per line, because a CP949 line is never valid UTF-8 while a whole-file CP949 decode
    of UTF-8 text can succeed as mojibake. A file whose non-ASCII lines disagree, or a line that
    is neither, is a DataError naming the line.
    """
    lines: list[str] = []
    first: dict[str, int] = {}
    counts = Counter[str]()
    for n, raw in enumerate(raw_lines(data), start=1):
        decoded = decode_line(raw)
        if decoded is None:
            raise DataError(
                f"{path}:{n}: neither UTF-8 nor CP949 (EUC-KR); convert the file, e.g. "
                f"`iconv -f <encoding> -t utf-8 {path}`"
            )
        lines.append(decoded[0])
        if not raw.isascii():
            counts[decoded[1]] += 1
            first.setdefault(decoded[1], n)
    if len(counts) > 1:
        raise mixed_encoding_error(first, counts, path)
    return lines, next(iter(counts), "utf-8")


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a text file in UTF-8 or CP949 (:func:`decode_lines`); a missing file is a DataError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    return decode_lines(data, path)[0]


def split_scp_line(line: str) -> tuple[str, str]:
    """``(key, value)`` of a ``key value`` line (Kaldi's table format); ``("", "")`` for a blank line."""
    parts = line.strip().split(maxsplit=1)
    if not parts:
        return "", ""
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def read_scp(path: str | os.PathLike[str], *, allow_empty: bool = False) -> dict[str, str]:
    """``key value`` lines as a dict (insertion order = file order).

    Raises a DataError naming the file and line for a blank line, a key without a value
    (unless ``allow_empty``) or a duplicate key.
    """
    path = Path(path)
    out: dict[str, str] = {}
    for n, line in enumerate(read_lines(path), start=1):
        key, value = split_scp_line(line)
        if not key:
            raise DataError(f"{path}:{n}: blank line; remove it (or run `kospeech data validate --fix`)")
        if not value and not allow_empty:
            raise DataError(f"{path}:{n}: '{key}' has no value; every line must be '<id> <value>'")
        if key in out:
            raise DataError(f"{path}:{n}: duplicate id '{key}'; run `kospeech data validate --fix` to keep the first")
        out[key] = value
    return out


def write_scp(path: str | os.PathLike[str], entries: Mapping[str, Any]) -> None:
    """Write ``key value`` lines sorted by key, atomically."""
    lines = [f"{k} {entries[k]}\n" for k in sorted(entries)]
    write_atomic(path, "".join(lines))

def read_utt_text(path: str | os.PathLike[str], *, allow_empty: bool = True) -> dict[str, str]:
    """An ``utt-id text`` file (a Kaldi ``text``, a ``hyp.trn`` / ``ref.trn``) as an ordered mapping.

    Read like every text file (:func:`read_lines`: UTF-8 or CP949). Blank lines are skipped; an
    id alone on its line is an empty text, or, unless ``allow_empty``, a DataError; a repeated
    id is a DataError. Errors name the file and line. (A data dir's own files go through
    :func:`kospeech.data.datadir.read_scp`, which also refuses blank lines, for ``--fix``.)
    """
    path = Path(path)
    out: dict[str, str] = {}
    for n, line in enumerate(read_lines(path), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) < 2 and not allow_empty:
            raise DataError(
                f"{path}:{n}: utterance '{parts[0]}' has an empty transcript; "
                "remove the line or the utterance from the data dir"
            )
        if parts[0] in out:
            raise DataError(f"{path}:{n}: utterance '{parts[0]}' appears twice")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def write_utt_text(path: str | os.PathLike[str], mapping: Mapping[str, str]) -> Path:
    """``utt-id text`` per line, sorted by id, written atomically (an empty text leaves the id alone)."""
    return write_atomic(path, "".join(f"{u} {mapping[u]}".rstrip() + "\n" for u in sorted(mapping)))


def sha256_files(*paths: str | os.PathLike[str], progress: Callable[[int], Any] | None = None) -> str:
    """sha256 of the files' bytes in order, read in 1 MiB blocks; ``progress(n)`` gets bytes read."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                if progress is not None:
                    progress(len(block))
    return h.hexdigest()


class ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading, but ``1e-3`` is a float (PyYAML alone reads it as a string)."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_error(path: Path | str, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err)
    return ConfigError(f"{where}: YAML syntax error: {problem}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """One YAML file as a mapping; syntax errors name the file, line and column.

    Read as the toolkit reads every text file: UTF-8, else CP949 (line by line, BOM dropped).
    """
    path = Path(path)
    try:
        text = "\n".join(decode_lines(path.read_bytes(), path)[0])  # UTF-8, or CP949 as Windows editors save it
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config {path} is a folder; give a YAML file") from None
    except DataError as err:
        raise ConfigError(str(err)) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, err) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping at the top level, got {type(data).__name__}")
    return data
