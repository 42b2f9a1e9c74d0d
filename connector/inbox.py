"""The drop folders: which files to take, when they are complete, claiming and filing them away.

    inbox/  --claim (atomic rename)-->  processing/  --place-->  archive/YYYY/MM/DD/ or failed/YYYY/MM/DD/

A file is taken only when (1) its name is a candidate, (2) it is quiet by our own monotonic clock
(the writer's mtime can be skewed: reference/filedrop.md section 5; the rule is in `Readiness`),
and (3) the rename into processing/ succeeds and the file is still the one we judged quiet.
A rename that fails because the file vanished or is held open by its writer (Windows) means
"not ready yet"; any other failure (another filesystem, permissions, a read-only or full disk)
is a problem a person must fix, and `claim` says which.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from connector.clock import Clock
from connector.common import fsync_dir, sha256_of
from connector.config import Folders
from connector.report import Report, write_report_files

# Partial downloads and temp saves (browsers, WinSCP, rsync-style tools, Office).
IGNORED_SUFFIXES = (".tmp", ".part", ".filepart", ".crdownload", ".partial", ".download")
DONE_SUFFIX = ".done"
# The inbox's own notes for people (the repository ships inbox/README.md): never an export,
# whatever `watch.patterns` says.
README_NAMES = frozenset({"readme", "readme.md", "readme.txt"})
# Sidecars written next to a placed file; never counted as data files.
SIDECAR_SUFFIXES = (".report.json", ".error.json", ".rejected.csv", ".rejected.xlsx", DONE_SUFFIX)
# Where a failed file's reason and refused rows go once the file is put back into the inbox.
PUT_BACK_FOLDER = "put-back"
# What is never data in processing/: refused rows fixed and dropped back (x.rejected.xlsx) are.
_NOT_DATA = (".report.json", ".error.json", DONE_SUFFIX)

Verdict = Literal["wait", "ready", "empty"]

# Windows: ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION - the writer still has the file open.
_WINDOWS_BUSY = frozenset({32, 33})
# What a person must do when a claim fails for one of these reasons.
_CLAIM_HINTS = {
    errno.EXDEV: "processing/ is on another filesystem than the inbox; put both on the same share",
    errno.EACCES: "permission denied; the connector's account must be allowed to move files from the inbox "
                  "into processing/",
    errno.EPERM: "operation not permitted; the connector's account must be allowed to move files from the "
                 "inbox into processing/",
    errno.EROFS: "the share or disk is read-only",
    errno.ENOSPC: "no space left on the share or disk",
}


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
    partial downloads, done files and the inbox's README never are; otherwise one of `patterns`
    (case-insensitive globs) must match.
    """
    lower = name.lower()
    if not name or name.startswith((".", "~$")) or lower in README_NAMES:
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


@dataclass(frozen=True)
class OpenWorkbook:
    """A workbook that waits because its Office owner file (`~$...`) is next to it."""

    path: Path
    owner: Path
    owner_mtime: float | None  # the owner file's mtime (seconds, the writer's clock); None if unknown


@dataclass
class Listing:
    """What one full listing of the inbox found."""

    candidates: list[Candidate]
    open_workbooks: list[OpenWorkbook]


