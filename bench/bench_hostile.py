"""Benchmark `read_table` on hostile CSV files: damaged bytes must cost time and memory in
proportion to the file, never to the number of problems found in it.

    python bench/bench_hostile.py [--dir DIR] [--timeout 300] [--only NAME ...]

Cases (generated once into DIR, by default a folder in the system temp dir):
  one-nul        a 1,000-row export with one NUL byte
  nul-20mb       20 MB of NUL bytes (a file zero-filled by a power cut): refused as such
  nul-tail-8mb   a 12 MB export followed by 8 MB of NUL bytes: one record, 8 million NULs
  bad-900kb      one 900 KB cell in which every fourth byte is not UTF-8
  bad-4mb        the same with a 4 MB cell

Each file is read in a fresh interpreter; its peak RSS (VmHWM, polled from /proc, so it is
known even when the run is stopped at --timeout) and seconds are printed, with the rows,
problems listed and the problem total (listed + counted) or the refusal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from connector.read import ReadError, read_table
start = time.perf_counter()
try:
    table = read_table(Path(sys.argv[1]))
    outcome = {"rows": len(table.rows), "listed": len(table.problems),
               "total": sum(getattr(p, "count", None) or 1 for p in table.problems)}
except ReadError as exc:
    outcome = {"refused": str(exc)[:110]}
outcome["seconds"] = time.perf_counter() - start
print(json.dumps(outcome))
"""


def _export(rows: int) -> bytes:
    lines = ["sku,title,price,qty"] + [f"SKU{i:07d},Caf\u00e9 product number {i},{i % 997}.50,{i % 13}"
                                        for i in range(rows)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _bad_line(size: int) -> bytes:
    # A cp1252 description pasted into a UTF-8 export: 0xe9 is not UTF-8 on its own.
    body = b"ab\xe9 " * (size // 4)
    return "sku,title\n1,Caf\u00e9\n".encode() + b"2," + body + b"\n3,ok\n"


CASES = {
    "one-nul": lambda: _export(1000).replace(b"SKU0000500", b"SKU\x00000500"),
    "nul-20mb": lambda: b"\x00" * (20 * 1024 * 1024),
    "nul-tail-8mb": lambda: _export(12 * 1024 * 1024 // 42) + b"\x00" * (8 * 1024 * 1024),
    "bad-900kb": lambda: _bad_line(900 * 1024),
    "bad-4mb": lambda: _bad_line(4 * 1024 * 1024),
}


def make_case(folder: Path, name: str) -> Path:
    path = folder / f"{name}.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CASES[name]())
    return path


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(path: Path, timeout: float) -> dict:
    """Read `path` in a fresh interpreter; its figures, or how far it got before `timeout`."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(REPO)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    start, peak = time.perf_counter(), 0
    while child.poll() is None:
        peak = max(peak, _peak_kib(child.pid))
        if time.perf_counter() - start > timeout:
            child.kill()
            child.wait()
            return {"stopped": True, "seconds": time.perf_counter() - start, "peak_mib": peak / 1024}
        time.sleep(0.05)
    out, err = child.communicate()
    if child.returncode != 0:
        return {"failed": (err.strip().splitlines() or ["?"])[-1][:110], "peak_mib": peak / 1024,
                "seconds": time.perf_counter() - start}
    figures = json.loads(out.strip().splitlines()[-1])
    figures["peak_mib"] = peak / 1024
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="read_table on hostile files: peak RSS and seconds")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "connector-bench-hostile")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", nargs="*", choices=list(CASES), default=list(CASES))
    args = parser.parse_args(argv)
    for name in args.only:
        path = make_case(args.dir, name)
        r = measure(path, args.timeout)
        size = path.stat().st_size / 2**20
        if r.get("stopped"):
            what = f"stopped after {args.timeout:.0f} s"
        elif "failed" in r:
            what = f"crashed: {r['failed']}"
        elif "refused" in r:
            what = f"refused: {r['refused']}"
        else:
            what = f"{r['rows']:,} rows, {r['listed']:,} problems listed of {r['total']:,}"
        print(f"{name:13s} {size:6.1f} MB  {r['seconds']:7.2f} s  peak RSS {r['peak_mib']:6.0f} MiB  {what}",
              flush=True)


if __name__ == "__main__":
    main()
