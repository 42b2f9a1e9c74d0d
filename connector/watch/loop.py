"""The service loop: discover ready files, claim them one at a time, run them, keep health fresh.

    watcher = Watcher(settings, pipeline, worker, stop=stop, clock=clock, log=log, retry_base=5.0,
                      retry_cap=300.0, health=health, observer_kind="native", ledger=ledger)
    watcher.run()      # until `stop` is set

Discovery: a full listing of the inbox at start-up and every `scan_interval` is the truth;
watchdog events only make a path be looked at sooner (reference/filedrop.md: events are lost on
network shares, in bursts, and when the observer dies). The observer is supervised and rebuilt.

Order of work: at start-up, work left by an earlier run is resumed first (files in processing/,
oldest first, then unsent ledger entries). Then one file at a time: claim -> run_file -> place.

What stops new claims is only what concerns every file: API trouble (a "waiting" outcome, work
left in the ledger, a FatalError from the pipeline) or a broken mapping (a "refused" outcome of kind
"mapping"); the file stays in processing/ and is tried again with exponential backoff. Trouble
with one file (it cannot be read right now, an unexpected error, it cannot be filed away) sets
that file aside with its own backoff while other files go on; an unexpected error that repeats
INTERNAL_ATTEMPTS times sends the file to failed/, and so does a file during which the service
was killed KILLED_ATTEMPTS times (out of memory, most likely): the count survives restarts in
`<state>/attempts.json`. Health is published after every cycle and
every HEARTBEAT_S while waiting or busy with a long file.

Every reading of time and every wait goes through the injected `Clock`.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector import inbox, retention
from connector.clock import Clock
from connector.common import write_json_atomic
from connector.config import Settings
from connector.errors import FatalError
from connector.health import Health, utc_now
from connector.logs import redact
from connector.report import Report
from connector.watch.observer import ObserverSupervisor
from connector.watch.verifying import VerifySchedule
from connector.watch.worker import WAKE_SLICE_S, Abandoned, Worker, wait_for

if TYPE_CHECKING:
    from connector.pipeline import Pipeline

MIN_WAIT_S = 0.05  # never spin
SUPERVISE_S = 1.0  # how often an idle service checks that its observer still runs
SETTLE_S = 0.2  # a burst of hints is over when none came for this long ...
SETTLE_MAX_S = 2.0  # ... or after this long in any case
HEALTH_REFRESH_S = 10.0  # the health file is rewritten when something changed, or this often
HEARTBEAT_S = 5.0  # how often health is looked at while waiting or busy with one long file
INTERNAL_ATTEMPTS = 3  # an unexpected error on the same file this often: it goes to failed/
KILLED_ATTEMPTS = 3  # the service died this often while running the same file: it goes to failed/
FAILED_RECOUNT_S = 300.0  # failed/ is walked at start-up and at most this often; counted in between
RETENTION_EVERY_S = 6 * 3600.0  # old archived/failed files removed and the ledger compacted this often
OWNER_STALE_S = 3600.0  # an Office owner file this old is probably left over from a crash
PROBLEMS_SHOWN = 5  # per kind of problem in health; the rest are counted


class Backoff:
    """Exponential delays: base, 2*base, 4*base ... up to cap; `reset` after a success."""

    def __init__(self, base: float, cap: float):
        self.base, self.cap = base, cap
        self._next = base

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.base



@dataclass
class _Trouble:
    """A file in processing/ that could not go through just now for a reason of its own.

    kind: "io" (it cannot be read right now), "internal" (an unexpected error in the connector),
    "place" (processed, but it cannot be filed away). Other files go on meanwhile.
    """

    kind: str
    message: str
    backoff: Backoff
    attempts: int = 0
    next_try: float = 0.0


class Watcher:
    """The loop behind `serve`. One instance per run; not thread-safe (one thread drives it).

    What may block new claims is only what concerns every file: API trouble (work left in the
    ledger, or a FatalError: credentials, TLS, URL) and a broken mapping. Trouble with one
    file (unreadable now, an unexpected error, cannot be filed away) sets that file aside with
    its own backoff while the others go on.
    """

    def __init__(self, settings: Settings, pipeline: Pipeline, worker: Worker, *, stop: threading.Event,
                 clock: Clock, log: logging.Logger, retry_base: float, retry_cap: float,
                 health: Health, observer_kind: str, ledger: Any = None, heartbeat: float = HEARTBEAT_S):
        self.settings = settings
        self.w = settings.watch
        self.folders = settings.folders
        self.pipeline = pipeline
        self.worker = worker
        self.ledger = ledger  # a read-side handle of our own, for health (the pipeline's is the worker's)
        self.stop = stop
        self.clock = clock
        self.log = log
        self.health = health
        self.heartbeat = heartbeat
        self.wake = threading.Event()
        self.readiness = inbox.Readiness(self.w.min_age, self.w.stable_interval,
                                         allow_empty=self.w.allow_empty, clock=clock)
        poll = min(self.w.scan_interval, 5.0)
        self.observer = ObserverSupervisor(observer_kind, self.folders.inbox, self.wake, poll_interval=poll, log=log,
                                            clock=clock)
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.retry = Backoff(retry_base, retry_cap)
        self.inbox_retry = Backoff(min(1.0, self.w.scan_interval), self.w.scan_interval)
        self.api_waiting = False  # ledger work is left or the API refuses us: nothing new is claimed
        self.fatal: FatalError | None = None  # the API refuses the setup (credentials, TLS, URL)
        self.mapping_problem: str | None = None  # the mapping/config is broken: nothing new is claimed
        self.mapping_file: str | None = None  # the file in processing/ that showed it, tried again
        self.troubles: dict[str, _Trouble] = {}  # by name in processing/
        self.claim_problems: dict[Path, str] = {}  # inbox files that cannot be claimed, and why
        self.open_since: dict[Path, float] = {}  # workbooks held by an owner file, first seen (our clock)
        self.stale_owners: dict[Path, str] = {}  # those held so long the owner file is probably stale
        self.inbox_problem: str | None = None
        self.next_scan = clock.monotonic()
        self.last_scan_at: str | None = None
        self.files_done = 0
        self.busy: dict[str, str] | None = None
        self.failed_files = 0
        self._failed_counted_at: float | None = None
        self._published: dict[str, Any] | None = None
        self._published_at = 0.0
        self._beat_at = clock.monotonic()
        self.attempts = Attempts(self.folders.state / "attempts.json")
        self.all_refused: dict[str, str] = {}  # files whose every item the API refused, and why to look
        self.verifier = VerifySchedule(settings, clock, log)  # verify what was pushed, some minutes later
        self.on_file_failed: Callable[[str, str], None] | None = None  # alerts (connector.notify); never blocks
        self._tidied_at: float | None = None

    # the loop

    def run(self) -> None:
        self.observer.ensure()
        self._count_failed()
        self._run_processing(first=True)
        while not self.stop.is_set():
            if self._blocked():
                self._wait_to_retry()
                if not self.stop.is_set():
                    self._run_processing()
                continue
            self.observer.ensure()
            if self.troubles:
                self._run_processing(drain=False)  # only the files whose backoff is over
            ready = self._discover()
            for candidate in ready:
                if self.stop.is_set() or self._blocked():
                    break
                self._take(candidate)
            self._verify_if_due(quiet=not ready and not self.readiness.tracked())
            self._publish()
            self._tidy()
            self._sleep_until_next()

    def _blocked(self) -> bool:
        return self.api_waiting or self.mapping_problem is not None

    def _wait_to_retry(self) -> None:
        delay = self.retry.next()
        if self.mapping_problem is not None:
            why = "the mapping is broken (see above)"
        else:
            why = "API work is waiting in the ledger"
        self.log.info("%s; trying again in %.0f s", why, delay, extra={"event": "retry_wait", "delay_s": delay})
        self._publish()
        self._pause(delay)

    def _run_processing(self, *, first: bool = False, drain: bool = True) -> None:
        """Run the files in processing/ (oldest first) whose turn it is, then drain what else the
        ledger holds. Stops at the first file that blocks everything (API trouble, broken mapping).

        Files go first because run_file on a file whose work is journaled drains the ledger in
        order and returns that file's own final report; draining first would finish the work
        behind the file's back and run_file would then call it a duplicate.
        """
        pending = inbox.list_processing(self.folders.processing)
        names = {p.name for p in pending}
        for name in [n for n in self.troubles if n not in names]:
            del self.troubles[name]  # taken away by a person
        if self.mapping_problem is not None and self.mapping_file not in names:
            # Taken away by a person: nothing left to try the mapping on, so the next file will.
            self.log.info("%s left processing/; taking files again", self.mapping_file,
                          extra={"event": "mapping_fixed"})
            self.mapping_problem = self.mapping_file = None
        if pending and first:
            self.log.info("resuming %d file(s) left in processing/", len(pending), extra={"event": "resume"})
        now = self.clock.monotonic()
        for path in pending:
            trouble = self.troubles.get(path.name)
            if trouble is not None and trouble.next_try > now:
                continue
            if self.stop.is_set() or self._process(path) == "blocked":
                return
        if drain and not self.stop.is_set():
            self._drain()

    def _drain(self) -> None:
        try:
            drained = self._call(self.pipeline.drain, busy="work waiting in the ledger")
        except Abandoned:
            raise
        except FatalError as exc:
            self.fatal = exc
            drained = False
        except Exception as exc:  # noqa: BLE001
            self.log.error("unexpected error while sending waiting work:\n%s", _trace(exc),
                           extra={"event": "drain_error"})
            drained = False
        else:
            self.fatal = None
        self.api_waiting = not drained or self.fatal is not None
        if not self._blocked():
            self.retry.reset()

    def _discover(self) -> list[inbox.Candidate]:
        """Check the inbox (fully when a scan is due, else only hinted and tracked paths);
        return the files ready to claim, oldest first, at most max_files_per_cycle."""
        w = self.w
        now = self.clock.monotonic()
        hinted = self.observer.take_hints()
        if now >= self.next_scan:
            found = self._scan()
            if found is None:
                return []
        else:
            paths = hinted | set(self.readiness.tracked())
            found = []
            for path in paths:
                cand = inbox.inspect(path, w.patterns, done_file=w.done_file)
                if cand is None:
                    self.readiness.forget(path)
                else:
                    found.append(cand)
        ready = []
        for cand in found:
            verdict = self.readiness.observe(cand)
            if verdict == "ready":
                ready.append(cand)
            elif verdict == "empty":
                self._fail_empty(cand)
        return inbox.order(ready, w.max_files_per_cycle)

    def _scan(self) -> list[inbox.Candidate] | None:
        """The authoritative listing. None when the inbox is unavailable (logged once per change)."""
        try:
            listing = inbox.list_inbox(self.folders.inbox, self.w.patterns, done_file=self.w.done_file)
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
            if reason != self.inbox_problem:
                self.log.warning("inbox %s is unavailable (%s); the service stays up and looks again",
                                 self.folders.inbox, reason, extra={"event": "inbox_unavailable"})
            self.inbox_problem = reason
            self.next_scan = self.clock.monotonic() + self.inbox_retry.next()
            return None
        if self.inbox_problem is not None:
            self.log.info("inbox %s is available again", self.folders.inbox, extra={"event": "inbox_available"})
            self.inbox_problem = None
            self.inbox_retry.reset()
            self.observer.ensure()
        found = listing.candidates
        present = {c.path for c in found}
        self.readiness.keep_only(present)
        for path in [p for p in self.claim_problems if p not in present]:
            del self.claim_problems[path]  # gone from the inbox (or held open now): nothing to claim
        self._note_open_workbooks(listing.open_workbooks)
        self.next_scan = self.clock.monotonic() + self.w.scan_interval
        self.last_scan_at = utc_now(self.clock)
        return found

    def _note_open_workbooks(self, held: list[inbox.OpenWorkbook]) -> None:
        """Workbooks keep waiting while their `~$` owner file exists; one left for over an hour
        (by our clock or by its mtime) is probably left over from a crash: say so once."""
        now, wall = self.clock.monotonic(), self.clock.time()
        current = {h.path: h for h in held}
        for path in [p for p in self.open_since if p not in current]:
            del self.open_since[path]
            self.stale_owners.pop(path, None)
        for path, h in current.items():
            age = now - self.open_since.setdefault(path, now)
            if h.owner_mtime is not None:
                age = max(age, wall - h.owner_mtime)
            if age >= OWNER_STALE_S and path not in self.stale_owners:
                self.stale_owners[path] = h.owner.name
                self.log.warning("%s has waited over %.0f min for its Office owner file %s; if nobody has the "
                                 "workbook open, delete %s", path.name, OWNER_STALE_S / 60, h.owner.name,
                                 h.owner.name, extra={"event": "owner_file_stale", "file": path.name})

    def _take(self, cand: inbox.Candidate) -> None:
        """Claim one ready file and run it through the pipeline."""
        self.readiness.forget(cand.path)
        result = self._claim(cand)
        if result.path is not None:
            self.log.info("claimed %s (%d bytes)", result.path.name, cand.size,
                          extra={"event": "file_claimed", "file": result.path.name, "size": cand.size})
            self._process(result.path)

    def _claim(self, cand: inbox.Candidate) -> inbox.Claim:
        """inbox.claim, with what a person must know logged once per change and kept for health."""
        result = inbox.claim(cand.path, self.folders.processing, done_file=self.w.done_file, expect=cand.signature)
        if result.problem is not None:
            if self.claim_problems.get(cand.path) != result.problem:
                self.log.warning("%s; it stays in the inbox and is tried again", result.problem,
                                 extra={"event": "claim_problem", "file": cand.path.name})
            self.claim_problems[cand.path] = result.problem
            return result
        if self.claim_problems.pop(cand.path, None) is not None and result.path is not None:
            self.log.info("%s can be claimed again", cand.path.name,
                          extra={"event": "claim_ok", "file": cand.path.name})
        if result.changed:
            self.log.info("%s changed while it was being claimed: its writer is still at it; put back in the "
                          "inbox", cand.path.name, extra={"event": "claim_changed", "file": cand.path.name})
        elif result.path is None:
            # Gone, held open by its writer, or its name is still in processing/: the next scan sees it again.
            self.log.debug("could not claim %s yet", cand.path.name)
        return result

    def _process(self, path: Path) -> str:
        """run_file + place for one file in processing/: "placed", "file" (set aside on its own)
        or "blocked" (API trouble or a broken mapping: nothing new may be claimed)."""
        started = self.clock.monotonic()
        killed = self.attempts.begin(path.name) - 1  # runs of this file that never came back
        if killed >= KILLED_ATTEMPTS:
            return self._killed_too_often(path, killed)
        try:
            outcome = self._call(self.pipeline.run_file, path, busy=path.name)
        except Abandoned:
            self.attempts.end(path.name)  # a stop asked for, not a death
            raise
        except FatalError as exc:  # the setup is wrong (credentials, TLS, URL): nothing can go until fixed
            self.attempts.end(path.name)
            self.fatal = exc
            self.api_waiting = True
            return "blocked"
        except Exception as exc:  # noqa: BLE001 - the pipeline promises not to raise; if it does, count it
            self.attempts.end(path.name)
            return self._internal_error(path, exc)
        self.attempts.end(path.name)
        self.fatal = None
        seconds = round(self.clock.monotonic() - started, 3)
        kind = outcome.error_kind
        if outcome.status == "waiting" and kind == "io":
            return self._unreadable(path, outcome)
        self.troubles.pop(path.name, None)  # it could be read and ran: whatever set it aside is over
        if outcome.status == "waiting":
            self.log.warning("%s: %s; it stays in processing/ and sending resumes with backoff",
                             path.name, outcome.message or "API work waiting",
                             extra={"event": "file_waiting", "file": path.name, "seconds": seconds})
            self.api_waiting = True
            return "blocked"
        if outcome.status == "refused" and kind == "mapping":
            return self._mapping_broken(path, outcome)
        self._mapping_works()
        return self._place(path, outcome, seconds)

    def _place(self, path: Path, outcome: Report, seconds: float) -> str:
        try:
            placed = inbox.place(path, outcome, self.folders, self.clock.now())
        except OSError as exc:
            return self._set_aside(path, "place", f"was processed ({outcome.status}) but cannot be filed away: {exc}")
        self.troubles.pop(path.name, None)
        self.failed_files += outcome.status == "refused"
        if outcome.status == "refused":
            self._tell_failed(path.name, outcome)
        self.files_done += 1
        self.verifier.file_pushed(outcome)
        if outcome.outcome() == "refused_by_api":
            self.all_refused[path.name] = f"see {placed}.report.json"
            self._tell_failed(path.name, outcome, "the API refused every item it was sent; see its report in archive/")
            self.log.error("%s: the API refused every item it was sent (another account's source id, or data it "
                           "will not take); nothing of it is in Stock2Shop. See %s.report.json", path.name, placed,
                           extra={"event": "all_refused", "file": path.name})
        elif outcome.counts.items_sent:
            self.all_refused.clear()  # the API takes our items again
        self.log.info("finished %s: %s in %.1f s (%s) -> %s", path.name, outcome.status, seconds,
                      _summary(outcome), placed,
                      extra={"event": "file_finished", "file": path.name, "status": outcome.status,
                             "seconds": seconds, "placed_as": str(placed), "counts": asdict(outcome.counts)})
        return "placed"

    def _killed_too_often(self, path: Path, killed: int) -> str:
        """The service died `killed` times while running this file: it goes to failed/, not round again."""
        self.attempts.end(path.name)
        text = (f"{path.name}: refused: the service stopped without warning {killed} times while processing it "
                "(killed, most likely for using too much memory). Split the file, lower limits.max_rows so it is "
                "refused early with a clear message, or give the service more memory; then drop it again.")
        report = Report(file=path.name).fail("refused", "internal", text)
        report.message, report.attempts = text, killed
        self.log.error("%s", text, extra={"event": "file_killed_too_often", "file": path.name})
        return self._place(path, report, 0.0)

    def _unreadable(self, path: Path, outcome: Report) -> str:
        return self._set_aside(path, "io", f"cannot be read right now: {outcome.error_message or outcome.message}")

    def _internal_error(self, path: Path, exc: Exception) -> str:
        """An unexpected exception is deterministic: after INTERNAL_ATTEMPTS the file goes to
        failed/ with a redacted message (the traceback goes only to the log)."""
        message = redact(f"{type(exc).__name__}: {exc}")[:300]
        trouble = self.troubles.get(path.name)
        attempts = (trouble.attempts if trouble and trouble.kind == "internal" else 0) + 1
        if attempts == 1:  # the traceback once, redacted here so that no handler can leak a token
            self.log.error("unexpected error while processing %s:\n%s", path.name, _trace(exc),
                           extra={"event": "file_error", "file": path.name})
        if attempts < INTERNAL_ATTEMPTS:
            return self._set_aside(path, "internal", f"unexpected error (attempt {attempts} of {INTERNAL_ATTEMPTS}): "
                                                     f"{message}", attempts=attempts)
        text = (f"{path.name}: refused after {attempts} attempts: unexpected error in the connector: {message}. "
                "Please report it with the log; drop the file again to retry.")
        report = Report(file=path.name).fail("refused", "internal", message)
        report.message, report.attempts = text, attempts
        return self._place(path, report, 0.0)

    def _set_aside(self, path: Path, kind: str, message: str, *, attempts: int | None = None) -> str:
        """Keep `path` in processing/ and skip it until its own backoff is over; log once per change."""
        trouble = self.troubles.get(path.name)
        if trouble is None or trouble.kind != kind:
            trouble = self.troubles[path.name] = _Trouble(kind, "", Backoff(self.retry_base, self.retry_cap))
        trouble.attempts = trouble.attempts + 1 if attempts is None else attempts
        delay = trouble.backoff.next()
        trouble.next_try = self.clock.monotonic() + delay
        if message != trouble.message:
            self.log.warning("%s %s; it stays in processing/, other files go on, tried again in %.0f s",
                             path.name, message, delay, extra={"event": "file_set_aside", "file": path.name,
                                                               "kind": kind, "delay_s": delay})
        trouble.message = message
        return "file"

    def _mapping_broken(self, path: Path, outcome: Report) -> str:
        """A broken mapping is not the file's fault: it stays in processing/, nothing new is
        claimed, and it is tried again with backoff until a person fixes the mapping."""
        message = outcome.message or str(outcome.error_message)
        if message != self.mapping_problem:
            self.log.error("the mapping is broken: %s. %s stays in processing/ and nothing new is taken until "
                           "the mapping is fixed (no restart needed)", message, path.name,
                           extra={"event": "mapping_broken", "file": path.name})
        self.mapping_problem, self.mapping_file = message, path.name
        return "blocked"

    def _mapping_works(self) -> None:
        if self.mapping_problem is not None:
            self.log.info("the mapping works again; taking files", extra={"event": "mapping_fixed"})
            self.mapping_problem = self.mapping_file = None
            self.retry.reset()

    def _fail_empty(self, cand: inbox.Candidate) -> None:
        self.readiness.forget(cand.path)
        result = self._claim(cand)
        if result.path is None:
            return
        claimed = result.path
        outcome = inbox.refuse_empty(claimed)
        try:
            placed = inbox.place(claimed, outcome, self.folders, self.clock.now())
        except OSError as exc:
            self._set_aside(claimed, "place", f"cannot be moved to failed/: {exc}")
            return
        self.failed_files += 1
        self._tell_failed(claimed.name, outcome)
        self.log.warning("%s -> %s", outcome.message, placed,
                         extra={"event": "file_finished", "file": claimed.name, "status": "refused"})

    def _tell_failed(self, name: str, outcome: Report, reason: str | None = None) -> None:
        if self.on_file_failed is not None:
            reason = reason or (f"{outcome.message or outcome.error_message or outcome.status}; it is in failed/ with "
                                "its reason: fix it (or the mapping) and put it back into the inbox")
            self.on_file_failed(name, reason)

    def _call(self, fn: Callable[..., Any], *args: Any, busy: str | None = None) -> Any:
        """Run a pipeline call on the worker; a stop request is honoured within the grace period
        even mid-request. Abandoning is safe: the work is in the ledger before it is sent.
        While it runs, health says what the service is busy with, every `heartbeat` seconds."""
        self.busy = {"with": busy, "since": utc_now(self.clock)} if busy else None
        if busy:
            self._publish()
        try:
            return wait_for(self.worker.submit(fn, *args), self.stop, on_stop=self._ask_pipeline_to_stop,
                            on_tick=self._beat, clock=self.clock)
        finally:
            self.busy = None

    def _ask_pipeline_to_stop(self) -> None:
        # A pipeline that offers request_stop() ends after its current request instead of
        # sending the rest of the ledger; without it, the grace period bounds the wait.
        request_stop = getattr(self.pipeline, "request_stop", None)
        if callable(request_stop):
            request_stop()

    def _beat(self) -> None:
        """Publish health every `heartbeat` seconds from inside a wait, changed or not, so its
        `updated_at` shows the loop is alive (cheap between beats)."""
        now = self.clock.monotonic()
        if now - self._beat_at >= self.heartbeat:
            self._beat_at = now
            self._publish(force=True)

    def _pause(self, seconds: float) -> None:
        """Wait `seconds` (or until stop), keeping the observer supervised and health fresh."""
        self._wait(self.clock.monotonic() + seconds, on_hint=False)

    def _sleep_until_next(self) -> None:
        """Wait for the next scan, the next readiness check, a set-aside file's next try or a
        hint, whichever comes first.

        A hint is followed by a short settling wait while more hints keep coming, so a burst of
        files dropped together is looked at together (and so taken oldest first). The observer
        is checked on the way, so a dead one is rebuilt without waiting for the next scan.
        """
        now = self.clock.monotonic()
        timeout = max(self.next_scan - now, 0.0)
        due = self.readiness.due_in()
        if due is not None:
            timeout = min(timeout, due)
        if self.troubles:
            timeout = min(timeout, max(min(t.next_try for t in self.troubles.values()) - now, 0.0))
        verify_in = self.verifier.due_in()
        if verify_in is not None:
            timeout = min(timeout, verify_in)
        self._wait(self.clock.monotonic() + max(timeout, MIN_WAIT_S), on_hint=True)

    def _wait(self, deadline: float, *, on_hint: bool) -> None:
        """Wait until `deadline` (monotonic) or stop, or a hint when `on_hint`; meanwhile keep the
        observer supervised and health fresh."""
        next_supervision = self.clock.monotonic() + SUPERVISE_S
        while not self.stop.is_set():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return
            if on_hint:
                if self.clock.wait(self.wake, min(left, WAKE_SLICE_S)):
                    self._settle()
                    return
            else:
                self.clock.wait(self.stop, min(left, WAKE_SLICE_S))
            if self.clock.monotonic() >= next_supervision:
                self.observer.ensure()
                next_supervision = self.clock.monotonic() + SUPERVISE_S
            self._beat()

    def _settle(self) -> None:
        give_up = self.clock.monotonic() + SETTLE_MAX_S
        while self.clock.monotonic() < give_up and not self.stop.is_set():
            self.wake.clear()
            if not self.clock.wait(self.wake, SETTLE_S):
                return

    def _verify_if_due(self, *, quiet: bool = True) -> None:
        """Verify the products of the files pushed `verify.after_minutes` ago, on the pipeline's thread
        (and, `quiet`: no file ready or on its way, those of a last verify that was not clean)."""
        self.verifier.run_if_due(lambda check, busy: self._call(check, self.pipeline, busy=busy), quiet=quiet)

    def _tidy(self) -> None:
        """At start-up and every RETENTION_EVERY_S: remove archived and failed files (and their reports)
        older than retention.days, and compact the ledger (DESIGN.md: retention)."""
        if self._tidied_at is not None and self.clock.monotonic() - self._tidied_at < RETENTION_EVERY_S:
            return
        self._tidied_at = self.clock.monotonic()
        before = self.clock.time() - self.settings.retention.days * 86400
        removed = 0
        for folder in (self.folders.archive, self.folders.failed):
            try:
                removed += retention.remove_old(folder, before)
            except OSError as exc:
                self.log.warning("cannot remove old files from %s: %s", folder, exc)
        try:
            compacted = self._call(self.pipeline.tidy, busy="compacting the ledger")
        except Abandoned:
            raise
        except Exception as exc:  # noqa: BLE001 - compaction is housekeeping: it never stops the service
            self.log.warning("the ledger was not compacted: %s", exc, extra={"event": "retention_error"})
            compacted = 0
        if removed or compacted:
            self.log.info("retention: removed %d files older than %d days; dropped the bodies of %d old jobs",
                          removed, self.settings.retention.days, compacted or 0,
                          extra={"event": "retention", "files": removed, "jobs": compacted})
        if removed:
            self._count_failed()

    # health

    def _count_failed(self) -> None:
        """Walk failed/ (at start-up and every FAILED_RECOUNT_S); counted in between, since a
        big failed/ on a share is slow to walk."""
        try:
            self.failed_files = inbox.count_files(self.folders.failed)
        except OSError:
            pass
        self._failed_counted_at = self.clock.monotonic()

    def problems(self) -> list[str]:
        """What a person should know, one line each; empty when all is well."""
        problems = []
        if self.inbox_problem:
            problems.append(f"inbox unavailable: {self.inbox_problem}")
        fatal = self.fatal
        if fatal is not None:
            problems.append(f"the API refuses the connector (credentials, TLS or URL): {redact(str(fatal))}; "
                            "work waits in the ledger")
        elif self.api_waiting:
            problems.append("API work waiting in the ledger (sending resumes with backoff)")
        if self.mapping_problem:
            problems.append(f"mapping broken, nothing new is taken until it is fixed: {self.mapping_problem}")
        problems += [p for p in [self.verifier.problem()] if p]
        problems += _capped([f"{name}: the API refused every item it was sent ({why})"
                             for name, why in sorted(self.all_refused.items())])
        problems += _capped([f"processing/{name} {t.message}" for name, t in sorted(self.troubles.items())])
        problems += _capped(sorted(self.claim_problems.values()))
        problems += _capped([f"{path.name} waits for its Office owner file {owner}, present for over "
                             f"{OWNER_STALE_S / 3600:.0f} h: delete it if nobody has the workbook open"
                             for path, owner in sorted(self.stale_owners.items())])
        return problems

    def snapshot(self) -> dict[str, Any]:
        if self._failed_counted_at is None or self.clock.monotonic() - self._failed_counted_at >= FAILED_RECOUNT_S \
                or self.health.take_failed_changed():
            self._count_failed()
        problems = self.problems()
        ledger = self.ledger
        return {
            "state": "degraded" if problems else "ok",
            "problems": problems,
            "busy": self.busy,
            "api_waiting": self.api_waiting,
            "last_scan_at": self.last_scan_at,
            "last_success_at": _ask(ledger, "last_success_at"),
            "last_error": _ask(ledger, "last_error"),
            "backlog": _ask(ledger, "backlog"),
            "failed_files": self.failed_files,
            "processing_files": len(inbox.list_processing(self.folders.processing)),
            "observer": self.observer.kind,
            "observer_state": self.observer.state,
            "observer_rebuilds": self.observer.rebuilds,
            "files_done": self.files_done,
            "verify": self.verifier.summary(),
        }

    def _publish(self, *, force: bool = False) -> None:
        try:
            snapshot = self.snapshot()
            now = self.clock.monotonic()
            if not force and snapshot == self._published and now - self._published_at < HEALTH_REFRESH_S:
                return
            self._published, self._published_at = snapshot, now
            self.health.update(snapshot)
        except Exception:
            self.log.exception("cannot publish health")


class Attempts:
    """How often each file in processing/ was started and not finished, kept on disk.

    `begin` before a file runs and `end` after it ran (whatever its outcome): a count that
    grows across restarts means the service died while running that file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.counts: dict[str, int] = self._load()

    def begin(self, name: str) -> int:
        self.counts[name] = self.counts.get(name, 0) + 1
        self._save()
        return self.counts[name]

    def end(self, name: str) -> None:
        if self.counts.pop(name, None) is not None:
            self._save()

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)} if isinstance(data, dict) else {}

    def _save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.counts, mode=0o600)
        except OSError:
            pass  # best effort: without it a killing file is retried, as before


def _trace(exc: BaseException) -> str:
    """The traceback as text, redacted here so that no log handler can leak a token."""
    return redact("".join(traceback.format_exception(exc)).rstrip())


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= PROBLEMS_SHOWN:
        return lines
    return [*lines[:PROBLEMS_SHOWN], f"... and {len(lines) - PROBLEMS_SHOWN} more like these"]




def _ask(ledger: Any, method: str) -> Any:
    if ledger is None:
        return None
    try:
        return getattr(ledger, method)()
    except Exception:  # noqa: BLE001 - health is best effort
        return None


def _summary(outcome: Report) -> str:
    """One line of the counts that matter to a person reading the log."""
    if outcome.error_kind:
        return outcome.message or outcome.status
    c = asdict(outcome.counts)
    keys = ("products", "variants", "items_sent", "items_unchanged", "images_sent", "images_refused",
            "images_missing", "rows_refused")
    where = f" (not in {outcome.images_folder})" if c["images_missing"] else ""
    return ", ".join(f"{k.replace('_', ' ')} {c[k]}" + (where if k == "images_missing" else "") for k in keys)
