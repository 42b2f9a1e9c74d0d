"""Benchmark the ledger's side of rows that waited for their product and go with the file that brings it.

    python bench/bench_released.py [--rows 100000] [--batch 500] [--runs 3]

A stock file's rows wait in the ledger for products no file has brought yet; then a product file
brings every one of them. Its work is journaled (one products batch per --batch items), each row
that waited is recorded as gone into its product, and every batch is acknowledged: a row leaves
the ledger with its product's acknowledgement (Ledger.products_acknowledged), so none is lost to a
product held back or refused. Measured on a real SQLite ledger in a temp folder, no network: the
time to journal the product file and to acknowledge all its batches, with every row released and
with none (the usual push, for comparison). Best of --runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connector.ledger import Ledger, WaitingRow  # noqa: E402
from connector.report import Report  # noqa: E402

ENDPOINT = "http://127.0.0.1:9#source=1"  # never contacted: only the ledger is measured


def _item(i: int) -> dict:
    return {"source": {"source_product_code": f"P{i}", "product_active": "true"},
            "product": {"title": f"Product {i}", "variants": {"source_variant_code": f"P{i}-V", "qty": i % 50}}}


def run(rows: int, batch: int, released: bool) -> tuple[float, float, int]:
    """(seconds to journal, seconds to acknowledge every batch, rows still in `waiting`)."""
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger.open(Path(folder))
        ids: dict[str, int] = {}
        if released:
            waiting = [WaitingRow(f"P{i}", "source_variant_code", f"P{i}-V", {"item": _item(i), "cleared": []},
                                  "stock.csv", "stock", i + 2, until=time.time() + 86400) for i in range(rows)]
            ledger.journal(Report("stock.csv", sha256="s" * 64, size=1, mapping_sha256="m"), mtime_ns=1,
                           endpoint=ENDPOINT, batches=[], images=[], waiting=waiting)
            ids = {w.product_code: w.id for w in ledger.waiting_rows(ENDPOINT) if w.id is not None}
        start = time.perf_counter()
        with ledger.journaling(Report("products.csv", sha256="p" * 64, size=1, mapping_sha256="m"), mtime_ns=1,
                               endpoint=ENDPOINT) as journal:
            for first in range(0, rows, batch):
                journal.batch([_item(i) for i in range(first, min(first + batch, rows))])
            journal.release([(row_id, code) for code, row_id in ids.items()])
        journaled = time.perf_counter() - start
        start = time.perf_counter()
        while (job := ledger.next_job(ENDPOINT)) is not None:
            ledger.products_acknowledged(job.id, job.payload)
        acknowledged = time.perf_counter() - start
        left = ledger.db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0]
        ledger.close()
        return journaled, acknowledged, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows that waited, one product each")
    parser.add_argument("--batch", type=int, default=500, help="items per products batch (batch.max_items)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each case; the best is printed")
    args = parser.parse_args()
    batches = -(-args.rows // args.batch)
    for released in (False, True):
        best = min((run(args.rows, args.batch, released) for _ in range(args.runs)), key=lambda r: r[0] + r[1])
        what = f"{args.rows:,} rows released" if released else "no row released"
        print(f"{what:>24}: journal {best[0]:.2f} s, acknowledge {batches} batches {best[1]:.2f} s; "
              f"rows left waiting: {best[2]}")


if __name__ == "__main__":
    main()
