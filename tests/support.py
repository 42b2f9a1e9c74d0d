"""Helpers the end-to-end tests share: a clock that moves only when the code sleeps, and
settings and a pipeline pointed at a sandbox, with every folder in the test's tmp_path."""

from __future__ import annotations

from pathlib import Path

from connector.api import ApiClient
from connector.config import ApiSettings, Settings
from connector.ledger import Ledger
from connector.model import Rejected
from connector.pipeline import Pipeline
from connector.report import Report


class FakeTime:
    """A clock that only moves when the code under test sleeps; records every sleep."""

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
