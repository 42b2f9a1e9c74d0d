"""How `connector watch` is doing, for people and for supervisors (Docker, systemd, monitoring).

The watcher calls `Health.update(snapshot)` after every cycle and every few seconds while it
waits or works on a long file. The snapshot is written to the health file atomically and, with
`watch.http_port`, served by connector.web as `GET /healthz`: 200 when `state` is "ok", 503 when
"degraded", and 503 with state "stale" when no update came for `STALE_AFTER_S` (the service loop
is stuck: a cached "ok" must not be served forever). Example snapshot:

    {"state": "ok", "problems": [], "last_scan_at": "2025-06-14T10:15:02Z",
     "last_success_at": "2025-06-14T10:14:40Z", "backlog": {"batches": 0, "images": 0, "oldest_age_s": null},
     "failed_files": 0, "processing_files": 0, "observer": "native", "pid": 4242, "updated_at": "..."}

`python -m connector.health FILE [MAX_AGE_S]` exits 0 when FILE says "ok" and was updated less
than MAX_AGE_S seconds ago (default STALE_AFTER_S, 180), by both the file's mtime and its
`updated_at`, else 1: the Docker HEALTHCHECK.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connector.clock import SYSTEM_CLOCK, Clock
from connector.common import iso_utc, write_json_atomic

log = logging.getLogger("connector.health")

# A snapshot older than this means the service loop is stuck. The watcher publishes at least
# every 5 s (watch.loop.HEARTBEAT_S), so this leaves room for a slow share or a paused VM.
STALE_AFTER_S = 180.0


class Health:
    """Holds the latest snapshot, writes it to a file, and tells its listeners (alerts);
    connector.web serves it as /healthz."""

    def __init__(self, path: Path | None, *, log: logging.Logger | None = None,
                 stale_after: float = STALE_AFTER_S, clock: Clock = SYSTEM_CLOCK):
        self.path = path
        self.log = log or logging.getLogger("connector.health")
        self.stale_after = stale_after
        self.clock = clock
        self._snapshot: dict[str, Any] = {"state": "degraded", "problems": ["starting"]}
        self._updated = clock.monotonic()
        self._lock = threading.Lock()
        self.url: str | None = None  # where connector.web serves /healthz, when it does
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # told every snapshot (alerts); must not block
        self._failed_changed = threading.Event()

    def snapshot(self) -> dict[str, Any]:
        """The last snapshot published, as it was."""
        with self._lock:
            return dict(self._snapshot)

    def failed_changed(self) -> None:
        """Say that a file left failed/ outside the watcher (the page's put back): the watcher
        counts failed/ again before its next snapshot instead of at its next periodic walk."""
        self._failed_changed.set()

    def take_failed_changed(self) -> bool:
        """True once after each `failed_changed` (the watcher's side)."""
        if not self._failed_changed.is_set():
            return False
        self._failed_changed.clear()
        return True

    def current(self) -> dict[str, Any]:
        """The last snapshot, or that snapshot marked "stale" when it is older than `stale_after`."""
        with self._lock:
            snapshot, age = dict(self._snapshot), self.clock.monotonic() - self._updated
        if age <= self.stale_after:
            return snapshot
        problem = f"no health update for {age:.0f} s: the service loop is stuck or stopped"
        return {**snapshot, "state": "stale", "problems": [*snapshot.get("problems", []), problem]}

    def update(self, snapshot: dict[str, Any]) -> None:
        """Publish `snapshot`; a health file that cannot be written is logged, never fatal."""
        snapshot = {**snapshot, "pid": os.getpid(), "updated_at": utc_now(self.clock), "health_url": self.url}
        with self._lock:
            self._snapshot, self._updated = snapshot, self.clock.monotonic()
        for listener in self.listeners:
            try:
                listener(snapshot)
            except Exception:
                self.log.exception("a health listener failed")
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, snapshot, mode=0o600)
        except OSError as exc:
            self.log.warning("cannot write the health file %s: %s", self.path, exc)


def utc_now(clock: Clock = SYSTEM_CLOCK) -> str:
    """The clock's wall time as `2025-06-14T10:15:02Z` (the format `parse_utc` reads)."""
    return iso_utc(clock.time())


def read_health(path: Path) -> dict[str, Any] | None:
    """The last snapshot written to `path`, or None when there is none or it is unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_healthy(path: Path, max_age_s: float = STALE_AFTER_S, *, clock: Clock = SYSTEM_CLOCK) -> bool:
    """True when the health file says "ok" and was written less than `max_age_s` ago, by its
    mtime and by the `updated_at` inside it (a file copied or touched keeps an old `updated_at`)."""
    now = clock.time()
    try:
        age = now - Path(path).stat().st_mtime
    except OSError:
        return False
    data = read_health(path)
    if not data or data.get("state") != "ok":
        return False
    updated = parse_utc(data.get("updated_at"))
    return age < max_age_s and updated is not None and now - updated < max_age_s


def parse_utc(text: Any) -> float | None:
    """Seconds since the epoch from `utc_now`'s format, None when absent or malformed."""
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m connector.health HEALTH_FILE [MAX_AGE_S]", file=sys.stderr)
        return 2
    max_age = float(args[1]) if len(args) > 1 else STALE_AFTER_S
    ok = is_healthy(Path(args[0]), max_age)
    data = read_health(Path(args[0])) or {}
    print("ok" if ok else f"unhealthy: {data.get('state', 'no health file')} {data.get('problems', '')}".strip())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
