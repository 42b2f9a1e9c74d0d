"""A real `connector watch` service in a thread, on real folders, pushing to a sandbox over HTTP.

    with running_service(settings, sb) as service:
        (settings.folders.inbox / "a.csv").write_text(GOOD)
        service.wait_for_file("archive", "a__")
        requests.get(service.page_url)

Real time, quick settings (files are taken within about half a second); the service is stopped
when the block ends and must stop within 15 s.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from connector.api import ApiClient
from connector.config import ApiSettings, Settings
from connector.health import read_health
from connector.ledger import Ledger
from connector.pipeline import Pipeline
from connector.watch import serve
from tests.support import wait_real

PASSWORD = "api-pass-sentinel-7Qx"  # the sandbox user's password: must never reach a page or a message
GOOD_CSV = ("source_product_code,source_variant_code,title,sku,price,qty\n"
            "P1,P1-V,Product one,P1-V,10.00,5\nP2,P2-V,Product two,P2-V,12.00,3\n")
BAD_CSV = "nothing,here\n1,2\n"  # no column the mapping knows: every row is refused, so the file fails


def quick_settings(tmp_path: Path, sb) -> Settings:
    s = Settings()
    for name in ("inbox", "processing", "archive", "failed", "state"):
        setattr(s.folders, name, tmp_path / name)
    s.folders.mappings = tmp_path / "mappings"
    s.folders.inbox.mkdir(parents=True)
    s.watch.health_file = s.folders.state / "health.json"
    s.watch.min_age, s.watch.stable_interval, s.watch.scan_interval = 0.0, 0.2, 0.5
    s.watch.http_port = 0
    s.api = ApiSettings(url=sb.url, username="demo", password=PASSWORD, source_id=1, rate=50.0, retry_budget=30.0)
    return s


@dataclass
class Service:
    settings: Settings
    thread: threading.Thread

    @property
    def page_url(self) -> str:
        wait_real(lambda: (read_health(self.settings.watch.health_file) or {}).get("health_url"), 10, "the page")
        health = read_health(self.settings.watch.health_file) or {}
        return str(health["health_url"]).removesuffix("healthz")

    def placed(self, area: str, prefix: str) -> list[Path]:
        root = getattr(self.settings.folders, area)
        return sorted(p for p in root.rglob(f"{prefix}*") if p.suffix == ".csv" and "__" in p.name
                      and not p.name.endswith(".rejected.csv"))

    def wait_for_file(self, area: str, prefix: str, count: int = 1) -> list[Path]:
        wait_real(lambda: len(self.placed(area, prefix)) >= count, 20, f"{prefix} in {area}/")
        return self.placed(area, prefix)


@contextlib.contextmanager
def running_service(settings: Settings) -> Iterator[Service]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def make_pipeline() -> Pipeline:
        client = ApiClient(settings.api)
        return Pipeline(settings, client, Ledger.open(settings.folders.state))

    def run() -> None:
        try:
            serve(settings, make_pipeline, stop=stop)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield Service(settings, thread)
    finally:
        stop.set()
        thread.join(15)
    assert not thread.is_alive(), "the service did not stop"
    if errors:
        raise errors[0]
