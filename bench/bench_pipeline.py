"""Benchmark the planning half of the pipeline on a generated 100,000-row export.

    python bench/bench_pipeline.py [--rows 100000] [--dir DIR] [--runs 3]

For the CSV and the XLSX of the same export (bench/make_export.py: 25 columns, 4 variants
per product, Stock2Shop console convention) this runs `pipeline.plan_file` (read, map,
check, locate images) in a fresh interpreter per run and prints rows/s for read and for
map+check, and the process's peak RSS. Targets on the 2-core machine: CSV read+map+check
<= 3 s, XLSX <= 6 s, peak RSS <= 600 MB. No network: nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_read import export_files, measure  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from connector.config import Settings
from connector.pipeline import plan_file
settings = Settings()
settings.api.source_id = 1
start = time.perf_counter()
plan = plan_file(Path(sys.argv[1]), settings, mapping="stock2shop")
total = time.perf_counter() - start
print(json.dumps({"timings": plan.timings, "total": total, "rows": len(plan.table.rows),
                  "products": len(plan.products), "variants": sum(len(p.items) for p in plan.products),
                  "errors": sum(1 for p in plan.problems if p.severity == "error"),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "child_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="read, map+check throughput and peak memory of plan_file")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    for path in export_files(args.rows, args.dir):
        runs = [measure(path, CHILD) for _ in range(max(args.runs, 1))]
        for r in runs:
            t = r["timings"]
            r["rmc"] = t["read"] + t["map"] + t["check"]
        best = min(runs, key=lambda r: r["rmc"])
        t = best["timings"]
        rows = best["rows"]
        print(f"{path.suffix[1:]:4s} {rows:,} rows -> {best['products']:,} products, {best['variants']:,} variants, "
              f"{best['errors']} row errors")
        print(f"     read        {t['read']:6.2f} s  {rows / t['read']:>9,.0f} rows/s")
        print(f"     map+check   {t['map'] + t['check']:6.2f} s  {rows / (t['map'] + t['check']):>9,.0f} rows/s"
              f"  (map {t['map']:.2f} s, check {t['check']:.2f} s)")
        every = ", ".join(f"{r['rmc']:.2f}" for r in runs)
        print(f"     read+map+check {best['rmc']:5.2f} s   images located {t['plan']:.2f} s   "
              f"peak RSS {best['peak_mib']:.0f} MiB   (best of {len(runs)}; read+map+check all runs: {every} s)")
        if best["child_peak_mib"]:
            print(f"     the workbook reader's own process peaked at {best['child_peak_mib']:.0f} MiB (it ends before mapping)")


if __name__ == "__main__":
    main()
