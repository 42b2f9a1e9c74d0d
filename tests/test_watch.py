"""`connector watch` on real folders with a real watchdog observer, on a fake clock.

Most tests run `serve` in a thread with a small recording pipeline (real files, real folders)
and a FakeClock: the service's waits end at once, so its seconds pass in milliseconds. Where the
order of the test's actions and the service's time matters, the test freezes the clock and moves
it itself (`frozen`, `step_until`, `step_for`). The end-to-end ones run `python -m connector
watch` as a process against the sandbox API, in real time. Every test stops the service itself
and is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from connector import watch
from connector.cli import EXIT_CODES, error_outcome
from connector.config import Folders, Settings, WatchSettings
from connector.errors import AlreadyRunning
from connector.health import read_health
from connector.lock import StateLock
from connector.report import Report
from connector.watch.observer import Hints
from tests.support import FakeClock, report_of, wait_real

ROOT = Path(__file__).resolve().parents[1]


# --- helpers ----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _quick_observer_stop(monkeypatch):
    """watchdog's inotify emitter holds a move out of the inbox (every claim) for 0.5 s to pair
    it with a move in, and stopping the observer waits for that; the pairing needs far less."""
    from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

    monkeypatch.setattr(InotifyMoveEventGrouper, "delay", 0.02)


class RecordingPipeline:
    """Stands in for connector.pipeline.Pipeline: records what it was given, reads the file as
    the real one would, and answers with the statuses it is told to (default "done").

    Besides the four statuses, an answer may be "all_refused" (done, but the API refused every item),
    "io" (waiting: the file cannot be read right now),
    "mapping" (refused: the mapping is broken) or "raise" (an unexpected exception).
    With `gate`, run_file waits (at most 10 s) until the gate is set: a long file.
    """

    fatal = None

    def __init__(self, statuses: Callable[[str], str] | None = None, drains: list[bool] | None = None,
                 gate: threading.Event | None = None):
        self.calls: list[tuple[str, bytes]] = []
        self.statuses = statuses or (lambda name: "done")
        self.drain_answers = list(drains or [])
        self.drains = 0
        self.closed = False
        self.gate = gate
        self.lock = threading.Lock()

    def run_file(self, path: Path, *, mapping: str | None = None) -> Report:
        data = Path(path).read_bytes()
        with self.lock:
            self.calls.append((Path(path).name, data))
        if self.gate is not None:
            self.gate.wait(10)
        status = self.statuses(Path(path).name)
        report = {"file": Path(path).name, "counts": {"products": 1, "items_to_send": 1, "items_sent": 1}}
        if status == "raise":
            raise RuntimeError(f"boom while reading {path.name} from https://api.example/v1?token=SECRET-TOKEN-1")
        if status == "io":
            report["error"] = {"kind": "io", "message": "the share is busy"}
            return report_of("waiting", report, message=f"{path.name}: cannot be read right now")
        if status == "all_refused":  # the API refused every item it was sent
            report["counts"] = {"products": 2, "items_to_send": 4, "items_sent": 0, "products_refused_by_api": 2}
            return report_of("done", report, message=f"{path.name}: done")
        if status == "mapping":
            report["error"] = {"kind": "mapping", "message": "mappings/shop.yaml: columns.sku: no such column"}
            return report_of("refused", report, message=f"{path.name}: refused: mappings/shop.yaml: columns.sku")
        return report_of(status, report, message=f"{path.name}: {status}")

    def drain(self) -> bool:
        self.drains += 1
        return self.drain_answers.pop(0) if self.drain_answers else True

    def close(self) -> None:
        self.closed = True

    def names(self) -> list[str]:
        with self.lock:
            return [n for n, _ in self.calls]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == name]


def make_settings(root: Path, **watch_options) -> Settings:
    folders = Folders(inbox=root / "inbox", processing=root / "processing", archive=root / "archive",
                      failed=root / "failed", state=root / "state")
    folders.inbox.mkdir(parents=True, exist_ok=True)
    options = {"scan_interval": 30.0, "min_age": 0.1, "stable_interval": 0.2, "observer": "native",
               "health_file": folders.state / "health.json"}
    options.update(watch_options)
    return Settings(folders=folders, watch=WatchSettings(**options))


@contextlib.contextmanager
def serving(settings: Settings, pipeline, *, clock: FakeClock | None = None, **kwargs) -> Iterator[dict]:
    """Run serve() in a thread on a fake clock (result["clock"]); stop it on exit and check it
    stopped within 10 s."""
    stop = threading.Event()
    records = Records()
    clock = clock or FakeClock()
    log = logging.getLogger(f"test.watch.{id(stop)}")
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    result: dict = {"stop": stop, "records": records, "clock": clock}
    thread = threading.Thread(target=lambda: result.setdefault(
        "code", watch.serve(settings, lambda: pipeline, stop=stop, log=log, clock=clock, **kwargs)), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "serve() did not stop within 10 s"
        log.removeHandler(records)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait in real time (the service's fake clock runs meanwhile, unless frozen)."""
    wait_real(condition, timeout, what)


def drop(clock: FakeClock, path: Path, data: bytes) -> None:
    """Write a file in one go, as far as the service's clock can tell."""
    with clock.frozen():
        path.write_bytes(data)


def archived(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.folders.archive.rglob("*") if p.is_file() and not p.name.endswith((".json", ".csv.done")))


