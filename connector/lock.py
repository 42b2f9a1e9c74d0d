"""One connector per state folder: an exclusive, non-blocking lock on `<state>/connector.lock`.

    with StateLock(settings.folders.state):
        ...   # watch or push; a second process gets AlreadyRunning at once

The lock is an OS file lock (flock on POSIX, msvcrt.locking on Windows), so it is released by
the kernel when the process dies, even by kill -9: there is never a stale lock to clean up.
The file holds the PID of the holder and what it runs (`1234 watch`), to name it in messages;
a clean release empties it, so a PID left in a free lock file names a holder that died.

`holder(state_dir)` says who holds the lock now (for `connector status`): the lock itself is
the truth, not a PID or a health file's age.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from connector.errors import AlreadyRunning

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

LOCK_NAME = "connector.lock"
# `holder` takes the lock for an instant to see whether it is free; a process starting in that
# instant tries again this often, this far apart, before it believes another one runs.
ACQUIRE_TRIES, ACQUIRE_PAUSE_S = 20, 0.05  # up to 1 s: a probe on a loaded machine may be paused
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK)


class StateLock:
    """Exclusive lock on a state folder; a context manager. Not re-entrant."""

    def __init__(self, state_dir: Path, what: str = ""):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_NAME
        self.what = what  # "watch", "push": written beside the PID for `holder` and messages
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
        for attempt in range(ACQUIRE_TRIES):
            try:
                _lock(fd)
                break
            except OSError as exc:
                if exc.errno in _BUSY and attempt + 1 < ACQUIRE_TRIES:
                    time.sleep(ACQUIRE_PAUSE_S)  # perhaps only `holder` looking: a moment later it is free
                    continue
                pid, what = _read_holder(fd)
                os.close(fd)
                if exc.errno in _BUSY:
                    who = f"process {pid}" if pid else "another process"
                    who = f"{what}, {who}" if what else who
                    raise AlreadyRunning(
                        f"another connector ({who}) is already using the state folder {self.state_dir}; "
                        "stop it first, or give this one its own state folder"
                    ) from None
                raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}{' ' + self.what if self.what else ''}\n".encode())
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


def _read_holder(fd: int) -> tuple[int | None, str]:
    """The PID and what it runs, from the lock file's `1234 watch` (or `1234`); (None, "") if unknown."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        words = os.read(fd, 64).decode("ascii", "replace").split()
    except OSError:
        return None, ""
    if not words or not words[0].isdigit():
        return None, ""
    return int(words[0]), (words[1] if len(words) > 1 and words[1].isalpha() else "")


@dataclass(frozen=True)
class Holder:
    """Who holds a state folder's lock, as `holder` found it.

    held: a live process holds it now (the kernel frees the lock when its holder dies); None
      when it cannot be told (the lock file cannot be opened: another user's state folder).
    pid, what: the holder's PID and command ("watch", "push"); when the lock is free, those
      of a holder that died without letting go (killed, crashed), else None and "".
    alive: whether that PID is a live process seen from here; None when it cannot be told
      (Windows, no PID). A held lock whose PID is not alive here belongs to a process in
      another PID namespace (a container).
    """

    held: bool | None
    pid: int | None = None
    what: str = ""
    alive: bool | None = None


def holder(state_dir: Path) -> Holder:
    """Who holds `state_dir`'s lock now. Never creates the folder or the lock file; takes the
    lock only for an instant to see whether it is free (`acquire` tries again meanwhile)."""
    path = Path(state_dir) / LOCK_NAME
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return Holder(held=False)  # no connector ever ran on this state folder
    except OSError:
        return Holder(held=None)  # permissions, a symlink planted in its place: cannot tell
    try:
        try:
            _lock(fd)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise
            held = True
        else:
            held = False
            _unlock(fd)
        pid, what = _read_holder(fd)
    finally:
        os.close(fd)
    return Holder(held=held, pid=pid, what=what, alive=_alive(pid))


def _alive(pid: int | None) -> bool | None:
    if pid is None or os.name == "nt":  # pragma: no cover - os.kill would end the process on Windows
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    except OSError:
        return None
    return True
