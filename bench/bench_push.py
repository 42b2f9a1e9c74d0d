"""How close a push comes to the API's floor: requests / rate, at the real 3 requests/s.

    python bench/bench_push.py [--rows 100000] [--images 2000] [--rate 3] [--only products|images]

Two pushes, each to a fresh sandbox in a process of its own (as the real API is on another
machine: its work does not share this process) that enforces `--rate` requests/s (the newer
docs' limit) over real HTTP on 127.0.0.1, with the real API client on the real clock:

  products  the generated 100,000-row export (bench/make_export.py), no images
  images    `--images` products with one 50-340 KB JPEG each (noise, so it does not compress)

For each it prints the requests made, the floor (requests / rate), the local planning time
(read, map, check, plan, journal: all before the first request), the wall time, and
wall / (floor + planning): the goal is <= 1.1. It also prints the 429s the client got and
how many of them the sandbox's rate limit gave (none, when the limiter keeps to the rate).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests as http  # noqa: E402

from bench.bench_read import export_files  # noqa: E402
from connector.api import ApiClient  # noqa: E402
from connector.config import ApiSettings, Settings  # noqa: E402
from connector.ledger import Ledger  # noqa: E402
from connector.pipeline import Pipeline  # noqa: E402


@contextlib.contextmanager
def sandbox_process(rate: float):
    """`connector sandbox` on an ephemeral port in its own process; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "connector.sandbox.cli", "--port", "0", "--rate", str(rate)],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline() if proc.stdout else ""
        found = re.search(r"(http://127\.0\.0\.1:\d+)", first)
        if not found:
            raise RuntimeError(f"the sandbox did not start: {first!r}")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def photo_export(folder: Path, products: int, seed: int = 7) -> Path:
    """`products` products with one JPEG each, 50-340 KB; generated once and kept in `folder`."""
    path = folder / "photos.csv"
    if path.exists():
        return path
    from PIL import Image

    print(f"generating {products:,} photos into {folder} ...", flush=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = ["source_product_code,source_variant_code,title,sku,price,qty,image1"]
    for n in range(products):
        side = rng.randint(235, 620)  # noise JPEG at quality 90: ~0.9 byte per pixel, so 50-340 KB
        Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(
            folder / "images" / f"p{n:05d}.jpg", "JPEG", quality=90)
        lines.append(f"P{n:05d},P{n:05d},Product {n},P{n:05d},{10 + n % 90}.00,{n % 50},p{n:05d}.jpg")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def push(path: Path, rate: float, images: Path | None) -> dict:
    with sandbox_process(rate) as url, tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        settings = Settings()
        for name in ("inbox", "processing", "archive", "failed", "state"):
            setattr(settings.folders, name, Path(tmp) / name)
        settings.folders.images = images or Path(tmp) / "no-images"
        settings.api = ApiSettings(url=url, username="demo", password="demo", source_id=1)
        pipeline = Pipeline(settings, ApiClient(settings.api), Ledger.open(settings.folders.state))
        started = time.perf_counter()
        report = pipeline.run_file(path, mapping="stock2shop")
        wall = time.perf_counter() - started
        pipeline.close()
        stats = http.get(f"{url}/_sandbox/state", timeout=60).json()["stats"]
    planning = sum(report.timings.get(k, 0.0) for k in ("read", "map", "check", "plan", "journal"))
    requests = sum(report.requests.values())
    queue = {k: v for k, v in stats["by_path"].items() if "queue" in k}
    return {"status": report.status, "items": report.counts.items_sent, "images": report.counts.images_sent,
            "requests": requests, "queue_requests": queue, "429": report.requests.get("429", 0),
            "rate_limited": stats.get("rate_limited", 0),
            "planning": planning, "wall": wall, "floor": requests / rate}


def show(name: str, r: dict) -> None:
    ratio = r["wall"] / (r["floor"] + r["planning"])
    print(f"{name}: {r['status']}, {r['items']:,} items and {r['images']:,} images sent")
    print(f"  requests {r['requests']} ({', '.join(f'{k} {v}' for k, v in r['queue_requests'].items())}; "
          f"429s {r['429']}, of them from the rate limit {r['rate_limited']})")
    print(f"  floor {r['floor']:.1f} s + planning {r['planning']:.1f} s; wall {r['wall']:.1f} s; "
          f"wall / (floor + planning) = {ratio:.3f} (goal <= 1.1)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="wall time of a push against the API's rate floor")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--only", choices=["products", "images"])
    args = parser.parse_args(argv)
    if args.only != "images":
        csv_path, _ = export_files(args.rows, None)
        show(f"products ({args.rows:,} rows, no images)", push(csv_path, args.rate, None))
    if args.only != "products":
        folder = Path(tempfile.gettempdir()) / f"connector-bench-photos-{args.images}"
        folder.mkdir(parents=True, exist_ok=True)
        path = photo_export(folder, args.images)
        show(f"images ({args.images:,} products, one photo each)", push(path, args.rate, folder / "images"))


if __name__ == "__main__":
    main()
