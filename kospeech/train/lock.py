"""One run per experiment dir: an exclusive ``flock`` on ``EXP_DIR/.lock`` for the whole run.

Two trainings (or a second ``--resume``) into one exp dir used to both run: the checkpoints of
one overwrote the other's and ``log.jsonl`` mixed both. The lock is a kernel ``flock`` on an
open file, so it goes away with its process however that ends (exception, Ctrl-C, ``kill -9``,
a crashed machine's reboot); there is never a stale lock to delete by hand. The file itself
stays, holding who took the lock last (pid, host, start time, command line) so that the error
a second run gets can say which run holds the dir.

Where ``fcntl`` does not exist (Windows) the run goes on unlocked, with a warning. On network
file systems ``flock`` works as far as the file system supports locks (Linux NFS maps it to
POSIX locks); a file system without locks is reported, not ignored.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import socket
import sys
from pathlib import Path
from types import TracebackType

from kospeech.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class ExpDirLock:
    """``with ExpDirLock(exp_dir): ...`` holds the exp dir; a second holder gets a ConfigError."""

    def __init__(self, exp_dir: str | os.PathLike[str]) -> None:
        self.exp_dir = Path(exp_dir)
        self.path = self.exp_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ExpDirLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no fcntl on this system: %s is not locked against a second run", self.exp_dir)
            return self
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for every output
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{self.exp_dir} is in use by another run ({holder or 'holder unknown'}); wait for it to "
                    f"end or stop it, or choose another --exp-dir"
                ) from None
            raise ConfigError(
                f"{self.exp_dir}: cannot lock {self.path} ({err.strerror}); the file system may not support "
                f"locks: use an exp dir on a local disk"
            ) from None
        info = (
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{_dt.datetime.now().astimezone().isoformat(timespec='seconds')}: {' '.join(sys.argv)}\n"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode("utf-8", "replace"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> ExpDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
