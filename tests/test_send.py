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
