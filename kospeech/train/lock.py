"""One run per experiment dir: an exclusive ``flock`` on the exp dir itself and on ``EXP_DIR/.lock``.

Two trainings (or a second ``--resume``) into one exp dir used to both run: the checkpoints of
one overwrote the other's and ``log.jsonl`` mixed both. The lock is a kernel ``flock`` on open
files, so it goes away with its process however that ends (exception, Ctrl-C, ``kill -9``, a
crashed machine's reboot); there is never a stale lock to delete by hand.

Why the directory too: a lock on ``.lock`` alone lives on that file's inode. Deleting the file
(``rm EXP/.lock``, a cleanup script) while a run holds it let the next run create a new file,
lock that, and train beside the first. The exp dir's own inode cannot be swapped away while the
run writes into it, so the ``flock`` on a descriptor of the directory is the lock that counts;
the one on ``.lock`` stays for runs of older versions (which lock only the file) and for file
systems that lock files but not directories. The file also holds who took the lock last (pid,
host, start time, command line) so that the error a second run gets can say which run holds
the dir.

Within one process the lock is re-entrant: the CLI takes it before it builds the
:class:`~kospeech.train.trainer.Trainer`, and the Trainer takes it again (a Trainer built from
Python must hold it too); the nested acquire counts instead of locking against its own process.
The lock keeps other processes out, not other threads of the holder. It is held until every
holder released it (``Trainer.close()``) or the process ends: a dropped ``ExpDirLock`` object
does not let go, since the run it guards may still be writing.

Where ``fcntl`` does not exist (Windows) the run goes on unlocked, with a warning. On network
file systems ``flock`` works as far as the file system supports locks (Linux NFS maps it to
POSIX locks, which a directory cannot take: there the file lock alone holds); a file system
without locks is reported, not ignored.
"""

from __future__ import annotations

import datetime as _dt
import errno
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from kospeech.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


@dataclass
class _Held:
    """The descriptors this process locks an exp dir with, and how many holders share them."""

    fds: list[int] = field(default_factory=list)
    count: int = 0
    pid: int = field(default_factory=os.getpid)


_HELD: dict[tuple[int, int], _Held] = {}  # (st_dev, st_ino) of the exp dir -> its lock in this process
_HELD_GUARD = threading.Lock()


class ExpDirLock:
    """``with ExpDirLock(exp_dir): ...`` holds the exp dir; another process gets a ConfigError."""

    def __init__(self, exp_dir: str | os.PathLike[str]) -> None:
        self.exp_dir = Path(exp_dir)
        self.path = self.exp_dir / LOCK_FILE
        self._key: tuple[int, int] | None = None  # (st_dev, st_ino) of the exp dir while held

    @property
    def held(self) -> bool:
        return self._key is not None

    def acquire(self) -> ExpDirLock:
        if self._key is not None:
            return self
        try:
            import fcntl  # noqa: F401
        except ImportError:  # pragma: no cover - Windows
            logger.warning("no fcntl on this system: %s is not locked against a second run", self.exp_dir)
            return self
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        st = os.stat(self.exp_dir)
        key = (st.st_dev, st.st_ino)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None and held.pid == os.getpid():  # this process holds it already: nest
                held.count += 1
                self._key = key
                return self
            _HELD[key] = _Held(fds=self._lock_new(), count=1)
            self._key = key
        return self

    def _lock_new(self) -> list[int]:
        """Lock the directory, then ``.lock``; the descriptors, the file's last. A ConfigError if held."""
        import fcntl

        fds: list[int] = []
        try:
            try:
                fds.append(os.open(self.exp_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
                fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in _BUSY:
                    raise self._in_use() from None
                # a file system that locks files but not directories (NFS), an unreadable dir: the file lock holds
                logger.debug("%s: cannot flock the directory (%s); locking %s only", self.exp_dir, err, self.path)
                for fd in fds:
                    os.close(fd)
                fds.clear()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for every output
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in _BUSY:
                    raise self._in_use() from None
                raise ConfigError(
                    f"{self.exp_dir}: cannot lock {self.path} ({err.strerror}); the file system may not support "
                    f"locks: use an exp dir on a local disk"
                ) from None
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        info = (
            f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{_dt.datetime.now().astimezone().isoformat(timespec='seconds')}: {' '.join(sys.argv)}\n"
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode("utf-8", "replace"), 0)
        return fds

    def _in_use(self) -> ConfigError:
        return ConfigError(
            f"{self.exp_dir} is in use by another run ({_read_holder(self.path) or 'holder unknown'}); wait for it "
            f"to end or stop it, or choose another --exp-dir"
        )

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        import fcntl

        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[key]
            for fd in reversed(held.fds):
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def __enter__(self) -> ExpDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _read_holder(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return ""
