"""Benchmark an update file merged onto the catalogue: a 100,000-row stock file on 100,000 variants.

    python bench/bench_merge.py [--rows 100000] [--changed 0.01] [--dir DIR]

Setup (not measured): the generated export (bench/make_export.py) is planned and its items
written to a ledger's catalogue as if acknowledged; a stock file (product code, variant
code, qty) is written with `--changed` of the quantities different from the catalogue's.

Measured in a fresh interpreter: read + map the stock file, merge it onto the catalogue
(`Pipeline._merge`), keep the changed items (`Pipeline._changed`) and batch them: time and
peak RSS. Then the same file is pushed for real to a local sandbox over HTTP and the product
requests it made are counted. Goals on the 2-core machine: under 3 s and 600 MB; requests
= ceil(changed items / 500) (1 % of 100,000 -> 2).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.make_export import make_export  # noqa: E402

ENDPOINT_URL = "http://127.0.0.1:9"  # never contacted while measuring: nothing is sent there
STOCK_MAPPING = """
name: bench-stock
mode: update
group_by: source_product_code
variant:
  source_variant_code: source_variant_code
  qty: {column: qty, type: int}
"""

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench.bench_merge import peak_mib, settings_in
from connector.api import ApiClient
from connector.ledger import Ledger
from connector.pipeline import Pipeline, plan_file
folder = Path(sys.argv[2])
settings = settings_in(folder, sys.argv[3])
pipeline = Pipeline(settings, ApiClient(settings.api), Ledger.open(settings.folders.state))
start = time.perf_counter()
plan = plan_file(folder / "stock.csv", settings, mapping="bench-stock")
planned = time.perf_counter()
pipeline._merge(plan)
merged = time.perf_counter()
to_send, unchanged = pipeline._changed(plan.products)
batches = list(pipeline._batches(to_send, plan))
done = time.perf_counter()
print(json.dumps({"read": plan.timings["read"], "map": plan.timings["map"], "merge": merged - planned,
                  "plan": done - merged, "total": done - start, "rows": len(plan.table.rows),
                  "to_send": sum(len(b) for b in batches), "unchanged": unchanged + plan.unchanged,
                  "batches": len(batches),
                  "waiting": len(plan.waiting),
                  "peak_mib": peak_mib()}))
"""


def peak_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
    started by a parent that planned 100k rows would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settings_in(folder: Path, url: str):
    from connector.config import ApiSettings, Settings

    settings = Settings()
    for name in ("inbox", "processing", "archive", "failed", "state"):
        setattr(settings.folders, name, folder / name)
    settings.folders.mappings = folder / "mappings"
    settings.api = ApiSettings(url=url, username="demo", password="demo", source_id=1, rate=1000.0)
    return settings


def prepare(folder: Path, rows: int, changed: float) -> int:
    """A catalogue of the export's items and a stock file with `changed` of its quantities new; returns
    how many quantities changed."""
    from connector.ledger import Ledger
    from connector.pipeline import Pipeline, plan_file

    csv_path, _ = make_export(folder / "export", rows)
    settings = settings_in(folder, ENDPOINT_URL)
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    (folder / "mappings" / "bench-stock.yaml").write_text(STOCK_MAPPING, encoding="utf-8")
    plan = plan_file(csv_path, settings, mapping="stock2shop")
    ledger = Ledger.open(settings.folders.state)
    endpoint = Pipeline.endpoint.fget(type("S", (), {"settings": settings})())  # type: ignore[attr-defined]
    items = [it for p in plan.products for it in p.items]
    with ledger._transaction():
        ledger._remember_items([(endpoint, it, csv_path.name, "stock2shop", time.time()) for it in items])
    ledger.close()
    step = max(int(1 / changed), 1) if changed else 0
    count = 0
    with (folder / "stock.csv").open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["source_product_code", "source_variant_code", "qty"])
        for i, it in enumerate(items):
            qty = it["product"]["variants"].get("qty", 0)
            if step and i % step == 0:
                qty, count = qty + 1, count + 1
            out.writerow([it["source"]["source_product_code"], it["product"]["variants"]["source_variant_code"], qty])
    return count


def push_to_sandbox(folder: Path) -> tuple[int, str]:
    """Push the stock file for real to a local sandbox; (product requests made, status)."""
    import shutil

    from connector.api import ApiClient
    from connector.ledger import Ledger
    from connector.pipeline import Pipeline
    from connector.sandbox import Sandbox, SandboxConfig

    sb = Sandbox(SandboxConfig(rate=1000.0, unauth_rate=1000.0)).start(host="127.0.0.1", port=0)
    try:
        # the measured copy's endpoint differs (the sandbox's port): give it the catalogue too
        settings = settings_in(folder, sb.url)
        ledger = Ledger.open(settings.folders.state)
        pipeline = Pipeline(settings, ApiClient(settings.api), ledger)
        ledger.db.execute("UPDATE catalogue_variants SET endpoint = ?", (pipeline.endpoint,))
        ledger.db.execute("UPDATE catalogue_products SET endpoint = ?", (pipeline.endpoint,))
        shutil.copy(folder / "stock.csv", folder / "stock-push.csv")
        report = pipeline.run_file(folder / "stock-push.csv", mapping="bench-stock")
        requests = sb.state()["stats"]["by_path"].get("/v1/products/queue", 0)
        pipeline.close()
        return requests, report.status
    finally:
        sb.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a stock file merged onto the catalogue: time, memory, requests")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of quantities changed (default 0.01)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        started = time.perf_counter()
        changed = prepare(folder, args.rows, args.changed)
        print(f"setup: {args.rows:,}-variant catalogue and stock file ({changed:,} quantities changed) "
              f"in {time.perf_counter() - started:.1f} s")
        out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(folder), ENDPOINT_URL],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"read {r['read']:.2f} s, map {r['map']:.2f} s, merge {r['merge']:.2f} s, "
              f"changed+batches {r['plan']:.2f} s: read+merge+plan {r['total']:.2f} s (goal < 3 s)")
        print(f"peak RSS {r['peak_mib']:.0f} MiB (goal < 600 MB)")
        print(f"{r['rows']:,} rows: {r['to_send']:,} items to send in {r['batches']} requests, "
              f"{r['unchanged']:,} unchanged, {r['waiting']} waiting")
        requests, status = push_to_sandbox(folder)
        print(f"pushed to a local sandbox: {status}, {requests} product requests "
              f"(goal ceil({changed:,} / 500) = {math.ceil(changed / 500)})")


if __name__ == "__main__":
    main()
