"""Which observer watches the inbox, and keeping it alive: its events are only hints.

    kind, why = choose_observer(settings.watch.observer, inbox_dir)   # ("polling", "filesystem cifs: ...")
    supervisor = ObserverSupervisor(kind, inbox_dir, wake, poll_interval=5.0, log=log, clock=clock)
    supervisor.ensure()          # start, or rebuild a dead one; cheap when all is well
    paths = supervisor.take_hints()

`auto` polls on network filesystems (read from /proc/mounts; on Windows, UNC paths and mapped
drives), because inotify/ReadDirectoryChangesW see nothing written by other machines
(reference/filedrop.md section 6). The periodic scan in `loop` stays the truth either way.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from connector import inbox
from connector.clock import SYSTEM_CLOCK, Clock

OBSERVER_STABLE_S = 60.0  # a rebuilt observer counts as running steadily after this long

# Filesystems on which inotify/ReadDirectoryChangesW see nothing written by other machines
# (reference/filedrop.md section 6, items 1 and 10), so the observer must poll.
NETWORK_FILESYSTEMS = frozenset({
    "cifs", "smb", "smb2", "smb3", "smbfs", "nfs", "nfs4", "afs", "ncpfs", "9p", "ceph", "glusterfs",
    "lustre", "gpfs", "davfs", "vboxsf", "virtiofs", "fakeowner", "grpcfuse", "osxfs", "vmhgfs",
    "fuse.sshfs", "fuse.glusterfs", "fuse.cephfs", "fuse.rclone", "fuse.davfs2", "fuse.s3fs",
    "fuse.vmhgfs-fuse", "fuse.grpcfuse", "fuse.osxfs", "fuse.gcsfuse", "fuse.juicefs",
})


# --- choosing the observer -------------------------------------------------------------------

def filesystem_type(path: Path, mounts_text: str) -> str | None:
    """The fstype of the mount holding `path`, from /proc/mounts text (longest mount point wins).

    >>> filesystem_type(Path("/mnt/erp/inbox"), "//srv/erp /mnt/erp cifs rw 0 0\\n/dev/vda / ext4 rw 0 0")
    'cifs'
    """
    target = str(path)
    best, best_type = "", None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape_mount(parts[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best):
            best, best_type = point, parts[2]
    return best_type


def _unescape_mount(text: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...)
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def is_network_path(path: Path, *, mounts_text: str | None = None) -> tuple[bool, str]:
    """(True, why) when `path` lives on a network or VM-shared filesystem, as far as we can tell."""
    text = str(path)
    if sys.platform == "win32":  # pragma: no cover - Windows
        if text.startswith(("\\\\", "//")):
            return True, "a UNC path"
        return _windows_remote_drive(text)
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False, "filesystem unknown (no /proc/mounts)"
    try:
        resolved = Path(os.path.realpath(path))
    except OSError:
        resolved = path
    fstype = filesystem_type(resolved, mounts_text)
    if fstype is None:
        return False, "filesystem unknown"
    return fstype.lower() in NETWORK_FILESYSTEMS, f"filesystem {fstype}"


def _windows_remote_drive(text: str) -> tuple[bool, str]:  # pragma: no cover - Windows
    if sys.platform != "win32":  # ctypes.windll exists only there (and mypy knows it from this test)
        return False, "not Windows"
    import ctypes

    drive = os.path.splitdrive(os.path.abspath(text))[0] + "\\"
    remote = ctypes.windll.kernel32.GetDriveTypeW(drive) == 4  # DRIVE_REMOTE
    return remote, f"drive {drive} is {'a mapped network drive' if remote else 'local'}"


def choose_observer(setting: str, inbox_dir: Path, *, mounts_text: str | None = None) -> tuple[str, str]:
    """(kind, reason): kind is native, polling or none. `auto` polls on network filesystems."""
    if setting != "auto":
        return setting, f"watch.observer is {setting}"
    network, why = is_network_path(inbox_dir, mounts_text=mounts_text)
    if network:
        return "polling", f"{why}: change notifications do not cross the network, so polling"
    return "native", why



def related_paths(path: Path) -> set[Path]:
    """The paths an event on `path` may have made ready: itself, the workbook whose `~$` owner
    file it is (closing Excel deletes it), the data file whose `.done` file it is."""
    name = path.name
    related = {path}
    if name.startswith("~$") and len(name) > 2:
        related.add(path.with_name(name[2:]))
    if name.lower().endswith(inbox.DONE_SUFFIX) and len(name) > len(inbox.DONE_SUFFIX):
        related.add(path.with_name(name[: -len(inbox.DONE_SUFFIX)]))
    return related


class Hints(FileSystemEventHandler):
    """Collects "look at this path sooner" hints. Never raises: an exception here would kill
    watchdog's dispatcher thread (reference/filedrop.md section 6, item 5)."""

    def __init__(self, root: Path, wake: threading.Event):
        self.root = root
        self.wake = wake
        self.root_lost = False
        self._paths: set[Path] = set()
        self._lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            kind = event.event_type
            if kind == "deleted" and event.is_directory and Path(os.fsdecode(event.src_path)) == self.root:
                self.root_lost = True
                self.wake.set()
            elif kind in ("created", "modified", "moved", "closed", "deleted"):
                path = Path(os.fsdecode(event.dest_path if kind == "moved" else event.src_path))
                if path.parent == self.root:
                    with self._lock:
                        self._paths.update(related_paths(path))
                    self.wake.set()
        except Exception:  # noqa: BLE001 - see the class docstring
            pass

    def take(self) -> set[Path]:
        with self._lock:
            paths, self._paths = self._paths, set()
        return paths


