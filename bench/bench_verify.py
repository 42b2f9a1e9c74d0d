"""What `connector verify` costs: requests, time against the API's floor, and the local part.

    python bench/bench_verify.py [--rows 20000] [--rate 3] [--page-size 100]

Pushes the generated export (bench/make_export.py; 4 variants per product) to a sandbox in a
process of its own that enforces `--rate` requests/s, then verifies every product it
acknowledged, over real HTTP with the real client on the real clock. Prints the requests
verify made (a login and products / page size searches), the floor (requests / rate), the
local time (reading what was acknowledged from the ledger, and comparing), and the wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_push import sandbox_process  # noqa: E402
from bench.bench_read import export_files  # noqa: E402
from connector.api import ApiClient  # noqa: E402
from connector.config import ApiSettings, Settings  # noqa: E402
from connector.ledger import Ledger  # noqa: E402
from connector.pipeline import Pipeline  # noqa: E402
from connector.verify import acknowledged, run_verify  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="requests and time of connector verify against the rate floor")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args(argv)
    csv_path, _ = export_files(args.rows, None)
    with sandbox_process(args.rate) as url, tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        settings = Settings()
        for name in ("inbox", "processing", "archive", "failed", "state"):
            setattr(settings.folders, name, Path(tmp) / name)
        settings.folders.images = Path(tmp) / "no-images"
        settings.api = ApiSettings(url=url, username="demo", password="demo", source_id=1)
        settings.verify.page_size = args.page_size
        pipeline = Pipeline(settings, ApiClient(settings.api), Ledger.open(settings.folders.state))
        try:
            report = pipeline.run_file(csv_path, mapping="stock2shop")
            print(f"pushed {args.rows:,} rows: {report.status}, {report.counts.items_sent:,} items", flush=True)
            started = time.perf_counter()
            variants = sum(1 for _ in acknowledged(pipeline.ledger, pipeline.endpoint))
            reading = time.perf_counter() - started
            started = time.perf_counter()
            result = run_verify(pipeline)
            wall = time.perf_counter() - started
        finally:
            pipeline.close()
    floor = result.requests / args.rate
    print(f"verify: {result.products_checked:,} products, {result.variants_checked:,} variants "
          f"({variants:,} read from the ledger in {reading:.2f} s); clean: {result.clean}")
    print(f"  requests {result.requests} (page size {args.page_size}); floor {floor:.1f} s at {args.rate:g}/s; "
          f"wall {wall:.1f} s; wall / floor = {wall / floor:.3f}")


if __name__ == "__main__":
    main()
