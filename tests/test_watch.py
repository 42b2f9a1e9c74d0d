"""`connector watch` on real folders with a real watchdog observer and short intervals.

Most tests run `serve` in a thread with a small recording pipeline (real files, real folders);
the end-to-end ones run `python -m connector watch` as a process against the sandbox API.
Every test stops the service itself and is bounded in time.
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
from pathlib import Path
from typing import Callable, Iterator

import pytest
from watchdog.observers.api import BaseObserver

from connector import watch
from connector.config import Folders, Settings, WatchSettings
from connector.health import read_health
from connector.lock import StateLock
from connector.model import FileOutcome

ROOT = Path(__file__).resolve().parents[1]


# --- helpers ----------------------------------------------------------------------------------

class RecordingPipeline:
    """Stands in for connector.pipeline.Pipeline: records what it was given, reads the file as
    the real one would, and answers with the statuses it is told to (default "done")."""

    def __init__(self, statuses: Callable[[str], str] | None = None, drains: list[bool] | None = None):
        self.calls: list[tuple[str, bytes]] = []
        self.statuses = statuses or (lambda name: "done")
        self.drain_answers = list(drains or [])
        self.drains = 0
        self.closed = False
        self.lock = threading.Lock()

    def run_file(self, path: Path, *, mapping: str | None = None) -> FileOutcome:
        data = Path(path).read_bytes()
        with self.lock:
            self.calls.append((Path(path).name, data))
        status = self.statuses(Path(path).name)
        return FileOutcome(status, {"file": Path(path).name, "counts": {"products": 1}}, message=f"{path.name}: {status}")

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
    options = dict(scan_interval=30.0, min_age=0.1, stable_interval=0.2, observer="native",
                   health_file=folders.state / "health.json")
    options.update(watch_options)
    return Settings(folders=folders, watch=WatchSettings(**options))


@contextlib.contextmanager
def serving(settings: Settings, pipeline, **kwargs) -> Iterator[dict]:
    """Run serve() in a thread; stop it on exit and check it stopped within 10 s."""
    stop = threading.Event()
    records = Records()
    log = logging.getLogger(f"test.watch.{id(stop)}")
    log.addHandler(records)
    log.setLevel(logging.DEBUG)
    result: dict = {"stop": stop, "records": records}
    thread = threading.Thread(target=lambda: result.setdefault(
        "code", watch.serve(settings, lambda: pipeline, stop=stop, log=log, **kwargs)), daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "serve() did not stop within 10 s"
        log.removeHandler(records)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def archived(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.folders.archive.rglob("*") if p.is_file() and not p.name.endswith((".json", ".csv.done")))


def health(settings: Settings) -> dict:
    return read_health(settings.watch.health_file) or {}


# --- discovery and readiness ------------------------------------------------------------------

def test_a_file_written_slowly_in_parts_is_taken_once_after_it_is_complete(tmp_path):
    settings = make_settings(tmp_path, stable_interval=0.6, min_age=0.3)
    pipeline = RecordingPipeline()
    parts = [b"sku,title\n"] + [f"SKU{i},Item {i}\n".encode() for i in range(8)]
    with serving(settings, pipeline):
        with open(settings.folders.inbox / "slow.csv", "wb") as f:
            for part in parts:  # a pause shorter than stable_interval between writes
                f.write(part)
                f.flush()
                time.sleep(0.25)
        wait_until(lambda: pipeline.calls, what="the file to be taken")
        time.sleep(0.5)
    assert pipeline.calls == [("slow.csv", b"".join(parts))]
    assert len(archived(settings)) == 1


def test_an_excel_style_save_is_taken_once_and_an_open_workbook_waits(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline):
        (box / "~$book.xlsx").write_bytes(b"owner")  # someone has book.xlsx open
        (box / "book.xlsx").write_bytes(b"version 1")
        # Excel's save: write a temp file with no extension, delete the original, rename the temp.
        (box / "8A3F2C10").write_bytes(b"version 2")
        (box / "book.xlsx").unlink()
        os.rename(box / "8A3F2C10", box / "book.xlsx")
        time.sleep(1.0)
        assert pipeline.calls == []  # still open in Excel
        (box / "~$book.xlsx").unlink()  # Excel closed
        wait_until(lambda: pipeline.calls, what="the workbook to be taken")
        time.sleep(0.5)
    assert pipeline.calls == [("book.xlsx", b"version 2")]


def test_office_owner_files_and_temp_files_are_left_alone(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline):
        (box / "~$other.xlsx").write_bytes(b"owner")
        (box / "export.csv.tmp").write_bytes(b"half")
        (box / "upload.part").write_bytes(b"half")
        (box / "good.csv").write_bytes(b"sku\nA\n")
        wait_until(lambda: pipeline.calls, what="good.csv")
        time.sleep(0.5)
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
    for name, age in zip(names, ages):
        path = staging / name
        path.write_bytes(name.encode())
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    with serving(settings, pipeline):
        time.sleep(0.3)
        for name in names:  # one quick burst of renames, as a copy tool finishing would make
            os.rename(staging / name, settings.folders.inbox / name)
        wait_until(lambda: len(pipeline.calls) >= 200, timeout=30, what="200 files")
        time.sleep(0.3)
    expected = [name for _, name in sorted(zip(ages, names))]
    assert pipeline.names() == expected
    assert len(archived(settings)) == 200
    assert list(settings.folders.processing.iterdir()) == []


def test_a_zero_byte_file_goes_to_failed_with_a_reason(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline()
    with serving(settings, pipeline):
        (settings.folders.inbox / "empty.csv").write_bytes(b"")
        wait_until(lambda: list(settings.folders.failed.rglob("*.error.json")), what="the error report")
    assert pipeline.calls == []
    error = json.loads(next(settings.folders.failed.rglob("*.error.json")).read_text())
    assert "empty (0 bytes)" in error["message"]


def test_done_file_mode_waits_for_the_done_file_and_archives_both(tmp_path):
    settings = make_settings(tmp_path, done_file=True)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline):
        (box / "orders.csv").write_bytes(b"sku\nA\n")
        time.sleep(0.8)
        assert pipeline.calls == []
        (box / "orders.csv.done").write_bytes(b"")
        wait_until(lambda: archived(settings), what="the archive")
        wait_until(lambda: list(settings.folders.archive.rglob("*.done")), what="the done file archived")
    assert list(box.iterdir()) == []


# --- resilience -------------------------------------------------------------------------------

def _observers() -> list[BaseObserver]:
    return [t for t in threading.enumerate() if isinstance(t, BaseObserver)]


@pytest.mark.parametrize("kind", ["native", "polling"])
def test_a_killed_observer_is_rebuilt_and_discovery_goes_on(tmp_path, kind):
    settings = make_settings(tmp_path, observer=kind)  # scans every 30 s: only the observer finds files fast
    pipeline = RecordingPipeline()
    with serving(settings, pipeline) as run:
        wait_until(lambda: health(settings).get("observer_state") == "running", what="the observer")
        before = set(_observers())
        for observer in before:  # kill it from outside, as a crash would
            observer.stop()
            observer.join(2)
        wait_until(lambda: set(_observers()) - before, timeout=5, what="a new observer")
        (settings.folders.inbox / "after.csv").write_bytes(b"sku\nA\n")
        wait_until(lambda: pipeline.calls, timeout=6, what="a file found by the rebuilt observer")
        assert run["records"].events("observer")[-1].state == "rebuilt"


def test_an_inbox_that_vanishes_and_returns_keeps_the_service_up_with_one_log_line(tmp_path):
    settings = make_settings(tmp_path, scan_interval=0.3)
    pipeline = RecordingPipeline()
    box = settings.folders.inbox
    with serving(settings, pipeline) as run:
        (box / "first.csv").write_bytes(b"1")
        wait_until(lambda: pipeline.calls, what="the first file")
        box.rmdir()
        wait_until(lambda: "inbox unavailable" in " ".join(health(settings).get("problems", [])), what="degraded health")
        time.sleep(1.5)  # several scans fail meanwhile
        assert len(run["records"].events("inbox_unavailable")) == 1
        assert health(settings)["state"] == "degraded"
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
    with serving(settings, pipeline):
        wait_until(lambda: health(settings).get("state") == "degraded", what="degraded health")
        settings.folders.inbox.mkdir()
        (settings.folders.inbox / "late.csv").write_bytes(b"x")
        wait_until(lambda: pipeline.calls, timeout=8, what="the file")


def test_waiting_api_work_keeps_the_file_in_processing_and_claims_nothing_new(tmp_path):
    settings = make_settings(tmp_path)
    answers = ["waiting", "waiting", "done"]
    pipeline = RecordingPipeline(statuses=lambda name: answers.pop(0) if name == "first.csv" else "done")
    box = settings.folders.inbox
    with serving(settings, pipeline, retry_base=0.3, retry_cap=0.6) as run:
        (box / "first.csv").write_bytes(b"1")
        wait_until(lambda: pipeline.calls, what="first.csv")
        (box / "second.csv").write_bytes(b"2")
        wait_until(lambda: health(settings).get("processing_files") == 1, what="health")
        assert health(settings)["state"] == "degraded"
        assert (settings.folders.processing / "first.csv").exists()
        assert pipeline.names() == ["first.csv"]  # second.csv waits its turn
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
    with serving(settings, pipeline, retry_base=0.5, retry_cap=1):
        time.sleep(0.3)
        assert pipeline.calls == [] and pipeline.drains == 1
        wait_until(lambda: pipeline.calls, what="new.csv after the ledger drained")
    assert pipeline.drains == 2


def test_refused_files_go_to_failed_and_duplicates_to_the_archive(tmp_path):
    settings = make_settings(tmp_path)
    pipeline = RecordingPipeline(statuses=lambda name: {"bad.csv": "refused", "again.csv": "duplicate"}.get(name, "done"))
    with serving(settings, pipeline):
        for name in ("bad.csv", "again.csv"):
            (settings.folders.inbox / name).write_bytes(name.encode())
        wait_until(lambda: len(pipeline.calls) == 2, what="both files")
        wait_until(lambda: list(settings.folders.failed.rglob("bad__*.csv")) and list(settings.folders.archive.rglob("again__*.csv")),
                   what="both placed")
    assert json.loads(next(settings.folders.failed.rglob("bad__*.error.json")).read_text())["status"] == "refused"


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
    with StateLock(settings.folders.state):
        started = time.monotonic()
        code = watch.serve(settings, lambda: pipeline, stop=threading.Event(), log=log)
    assert code == 2 and time.monotonic() - started < 5
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
    from datetime import datetime, timezone

    from connector import inbox
    from connector.ledger import Ledger
    from connector.status import render_status

    settings = make_settings(tmp_path)
    f = settings.folders
    for folder in (f.processing, f.archive, f.failed):
        folder.mkdir(parents=True)
    (f.processing / "stuck.csv").write_bytes(b"x" * 42)
    when = datetime(2025, 6, 14, 10, 0, tzinfo=timezone.utc)
    (f.processing / "fine.csv").write_bytes(b"a")
    inbox.place(f.processing / "fine.csv", FileOutcome("done", {"status": "done"}, message="fine.csv: done"), f, when)
    (f.processing / "bad.csv").write_bytes(b"b")
    inbox.place(f.processing / "bad.csv", FileOutcome("refused", {}, message="bad.csv: refused: no sku column"), f, when)
    Ledger.open(f.state).close()
    text = render_status(settings)
    assert "In processing/: 1 file(s)" in text and "stuck.csv (42 bytes" in text
    assert "0 product batch(es), 0 image(s) waiting" in text and "last API error: none" in text
    assert "fine__20250614T100000Z__" in text
    assert "bad.csv: refused: no sku column" in text and "(1 file(s) in failed/)" in text


def test_status_works_before_anything_ran(tmp_path):
    from connector.status import render_status

    text = render_status(make_settings(tmp_path))
    assert "no health file" in text and "Ledger: none yet" in text and "In processing/: nothing" in text


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
    hints = watch._Hints(tmp_path, wake)

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

    sandbox = make_sandbox(faults=Faults(latency=3.0))  # every queue request takes 3 s
    config = _config(tmp_path)
    proc = _start(config, _sandbox_env(sandbox, tmp_path / "state"))
    try:
        wait_until(lambda: (read_health(tmp_path / "state" / "health.json") or {}).get("state") == "ok"
                   or proc.poll() is not None, timeout=20, what="the service to come up")
        assert proc.poll() is None, proc.stdout.read()
        (tmp_path / "inbox" / "products.csv").write_bytes((ROOT / "examples" / "products.csv").read_bytes())
        wait_until(lambda: list((tmp_path / "processing").iterdir()), timeout=20, what="the claim")
        time.sleep(1.0)  # a request is in flight now
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


def test_kill_9_in_the_middle_of_a_file_then_restart_ends_with_everything_sent_once(tmp_path, make_sandbox):
    from connector.ledger import Ledger
    from connector.sandbox import Faults

    sandbox = make_sandbox(faults=Faults(latency=0.4))  # slow answers: there is time to kill mid-file
    config = _config(tmp_path)
    with open(config, "a") as f:
        f.write("batch:\n  max_items: 2\n")  # 15 variants -> several product requests
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
    reference = make_sandbox()
    push = subprocess.run([sys.executable, "-m", "connector", "push", str(ROOT / "examples" / "products.csv"),
                           "--config", str(config), "--report-dir", str(tmp_path / "ref-report")],
                          cwd=ROOT, env={**os.environ, **_sandbox_env(reference, tmp_path / "ref-state")},
                          capture_output=True, text=True, timeout=60)
    assert push.returncode == 0, push.stdout + push.stderr
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
