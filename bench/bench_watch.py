"""Latency from a dropped file being complete to `connector watch` claiming it.

    python bench/bench_watch.py [--files 8] [--stable 0.5] [--min-age 0] [--scan 30]

For each observer (native, polling, none) a real `serve` runs on a temporary inbox with a
pipeline that only notes when it was handed the file (right after the claim). Files are written
one at a time, a few seconds apart; the figure is claim time minus the moment the writer closed
the file. Readiness needs two equal checks `stable_interval` apart, so that is the floor; the
rest is discovery (events, the polling interval, or the next scan) and settling.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from connector.config import Folders, Settings, WatchSettings
from connector.report import Report
from connector.watch import serve


class StampPipeline:
    def __init__(self) -> None:
        self.claimed: dict[str, float] = {}

    def run_file(self, path: Path, *, mapping: str | None = None) -> Report:
        self.claimed[Path(path).name] = time.monotonic()
        return Report(file=Path(path).name, status="done", message=f"{Path(path).name}: done")

    def drain(self) -> bool:
        return True

    def tidy(self) -> int:  # retention: nothing to compact
        return 0

    def close(self) -> None:
        pass


def measure(observer: str, files: int, stable: float, min_age: float, scan: float, gap: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp)
        folders = Folders(inbox=root / "inbox", processing=root / "processing", archive=root / "archive",
                          failed=root / "failed", state=root / "state")
        folders.inbox.mkdir()
        settings = Settings(folders=folders, watch=WatchSettings(
            scan_interval=scan, min_age=min_age, stable_interval=stable, observer=observer,
            health_file=folders.state / "health.json"))
        pipeline = StampPipeline()
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(settings, lambda: pipeline), kwargs={"stop": stop}, daemon=True)
        thread.start()
        time.sleep(1.0)  # let the observer start
        complete: dict[str, float] = {}
        for i in range(files):
            name = f"drop-{i}.csv"
            with open(folders.inbox / name, "wb") as f:
                f.write(b"sku,title\n" + b"X,Y\n" * 1000)
            complete[name] = time.monotonic()
            give_up = time.monotonic() + scan + stable + min_age + 10
            while name not in pipeline.claimed and time.monotonic() < give_up:
                time.sleep(0.005)
            time.sleep(gap)
        stop.set()
        thread.join(15)
        return [pipeline.claimed[n] - t for n, t in complete.items() if n in pipeline.claimed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--stable", type=float, default=0.5, help="watch.stable_interval (default 0.5; shipped 2.0)")
    parser.add_argument("--min-age", type=float, default=0.0, help="watch.min_age (default 0; shipped 10)")
    parser.add_argument("--scan", type=float, default=30.0, help="watch.scan_interval (default 30)")
    parser.add_argument("--gap", type=float, default=0.7, help="pause after each claim before the next drop")
    args = parser.parse_args()
    print(f"stable_interval {args.stable} s, min_age {args.min_age} s, scan_interval {args.scan} s, "
          f"{args.files} files each")
    print(f"{'observer':10} {'median':>8} {'min':>8} {'max':>8}  claimed")
    for observer in ("native", "polling", "none"):
        lat = measure(observer, args.files, args.stable, args.min_age, args.scan, args.gap)
        if lat:
            print(f"{observer:10} {statistics.median(lat):8.3f} {min(lat):8.3f} {max(lat):8.3f}  {len(lat)}/{args.files}")
        else:
            print(f"{observer:10} {'-':>8} {'-':>8} {'-':>8}  0/{args.files}")


if __name__ == "__main__":
    main()
