"""The drop folders: which files to take, when they are complete, claiming and filing them away.

    inbox/  --claim (atomic rename)-->  processing/  --place-->  archive/YYYY/MM/DD/ or failed/YYYY/MM/DD/

A file is taken only when (1) its name is a candidate, (2) its size and mtime were the same on
two checks `stable_interval` apart and we have known it for `min_age` by our own monotonic clock
(the writer's mtime can be skewed: reference/filedrop.md section 5), and (3) the rename into
processing/ succeeds. A failed rename means "not ready yet" (Windows writers often hold the file
open without sharing); we try again on a later cycle.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Literal

from connector.config import Folders
from connector.model import FileOutcome


# Partial downloads and temp saves (browsers, WinSCP, rsync-style tools, Office).
IGNORED_SUFFIXES = (".tmp", ".part", ".filepart", ".crdownload", ".partial", ".download")
DONE_SUFFIX = ".done"
# Sidecars written next to a placed file; never counted as data files.
SIDECAR_SUFFIXES = (".report.json", ".error.json", ".rejected.csv", DONE_SUFFIX)

Verdict = Literal["wait", "ready", "empty"]


@dataclass(frozen=True)
class Candidate:
    """A regular file in the inbox that may be taken once it is ready."""

    path: Path
    size: int
    mtime_ns: int

    @property
    def signature(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


def is_candidate_name(name: str, patterns: Iterable[str], *, done_file: bool = False) -> bool:
    """True when a file called `name` may hold an export (before looking at the disk).

    Hidden files, Office owner files (`~$...`), names with no extension (Excel's temp saves),
    partial downloads and done files never are; otherwise one of `patterns` (case-insensitive
    globs) must match.
    """
    lower = name.lower()
    if not name or name.startswith((".", "~$")):
        return False
    if "." not in name.strip("."):
        return False
    if lower.endswith(IGNORED_SUFFIXES) or (done_file and lower.endswith(DONE_SUFFIX)):
        return False
    return any(fnmatch.fnmatchcase(lower, p.lower()) for p in patterns)


def owner_file_names(name: str) -> tuple[str, ...]:
    """The names Office gives the `~$` owner file of an open document called `name`.

    Excel uses `~$` + the full name; Word and PowerPoint replace the first two characters of
    longer names. Either one next to the workbook means someone still has it open.
    """
    names = {"~$" + name}
    if len(name) > 2:
        names.add("~$" + name[2:])
    return tuple(sorted(names))


def list_candidates(inbox: Path, patterns: Iterable[str], *, done_file: bool = False) -> list[Candidate]:
    """The regular files in `inbox` that are candidates now, in no particular order.

    Skips symlinks, FIFOs, sockets and folders (never followed or opened), files an Office owner
    file marks as open, and in done-file mode files without their `<name>.done`.
    Raises OSError when the inbox itself cannot be listed (missing share, permissions):
    the caller decides what an unavailable inbox means; it never means "files were deleted".
    """
    patterns = list(patterns)
    entries: dict[str, os.DirEntry] = {}
    with os.scandir(inbox) as it:
        for entry in it:
            entries[entry.name] = entry
    names = set(entries)
    found: list[Candidate] = []
    for name, entry in entries.items():
        if not is_candidate_name(name, patterns, done_file=done_file):
            continue
        if any(owner in names for owner in owner_file_names(name)):
            continue
        if done_file and name + DONE_SUFFIX not in names:
            continue
        try:
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # vanished or unreadable between listing and stat: look again next cycle
        found.append(Candidate(Path(entry.path), st.st_size, st.st_mtime_ns))
    return found


def inspect(path: Path, patterns: Iterable[str], *, done_file: bool = False) -> Candidate | None:
    """One path looked at on a hint: a Candidate when it is one now, else None."""
    name = path.name
    if not is_candidate_name(name, patterns, done_file=done_file):
        return None
    parent = path.parent
    if any((parent / owner).exists() for owner in owner_file_names(name)):
        return None
    if done_file and not (parent / (name + DONE_SUFFIX)).exists():
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Candidate(path, st.st_size, st.st_mtime_ns)


def order(candidates: Iterable[Candidate], limit: int | None = None) -> list[Candidate]:
    """Oldest mtime first, then name; at most `limit`, counted after sorting."""
    ordered = sorted(candidates, key=lambda c: (c.mtime_ns, c.path.name))
    return ordered if limit is None else ordered[:limit]


@dataclass
class _Seen:
    first_seen: float
    signature: tuple[int, int]
    since: float  # when we first saw this signature
    checks: int  # how many times we have seen this signature


class Readiness:
    """Decides when a file is completely written, by our clock.

    Call `observe` on every check of a file. A file is "ready" when the same size and mtime were
    seen on two checks at least `stable_interval` apart and we have known the file for at least
    `min_age`; "empty" when it is ready but has no bytes and empty files are not allowed;
    otherwise "wait". `clock` is a monotonic clock in seconds (injected so tests need not sleep).
    """

    def __init__(self, min_age: float, stable_interval: float, *, allow_empty: bool = False,
                 clock: Callable[[], float]):
        self.min_age = min_age
        self.stable_interval = stable_interval
        self.allow_empty = allow_empty
        self.clock = clock
        self._seen: dict[Path, _Seen] = {}

    def observe(self, candidate: Candidate) -> Verdict:
        now = self.clock()
        seen = self._seen.get(candidate.path)
        if seen is None:
            seen = self._seen[candidate.path] = _Seen(now, candidate.signature, now, 1)
        elif seen.signature != candidate.signature:
            seen.signature, seen.since, seen.checks = candidate.signature, now, 1
        else:
            seen.checks += 1
        stable = seen.checks >= 2 and now - seen.since >= self.stable_interval
        if not stable or now - seen.first_seen < self.min_age:
            return "wait"
        if candidate.size == 0 and not self.allow_empty:
            return "empty"
        return "ready"

    def due_in(self) -> float | None:
        """Seconds until the earliest tracked file could be ready (0 if now), None if none tracked."""
        if not self._seen:
            return None
        now = self.clock()
        waits = [
            max(s.first_seen + self.min_age - now, s.since + self.stable_interval - now, 0.0)
            for s in self._seen.values()
        ]
        return min(waits)

    def tracked(self) -> list[Path]:
        return list(self._seen)

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def keep_only(self, present: Iterable[Path]) -> None:
        """Drop files no longer in the inbox (after a successful full listing only)."""
        keep = set(present)
        for path in [p for p in self._seen if p not in keep]:
            del self._seen[path]


def claim(path: Path, processing_dir: Path, *, done_file: bool = False) -> Path | None:
    """Move `path` into `processing_dir` by an atomic rename; the new path, or None if not now.

    None means "not ready yet": the file vanished, is held open by its writer (Windows), or a
    file of that name is already in processing/ (never overwritten; it is taken once that one
    has been filed away). In done-file mode the `.done` file follows, so an old done file can
    never release the next export of the same name early.
    processing/ must be on the same filesystem as the inbox, or the rename cannot be atomic.
    """
    target = processing_dir / path.name
    if os.path.lexists(target):
        return None
    try:
        os.rename(path, target)
    except OSError:
        return None
    if done_file:
        marker = path.with_name(path.name + DONE_SUFFIX)
        try:
            os.rename(marker, target.with_name(target.name + DONE_SUFFIX))
        except OSError:
            pass  # already gone: the data file is what matters
    _fsync_dir(path.parent)
    _fsync_dir(processing_dir)
    return target


def list_processing(processing_dir: Path) -> list[Path]:
    """Data files left in processing/ (by a crash or an API outage), oldest mtime first, then name."""
    found: list[tuple[int, str, Path]] = []
    try:
        with os.scandir(processing_dir) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.name.lower().endswith(SIDECAR_SUFFIXES):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, Path(entry.path)))
                except OSError:
                    continue
    except FileNotFoundError:
        return []
    return [p for _, _, p in sorted(found)]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def placed_name(stem: str, suffix: str, now: datetime, sha256: str, counter: int = 1) -> str:
    """`<stem>__<UTC time>__<sha8><suffix>`, with `__<counter>` before the suffix from 2 on.

    >>> placed_name("PRODUCTS", ".csv", datetime(2025, 6, 14, 10, 15, 2, tzinfo=timezone.utc), "3fa9c1d2ee")
    'PRODUCTS__20250614T101502Z__3fa9c1d2.csv'
    """
    when = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    extra = f"__{counter}" if counter > 1 else ""
    return f"{stem}__{when}__{sha256[:8]}{extra}{suffix}"


def place(path: Path, outcome: FileOutcome, folders: Folders, now: datetime) -> Path:
    """File a processed file away; returns its new path.

    done / duplicate -> archive/YYYY/MM/DD/<name> with <name>.report.json beside it;
    refused          -> failed/YYYY/MM/DD/<name> with <name>.error.json.
    A `.rejected.csv` of refused rows is written when there are any, and a `.done` file moves
    with its data file. The report is written before the file moves (a crash in between leaves
    the file in processing/, and the next run files it under a new name). Nothing is ever
    overwritten: a clash adds a counter.
    """
    from connector.report import write_json_atomic, write_rejected_csv  # the report module owns formats

    if outcome.status == "waiting":
        raise ValueError("a waiting file stays in processing/")
    archived = outcome.status in ("done", "duplicate")
    root = folders.archive if archived else folders.failed
    day = now.astimezone(timezone.utc)
    folder = root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    digest = str(outcome.report.get("sha256") or sha256_of(path))
    sidecar = ".report.json" if archived else ".error.json"

    counter = 1
    while True:
        target = folder / placed_name(path.stem, path.suffix, now, digest, counter)
        if not any(os.path.lexists(str(target) + s) for s in ("", sidecar, ".rejected.csv", DONE_SUFFIX)):
            break
        counter += 1

    report = {**outcome.report}
    report.setdefault("file", path.name)
    report.setdefault("status", outcome.status)
    if outcome.message:
        report.setdefault("message", outcome.message)
    report["placed_as"] = str(target)
    write_json_atomic(Path(str(target) + sidecar), report)
    if outcome.rejected:
        write_rejected_csv(Path(str(target) + ".rejected.csv"), outcome.header, outcome.rejected)
    os.rename(path, target)
    marker = path.with_name(path.name + DONE_SUFFIX)
    if os.path.lexists(marker):
        os.rename(marker, Path(str(target) + DONE_SUFFIX))
    _fsync_dir(path.parent)
    _fsync_dir(folder)
    return target


def refuse_empty(path: Path) -> FileOutcome:
    """The outcome for a zero-byte export: refused with a reason a person can act on."""
    message = (f"{path.name} is empty (0 bytes): the export wrote nothing. "
               "Check the ERP export job; set watch.allow_empty to accept empty files.")
    return FileOutcome("refused", {"file": path.name, "size": 0, "error": "empty file"}, message=message)


def count_files(root: Path, *, suffix: str | None = None) -> int:
    """Data files under `root` (sidecars excluded), or files ending with `suffix` when given."""
    total = 0
    for _dir, _subdirs, files in os.walk(root):
        for name in files:
            lower = name.lower()
            if suffix is not None:
                total += lower.endswith(suffix)
            elif not lower.endswith(SIDECAR_SUFFIXES) and not name.startswith("."):
                total += 1
    return total


def recent_sidecars(root: Path, suffix: str, limit: int = 5) -> list[Path]:
    """The newest `limit` files ending with `suffix` under root/YYYY/MM/DD, newest first.

    Walks the dated folders newest first and stops early, so a large archive stays cheap.
    """
    found: list[Path] = []

    def subdirs(folder: Path) -> list[Path]:
        try:
            return sorted((p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)
        except OSError:
            return []

    for year in subdirs(root):
        for month in subdirs(year):
            for day in subdirs(month):
                try:
                    files = [p for p in day.iterdir() if p.name.endswith(suffix)]
                except OSError:
                    continue
                files.sort(key=lambda p: (_mtime_ns(p), p.name), reverse=True)
                found.extend(files[: limit - len(found)])
                if len(found) >= limit:
                    return found
    return found


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable. Not every filesystem can fsync a folder (SMB, Windows): best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
