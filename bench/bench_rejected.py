"""Benchmark writing <name>.rejected.xlsx for a file whose every row was refused.

    python bench/bench_rejected.py [--rows 100000] [--columns 12] [--comments 10000]

Each run is a fresh interpreter, so its peak RSS (ru_maxrss) is its own: the refused rows
themselves (as the report holds them) plus what writing the workbook adds. Prints seconds,
peak memory and the file's size, with the default bounds (rows, comments) and with every row.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connector.report import MAX_COMMENTS, MAX_WORKBOOK_ROWS  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from connector.model import Rejected, Row
from connector.report import write_rejected_xlsx
rows, columns, comments, most, out = (int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
                                     Path(sys.argv[6]))
header = ["sku", "barcode", "price"] + [f"attr_{i}" for i in range(columns - 3)]
rejected = [Rejected(Row(n + 2, {"sku": f"{n:07d}", "barcode": f"600{n:010d}", "price": "12,5O",
                                 **{h: f"value {n % 97} {h}" for h in header[3:]}}),
                     'price "12,5O" is not a number (decimal separator ".")', "price") for n in range(rows)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
write_rejected_xlsx(out, header, rejected, max_comments=comments, max_rows=most)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "rows_mib": before / 1024,
                  "size_mib": out.stat().st_size / 2**20}))
"""


def measure(rows: int, columns: int, comments: int, most: int, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(rows), str(columns), str(comments), str(most),
                           str(out)],
                          capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="rejected.xlsx: time, memory and size for many refused rows")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--columns", type=int, default=12)
    parser.add_argument("--comments", type=int, default=MAX_COMMENTS, help="the comment bound")
    parser.add_argument("--most", type=int, default=MAX_WORKBOOK_ROWS, help="the row bound")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="connector-bench-rejected-") as tmp:
        for label, comments, most in (("the default bounds", args.comments, args.most),
                                      ("every row, bounded comments", args.comments, args.rows)):
            r = measure(args.rows, args.columns, comments, most, Path(tmp) / "export.csv.rejected.xlsx")
            print(f"{args.rows:,} refused rows x {args.columns} columns, {label} ({min(most, args.rows):,} rows, "
                  f"{min(comments, most, args.rows):,} comments): {r['seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB "
                  f"(the rows alone {r['rows_mib']:.0f} MiB), file {r['size_mib']:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
