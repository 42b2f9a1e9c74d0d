"""Benchmark `read_table` on a generated 100,000-row export, CSV and XLSX.

    python bench/bench_read.py [--rows 100000] [--dir DIR] [--runs 3] [--legacy]

The export is generated once (bench/make_export.py) into DIR, by default a folder in the
system temp dir that is reused while it exists. Each format is read in a fresh subprocess so
that its peak RSS (ru_maxrss) is its own; the best of --runs is printed with that run's RSS.
--legacy also reads the CSV with an accented description on every row, saved in Mac Roman
and in cp1252 (the encoding is then chosen among the legacy candidates: connector/encoding.py).
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

from bench.make_export import make_export  # noqa: E402

# Run in the child: read one file, print seconds, rows and peak RSS as one JSON line.
CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from connector.read import read_table
start = time.perf_counter()
table = read_table(Path(sys.argv[1]))
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(json.dumps({"seconds": seconds, "rows": len(table.rows), "problems": len(table.problems),
                  "peak_mib": peak_kib / 1024}))
"""


def export_files(rows: int, folder: Path | None) -> tuple[Path, Path]:
    """The CSV and XLSX to read, generated unless they already exist in the folder."""
    folder = folder or Path(tempfile.gettempdir()) / f"connector-bench-{rows}"
    csv_path, xlsx_path = folder / "export.csv", folder / "export.xlsx"
    if not (csv_path.exists() and xlsx_path.exists()):
        print(f"generating {rows:,} rows into {folder} ...", flush=True)
        make_export(folder, rows)
    return csv_path, xlsx_path


def legacy_files(csv_path: Path) -> list[Path]:
    """The export with "l'été sud-africain — très chaud" in every description, in Mac Roman and cp1252."""
    out = []
    text = csv_path.read_text(encoding="utf-8").replace("South African weather", "l'été sud-africain — très chaud")
    for encoding in ("mac_roman", "cp1252"):
        path = csv_path.with_name(f"export-{encoding}.csv")
        if not path.exists():
            path.write_bytes(text.encode(encoding))
        out.append(path)
    return out


def measure(path: Path, child: str = CHILD) -> dict:
    """Run `child` on the file once in a fresh interpreter (so peak RSS is its own); return its JSON figures."""
    done = subprocess.run([sys.executable, "-c", child, str(path), str(REPO)],
                          capture_output=True, text=True, check=True, timeout=900)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="read_table throughput and peak memory")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--legacy", action="store_true", help="also read the CSV saved in Mac Roman and cp1252")
    args = parser.parse_args(argv)
    paths = list(export_files(args.rows, args.dir))
    if args.legacy:
        paths += legacy_files(paths[0])
    for path in paths:
        runs = [measure(path) for _ in range(max(args.runs, 1))]
        best = min(runs, key=lambda r: r["seconds"])
        every = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        label = path.stem.removeprefix("export-") if "-" in path.stem else path.suffix[1:]
        print(f"read {label:9s} {best['rows']:>8,} rows  {best['seconds']:6.2f} s  "
              f"{best['rows'] / best['seconds']:>9,.0f} rows/s  peak RSS {best['peak_mib']:5.0f} MiB  "
              f"(best of {len(runs)}; all: {every} s)")


if __name__ == "__main__":
    main()
