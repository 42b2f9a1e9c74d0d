"""Peak memory and time of `connector check` and of a push, at 100,000 and 300,000 rows.

    python bench/bench_memory.py [--rows 100000 300000] [--only check|push] [--rate 1000]

Each run is a fresh interpreter (so its peak RSS, `ru_maxrss`, is its own) on the generated
export (bench/make_export.py, CSV, 4 variants per product):

  check  `connector check FILE --out DIR` through the CLI's own entry point
  push   `Pipeline.run_file` against a sandbox in a process of its own (as the real API is on
         another machine) at `--rate` requests/s: memory does not depend on the rate, so the
         default is fast; bench/bench_push.py measures the time at the API's real rate

Goals (issue 12): check of 100,000 rows under 4 s and 600 MB; push of 300,000 rows under 1 GB.

The measured processes find the connector's bytecode compiled, as an installed connector has
it (pip compiles it at install, the Docker image too): an import beforehand writes it into a
temporary folder (PYTHONPYCACHEPREFIX), also where the environment says
PYTHONDONTWRITEBYTECODE, which would otherwise compile every module again in every measured
run (0.1 s of each check).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_push import sandbox_process  # noqa: E402
from bench.make_export import generate_rows, write_csv  # noqa: E402

CHECK = """
import json, resource, sys, time, io, contextlib
sys.path.insert(0, sys.argv[3])
from connector.cli import main
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["check", sys.argv[1], "--out", sys.argv[2]])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "seconds": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                  "peak_mib": usage.ru_maxrss / 1024}))
"""

PUSH = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from connector.api import ApiClient
from connector.config import ApiSettings, Settings
from connector.ledger import Ledger
from connector.pipeline import Pipeline
tmp = Path(sys.argv[3])
settings = Settings()
for name in ("inbox", "processing", "archive", "failed", "state"):
    setattr(settings.folders, name, tmp / name)
settings.folders.images = tmp / "no-images"
settings.api = ApiSettings(url=sys.argv[2], username="demo", password="demo", source_id=1)
pipeline = Pipeline(settings, ApiClient(settings.api), Ledger.open(settings.folders.state))
start = time.perf_counter()
report = pipeline.run_file(Path(sys.argv[1]), mapping="stock2shop")
pipeline.close()
print(json.dumps({"status": report.status, "items": report.counts.items_sent, "seconds": time.perf_counter() - start,
                  "requests": sum(report.requests.values()), "timings": report.timings,
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def export_csv(rows: int) -> Path:
    """The generated CSV of `rows` rows, made once into the system temp folder (the same as bench_read's)."""
    folder = Path(tempfile.gettempdir()) / f"connector-bench-{rows}"
    path = folder / "export.csv"
    if not path.exists():
        print(f"generating {rows:,} rows into {folder} ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(path, generate_rows(rows))
    return path


def child(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args, str(REPO)], env=_compiled_env(),
                          capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the measured process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compiled_env() -> dict[str, str]:
    """The environment of a measured process, its bytecode compiled (by an import beforehand)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "connector-bench-pycache")
    warm = (f"import sys; sys.path.insert(0, {str(REPO)!r}); import connector.cli, connector.logs, connector.pipeline; "
            "connector.cli.build_parser()")
    subprocess.run([sys.executable, "-c", warm], env=env, check=True, timeout=300)
    return env


def check(path: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-check-") as out:
        return child(CHECK, str(path), out)


def push(path: Path, rate: float) -> dict:
    with sandbox_process(rate) as url, tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        return child(PUSH, str(path), url, tmp)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peak memory and time of check and push")
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--only", choices=["check", "push"])
    parser.add_argument("--rate", type=float, default=1000.0, help="the sandbox's requests/s for push (default 1000)")
    parser.add_argument("--runs", type=int, default=1, help="check runs per size; the fastest is shown")
    args = parser.parse_args(argv)
    for rows in args.rows:
        path = export_csv(rows)
        if args.only != "push":
            runs = [check(path) for _ in range(max(args.runs, 1))]
            best = min(runs, key=lambda r: r["seconds"])
            every = ", ".join(f"{r['seconds']:.2f}" for r in runs)
            print(f"check {rows:>7,} rows: {best['seconds']:6.2f} s (CPU {best['cpu']:.2f} s, with the import), peak RSS "
                  f"{best['peak_mib']:5.0f} MiB (exit {best['code']}; all runs: {every} s)", flush=True)
        if args.only != "check":
            r = push(path, args.rate)
            t = r["timings"]
            print(f"push  {rows:>7,} rows: {r['seconds']:6.2f} s, peak RSS {r['peak_mib']:5.0f} MiB "
                  f"({r['status']}, {r['items']:,} items in {r['requests']} requests; read {t.get('read', 0):.1f} s, "
                  f"map {t.get('map', 0):.1f} s, check {t.get('check', 0):.1f} s, plan {t.get('plan', 0):.1f} s, "
                  f"journal {t.get('journal', 0):.1f} s, send {t.get('send', 0):.1f} s)", flush=True)


if __name__ == "__main__":
    main()