class ObserverSupervisor:
    """Keeps one watchdog observer running on the inbox; rebuilds it when it dies or its folder
    was removed and recreated. Logs one line per change of state, not per check: an observer that
    keeps dying is "rebuilt" (one warning) until it has run for OBSERVER_STABLE_S without a
    rebuild, then "running" again (one line)."""

    def __init__(self, kind: str, inbox_dir: Path, wake: threading.Event, *, poll_interval: float,
                 log: logging.Logger, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock
        self._rebuilt_at = 0.0
        self.kind = kind
        self.inbox_dir = inbox_dir
        self.wake = wake
        self.poll_interval = poll_interval
        self.log = log
        self.hints = Hints(inbox_dir, wake)
        self.state = "stopped"
        self.rebuilds = 0  # restarts of an observer that had died or lost its folder
        self.starts = 0
        self._observer: Any = None
        self._identity: tuple[int, int] | None = None

    def ensure(self) -> None:
        """Start or rebuild the observer when needed. Cheap when all is well."""
        if self.kind == "none":
            self._set_state("off", "no observer (watch.observer: none); scans only")
            return
        try:
            st = os.stat(self.inbox_dir)
            identity = (st.st_dev, st.st_ino)
        except OSError:
            self._stop_observer()
            self._set_state("waiting", "observer waiting for the inbox to exist")
            return
        if self._observer is not None and self._alive() and identity == self._identity and not self.hints.root_lost:
            if self.state == "rebuilt" and self.clock.monotonic() - self._rebuilt_at >= OBSERVER_STABLE_S:
                self._set_state("running", f"the {self.kind} observer on {self.inbox_dir} runs steadily again")
            return
        was_running = self._observer is not None
        self._stop_observer()
        try:
            self._observer = self._build()
            self._observer.schedule(self.hints, str(self.inbox_dir), recursive=False)
            self._observer.start()
        except Exception as exc:  # noqa: BLE001 - inotify limits, permissions, a vanishing share
            self._observer = None
            self._set_state("failed", f"cannot start the {self.kind} observer on {self.inbox_dir}: {exc}; scans only")
            return
        self._identity = identity
        self.hints.root_lost = False
        self.starts += 1
        if was_running:
            self.rebuilds += 1
            self._rebuilt_at = self.clock.monotonic()
            self._set_state("rebuilt", f"the {self.kind} observer on {self.inbox_dir} had stopped or lost its "
                                       "folder; rebuilt it (said once until it runs steadily again)")
        else:
            self._set_state("running", f"{self.kind} observer watching {self.inbox_dir}")

    def take_hints(self) -> set[Path]:
        return self.hints.take()

    def stop(self) -> None:
        self._stop_observer()

    def _build(self) -> Any:
        if self.kind == "polling":
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=self.poll_interval)
        from watchdog.observers import Observer

        return Observer()

    def _alive(self) -> bool:
        observer = self._observer
        emitters = list(observer.emitters)
        return observer.is_alive() and bool(emitters) and all(e.is_alive() for e in emitters)

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=2)
        except Exception:  # noqa: BLE001 - a dead observer may fail to stop; it is dropped anyway
            pass

    def _set_state(self, state: str, message: str) -> None:
        if state == self.state:
            return
        self.state = state
        level = logging.WARNING if state in ("failed", "waiting", "rebuilt") else logging.INFO
        self.log.log(level, "%s", message, extra={"event": "observer", "observer": self.kind, "state": state})