def list_inbox(inbox: Path, patterns: Iterable[str], *, done_file: bool = False) -> Listing:
    """The regular files in `inbox` that are candidates now (in no particular order), and the
    workbooks held back by an Office owner file.

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
    found: list[Candidate] = []
    held: list[OpenWorkbook] = []
    for name, entry in entries.items():
        if not is_candidate_name(name, patterns, done_file=done_file):
            continue
        owner = next((entries[o] for o in owner_file_names(name) if o in entries), None)
        if owner is not None:
            held.append(OpenWorkbook(Path(entry.path), Path(owner.path), _entry_mtime(owner)))
            continue
        if done_file and name + DONE_SUFFIX not in entries:
            continue
        try:
            if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # vanished or unreadable between listing and stat: look again next cycle
        found.append(Candidate(Path(entry.path), st.st_size, st.st_mtime_ns))
    return Listing(found, held)


def _entry_mtime(entry: os.DirEntry) -> float | None:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return None  # vanished meanwhile


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
    since: float  # when we first saw this signature: the last change we observed
    checks: int  # how many times we have seen this signature
    changed: bool = False  # seen with another size or mtime before: a writer was at work


class Readiness:
    """Decides when a file is completely written, by our clock.

    Call `observe` on every check of a file. With `quiet` the time since the current size and
    mtime were first seen (so since the last change we observed), a file is "ready" when it was
    seen at least twice with that size and mtime and

    - quiet >= stable_interval and known >= min_age, for a file never seen to change (it arrived
      complete, e.g. renamed into the inbox: it is not held up any longer than before);
    - quiet >= max(min_age, stable_interval), for a file we saw change (a writer was at work a
      moment ago and may only be pausing) or with no bytes yet (an ERP that opened its output
      and is still querying).

    So no file is ever taken within `stable_interval` of its last observed change. "empty" is
    "ready" for a zero-byte file when empty files are not allowed; otherwise "wait".
    Time is `clock.monotonic()` (injected so tests need not sleep).
    """

    def __init__(self, min_age: float, stable_interval: float, *, allow_empty: bool = False,
                 clock: Clock):
        self.min_age = min_age
        self.stable_interval = stable_interval
        self.allow_empty = allow_empty
        self.clock = clock
        self._seen: dict[Path, _Seen] = {}

    def observe(self, candidate: Candidate) -> Verdict:
        now = self.clock.monotonic()
        seen = self._seen.get(candidate.path)
        if seen is None:
            seen = self._seen[candidate.path] = _Seen(now, candidate.signature, now, 1)
        elif seen.signature != candidate.signature:
            seen.signature, seen.since, seen.checks, seen.changed = candidate.signature, now, 1, True
        else:
            seen.checks += 1
        if seen.checks < 2 or now < self._ready_at(seen):
            return "wait"
        if candidate.size == 0 and not self.allow_empty:
            return "empty"
        return "ready"

    def _ready_at(self, seen: _Seen) -> float:
        if seen.changed or seen.signature[0] == 0:
            return seen.since + max(self.min_age, self.stable_interval)
        return max(seen.since + self.stable_interval, seen.first_seen + self.min_age)

    def due_in(self) -> float | None:
        """Seconds until the earliest tracked file could be ready (0 if now), None if none tracked."""
        if not self._seen:
            return None
        now = self.clock.monotonic()
        return min(max(self._ready_at(s) - now, 0.0) for s in self._seen.values())

    def tracked(self) -> list[Path]:
        return list(self._seen)

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def keep_only(self, present: Iterable[Path]) -> None:
        """Drop files no longer in the inbox (after a successful full listing only)."""
        keep = set(present)
        for path in [p for p in self._seen if p not in keep]:
            del self._seen[path]


@dataclass(frozen=True)
class Claim:
    """What `claim` did. `path` is set when the file is in processing/ now. Otherwise `problem`
    says why it cannot be claimed as things stand (a person must act: another filesystem,
    permissions, a read-only or full disk); neither means "not ready yet, look again later"."""

    path: Path | None = None
    problem: str | None = None
    changed: bool = False  # it changed while being claimed and was put back in the inbox


def claim_problem(exc: OSError, path: Path, processing_dir: Path) -> str | None:
    """Why a failed rename of `path` into `processing_dir` needs a person, or None when it only
    means "not ready yet" (the file vanished, or its writer holds it open on Windows)."""
    if exc.errno == errno.ENOENT or getattr(exc, "winerror", None) in _WINDOWS_BUSY:
        return None
    hint = _CLAIM_HINTS.get(exc.errno or 0, "")
    reason = exc.strerror or type(exc).__name__
    return f"cannot move {path.name} into {processing_dir}: {reason}" + (f" ({hint})" if hint else "")


def claim(path: Path, processing_dir: Path, *, done_file: bool = False,
          expect: tuple[int, int] | None = None) -> Claim:
    """Move `path` into `processing_dir` by an atomic rename.

    Not ready (Claim() with no path and no problem): the file vanished, is held open by its
    writer (Windows), or a file of that name is already in processing/ (never overwritten; it is
    taken once that one has been filed away). In done-file mode the `.done` file follows, so an
    old done file can never release the next export of the same name early.
    `expect` is the (size, mtime_ns) the file was judged complete with: if the claimed file
    differs, its writer is still at it, and it goes back to the inbox (Claim(changed=True)).
    processing/ must be on the same filesystem as the inbox, or the rename cannot be atomic.
    """
    target = processing_dir / path.name
    if os.path.lexists(target):
        return Claim()
    try:
        os.rename(path, target)
    except OSError as exc:
        return Claim(problem=claim_problem(exc, path, processing_dir))
    marker = path.with_name(path.name + DONE_SUFFIX)
    if done_file:
        try:
            os.rename(marker, target.with_name(target.name + DONE_SUFFIX))
        except OSError:
            pass  # already gone: the data file is what matters
    if expect is not None and _signature(target) != expect and _put_back(target, path, done_file):
        return Claim(changed=True)
    fsync_dir(path.parent)
    fsync_dir(processing_dir)
    return Claim(path=target)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _put_back(claimed: Path, original: Path, done_file: bool) -> bool:
    """Undo a claim (the rename back); False when the inbox name was taken again meanwhile."""
    if os.path.lexists(original):
        return False
    try:
        os.rename(claimed, original)
    except OSError:
        return False
    marker = claimed.with_name(claimed.name + DONE_SUFFIX)
    if done_file and os.path.lexists(marker):
        try:
            os.rename(marker, original.with_name(original.name + DONE_SUFFIX))
        except OSError:
            pass
    return True


def list_processing(processing_dir: Path) -> list[Path]:
    """Data files left in processing/ (by a crash or an API outage), oldest mtime first, then name."""
    found: list[tuple[int, str, Path]] = []
    try:
        with os.scandir(processing_dir) as it:
            for entry in it:
                if entry.name.startswith(".") or entry.name.lower().endswith(_NOT_DATA):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name, Path(entry.path)))
                except OSError:
                    continue
    except FileNotFoundError:
        return []
    return [p for _, _, p in sorted(found)]


def placed_name(stem: str, suffix: str, now: datetime, sha256: str, counter: int = 1) -> str:
    """`<stem>__<UTC time>__<sha8><suffix>`, with `__<counter>` before the suffix from 2 on.

    >>> placed_name("PRODUCTS", ".csv", datetime(2025, 6, 14, 10, 15, 2, tzinfo=timezone.utc), "3fa9c1d2ee")
    'PRODUCTS__20250614T101502Z__3fa9c1d2.csv'
    """
    when = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    extra = f"__{counter}" if counter > 1 else ""
    return f"{stem}__{when}__{sha256[:8]}{extra}{suffix}"


def place(path: Path, outcome: Report, folders: Folders, now: datetime) -> Path:
    """File a processed file away; returns its new path.

    done / duplicate -> archive/YYYY/MM/DD/<name> with <name>.report.json beside it;
    refused          -> failed/YYYY/MM/DD/<name> with <name>.error.json.
    A `.rejected.csv` and `.rejected.xlsx` of refused rows are written when there are any, and a `.done` file moves
    with its data file. The report is written before the file moves (a crash in between leaves
    the file in processing/, and the next run files it under a new name). Nothing is ever
    overwritten: a clash adds a counter.
    """
    if outcome.status == "waiting":
        raise ValueError("a waiting file stays in processing/")
    archived = outcome.status in ("done", "duplicate")
    root = folders.archive if archived else folders.failed
    day = now.astimezone(UTC)
    folder = root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    digest = outcome.sha256 or sha256_of(path)
    sidecar = ".report.json" if archived else ".error.json"

    counter = 1
    while True:
        target = folder / placed_name(path.stem, path.suffix, now, digest, counter)
        if not any(os.path.lexists(str(target) + s) for s in ("", sidecar, *SIDECAR_SUFFIXES)):
            break
        counter += 1

    outcome.placed_as = str(target)
    write_report_files(outcome, target, sidecar=sidecar)
    os.rename(path, target)
    marker = path.with_name(path.name + DONE_SUFFIX)
    if os.path.lexists(marker):
        os.rename(marker, Path(str(target) + DONE_SUFFIX))
    fsync_dir(path.parent)
    fsync_dir(folder)
    return target


def keep_put_back(placed: Path) -> list[Path]:
    """Move the reason and refused rows of `placed` (a failed file just put back into the inbox)
    into a `put-back/` folder beside it, under their own names; returns where they went.

    Once the file is back in the inbox it is no longer failed: its `.error.json` must not keep it
    listed or counted as failed (the status page, `connector status`). They are kept rather than
    moved with the file: the inbox takes a `.rejected.xlsx` as data (refused rows fixed and
    dropped back), and a person may still want the old reason and rows. `put-back/` is below
    the dated folder, so retention removes it with the rest. A companion that cannot be moved
    stays where it is (the file itself is back in the inbox either way).
    """
    moved = []
    kept = placed.parent / PUT_BACK_FOLDER
    for suffix in (".error.json", ".rejected.csv", ".rejected.xlsx"):
        companion = Path(str(placed) + suffix)
        if not os.path.lexists(companion):
            continue
        try:
            kept.mkdir(exist_ok=True)
            os.replace(companion, kept / companion.name)
        except OSError:
            continue
        moved.append(kept / companion.name)
    return moved


def refuse_empty(path: Path) -> Report:
    """The report of a zero-byte export: refused with a reason a person can act on."""
    message = (f"{path.name} is empty (0 bytes): the export wrote nothing. "
               "Check the ERP export job; set watch.allow_empty to accept empty files.")
    report = Report(file=path.name, size=0).fail("refused", "read", "empty file")
    report.message = message
    return report


def count_files(root: Path, *, suffix: str | None = None) -> int:
    """Data files under `root` (sidecars excluded), or files ending with `suffix` when given."""
    total = 0
    for _dir, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d != PUT_BACK_FOLDER]  # files put back are no longer here
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


