"""Helpers the tests share: fake clocks that move only when the code sleeps or waits, and
settings and a pipeline pointed at a sandbox, with every folder in the test's tmp_path."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.accounting import RowAccount
from connector.api import ApiClient
from connector.config import ApiSettings, Settings
from connector.ledger import Ledger
from connector.model import Rejected
from connector.pipeline import Pipeline
from connector.report import Report


class FakeTime:
    """A clock that only moves when the code under test sleeps; records every sleep.

    For code that takes a clock function and a sleep function (the API client, the sandbox's
    limits); code that takes a `connector.clock.Clock` gets a `FakeClock`."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    __call__ = monotonic  # usable wherever a clock function is injected

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Time passing while nobody sleeps (a test moving the clock)."""
        self.now += seconds


class FakeClock:
    """A `connector.clock.Clock` on which waits end at once, having moved time on by their timeout.

    Nothing really sleeps: a wait only pauses REAL_PAUSE_S (so the test's thread, watchdog's and
    the pipeline's get to run), and the pipeline's work is waited for at most REAL_RESULT_S of
    real time per call. A service loop on this clock runs through minutes of its time in a
    fraction of a second. `frozen()` stops its waits from moving time while a test does several
    things that must look simultaneous to the code (writing a file, moving the clock by hand);
    `run_for(seconds)` lets the code's own waits move time on by at least `seconds`.
    The wall clock starts at the real time, so file mtimes and ages still make sense.
    """

    REAL_PAUSE_S = 0.001
    REAL_RESULT_S = 0.05
    REAL_STEP_S = 0.002

    def __init__(self, start: float = 1000.0) -> None:
        self._t = start
        self._wall_offset = time.time() - start
        self._frozen = 0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def time(self) -> float:
        return self._t + self._wall_offset

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), UTC)

    def advance(self, seconds: float) -> None:
        """Time passing while nobody waits (a test moving the clock); works while frozen too."""
        with self._lock:
            self._t += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._pass(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        if event.wait(self.REAL_PAUSE_S):
            return True
        self._pass(timeout)
        return event.is_set()

    def result(self, future: Future, timeout: float) -> Any:
        try:
            return future.result(timeout=min(timeout, self.REAL_RESULT_S))
        except FuturesTimeout:
            self._pass(timeout)
            raise

    def _pass(self, seconds: float) -> None:
        if self._frozen:
            time.sleep(self.REAL_PAUSE_S)  # a frozen clock does not move; do not spin either
        else:
            self.advance(seconds)

    def freeze(self) -> None:
        """From now on waits do not move time; only `advance` and the `step_*` helpers do."""
        with self._lock:
            self._frozen += 1

    def thaw(self) -> None:
        with self._lock:
            self._frozen -= 1

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        self.freeze()
        try:
            yield
        finally:
            self.thaw()

    def step_until(self, condition: Callable[[], bool], step: float = 0.05, timeout: float = 10.0,
                   what: str = "condition") -> None:
        """Move time on by `step` at a time, giving the code REAL_STEP_S of real time after each
        step, until `condition` holds (AssertionError after `timeout` real seconds). Meant for a
        frozen clock, so the test alone decides how far time goes."""
        give_up = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= give_up:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.advance(step)
            time.sleep(self.REAL_STEP_S)

    def step_for(self, seconds: float, step: float = 0.05) -> None:
        """Move time on by `seconds`, `step` at a time, giving the code real time after each step."""
        target = self._t + seconds
        while self._t < target:
            self.advance(min(step, target - self._t))
            time.sleep(self.REAL_STEP_S)

    def run_for(self, seconds: float, timeout: float = 10.0) -> None:
        """Let the code under test wait through `seconds` of this clock (real time at most `timeout`)."""
        target = self._t + seconds
        wait_real(lambda: self._t >= target, timeout, f"{seconds} s to pass on the fake clock")


def wait_real(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `condition` in real time (every 10 ms) until it holds; AssertionError after `timeout` s."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def settings_for(tmp_path: Path, sb) -> Settings:
    """Default settings with every folder under tmp_path and the API pointed at sandbox `sb`."""
    s = Settings()
    for name in ("inbox", "processing", "archive", "failed", "state"):
        setattr(s.folders, name, tmp_path / name)
    s.folders.mappings = tmp_path / "mappings"
    s.api = ApiSettings(url=sb.url, username="demo", password="demo", source_id=1, rate=1000.0, retry_budget=60.0)
    return s


def pipeline_for(tmp_path: Path, sb, settings: Settings | None = None, **kwargs) -> Pipeline:
    """A real pipeline on a real ledger, whose client sleeps on a fake clock (the sandbox must not rate-limit)."""
    settings = settings or settings_for(tmp_path, sb)
    fake = FakeTime()
    client = ApiClient(settings.api, sleep=fake.sleep, clock=fake.monotonic, rng=lambda: 0.5)
    return Pipeline(settings, client, Ledger.open(settings.folders.state), **kwargs)


def report_of(status: str, data: dict | None = None, header: list[str] | None = None,
              rejected: list | None = None, *, message: str = "") -> Report:
    """A file's report as the pipeline would return it: `data` in the report's JSON shape."""
    report = Report.from_ledger({**(data or {}), "status": status},
                                {"header": header or [], "rows": []})
    report.rejected = [Rejected(*r) for r in rejected or []]
    report.message = message
    return report


def assert_every_row_once(plan) -> RowAccount:
    """A plan's rows reconcile: rows read = items + folded + refused + skipped, every refusal listed."""
    rows = plan.rows
    assert rows.balanced, rows.line()
    assert rows.read == len(plan.table.rows) + plan.table.rows_refused
    assert rows.items == sum(len(p.items) for p in plan.products)
    assert rows.refused == len({(r.row.sheet, r.row.line) for r in plan.rejected})  # every refusal listed here
    assert sum(rows.skipped.values()) == sum(1 for p in plan.problems if p.severity == "skipped")
    return rows


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(monkeypatch: Any, capsys: Any, args: list[str], cwd: Path, env: dict | None = None) -> CliResult:
    """`connector ARGS` in-process in `cwd`, with only `env`'s S2S_* variables, on a fake clock
    (the API client's pacing and backoff, and the --sandbox API's limits)."""
    from connector.cli import main

    for name in [k for k in os.environ if k.startswith("S2S_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(args, clock=FakeClock())
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def workbook(path: Path, sheets: dict[str, list[list]]) -> Path:
    """A real XLSX at `path` with these sheets (name -> rows, the header row first), in this order."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path
