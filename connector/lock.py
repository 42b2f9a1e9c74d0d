"""One connector per state folder: an exclusive, non-blocking lock on `<state>/connector.lock`.

    with StateLock(settings.folders.state):
        ...   # watch or push; a second process gets AlreadyRunning at once

The lock is an OS file lock (flock on POSIX, msvcrt.locking on Windows), so it is released by
the kernel when the process dies, even by kill -9: there is never a stale lock to clean up.
The file holds the PID of the holder, only to name it in the message.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import TracebackType

from connector.errors import AlreadyRunning

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

LOCK_NAME = "connector.lock"


class StateLock:
    """Exclusive lock on a state folder; a context manager. Not re-entrant."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning naming the folder and the holder's PID.

        Creates the state folder (0700) and the lock file (0600) when missing. The lock file is
        opened with O_NOFOLLOW so a symlink planted in its place cannot redirect our writes.
        """
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AlreadyRunning(f"{self.path} is a symlink; refusing to use it as the lock file") from None
            raise
        try:
            _lock(fd)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
                who = f"process {holder}" if holder else "another process"
                raise AlreadyRunning(
                    f"another connector ({who}) is already using the state folder {self.state_dir}; "
                    "stop it first, or give this one its own state folder"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock. The file stays: deleting it would race with a starting process."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        _unlock(fd)
        os.close(fd)

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:  # pragma: no cover - Windows: lock the first byte
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    except OSError:
        pass  # closing the descriptor releases it anyway


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
