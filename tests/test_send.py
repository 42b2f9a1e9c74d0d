"""Sending: what the API refuses is found and reported, and the good products of a batch still go."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from connector.pipeline import ISOLATE_REQUESTS
from connector.sandbox import Faults
from tests.support import pipeline_for

HEADER = "source_product_code,source_variant_code,title,sku,price,qty,option1_name,option1_value,option2_name,option2_value"


def export(path: Path, products: int) -> Path:
    """`products` products of two variants each, with two options (Colour, Size)."""
    lines = [HEADER]
    for n in range(products):
        for size in ("S", "M"):
            lines.append(f"P{n:03d},P{n:03d}-{size},Product {n},P{n:03d}-{size},10.00,5,Colour,Black,Size,{size}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def store_one_option_product(sb, code: str) -> None:
    """Put `code` in the sandbox with ONE option: the file's two-option variants of it then clash."""
    stored = {"source": {"source_id": 1, "product_active": "true", "source_product_code": code,
                         "sync_token": "0", "fetch_token": "0"},
              "product": {"title": "Old", "options": [{"name": "Colour", "position": 1}],
                          "variants": {"source_variant_code": f"{code}-OLD", "sku": f"{code}-OLD", "option1": "Red"}}}
    answer = requests.post(f"{sb.url}/v1/products/queue", params={"token": sb.issue_token()},
                           json={"system_products": [stored]}, timeout=10)
    assert answer.status_code == 200


@pytest.mark.parametrize("bad", [["P007"], ["P000", "P019", "P020", "P039"]])
def test_a_refusal_that_names_no_item_is_narrowed_down_and_the_good_products_go(make_sandbox, tmp_path, bad):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(anonymous_errors=True))
    for code in bad:
        store_one_option_product(sb, code)
    pipeline = pipeline_for(tmp_path, sb)
    report = pipeline.run_file(export(tmp_path / "stock.csv", 40))

    stored = {p["source_product_code"]: len(p["variants"]) for p in sb.state()["products"]}
    good = [f"P{n:03d}" for n in range(40) if f"P{n:03d}" not in bad]
    assert all(stored.get(code) == 2 for code in good), stored  # every good product arrived whole
    assert all(stored[code] == 1 for code in bad)  # nothing of a refused product was applied
    refused = sorted(p.product for p in report.problems.stored if p.kind == "api")
    assert refused == bad
    assert report.counts.items_sent == 2 * len(good) and report.counts.products_refused_by_api == len(bad)
    # narrowing down costs about log2(40) refused requests per bad product, not one request per product
    assert report.requests["400"] <= len(bad) * 7, report.requests


def test_a_batch_refused_whole_without_names_costs_a_bounded_number_of_requests(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(anonymous_errors=True))
    settings_source = 99  # another account's source: the API refuses every item, naming none
    pipeline = pipeline_for(tmp_path, sb)
    pipeline.settings.api.source_id = settings_source
    report = pipeline.run_file(export(tmp_path / "stock.csv", 200))
    assert report.counts.items_sent == 0 and report.counts.products_refused_by_api == 200
    assert report.requests["400"] <= ISOLATE_REQUESTS + 2, report.requests
    assert sb.state()["products"] == []


def photo(path: Path, seed: int, side: int = 160) -> Path:
    """A real JPEG of noise (noise does not compress: ~50-90 KB at this size)."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(path, "JPEG", quality=95)
    return path


def export_with_photos(folder: Path, products: int) -> Path:
    (folder / "images").mkdir(parents=True)
    lines = ["source_product_code,source_variant_code,title,sku,price,qty,image1"]
    for n in range(products):
        photo(folder / "images" / f"p{n:03d}.jpg", n)
        lines.append(f"P{n:03d},P{n:03d},Product {n},P{n:03d},10.00,5,p{n:03d}.jpg")
    path = folder / "products.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def images_after_their_products(state: dict) -> bool:
    first_product = {}
    for entry in state["queue"]:
        if entry["kind"] == "product":
            first_product.setdefault(entry["source_product_code"], entry["seq"])
    return all(e["seq"] > first_product[e["source_product_code"]] for e in state["queue"] if e["kind"] == "image")


def test_images_go_several_per_request_in_order_each_after_its_product(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    pipeline = pipeline_for(tmp_path, sb)
    pipeline.settings.batch.max_items = 10  # four product batches, so images interleave with batches
    report = pipeline.run_file(export_with_photos(tmp_path / "drop", 40))

    state = sb.state()
    assert report.counts.images_sent == 40 and len(state["images"]) == 40
    assert all(e["status"] == "accepted" for e in state["queue"])
    assert images_after_their_products(state)
    image_ids = [e["image_id"] for e in state["queue"] if e["kind"] == "image"]
    assert image_ids == [f"p{n:03d}.jpg" for n in range(40)]  # FIFO: the file's order
    assert state["stats"]["by_path"]["/v1/images/queue"] <= 8  # was 40: one image per request


def test_a_server_body_limit_splits_image_requests_and_the_push_completes(make_sandbox, tmp_path, caplog):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, max_body_bytes=400_000)
    pipeline = pipeline_for(tmp_path, sb)
    report = pipeline.run_file(export_with_photos(tmp_path / "drop", 24))

    state = sb.state()
    assert report.status == "done" and report.counts.images_sent == 24 and len(state["images"]) == 24
    assert images_after_their_products(state)
    assert report.requests["413"] >= 1
    assert pipeline.image_max_bytes < 400_000  # lowered for the rest of the run
    lowered = [r for r in caplog.records if "too large" in r.getMessage() and r.levelname == "WARNING"]
    assert len(lowered) == 1  # said once in the log


def test_the_same_file_again_sends_nothing_and_with_full_sends_every_item_again(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    path = export(tmp_path / "stock.csv", 5)
    first = pipeline_for(tmp_path, sb).run_file(path)
    assert first.counts.items_sent == 10
    queued = len(sb.state()["queue"])
    again = pipeline_for(tmp_path, sb).run_file(path)
    assert "already pushed on" in again.message and "nothing to send" in again.message and again.already_pushed
    assert len(sb.state()["queue"]) == queued  # nothing went
    full = pipeline_for(tmp_path, sb, full=True).run_file(path)
    assert full.status == "done" and full.counts.items_sent == 10
    assert len(sb.state()["queue"]) == queued + 10


def test_images_of_the_good_products_go_when_the_last_product_of_a_batch_is_refused_unnamed(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(anonymous_errors=True))
    store_one_option_product(sb, "P009")  # the batch's last product clashes; the API names nothing
    folder = tmp_path / "drop"
    (folder / "images").mkdir(parents=True)
    lines = [HEADER + ",image1"]
    for n in range(10):
        photo(folder / "images" / f"p{n:03d}.jpg", n, side=40)
        for size in ("S", "M"):
            lines.append(f"P{n:03d},P{n:03d}-{size},Product {n},P{n:03d}-{size},10.00,5,Colour,Black,Size,{size},"
                         f"p{n:03d}.jpg")
    (folder / "stock.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = pipeline_for(tmp_path, sb).run_file(folder / "stock.csv")
    assert report.counts.items_sent == 18 and report.counts.products_refused_by_api == 1
    assert report.counts.images_sent == 9  # every good product's picture; not the refused one's
    assert sorted(i["source_product_code"] for i in sb.state()["images"]) == [f"P{n:03d}" for n in range(9)]
