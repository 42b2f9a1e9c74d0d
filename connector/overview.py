"""What the status page shows, gathered as plain data, without ever slowing the watch loop.

    view = Overview(settings).collect(health.current(), rate=1.0)

Read only: the health snapshot the loop publishes, the ledger through a read-only SQLite
connection opened per call (WAL lets a reader in beside the writer), and the report sidecars
in `archive/` and `failed/`. Nothing here takes a lock the loop waits for. Sidecars never change
once written, so their summaries are cached by path, size and mtime.

`put_back` is the page's one action: a file in `failed/` goes back to the inbox under its
original name, so the mapping rules pick it as before. Its reason and refused rows stay in
`failed/`, moved into a `put-back/` folder beside it (see `inbox.keep_put_back`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector import inbox
from connector.common import iso_utc
from connector.config import Settings
from connector.logs import redact

RECENT_FILES = 15  # rows of "last files"
FAILED_FILES = 20  # rows of "failed files" with a put-back button
CHART_DAYS = 30
SIDECARS = (".report.json", ".error.json", ".rejected.csv", ".rejected.xlsx")  # the only files the page serves
_PLACED = re.compile(r"^(?P<stem>.+)__\d{8}T\d{6}Z__[0-9a-f]{8}(?:__\d+)?(?P<ext>\.[^.]*)?$")
_CACHE_MAX = 500


class PutBackError(Exception):
    """A failed file cannot go back to the inbox; the message says why, for the page."""


@dataclass(frozen=True)
class Placed:
    """A file filed away: its area ("archive" or "failed") and its path below that folder."""

    area: str
    relative: str


class Overview:
    """Gathers the page's data for one settings; safe to call from any thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.roots = {"archive": settings.folders.archive, "failed": settings.folders.failed}
        self._cache: dict[tuple[str, int, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._chart: tuple[tuple[Any, ...], dict[str, tuple[int, int]]] | None = None

    def collect(self, health: dict[str, Any], *, rate: float | None = None, now: float | None = None) -> dict[str, Any]:
        """Everything the page shows, as plain data (see page.render)."""
        now = time.time() if now is None else now
        ledger = self._ledger(now)
        service = {k: health.get(k) for k in ("state", "problems", "busy", "updated_at", "last_scan_at",
                                              "observer", "files_done", "processing_files", "failed_files")}
        # Messages are redacted where they are made; once more here, since a page is easily shared.
        problems = [redact(str(p)) for p in service["problems"] or []]
        service["problems"] = [*problems, *([ledger["ledger_problem"]] if ledger.get("ledger_problem") else [])]
        error = ledger["last_error"]
        if error:
            error = {**error, "message": redact(error["message"])}
        return {
            "service": service,
            "api": {"last_success_at": ledger["last_success_at"], "last_error": error, "rate": rate},
            "backlog": ledger["backlog"],
            "working": ledger["working"],
            "recent": self.recent(),
            "failed": self.failed(),
            "daily": ledger["daily"],
            "now": iso_utc(now),
        }

    # -- the ledger, read-only --------------------------------------------------------------

    def _ledger(self, now: float) -> dict[str, Any]:
        empty = {"last_success_at": None, "last_error": None, "working": [], "daily": _days(now, {}),
                 "backlog": {"batches": 0, "images": 0, "oldest_age_s": None}}
        path = self.settings.folders.state / "ledger.sqlite"
        if not path.exists():
            return empty
        try:
            with _read_only(path) as db:
                return {
                    "last_success_at": _one(db, "SELECT MAX(at) FROM events WHERE kind = 'success'", iso=True),
                    "last_error": _last_error(db),
                    "backlog": _backlog(db, now),
                    "working": _working(db),
                    "daily": _days(now, self._daily(db, now)),
                }
        except sqlite3.Error as exc:
            return {**empty, "ledger_problem": f"the ledger cannot be read just now: {exc}"}

    def _daily(self, db: sqlite3.Connection, now: float) -> dict[str, tuple[int, int]]:
        """Items and images sent per day; read again only when a file was added or finished
        (summing every report's counts is the page's dearest query)."""
        key = (*db.execute("SELECT MAX(id), MAX(finished_at), COUNT(finished_at) FROM files").fetchone(),
               time.strftime("%Y-%m-%d", time.gmtime(now)))
        with self._lock:
            if self._chart is not None and self._chart[0] == key:
                return self._chart[1]
        sent = _daily(db, now)
        with self._lock:
            self._chart = (key, sent)
        return sent

    # -- the folders ------------------------------------------------------------------------

    def recent(self, limit: int = RECENT_FILES) -> list[dict[str, Any]]:
        """The newest files archived or failed, newest first, each summarised with its links."""
        found = [(area, p) for area, suffix in (("archive", ".report.json"), ("failed", ".error.json"))
                 for p in inbox.recent_sidecars(self.roots[area], suffix, limit) if not p.is_symlink()]
        rows = [self._summary(area, p) for area, p in found]
        rows.sort(key=lambda r: (r["at"] or "", r["mtime_ns"]), reverse=True)
        return rows[:limit]

    def failed(self, limit: int = FAILED_FILES) -> list[dict[str, Any]]:
        """Files still in failed/ (not put back yet), newest first, with their reason."""
        rows = [self._summary("failed", p)
                for p in inbox.recent_sidecars(self.roots["failed"], ".error.json", limit * 3) if not p.is_symlink()]
        return [r for r in rows if r["data"] is not None][:limit]

    def _summary(self, area: str, sidecar: Path) -> dict[str, Any]:
        try:
            st = sidecar.stat()
            key = (str(sidecar), st.st_size, st.st_mtime_ns)
        except OSError:
            key = (str(sidecar), -1, 0)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = self._read_summary(area, sidecar, key[2])
            with self._lock:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = cached
        data_path = Path(str(sidecar)[: -len(".error.json" if area == "failed" else ".report.json")])
        data = self._placed(area, data_path) if area == "failed" and data_path.is_file() else None
        return {**cached, "data": data}

    def _read_summary(self, area: str, sidecar: Path, mtime_ns: int) -> dict[str, Any]:
        try:
            report = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            report = {}
        report = report if isinstance(report, dict) else {}
        counts, timings, error = _dict(report.get("counts")), _dict(report.get("timings_s")), _dict(report.get("error"))
        stem = str(sidecar)[: -len(".error.json" if area == "failed" else ".report.json")]
        links = {"report": self._placed(area, sidecar)}
        for kind, suffix in (("csv", ".rejected.csv"), ("xlsx", ".rejected.xlsx")):
            if os.path.isfile(stem + suffix):
                links[kind] = self._placed(area, Path(stem + suffix))
        placed_name = Path(stem).name
        return {
            "area": area,
            "name": _plain_name(report.get("file")) or original_name(placed_name),
            "placed_name": placed_name,
            "status": str(report.get("status") or ("refused" if area == "failed" else "?")),
            "reason": redact(str(report.get("message") or error.get("message") or "")),
            "at": str(report.get("finished_at") or iso_utc(mtime_ns / 1e9)),
            "mtime_ns": mtime_ns,
            "products": _count(counts.get("products")),
            "items_sent": _count(counts.get("items_sent")),
            "images_sent": _count(counts.get("images_sent")),
            "rows_refused": _count(counts.get("rows_refused")),
            "seconds": timings.get("total") if isinstance(timings.get("total"), int | float) else None,
            "links": links,
        }

    def _placed(self, area: str, path: Path) -> Placed:
        return Placed(area, path.relative_to(self.roots[area]).as_posix())

    def resolve(self, area: str, relative: str, *, sidecar_only: bool = True) -> Path | None:
        """The file `relative` names below archive/ or failed/, or None when it is anything else:
        another folder (.., an absolute path, a symlink on the way), a hidden name, or (with
        `sidecar_only`) not a report, reason or rejected-rows file."""
        root = self.roots.get(area)
        if root is None or not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
            return None
        parts = relative.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        if sidecar_only and not parts[-1].lower().endswith(SIDECARS):
            return None
        path = root.joinpath(*parts)
        try:
            real_root = root.resolve(strict=True)
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(real_root) or path.is_symlink() or not real.is_file():
            return None
        return path

    def put_back(self, relative: str) -> str:
        """Move the failed file `relative` (below failed/) back into the inbox under its original
        name; returns that name. Raises PutBackError with the reason when it cannot."""
        path = self.resolve("failed", relative, sidecar_only=False)
        if path is None or path.name.lower().endswith((*SIDECARS, inbox.DONE_SUFFIX)):
            raise PutBackError("no such file in failed/")
        name = original_name(path.name)
        folder = self.settings.folders.inbox
        if not folder.is_dir():
            raise PutBackError(f"the inbox {folder} is not available; the file stays in failed/")
        target = folder / name
        if os.path.lexists(target):
            raise PutBackError(f"{name} is already in the inbox; the file stays in failed/")
        _move(path, target)
        inbox.keep_put_back(path)
        marker = Path(str(path) + inbox.DONE_SUFFIX)
        if self.settings.watch.done_file:  # the file is taken only with its done file
            if marker.exists():
                _move(marker, Path(str(target) + inbox.DONE_SUFFIX))
            else:
                Path(str(target) + inbox.DONE_SUFFIX).touch()
        return name


def original_name(placed: str) -> str:
    """The name a file had in the inbox, from its name in archive/ or failed/.

    >>> original_name("PRODUCTS__20250614T101502Z__3fa9c1d2__2.csv")
    'PRODUCTS.csv'
    """
    m = _PLACED.match(placed)
    return f"{m['stem']}{m['ext'] or ''}" if m else placed


def _count(value: Any) -> int:
    """A count from a report file: a whole number, whatever the file holds."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _plain_name(name: Any) -> str | None:
    """A report's `file` when it is a plain file name (never a path a report could smuggle in)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        return None
    return name


def _move(source: Path, target: Path) -> None:
    """A rename, or across filesystems a copy under a hidden name (never taken) renamed into place."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another filesystem
            raise PutBackError(f"cannot move it back: {exc.strerror or exc}") from None
    hidden = target.with_name(f".{target.name}.putback")
    try:
        shutil.copy2(source, hidden)
        os.rename(hidden, target)
        os.unlink(source)
    except OSError as exc:
        with contextlib.suppress(OSError):
            hidden.unlink()
        raise PutBackError(f"cannot copy it back: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2, check_same_thread=False)
    try:
        yield db
    finally:
        db.close()


def _one(db: sqlite3.Connection, sql: str, *args: Any, iso: bool = False) -> Any:
    row = db.execute(sql, args).fetchone()
    value = row[0] if row else None
    return iso_utc(value) if iso and value else value


def _last_error(db: sqlite3.Connection) -> dict[str, str] | None:
    row = db.execute("SELECT at, message FROM events WHERE kind = 'error' ORDER BY id DESC LIMIT 1").fetchone()
    return {"at": iso_utc(row[0]), "message": row[1]} if row else None


def _backlog(db: sqlite3.Connection, now: float) -> dict[str, Any]:
    join = "FROM jobs JOIN files ON files.id = jobs.file_id WHERE jobs.state = 'pending'"
    counts = dict(db.execute(f"SELECT kind, COUNT(*) {join} GROUP BY kind").fetchall())
    oldest = db.execute(f"SELECT MIN(jobs.created_at) {join}").fetchone()[0]
    return {"batches": counts.get("products", 0), "images": counts.get("image", 0),
            "oldest_age_s": round(now - oldest, 1) if oldest else None}


def _working(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Files whose work is journaled and not all acknowledged: batches and images done of all."""
    files: dict[int, dict[str, Any]] = {}
    for file_id, name, kind, state, n in db.execute(
            "SELECT files.id, files.name, jobs.kind, jobs.state, COUNT(*)"
            " FROM files JOIN jobs ON jobs.file_id = files.id WHERE files.status = 'journaled'"
            " GROUP BY files.id, jobs.kind, jobs.state ORDER BY files.id"):
        row = files.setdefault(file_id, {"name": name, "batches": [0, 0], "images": [0, 0]})
        counts = row["batches" if kind == "products" else "images"]
        counts[1] += n
        counts[0] += n if state != "pending" else 0
    return list(files.values())


def _daily(db: sqlite3.Connection, now: float) -> dict[str, tuple[int, int]]:
    since = now - CHART_DAYS * 86400
    return {day: (int(items or 0), int(images or 0)) for day, items, images in db.execute(
        "SELECT date(finished_at, 'unixepoch'), SUM(json_extract(report, '$.counts.items_sent')),"
        " SUM(json_extract(report, '$.counts.images_sent')) FROM files WHERE finished_at >= ?"
        " GROUP BY 1", (since,))}


def _days(now: float, sent: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """The last CHART_DAYS days (UTC), oldest first, with items and images sent on each."""
    days = [time.strftime("%Y-%m-%d", time.gmtime(now - i * 86400)) for i in range(CHART_DAYS - 1, -1, -1)]
    return [{"day": d, "items": sent.get(d, (0, 0))[0], "images": sent.get(d, (0, 0))[1]} for d in days]
