"""What the status page costs: one page with a large archive and ledger, cold and warm.

    python bench/bench_page.py [--files 3000] [--requests 50]

Fills a temporary archive/ and failed/ with `--files` report files over 30 days (10% failed) and
a ledger with as many finished files (the chart's source), then times: gathering the page's
data the first time (every report read) and again (summaries cached), rendering the HTML, and
`--requests` GETs of the page over HTTP one after another. The page is read in its own threads,
so these figures are what a refresh costs the machine, never time the watch loop waits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from connector.config import Settings, WatchSettings
from connector.health import Health
from connector.ledger import Ledger
from connector.overview import Overview
from connector.page import render
from connector.web import StatusServer


def populate(root: Path, files: int) -> Settings:
    settings = Settings(watch=WatchSettings(http_port=0))
    for name in ("inbox", "processing", "archive", "failed", "state"):
        setattr(settings.folders, name, root / name)
        (root / name).mkdir()
    now = time.time()
    ledger = Ledger.open(settings.folders.state)
    rows = []
    for i in range(files):
        at = now - (i % 30) * 86400 - i
        day = time.strftime("%Y/%m/%d", time.gmtime(at))
        failed = i % 10 == 0
        area = settings.folders.failed if failed else settings.folders.archive
        folder = area / day
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"export{i}__{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(at))}__{i:08x}.csv"
        report = {"file": f"export{i}.csv", "status": "refused" if failed else "done",
                  "counts": {"products": 40, "items_sent": 0 if failed else 120, "images_sent": 0 if failed else 30,
                             "rows_refused": 2},
                  "timings_s": {"total": 3.2}, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                  "problems": [{"line": n, "message": "a refused row"} for n in range(50)]}
        if failed:
            report["message"] = f"export{i}.csv: refused: no row of the file could be sent"
            stem.write_text("a,b\n")
        Path(f"{stem}{'.error.json' if failed else '.report.json'}").write_text(json.dumps(report))
        rows.append((f"{i:064x}", f"export{i}.csv", 100, "", "refused" if failed else "done", json.dumps(report), at,
                     at, at))
    ledger.db.executemany("INSERT INTO files (sha256, name, size, endpoint, status, report, started_at, created_at,"
                          " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    ledger.close()
    return settings


def timed(fn, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = populate(Path(tmp), args.files)
        health = Health(None)
        health.update({"state": "ok", "problems": []})
        overview = Overview(settings)
        cold = timed(lambda: overview.collect(health.current()))
        warm = timed(lambda: overview.collect(health.current()), 10)
        view = overview.collect(health.current())
        html_ms = timed(lambda: render(view, csrf="x"), 10)
        server = StatusServer(settings, health)
        server.start()
        latencies = []
        try:
            for _ in range(args.requests):
                started = time.perf_counter()
                with urllib.request.urlopen(server.url, timeout=10) as reply:
                    size = len(reply.read())
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            server.stop()
        print(f"{args.files} files in archive/ and failed/ and in the ledger")
        print(f"gather, first time (reports read): {cold:.1f} ms")
        print(f"gather, again (summaries cached):  {warm:.1f} ms")
        print(f"render HTML:                       {html_ms:.2f} ms ({size} bytes)")
        print(f"GET / over HTTP, {args.requests} in a row: median {statistics.median(latencies):.1f} ms, "
              f"max {max(latencies):.1f} ms")


if __name__ == "__main__":
    main()