def health(settings: Settings) -> dict:
    return read_health(settings.watch.health_file) or {}


# --- discovery and readiness ------------------------------------------------------------------

def test_a_file_written_slowly_in_parts_is_taken_once_after_it_is_complete(tmp_path):
    settings = make_settings(tmp_path, stable_interval=1.0, min_age=0.5)
    pipeline = RecordingPipeline()
    parts = [b"sku,title\n"] + [f"SKU{i},Item {i}\n".encode() for i in range(8)]
    with serving(settings, pipeline) as run:
        clock = run["clock"]
        with clock.frozen(), open(settings.folders.inbox / "slow.csv", "wb") as f:
            for part in parts:  # pauses a tenth of stable_interval: never mistaken for the end
                f.write(part)
                f.flush()
                clock.advance(0.1)
                time.sleep(0.01)  # real time for the service to look at the growing file
        wait_until(lambda: pipeline.calls, what="the file to be taken")
        clock.run_for(0.5)
    assert pipeline.calls == [("slow.csv", b"".join(parts))]
    assert len(archived(settings)) == 1


def test_an_excel_style_save_is_taken_once_and_an_open_workbook_waits(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        clock = run["clock"]
        with clock.frozen():
            (box / "~$book.xlsx").write_bytes(b"owner")  # someone has book.xlsx open
            (box / "book.xlsx").write_bytes(b"version 1")
            # Excel's save: write a temp file with no extension, delete the original, rename the temp.
            (box / "8A3F2C10").write_bytes(b"version 2")
            (box / "book.xlsx").unlink()
            os.rename(box / "8A3F2C10", box / "book.xlsx")
        clock.run_for(1.0)
        assert pipeline.calls == []  # still open in Excel
        (box / "~$book.xlsx").unlink()  # Excel closed
        wait_until(lambda: pipeline.calls, what="the workbook to be taken")
        clock.run_for(0.5)
    assert pipeline.calls == [("book.xlsx", b"version 2")]


def test_office_owner_files_and_temp_files_are_left_alone(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        clock = run["clock"]
        with clock.frozen():
            (box / "~$other.xlsx").write_bytes(b"owner")
            (box / "export.csv.tmp").write_bytes(b"half")
            (box / "upload.part").write_bytes(b"half")
            (box / "good.csv").write_bytes(b"sku\nA\n")
        wait_until(lambda: pipeline.calls, what="good.csv")
        clock.run_for(0.5)
    assert pipeline.names() == ["good.csv"]
    assert sorted(p.name for p in box.iterdir()) == ["export.csv.tmp", "upload.part", "~$other.xlsx"]


def test_files_present_before_start_up_are_taken_oldest_first(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    for i, name in enumerate(["c.csv", "a.csv", "b.csv"]):
        path = settings.folders.inbox / name
        path.write_bytes(name.encode())
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    with serving(settings, pipeline):
        wait_until(lambda: len(pipeline.calls) == 3, what="three files")
    assert pipeline.names() == ["c.csv", "a.csv", "b.csv"]
    assert list(settings.folders.inbox.iterdir()) == []


def test_200_files_dropped_at_once_are_each_processed_once_oldest_first(tmp_path):
    settings = make_settings(tmp_path, max_files_per_cycle=50)
    pipeline = RecordingPipeline()
    staging = tmp_path / "staging"
    staging.mkdir()
    names = [f"export-{i:03d}.csv" for i in range(200)]
    ages = list(range(200))
    random.Random(4).shuffle(ages)  # mtime order differs from name order
    for name, age in zip(names, ages, strict=True):
        path = staging / name
        path.write_bytes(name.encode())
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    with serving(settings, pipeline) as run:
        clock = run["clock"]
        clock.run_for(0.3)
        with clock.frozen():  # one quick burst of renames, as a copy tool finishing would make
            for name in names:
                os.rename(staging / name, settings.folders.inbox / name)
            time.sleep(0.3)  # real time for watchdog to deliver the burst within one settling wait
        wait_until(lambda: len(pipeline.calls) >= 200, timeout=30, what="200 files")
        clock.run_for(0.3)
    expected = [name for _, name in sorted(zip(ages, names, strict=True))]
    assert pipeline.names() == expected
    assert len(archived(settings)) == 200
    assert list(settings.folders.processing.iterdir()) == []


def test_a_zero_byte_file_goes_to_failed_with_a_reason(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    with serving(settings, pipeline) as run:
        drop(run["clock"], settings.folders.inbox / "empty.csv", b"")
        wait_until(lambda: list(settings.folders.failed.rglob("*.error.json")), what="the error report")
    assert pipeline.calls == []
    error = json.loads(next(settings.folders.failed.rglob("*.error.json")).read_text())
    assert "empty (0 bytes)" in error["message"]


def test_done_file_mode_waits_for_the_done_file_and_archives_both(tmp_path):
    settings = make_settings(tmp_path, done_file=True)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        drop(run["clock"], box / "orders.csv", b"sku\nA\n")
        run["clock"].run_for(0.8)
        assert pipeline.calls == []
        drop(run["clock"], box / "orders.csv.done", b"")
        wait_until(lambda: archived(settings), what="the archive")
        wait_until(lambda: list(settings.folders.archive.rglob("*.done")), what="the done file archived")
    assert list(box.iterdir()) == []


# --- resilience -------------------------------------------------------------------------------

def _observers() -> list[BaseObserver]:
    return [t for t in threading.enumerate() if isinstance(t, BaseObserver)]


def _new_observer(before: set[BaseObserver]) -> bool:
    """An observer not in `before` runs (started, not only about to: one cannot be joined yet)."""
    return any(o.is_alive() for o in set(_observers()) - before)


@pytest.mark.parametrize("kind", ["native", "polling"])
def test_a_killed_observer_is_rebuilt_and_discovery_goes_on(tmp_path, kind):
    settings = make_settings(tmp_path, observer=kind)  # scans every 30 s: only the observer finds files fast
    pipeline = RecordingPipeline()
    # Time moves only in small steps: the polling observer lists the inbox every 5 s of real
    # time, and meanwhile the service's clock must not reach the next scan.
    clock = FakeClock()
    clock.freeze()
    with serving(settings, pipeline, clock=clock) as run:
        wait_until(lambda: health(settings).get("observer_state") == "running", what="the observer")
        before = set(_observers())
        for observer in before:  # kill it from outside, as a crash would
            observer.stop()
            observer.join(2)
        clock.step_until(lambda: _new_observer(before), step=0.005, timeout=5, what="a new observer")
        (settings.folders.inbox / "after.csv").write_bytes(b"sku\nA\n")
        # the polling observer lists the inbox every 5 s: allow two polls plus readiness
        clock.step_until(lambda: pipeline.calls, step=0.005, timeout=15, what="a file found by the rebuilt observer")
        assert run["records"].events("observer")[-1].state == "rebuilt"
        assert clock.monotonic() - 1000.0 < 30, "found by a scan, not by the observer"


def test_an_inbox_that_vanishes_and_returns_keeps_the_service_up_with_one_log_line(tmp_path):
    settings = make_settings(tmp_path, scan_interval=0.3)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        drop(run["clock"], box / "first.csv", b"1")
        wait_until(lambda: pipeline.calls, what="the first file")
        box.rmdir()
        wait_until(lambda: "inbox unavailable" in " ".join(health(settings).get("problems", [])), what="degraded health")
        run["clock"].run_for(1.5)  # several scans fail meanwhile
        assert len(run["records"].events("inbox_unavailable")) == 1
        assert health(settings)["state"] == "degraded"
        with run["clock"].frozen():
            box.mkdir()
            (box / "second.csv").write_bytes(b"2")
        wait_until(lambda: len(pipeline.calls) == 2, timeout=8, what="a file in the recreated inbox")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")
        assert len(run["records"].events("inbox_available")) == 1
    assert pipeline.names() == ["first.csv", "second.csv"]


def test_a_missing_inbox_at_start_up_is_waited_for(tmp_path):
    settings = make_settings(tmp_path, scan_interval=0.3)
    settings.folders.inbox.rmdir()
    pipeline = RecordingPipeline()
    with serving(settings, pipeline) as run:
        wait_until(lambda: health(settings).get("state") == "degraded", what="degraded health")
        with run["clock"].frozen():
            settings.folders.inbox.mkdir()
            (settings.folders.inbox / "late.csv").write_bytes(b"x")
        wait_until(lambda: pipeline.calls, timeout=8, what="the file")


def test_waiting_api_work_keeps_the_file_in_processing_and_claims_nothing_new(tmp_path):
    settings = make_settings(tmp_path)
    answers = ["waiting", "waiting", "done"]
    pipeline = RecordingPipeline(statuses=lambda name: answers.pop(0) if name == "first.csv" else "done")
    box = settings.folders.inbox
    with serving(settings, pipeline, retry_base=0.3, retry_cap=0.6) as run:
        clock = run["clock"]
        with clock.frozen():  # the retries wait until the checks below are done
            (box / "first.csv").write_bytes(b"1")
            clock.step_until(lambda: pipeline.calls, what="first.csv")
            (box / "second.csv").write_bytes(b"2")
            # health after the answer (while run_file runs, health says it is busy with first.csv)
            wait_until(lambda: health(settings).get("processing_files") == 1 and health(settings).get("busy") is None,
                       what="health")
            assert health(settings)["state"] == "degraded"
            assert (settings.folders.processing / "first.csv").exists()
            assert "second.csv" not in pipeline.names()  # second.csv waits its turn
        wait_until(lambda: len(pipeline.calls) == 4, timeout=8, what="the retries and second.csv")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")
    assert pipeline.names() == ["first.csv", "first.csv", "first.csv", "second.csv"]
    assert len(archived(settings)) == 2 and not list(settings.folders.failed.rglob("*.csv"))
    delays = [r.delay_s for r in run["records"].events("retry_wait")]
    assert delays[:2] == [0.3, 0.6]  # backoff grows


def test_pending_ledger_work_at_start_up_is_retried_before_anything_is_claimed(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(drains=[False, True])
    (settings.folders.inbox / "new.csv").write_bytes(b"new")
    clock = FakeClock()
    clock.freeze()
    with serving(settings, pipeline, clock=clock, retry_base=0.5, retry_cap=1):
        wait_until(lambda: pipeline.drains == 1, what="the first drain")
        clock.step_for(0.4)
        assert pipeline.calls == []  # the retry comes 0.5 s later; new.csv waits for it
        clock.thaw()
        wait_until(lambda: pipeline.calls, what="new.csv after the ledger drained")
    assert pipeline.drains == 2


def test_refused_files_go_to_failed_and_duplicates_to_the_archive(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(statuses=lambda name: {"bad.csv": "refused", "again.csv": "duplicate"}.get(name, "done"))
    with serving(settings, pipeline) as run:
        for name in ("bad.csv", "again.csv"):
            drop(run["clock"], settings.folders.inbox / name, name.encode())
        wait_until(lambda: len(pipeline.calls) == 2, what="both files")
        wait_until(lambda: list(settings.folders.failed.rglob("bad__*.csv")) and list(settings.folders.archive.rglob("again__*.csv")),
                   what="both placed")
    assert json.loads(next(settings.folders.failed.rglob("bad__*.error.json")).read_text())["status"] == "refused"


# --- trouble with one file never blocks the others --------------------------------------------

def test_an_unexpected_error_sets_one_file_aside_and_after_3_attempts_sends_it_to_failed(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(statuses=lambda name: "raise" if name == "bad.csv" else "done")
    box = settings.folders.inbox
    (box / "bad.csv").write_bytes(b"bad")
    os.utime(box / "bad.csv", (1_000_000, 1_000_000))  # oldest: taken first
    (box / "good.csv").write_bytes(b"good")
    with serving(settings, pipeline, retry_base=0.2, retry_cap=0.4) as run:
        wait_until(lambda: list(settings.folders.failed.rglob("bad__*.csv.error.json")), what="bad.csv in failed/")
        wait_until(lambda: archived(settings), what="good.csv archived")
        drop(run["clock"], box / "later.csv", b"later")
        wait_until(lambda: len(archived(settings)) == 2, what="a file claimed after bad.csv failed")
        wait_until(lambda: health(settings).get("failed_files") == 1, what="health to count it")
    assert pipeline.names().count("bad.csv") == 3
    assert pipeline.names().index("good.csv") < len(pipeline.names()) - 1  # good.csv did not wait for all 3
    text = next(settings.folders.failed.rglob("bad__*.csv.error.json")).read_text()
    error = json.loads(text)["error"]
    assert error["kind"] == "internal" and error["attempts"] == 3 and "RuntimeError: boom" in error["message"]
    assert "SECRET-TOKEN-1" not in text and "Traceback" not in text
    logged = run["records"].events("file_error")
    assert len(logged) == 1 and "Traceback" in logged[0].getMessage()  # once, not per attempt
    assert not any("SECRET-TOKEN-1" in r.getMessage() or r.exc_info for r in run["records"].records)
    assert not any("API work" in p for p in health(settings).get("problems", []))


def test_a_file_that_cannot_be_read_right_now_waits_in_processing_while_others_go_on(tmp_path):
    settings = make_settings(tmp_path)
    readable = threading.Event()
    pipeline = RecordingPipeline(statuses=lambda name: "io" if name == "locked.csv" and not readable.is_set() else "done")
    box = settings.folders.inbox
    (box / "locked.csv").write_bytes(b"locked")
    with serving(settings, pipeline, retry_base=0.2, retry_cap=0.4) as run:
        wait_until(lambda: (settings.folders.processing / "locked.csv").exists() and pipeline.calls, what="the claim")
        drop(run["clock"], box / "other.csv", b"other")
        wait_until(lambda: archived(settings), what="other.csv taken meanwhile")
        problems = " ".join(health(settings)["problems"])
        assert "locked.csv cannot be read right now: the share is busy" in problems and "API work" not in problems
        assert (settings.folders.processing / "locked.csv").exists()
        readable.set()
        wait_until(lambda: len(archived(settings)) == 2, what="locked.csv once readable")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")
    assert pipeline.names().count("locked.csv") >= 2 and not list(settings.folders.failed.rglob("*.csv"))
    assert len(run["records"].events("file_set_aside")) == 1  # once per change, not per retry


def test_a_broken_mapping_keeps_files_where_they_are_and_claims_nothing_until_fixed(tmp_path):
    settings = make_settings(tmp_path)
    fixed = threading.Event()
    pipeline = RecordingPipeline(statuses=lambda name: "done" if fixed.is_set() else "mapping")
    box = settings.folders.inbox
    with serving(settings, pipeline, retry_base=0.2, retry_cap=0.4) as run:
        drop(run["clock"], box / "first.csv", b"1")
        wait_until(lambda: "mapping broken" in " ".join(health(settings).get("problems", [])), what="degraded")
        drop(run["clock"], box / "second.csv", b"2")
        wait_until(lambda: pipeline.names().count("first.csv") >= 3, what="retries with backoff")
        assert (settings.folders.processing / "first.csv").exists() and (box / "second.csv").exists()
        assert "second.csv" not in pipeline.names()
        assert "columns.sku" in " ".join(health(settings)["problems"])
        fixed.set()  # the operator fixes the mapping; no restart
        wait_until(lambda: len(archived(settings)) == 2, what="both files after the fix")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")
    assert not list(settings.folders.failed.rglob("*.csv"))
    assert len(run["records"].events("mapping_broken")) == 1 and len(run["records"].events("mapping_fixed")) == 1


def test_claims_resume_when_the_file_that_showed_a_broken_mapping_is_taken_away(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(statuses=lambda name: "mapping" if name == "odd.csv" else "done")
    box = settings.folders.inbox
    with serving(settings, pipeline, retry_base=0.2, retry_cap=0.4) as run:
        drop(run["clock"], box / "odd.csv", b"odd")
        wait_until(lambda: "mapping broken" in " ".join(health(settings).get("problems", [])), what="degraded")
        drop(run["clock"], box / "next.csv", b"next")
        wait_until(lambda: pipeline.names().count("odd.csv") >= 2, what="a retry")
        assert (box / "next.csv").exists()
        (settings.folders.processing / "odd.csv").unlink()  # the operator takes it away
        wait_until(lambda: archived(settings), what="next.csv")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")


def test_a_file_that_cannot_be_claimed_is_named_in_health_and_logged_once(tmp_path):
    import tempfile

    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test folder to make a real EXDEV")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        settings = make_settings(tmp_path, scan_interval=0.3)
        settings.folders.processing = Path(other) / "processing"
        pipeline = RecordingPipeline()
        (settings.folders.inbox / "orders.csv").write_bytes(b"sku\nA\n")
        with serving(settings, pipeline) as run:
            wait_until(lambda: "orders.csv" in " ".join(health(settings).get("problems", [])), what="the problem in health")
            scans = health(settings)["last_scan_at"]
            run["clock"].run_for(1.2)  # several scans and claim attempts
            assert health(settings)["state"] == "degraded" and health(settings)["last_scan_at"] >= scans
            assert "another filesystem" in " ".join(health(settings)["problems"])
        assert len(run["records"].events("claim_problem")) == 1
        assert pipeline.calls == [] and (settings.folders.inbox / "orders.csv").exists()


def test_a_stale_office_owner_file_is_reported_and_the_workbook_keeps_waiting(tmp_path):
    settings = make_settings(tmp_path, scan_interval=0.3)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    (box / "book.xlsx").write_bytes(b"PK")
    owner = box / "~$book.xlsx"
    owner.write_bytes(b"owner")
    two_hours_ago = time.time() - 7200
    os.utime(owner, (two_hours_ago, two_hours_ago))  # left behind by an Excel that crashed
    with serving(settings, pipeline) as run:
        wait_until(lambda: "book.xlsx waits for its Office owner file ~$book.xlsx" in
                   " ".join(health(settings).get("problems", [])), what="the stale owner file in health")
        run["clock"].run_for(1.0)  # more scans
        assert pipeline.calls == [] and len(run["records"].events("owner_file_stale")) == 1
        owner.unlink()
        wait_until(lambda: pipeline.calls, what="the workbook once the owner file is gone")
        wait_until(lambda: health(settings).get("state") == "ok", what="health ok again")


# --- health that tells the truth ---------------------------------------------------------------

def test_health_says_what_a_long_file_is_busy_with_and_stays_fresh(tmp_path):
    settings = make_settings(tmp_path)
    gate = threading.Event()
    pipeline = RecordingPipeline(gate=gate)
    health_file = settings.watch.health_file
    with serving(settings, pipeline, heartbeat=0.2) as run:
        drop(run["clock"], settings.folders.inbox / "long.csv", b"many images")
        wait_until(lambda: (health(settings).get("busy") or {}).get("with") == "long.csv", what="busy in health")
        writes = set()
        give_up = time.monotonic() + 3
        while len(writes) < 3 and time.monotonic() < give_up:  # rewritten while the file is still running
            with contextlib.suppress(OSError):
                writes.add(health_file.stat().st_mtime_ns)
            time.sleep(0.05)
        assert len(writes) >= 3 and pipeline.calls and not archived(settings)
        gate.set()
        wait_until(lambda: archived(settings) and health(settings).get("busy") is None, what="not busy any more")


def test_healthz_turns_503_stale_when_no_update_came_for_too_long(tmp_path):
    from connector.health import Health
    from connector.web import StatusServer

    clock = FakeClock()
    h = Health(None, stale_after=60, clock=clock)
    server = StatusServer(Settings(watch=WatchSettings(http_port=0)), h)
    server.start()
    try:
        h.update({"state": "ok", "problems": []})
        with urllib.request.urlopen(h.url, timeout=5) as reply:
            assert reply.status == 200
        clock.advance(61)  # the service loop hung: nothing published since
        with pytest.raises(urllib.error.HTTPError) as stale:
            urllib.request.urlopen(h.url, timeout=5)
        body = json.loads(stale.value.read())
        assert stale.value.code == 503 and body["state"] == "stale" and "no health update for 61 s" in body["problems"][-1]
    finally:
        server.stop()


@pytest.mark.parametrize("updated_ago, state, healthy", [
    (10, "ok", True),
    (10, "degraded", False),
    (600, "ok", False),  # a fresh mtime (copied, touched) with an old updated_at is not healthy
])
def test_the_health_file_check_looks_at_updated_at(tmp_path, updated_ago, state, healthy):
    from connector.health import is_healthy
    from connector.report import iso_utc

    clock = FakeClock()
    path = tmp_path / "health.json"
    path.write_text(json.dumps({"state": state, "updated_at": iso_utc(clock.time() - updated_ago)}))
    assert is_healthy(path, 180, clock=clock) is healthy


def test_failed_files_are_counted_at_start_up_and_then_kept_count_of(tmp_path):
    from connector import inbox

    settings = make_settings(tmp_path, scan_interval=0.3)
    f = settings.folders
    f.processing.mkdir(parents=True)
    for name in ("old1.csv", "old2.csv"):
        (f.processing / name).write_bytes(b"x")
        inbox.place(f.processing / name, report_of("refused", {}, message="old"), f,
                    datetime.now(UTC))
    pipeline = RecordingPipeline(statuses=lambda name: "refused")
    clock = FakeClock()
    clock.freeze()  # time moves only as the test says: the recount is due after FAILED_RECOUNT_S
    with serving(settings, pipeline, clock=clock):
        wait_until(lambda: health(settings).get("failed_files") == 2, what="the start-up count")
        (f.failed / "dropped-by-hand.csv").write_bytes(b"x")  # not walked again every cycle
        (f.inbox / "bad.csv").write_bytes(b"bad")
        clock.step_until(lambda: health(settings).get("failed_files") == 3, what="the refused file counted")
        clock.step_for(0.7)  # more cycles
        assert health(settings)["failed_files"] == 3


def test_an_observer_that_keeps_dying_is_reported_once(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    clock = FakeClock()
    clock.freeze()  # the two deaths come within OBSERVER_STABLE_S of each other, by the service's clock
    with serving(settings, pipeline, clock=clock, heartbeat=0.2) as run:
        wait_until(lambda: health(settings).get("observer_state") == "running", what="the observer")
        for _ in range(2):
            before = set(_observers())
            for observer in before:
                observer.stop()
                observer.join(2)
            clock.step_until(lambda: _new_observer(before), what="a new observer")  # noqa: B023 - called at once
        clock.step_until(lambda: health(settings).get("observer_rebuilds") == 2, what="two rebuilds")
        assert clock.monotonic() - 1000.0 < 60
    rebuilt = [r for r in run["records"].events("observer") if r.state == "rebuilt"]
    assert len(rebuilt) == 1 and rebuilt[0].levelno == logging.WARNING


def test_files_left_in_processing_are_resumed_before_new_ones(tmp_path):
    settings = make_settings(tmp_path)
    settings.folders.processing.mkdir(parents=True)
    (settings.folders.processing / "left.csv").write_bytes(b"left")
    (settings.folders.inbox / "new.csv").write_bytes(b"new")
    pipeline = RecordingPipeline()
    with serving(settings, pipeline) as run:
        wait_until(lambda: len(pipeline.calls) == 2, what="both files")
    assert pipeline.names() == ["left.csv", "new.csv"]
    assert pipeline.drains >= 1 and pipeline.closed
    assert run["records"].events("resume")


def test_a_second_instance_refuses_to_start(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    records = Records()
    log = logging.getLogger("test.watch.second")
    log.addHandler(records)
    stop = threading.Event()
    result: dict = {}
    with StateLock(settings.folders.state):
        started = time.monotonic()
        def run() -> None:
            try:
                watch.serve(settings, lambda: pipeline, stop=stop, log=log)
            except AlreadyRunning as exc:
                result["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(5)
        stop.set()  # a broken lock would have let it run: make it end so the test fails, not hangs
        thread.join(10)
    assert not thread.is_alive() and isinstance(result.get("error"), AlreadyRunning) and time.monotonic() - started < 5
    assert EXIT_CODES[error_outcome(result["error"])] == 2
    message = records.events("already_running")[0].getMessage()
    assert str(settings.folders.state) in message and str(os.getpid()) in message
    assert pipeline.calls == [] and pipeline.drains == 0


def test_health_is_served_on_healthz_200_when_ok_503_when_degraded(tmp_path):
    settings = make_settings(tmp_path, health_port=0, scan_interval=0.3)  # port 0: the OS picks one
    pipeline = RecordingPipeline()
    with serving(settings, pipeline):
        wait_until(lambda: health(settings).get("state") == "ok", what="health file")
        url = health(settings)["health_url"]
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = json.loads(reply.read())
        assert reply.status == 200 and body["state"] == "ok" and body["observer"] == "native"
        assert set(body) >= {"last_scan_at", "last_success_at", "backlog", "failed_files", "processing_files"}
        settings.folders.inbox.rmdir()
        wait_until(lambda: health(settings).get("state") == "degraded", what="degraded")
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(url, timeout=5)
        assert failed.value.code == 503


def test_status_shows_processing_backlog_archived_failed_and_the_last_error(tmp_path):
    from datetime import datetime

    from connector import inbox
    from connector.ledger import Ledger
    from connector.status import render_status

    settings = make_settings(tmp_path)
    f = settings.folders
    for folder in (f.processing, f.archive, f.failed):
        folder.mkdir(parents=True)
    (f.processing / "stuck.csv").write_bytes(b"x" * 42)
    when = datetime(2025, 6, 14, 10, 0, tzinfo=UTC)
    (f.processing / "fine.csv").write_bytes(b"a")
    inbox.place(f.processing / "fine.csv", report_of("done", {"status": "done"}, message="fine.csv: done"), f, when)
    (f.processing / "bad.csv").write_bytes(b"b")
    inbox.place(f.processing / "bad.csv", report_of("refused", {}, message="bad.csv: refused: no sku column"), f, when)
    Ledger.open(f.state).close()
    text = render_status(settings)
    assert "In processing/: 1 file(s)" in text and "stuck.csv (42 bytes" in text
    assert "0 product batch(es), 0 image(s) waiting" in text and "last API error: none" in text
    assert "fine__20250614T100000Z__" in text
    assert "bad.csv: refused: no sku column" in text and "(1 file(s) in failed/)" in text


def test_status_works_before_anything_ran(tmp_path):
    from connector.status import render_status

    text = render_status(make_settings(tmp_path))
    assert "Service: not running" in text and "Ledger: none yet" in text and "In processing/: nothing" in text


# --- choosing the observer --------------------------------------------------------------------

MOUNTS = """\
/dev/vda / ext4 rw 0 0
//fileserver/erp /mnt/erp cifs rw,vers=3.0 0 0
server:/exports /mnt/nfs nfs4 rw 0 0
user@host:/data /mnt/ssh\\040drive fuse.sshfs rw 0 0
/dev/vdb /mnt/erp/local ext4 rw 0 0
"""


@pytest.mark.parametrize("path, expected", [
    ("/srv/inbox", ("native", False)),
    ("/mnt/erp/inbox", ("polling", True)),
    ("/mnt/erp", ("polling", True)),
    ("/mnt/erpx/inbox", ("native", False)),  # a prefix of the name is not the mount
    ("/mnt/nfs/drop", ("polling", True)),
    ("/mnt/ssh drive/inbox", ("polling", True)),
    ("/mnt/erp/local/inbox", ("native", False)),  # the longest mount point wins
])
def test_auto_observer_polls_on_network_filesystems(path, expected):
    kind, why = watch.choose_observer("auto", Path(path), mounts_text=MOUNTS)
    assert (kind, "polling" in why) == expected


@pytest.mark.parametrize("setting", ["native", "polling", "none"])
def test_an_explicit_observer_setting_wins(setting):
    assert watch.choose_observer(setting, Path("/mnt/erp/inbox"), mounts_text=MOUNTS)[0] == setting


def test_backoff_doubles_up_to_its_cap_and_resets():
    b = watch.Backoff(5, 300)
    assert [b.next() for _ in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    b.reset()
    assert b.next() == 5


def test_a_handler_error_never_reaches_the_observer(tmp_path):
    wake = threading.Event()
    hints = Hints(tmp_path, wake)

    class Broken:
        event_type = "created"

        @property
        def src_path(self):
            raise RuntimeError("boom")

    hints.on_any_event(Broken())  # must not raise
    assert hints.take() == set()


# --- the real service, as a process -----------------------------------------------------------

def _config(tmp_path: Path, **watch_options) -> Path:
    options = {"scan_interval": 1, "min_age": 0.2, "stable_interval": 0.3, "observer": "native"}
    options.update(watch_options)
    lines = ["folders:"] + [f"  {k}: {tmp_path / k}" for k in ("inbox", "processing", "archive", "failed", "state")]
    lines += [f"  mappings: {ROOT / 'mappings'}", f"  images: {ROOT / 'examples' / 'images'}", "watch:"] + [f"  {k}: {v}" for k, v in options.items()]
    (tmp_path / "inbox").mkdir(exist_ok=True)
    path = tmp_path / "connector.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(config: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "connector", "watch", "--config", str(config), *extra],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _sandbox_env(sandbox, state: Path) -> dict[str, str]:
    return {"S2S_API_URL": sandbox.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1",
            "S2S_STATE_DIR": str(state)}


def test_sigterm_in_the_middle_of_a_file_stops_the_service_within_10_seconds(tmp_path, make_sandbox):
    from connector.sandbox import Faults

    sandbox = make_sandbox(faults=Faults(latency=1.5))  # every queue request takes 1.5 s
    config = _config(tmp_path)
    proc = _start(config, _sandbox_env(sandbox, tmp_path / "state"))
    try:
        wait_until(lambda: (read_health(tmp_path / "state" / "health.json") or {}).get("state") == "ok"
                   or proc.poll() is not None, timeout=20, what="the service to come up")
        assert proc.poll() is None, proc.stdout.read()
        (tmp_path / "inbox" / "products.csv").write_bytes((ROOT / "examples" / "products.csv").read_bytes())
        wait_until(lambda: list((tmp_path / "processing").iterdir()), timeout=20, what="the claim")
        time.sleep(0.5)  # a request is in flight now
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        took = time.monotonic() - started
        print(f"stopped {took:.1f} s after SIGTERM")
        assert took < 10 and code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Not lost: either still in processing/ (its work in the ledger) or already archived.
    placed = list((tmp_path / "processing").iterdir()) + list((tmp_path / "archive").rglob("products__*.csv"))
    assert [p.name.split("__")[0] for p in placed if p.suffix == ".csv"] in (["products.csv"], ["products"])


def test_kill_9_in_the_middle_of_a_file_then_restart_ends_with_everything_sent_once(tmp_path, make_sandbox,
                                                                                     monkeypatch, capsys):
    from connector.ledger import Ledger
    from connector.sandbox import Faults

    # slow answers, not paced: there is time to kill mid-file, and no more
    sandbox = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(latency=0.2))
    config = _config(tmp_path)
    with open(config, "a") as f:
        f.write("batch:\n  max_items: 2\napi:\n  rate: 1000\n")  # 15 variants -> several product requests
    export = tmp_path / "inbox" / "products.csv"
    env = _sandbox_env(sandbox, tmp_path / "state")

    proc = _start(config, env)
    try:
        export.write_bytes((ROOT / "examples" / "products.csv").read_bytes())
        wait_until(lambda: sandbox.state()["stats"]["by_status"].get("200", 0) + sandbox.state()["stats"]["by_status"].get(200, 0) >= 2
                   or proc.poll() is not None, timeout=30, what="the first requests")
        assert proc.poll() is None, proc.stdout.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list((tmp_path / "processing").iterdir()), "the file should still be in processing/ after kill -9"
    assert not list((tmp_path / "archive").rglob("*.csv"))
    ledger = Ledger.open(tmp_path / "state")
    try:
        left = ledger.backlog()
    finally:
        ledger.close()
    assert left["batches"] + left["images"] > 0, "the kill should have come in the middle of the file's work"

    proc = _start(config, env)
    try:
        wait_until(lambda: list((tmp_path / "archive").rglob("products__*.csv")) or proc.poll() is not None,
                   timeout=60, what="the file to be archived after the restart")
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert list((tmp_path / "processing").iterdir()) == []
    report = json.loads(next((tmp_path / "archive").rglob("products__*.csv.report.json")).read_text())
    assert report["status"] == "done"
    ledger = Ledger.open(tmp_path / "state")
    try:
        assert ledger.backlog()["batches"] == 0 and ledger.backlog()["images"] == 0
        files = ledger.recent_files(10)
    finally:
        ledger.close()
    assert [f["status"] for f in files] == ["done"]  # one file record, acknowledged once
    counts = report["counts"]
    assert counts["items_sent"] == counts["variants"] > 0 and counts["images_sent"] == counts["images_to_send"] > 0
    # The oracle: the same file pushed without interruption into a fresh sandbox.
    from connector.cli import main

    reference = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    for name, value in _sandbox_env(reference, tmp_path / "ref-state").items():
        monkeypatch.setenv(name, value)
    code = main(["push", str(ROOT / "examples" / "products.csv"), "--config", str(config),
                 "--report-dir", str(tmp_path / "ref-report")])
    assert code == 0, capsys.readouterr()
    assert _stored(sandbox) == _stored(reference)
    skus = [sku for _, sku, _ in _stored(sandbox)]
    assert len(skus) == len(set(skus)) > 0  # no variant twice


def _stored(sandbox) -> list[tuple[str, str, str]]:
    """(product code, sku, hash of the variant) for every stored variant, plus the images, sorted."""
    state = sandbox.state()
    variants = [(p["source_product_code"], v["sku"], json.dumps({k: v[k] for k in sorted(v) if k not in ("id", "product_id", "image_id")}))
                for p in state["products"] for v in p["variants"]]
    images = [("image", json.dumps({k: i[k] for k in sorted(i) if k in ("sha256", "size", "source_product_code")}), "")
              for i in state["images"]]
    return sorted(variants + images)


def test_a_file_the_api_refused_whole_shows_in_health_until_items_go_again(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(statuses=lambda name: "all_refused" if name.startswith("wrong") else "done")
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        drop(run["clock"], box / "wrong-source.csv", b"x")
        wait_until(lambda: any("refused every item" in p for p in health(settings).get("problems", [])),
                   what="health to say the API refused every item")
        assert health(settings)["state"] == "degraded"
        assert run["records"].events("all_refused")
    settings2 = make_settings(tmp_path / "second")
    pipeline2 = RecordingPipeline(statuses=lambda name: "all_refused" if name.startswith("wrong") else "done")
    with serving(settings2, pipeline2) as run:
        drop(run["clock"], settings2.folders.inbox / "wrong.csv", b"x")
        wait_until(lambda: archived(settings2), what="the refused file archived")
        drop(run["clock"], settings2.folders.inbox / "good.csv", b"y")  # a later file whose items went
        wait_until(lambda: health(settings2).get("files_done") == 2, what="health after the good file")
        assert not any("refused every item" in p for p in health(settings2).get("problems", []))


def test_a_file_the_service_died_on_three_times_goes_to_failed_not_round_again(tmp_path):
    """What a service killed mid-file (out of memory) leaves: the file in processing/ and its
    start count in state/attempts.json; the next start sends it to failed/ instead of dying again."""
    settings = make_settings(tmp_path)
    settings.folders.processing.mkdir(parents=True)
    (settings.folders.processing / "huge.csv").write_bytes(b"sku\n1\n")
    settings.folders.state.mkdir(parents=True, exist_ok=True)
    (settings.folders.state / "attempts.json").write_text(json.dumps({"huge.csv": 3}))
    pipeline = RecordingPipeline()
    with serving(settings, pipeline) as run:
        wait_until(lambda: list(settings.folders.failed.rglob("huge__*.csv.error.json")), what="huge.csv in failed/")
        assert run["records"].events("file_killed_too_often")
    assert pipeline.names() == []  # not run a fourth time
    error = json.loads(next(settings.folders.failed.rglob("huge__*.csv.error.json")).read_text())["error"]
    assert error["attempts"] == 3 and "too much memory" in error["message"] and "limits.max_rows" in error["message"]
    assert json.loads((settings.folders.state / "attempts.json").read_text()) == {}


def test_a_file_run_to_the_end_leaves_no_start_count_behind(tmp_path):
    from connector.watch.loop import Attempts

    attempts = Attempts(tmp_path / "attempts.json")
    assert attempts.begin("a.csv") == 1
    assert Attempts(tmp_path / "attempts.json").begin("a.csv") == 2  # a restart after a death counts it
    Attempts(tmp_path / "attempts.json").end("a.csv")
    assert Attempts(tmp_path / "attempts.json").counts == {}
