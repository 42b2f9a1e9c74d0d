"""Acceptance over real exports: every product file of the corpus through its preset to the sandbox.

The corpus (../shared/corpus beside the project) holds files written by Magento 2, Akeneo,
WooCommerce, Shopify, PrestaShop / thirty bees and OpenBoxes, with `facts.json`: ground truth
computed without the connector. Each file is checked (`plan_file`, what `connector check`
does) with its preset, then pushed to the sandbox over real HTTP; products, variant items,
samples and images are compared with the facts. Where the presets deliberately differ from
the facts (parent rows, skipped product types, halves of a join), the case says so and why.
The files are read where they are; nothing is copied into the project.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connector.config import Settings
from connector.pipeline import plan_file
from tests.support import assert_every_row_once, pipeline_for, settings_for

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
pytestmark = pytest.mark.skipif(
    not (CORPUS / "facts.json").is_file(), reason="the real-export corpus (../shared/corpus) is not on this machine"
)


def _facts() -> dict[str, Any]:
    if not (CORPUS / "facts.json").is_file():
        return {}
    return json.loads((CORPUS / "facts.json").read_text(encoding="utf-8"))["files"]


FACTS = _facts()


def _akeneo_image_pairs() -> tuple[int, int]:
    """(images the akeneo preset should send, references without a file), from the corpus alone.

    Read with the csv module and images_manifest.csv, not the connector: every picture / image /
    variation_image reference of products.csv whose file the manifest lists, kept once per
    (product, file bytes) - a product is its `parent` model, else its own sku; all rows are
    enabled - because the same picture under two variants of one product is sent once.
    """
    if not (CORPUS / "images_manifest.csv").is_file():
        return 0, 0
    with open(CORPUS / "images_manifest.csv", encoding="utf-8", newline="") as f:
        sha = {r["corpus_path"]: r["sha256"] for r in csv.DictReader(f)}
    pairs, missing = set(), 0
    with open(CORPUS / "akeneo/products.csv", encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f, delimiter=";"):
            for column in ("picture", "image", "variation_image"):
                ref = r[column].strip()
                if ref and f"akeneo/{ref}" in sha:
                    pairs.add((r["parent"] or r["sku"], sha[f"akeneo/{ref}"]))
                elif ref:
                    missing += 1
    return len(pairs), missing


AKENEO_IMAGES, AKENEO_MISSING = _akeneo_image_pairs()
# Magento: the corpus holds exactly the files facts counts as present under images/ (each the
# base image of one product or its children), so every one of them is sent, once.
MAGENTO_IMAGES = FACTS.get("magento2/products.csv", {}).get("image_refs", {}).get("present_under_images/", 0)


@dataclass
class Case:
    """One corpus file, its preset, and what the push must give.

    products / items: None means "as facts.json says" (groups / records); a number is a
    deliberate difference, explained in `why`. refused: rows refused (errors), with a text every
    reason must contain (required when refused), or {text: rows} when the rows differ. samples: overrides for facts' samples
    {index: {field: value}}, where a field of None means "not sent"; {"variant": "absent"}: the
    sample is not a variant we send (a parent row); {"product": "absent"}: its row was refused.
    lots_summed: a sample's qty is one lot of its product, whose rows are added up.
    waits: an update file (stock, levels) pushed alone: its rows wait for their products, nothing
    is sent (test_openboxes_files_join_on_product_code pushes them after products.csv).
    """

    path: str
    preset: str
    products: int | None = None
    items: int | None = None
    why: str = ""
    refused: int = 0
    refused_reason: str | dict[str, int] = ""  # or {reason: how many rows give it}
    refused_lines: tuple[int, ...] = ()
    file_refused: bool = False
    images: int = 0
    samples: dict[int, dict[str, Any]] = field(default_factory=dict)
    lots_summed: bool = False
    waits: bool = False


CASES = [
    Case("magento2/products.csv", "magento2", items=1847, images=MAGENTO_IMAGES,
         why="a configurable row is the parent: it gives the product and is not sent as a variant; "
             "its 1,847 simple children are the variants (facts.variants)",
         samples={0: {"title": "Chaz Kangeroo Hoodie"}, 1: {"title": "Mona Pullover Hoodlie"},
                  2: {"variant": "absent"}}),  # WSH12 is a configurable parent: a product, not a variant
    Case("woocommerce/sample_products.csv", "woocommerce", products=16, items=21,
         why="the grouped and the external product are skipped (no stock of their own); the 2 variable "
             "rows are parents, not variants: 25 rows - 2 skipped - 2 parents = 21 items in 16 products",
         samples={0: {"variant": "absent"},  # the variable parent itself
                  1: {"title": "V-Neck T-Shirt"}, 2: {"title": "Hoodie"}}),  # titles come from the parent
    Case("shopify/product_template.csv", "shopify",
         samples={0: {"sku": "example-t-shirt"},  # no Variant SKU: the Handle names the variant
                  1: {"title": "Example T-Shirt"}, 2: {"title": "Example T-Shirt"}}),  # filled down
    Case("prestashop/products_import.csv", "prestashop", items=7, why="one product per row, each one variant"),
    Case("thirtybees/products_import.csv", "prestashop", items=7, why="one product per row, each one variant"),
    Case("prestashop/combinations_import.csv", "prestashop-combinations", products=4, items=27, waits=True,
         why="combinations are half of a product: pushed alone they wait for products_import.csv, but for "
             "MacBook Air's 4, which repeat a reference (test_prestashop_combinations_join_their_products)"),
    Case("thirtybees/combinations_import.csv", "prestashop-combinations", products=4, items=27, waits=True,
         why="combinations are half of a product: pushed alone they wait for products_import.csv, but for "
             "MacBook Air's 4, which repeat a reference (test_prestashop_combinations_join_their_products)"),
    Case("akeneo/products.csv", "akeneo", items=1239, images=AKENEO_IMAGES,
         why="999 standalone products + 240 variants under 68 models = 1,239 items; images: 218 of the 230 "
             "references have a file, and a picture repeated by a model's variants (same bytes) is sent "
             "once per product: 137 distinct (product, picture) pairs (_akeneo_image_pairs)"),
    Case("akeneo/non_utf8.csv", "akeneo", products=110, items=110, refused=2, refused_lines=(11, 15),
         refused_reason="invalid UTF-8 byte",  # and each line's own byte from facts.bad_lines, below
         why="Akeneo 1.x variant groups (`groups`) are not read as products (names differ per row, "
             "no model): each SKU is its own product; lines 11 and 15 hold invalid bytes",
         samples={i: {"product_key": None} for i in range(3)}),  # keyed by SKU, not by variant group
    Case("akeneo/product_models.csv", "akeneo", products=0, items=0, refused=81, file_refused=True,
         refused_reason={'the row has no product code (column "parent" is blank)': FACTS.get("akeneo/product_models.csv", {}).get("root_models"),
                         'source_variant_code is required (column "sku" is blank)': FACTS.get("akeneo/product_models.csv", {}).get("sub_models")},
         why="product models have no SKU: they are half of a product (join with products.csv later)"),
    Case("akeneo/xlsx/products_with_floats.xlsx", "akeneo-xlsx"),
    Case("akeneo/xlsx/products_with_integers.xlsx", "akeneo-xlsx"),  # number_in_stock is the qty: see _check_cells
    Case("akeneo/xlsx/products_with_numeric_strings.xlsx", "akeneo-xlsx-comma"),
    Case("akeneo/xlsx/products_with_invalid_numeric_strings.xlsx", "akeneo-xlsx-comma", products=1, items=1, refused=1,
         refused_lines=(2,), refused_reason='rate_sale "0.87" is ambiguous: "." is not the decimal separator',
         why="0.87 is written with a point in a decimal-comma file", samples={0: {"product": "absent"}}),
    Case("akeneo/xlsx/products_with_timestamp_dates.xlsx", "akeneo-xlsx"),
    Case("akeneo/xlsx/products_with_string_dates.xlsx", "akeneo-xlsx"),
    Case("akeneo/xlsx/products_with_invalid_string_dates.xlsx", "akeneo-xlsx", products=1, items=1, refused=1,
         refused_lines=(2,), refused_reason='destocking_date "2016-06-31" is not a date on the calendar',
         why="June has 30 days", samples={0: {"product": "absent"}}),
    Case("akeneo/xlsx/product_with_carriage_return.xlsx", "akeneo-xlsx"),
    Case("openboxes/products.csv", "openboxes", items=57, why="one product per row"),
    Case("openboxes/WHO_products.csv", "openboxes", products=0, items=0, refused=729, file_refused=True,
         refused_reason='the row has no product code (column "ProductCode" is blank)',
         why="no record has a ProductCode: nothing to key on"),
    Case("openboxes/mainWarehouseInventory.csv", "openboxes-inventory", items=57, waits=True,
         why="one row per product here"),
    Case("openboxes/bostonWarehouseInventory.csv", "openboxes-inventory", items=57, waits=True,
         why="one row per product here"),
    Case("openboxes/chicagoWarehouseInventory.csv", "openboxes-inventory", items=42, waits=True,
         why="one row per product here"),
    Case("openboxes/inventory_template.xls", "openboxes-inventory", items=1, lots_summed=True, waits=True,
         why="two lots of one product: their quantities are added up"),
    Case("openboxes/inventoryLevels.csv", "openboxes-levels", items=52, waits=True, why="one product per row"),
    Case("openboxes/inventoryLevelImportData.xls", "openboxes-levels", items=1495, waits=True,
         why="one product per row; the two footer rows of column counts are skipped"),
    Case("openboxes/inventory.xls", "openboxes-count", products=241, items=241, lots_summed=True,
         why="codes are trimmed (AD66 and 'AD66 ' are one product: facts.groups_after_strip); every lot "
             "and storeroom row of a product adds up into its qty"),
]


def test_every_product_file_of_the_corpus_has_a_case():
    assert sorted(c.path for c in CASES) == sorted(FACTS)


@pytest.mark.parametrize("case", CASES, ids=[c.path for c in CASES])
def test_corpus_file_through_its_preset_to_the_sandbox(make_sandbox, tmp_path, case: Case):
    facts = FACTS[case.path]
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    path = CORPUS / case.path

    started = time.perf_counter()
    plan = plan_file(path, settings, mapping=case.preset)
    outcome = pipeline_for(tmp_path, sb, settings).run_file(path, mapping=case.preset)
    took = time.perf_counter() - started
    state = sb.state()
    images = state["images"]
    print(f"\n{case.path:55} {case.preset:24} products {len(state['products']):5} "
          f"items {sum(len(p['variants']) for p in state['products']):5} images {len(images):4} "
          f"refused {len(plan.rejected):4} {took:6.2f}s")

    products = facts["groups"] if case.products is None else case.products
    # facts count "variants" only where records are grouped under products; with none (0 or
    # null) every record is a product of its own, so one item per record
    items = (facts["variants"] or facts["records"]) if case.items is None else case.items
    if case.products is not None or case.items is not None:
        assert case.why, "a deliberate difference from facts.json must say why"
    assert_every_row_once(plan)  # rows read = items + folded + refused + skipped, each row once
    assert len(plan.products) == products, case.why
    assert sum(len(p.items) for p in plan.products) == items, case.why

    # the rows refused, each with a reason a person can act on
    assert len(plan.rejected) == case.refused, [r for _, r in plan.rejected[:5]]
    assert bool(case.refused_reason) == bool(case.refused), "every refused case names its reason"
    expected = case.refused_reason if isinstance(case.refused_reason, dict) else {case.refused_reason: case.refused}
    given = {text: sum(1 for _, reason in plan.rejected if text in reason) for text in expected}
    assert given == expected, [r for _, r in plan.rejected[:5]]
    if case.refused_lines:
        assert sorted({row.line for row, _ in plan.rejected}) == list(case.refused_lines)
    for bad in facts.get("bad_lines", []):  # the byte facts found on that line is named
        reason = {row.line: r for row, r in plan.rejected}[bad["line"]]
        assert bad["problems"][0].split(" at ")[0].lower() in reason.lower(), reason
    if case.file_refused:
        assert outcome.status == "refused", outcome.message
        assert state["products"] == []
        return
    if case.waits:  # an update file alone: every row waits for its product; nothing half is sent
        assert outcome.status == "done", outcome.message
        counts = outcome.to_json()["counts"]  # rows refused once joined (a repeated reference) do not wait
        assert state["products"] == [] and counts["rows_waiting"] + counts["rows_refused"] == items
        if case.lots_summed:
            planned = {p.code: p.items[0]["product"]["variants"] for p in plan.products}
            for sample in facts["samples"]:
                assert planned[sample["product_key"].strip()]["qty"] == _lots_total(facts, sample, {}), sample
        return
    assert outcome.status == "done", outcome.message

    stored = {p["source_product_code"]: p for p in state["products"]}
    assert len(stored) == products
    assert sum(len(p["variants"]) for p in stored.values()) == items
    assert all(e["status"] == "accepted" for e in state["queue"]), [e for e in state["queue"] if e["status"] != "accepted"][:3]
    for index, sample in enumerate(facts["samples"]):
        override = case.samples.get(index, {})
        if case.lots_summed:
            override = {**override, "qty": _lots_total(facts, sample, stored)}
        _check_sample(stored, sample, override)
    _check_cells(facts, stored)
    assert len(images) == case.images
    # nothing stored was mangled: no replacement character stands in for bytes that were not text
    assert "\ufffd" not in json.dumps(state["products"], ensure_ascii=False)


def _lots_total(facts: dict, sample: dict, stored: dict[str, dict]) -> int:
    """The qty a product of added-up lots must have, from facts alone.

    facts give single rows (lots). Where its samples are every record of the file
    (inventory_template.xls: 2 of 2) the total is their sum, exactly. Otherwise (inventory.xls,
    483 rows, 3 samples) facts hold no totals, so the stored total must at least hold the
    product's sampled lots; it is then returned as found, and checked only by that bound.
    """
    key = sample["product_key"].strip()
    lots = sum(int(float(s["qty"])) for s in facts["samples"] if s["product_key"].strip() == key)
    if facts["records"] == len(facts["samples"]):
        return lots
    found = int(stored[key]["variants"][0]["qty"])
    assert found >= lots, (key, found, lots)
    return found


def _check_cells(facts: dict, stored: dict[str, dict]) -> None:
    """Workbook fixtures: each typed cell as facts.json read it, converted, is what was stored.

    rate_sale 0.87 (a number cell) or "0,87" (text, decimal comma) -> meta "0.87";
    destocking_date 2016-06-24 00:00:00 (a date cell) or "2016-06-24" -> meta "2016-06-24";
    number_in_stock 27 -> qty 27. Rows refused (held back) are not in `stored`.
    """
    header = facts.get("header") or []
    for row in facts.get("cells") or []:
        values = dict(zip(header, (c["value"] for c in row), strict=False))
        product = stored.get(values.get("sku", ""))
        if product is None:
            continue
        meta = {m["key"]: m["value"] for m in product.get("meta", [])}
        if values.get("rate_sale"):
            assert Decimal(meta["rate_sale"]) == Decimal(values["rate_sale"].replace(",", "."))
        if values.get("destocking_date"):
            assert meta["destocking_date"] == values["destocking_date"][:10]
        if values.get("number_in_stock"):
            assert product["variants"][0]["qty"] == int(Decimal(values["number_in_stock"]))


def _check_sample(stored: dict[str, dict], sample: dict, override: dict[str, Any]) -> None:
    """The sample's SKU, title, price and quantity as the sandbox stored them."""
    expected = {
        "product_key": sample["product_key"],
        "sku": sample["sku"],
        "title": sample["name"] or sample["sku"],  # files without a name column are titled by SKU
        "price": float(sample["price"]) if sample.get("price") else None,
        "qty": int(float(sample["qty"])) if sample.get("qty") else None,
        "variant": "present",
        "product": "present",
    } | override
    if expected["product"] == "absent":  # its row was refused, so its product was held back
        assert expected["product_key"] not in stored
        return
    if expected["product_key"] is not None:
        product = stored[expected["product_key"]]
    else:
        product = next(p for p in stored.values() if any(v["sku"] == expected["sku"] for v in p["variants"]))
    assert product["title"] == expected["title"]
    variants = {v["sku"]: v for v in product["variants"]}
    if expected["variant"] == "absent":
        assert expected["sku"] not in variants
        return
    variant = variants[expected["sku"]]
    if sample.get("price") is not None or "price" in override:
        assert _number(variant.get("price")) == expected["price"]
    if sample.get("qty") is not None or "qty" in override:
        assert _number(variant.get("qty")) == expected["qty"]


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def test_images_named_jpg_that_are_png_inside_are_sent_as_png(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    outcome = pipeline_for(tmp_path, sb).run_file(CORPUS / "akeneo/products.csv", mapping="akeneo")
    assert outcome.status == "done", outcome.message
    green = [i for i in sb.state()["images"] if i["image_id"].endswith("t-shirt-green.jpg")]
    assert green and all(i["format"] == "png" for i in green)
    missing = [p for p in outcome.to_json()["problems"] if p["kind"] == "image" and "no such file" in p["reason"]]
    # facts: 12 of the 230 references have no file (also counted from the csv); their products still went
    assert len(missing) == len(FACTS["akeneo/products.csv"]["image_refs"]["missing"]) == AKENEO_MISSING


def test_akeneo_weights_are_converted_by_their_unit(make_sandbox, tmp_path):
    """weight-unit KILOGRAM: 25 is 25,000 g (54 rows of the file are in kilograms)."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    outcome = pipeline_for(tmp_path, sb).run_file(CORPUS / "akeneo/products.csv", mapping="akeneo")
    assert outcome.status == "done", outcome.message
    with open(CORPUS / "akeneo/products.csv", encoding="utf-8", newline="") as f:
        kilos = {r["sku"]: r["weight"] for r in csv.DictReader(f, delimiter=";") if r["weight-unit"] == "KILOGRAM"}
    grams = {v["sku"]: v.get("grams") for p in sb.state()["products"] for v in p["variants"]}
    assert len(kilos) == 54 and grams["14120655"] == 25000
    assert all(grams[sku] == round(Decimal(w) * 1000) for sku, w in kilos.items())


def test_magento_media_paths_are_read_inside_the_image_folder_only_by_the_mapping_option(tmp_path):
    settings = Settings()
    settings.folders.mappings = tmp_path / "mappings"
    plan = plan_file(CORPUS / "magento2/products.csv", settings, mapping="magento2")
    found = [job for jobs in plan.images.values() for job in jobs]
    assert found and all(Path(job.path).is_relative_to((CORPUS / "magento2" / "images").resolve()) for job in found)
    assert not any("absolute path" in p.reason for p in plan.problems)


def _joins() -> dict[str, Any]:
    if not (CORPUS / "facts.json").is_file():
        return {}
    return json.loads((CORPUS / "facts.json").read_text(encoding="utf-8")).get("joins", {})


@pytest.mark.parametrize("order", ["products first", "stock first"])
def test_openboxes_files_join_on_product_code(make_sandbox, tmp_path, order):
    """products.csv and the three warehouse files, in either order: every product keeps products.csv's
    name and price and gets one qty_availability entry per warehouse file, qty their sum (facts.joins)."""
    join = _joins()["openboxes"]
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    pipeline = pipeline_for(tmp_path, sb)
    files = [CORPUS / name for name in join["files"]]
    if order == "stock first":
        files = files[1:] + files[:1]
    for path in files:
        preset = "openboxes" if path.name == "products.csv" else "openboxes-inventory"
        outcome = pipeline.run_file(path, mapping=preset)
        assert outcome.status == "done", outcome.message
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    assert len(stored) == join["products"]
    for code, facts in join["items"].items():
        product = stored[code]
        (variant,) = product["variants"]
        assert product["title"] == facts["name"]
        assert Decimal(str(variant["price"])) == Decimal(facts["unit_cost"])
        entries = {e["description"]: e["qty"] for e in variant["qty_availability"]}
        assert entries == facts["qty_by_warehouse_file"], code
        assert variant["qty"] == sum(facts["qty_by_warehouse_file"].values())
    assert pipeline.ledger.waiting_rows(pipeline.endpoint) == []


@pytest.mark.parametrize("system", ["prestashop", "thirtybees"])
@pytest.mark.parametrize("order", ["products first", "combinations first"])
def test_prestashop_combinations_join_their_products(make_sandbox, tmp_path, system, order):
    """products_import.csv and combinations_import.csv in either order: each combination is a variant of its
    Product ID's product, with its title and price + Impact on price (facts.joins); the product's own row is
    retired. MacBook Air (3) repeats a reference and an option combination in the export itself: it is held
    back with that reason, so 3 products / 23 combinations reach the API."""
    join = _joins()[system]
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    pipeline = pipeline_for(tmp_path, sb)
    files = [(CORPUS / join["files"][0], "prestashop"), (CORPUS / join["files"][1], "prestashop-combinations")]
    if order == "combinations first":
        files.reverse()
    outcomes = [pipeline.run_file(path, mapping=preset) for path, preset in files]
    assert all(o.status == "done" for o in outcomes), [o.message for o in outcomes]
    combinations = outcomes[1 if order == "products first" else 0].to_json()
    assert any("RP-MacBookAir" in p["reason"] for p in combinations["problems"]
               if p["severity"] == "error" and p.get("product") == "3"), combinations["problems"][:3]
    assert combinations["counts"]["rows_refused"] == 4
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    combined = 0
    for product_id, facts in join["products"].items():
        if product_id == "3":
            continue
        product = stored[product_id]
        assert product["title"] == facts["product_name"]
        variants = {v["source_variant_code"]: v for v in product["variants"]}
        assert len(variants) == len(facts["combinations"])  # the product's own row is retired
        for combination in facts["combinations"]:
            variant = variants[combination["reference"]]
            assert Decimal(str(variant["price"])) == Decimal(combination["price"]), combination
            assert variant["qty"] == int(combination["qty"])
            options = [o["name"] for o in sorted(product["options"], key=lambda o: o["position"])]
            assert [variant[f"option{i}"] for i in range(1, len(options) + 1)] == list(
                combination["options"].values())
        combined += len(variants)
    assert combined == join["combinations"] - 4  # MacBook Air's 4 combinations held back
    sent = [e for e in sb.state()["queue"] if e["kind"] == "product" and e["source_product_code"] == "1"]
    assert sum(1 for e in sent if e["source_variant_code"] == "RP-Nano-Blue-16GB") == 1  # each combination once


@pytest.mark.parametrize("order", ["models first", "products first"])
def test_akeneo_products_join_their_root_models(make_sandbox, tmp_path, order):
    """product_models.csv and products.csv in either order: a product naming a model is a variant of its
    root model (two levels, codes ignoring case), with the root's fields (facts.joins.akeneo). One root,
    model-biker-jacket, is held back: its leather and polyester sub-models differ on material, which is not
    one of the preset's options, so two of its variants repeat an option combination (the reason is given)."""
    join = _joins()["akeneo"]
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    pipeline = pipeline_for(tmp_path, sb)
    files = [(CORPUS / join["files"][0], "akeneo-models"), (CORPUS / join["files"][1], "akeneo-products")]
    if order == "products first":
        files.reverse()
    outcomes = [pipeline.run_file(path, mapping=preset) for path, preset in files]
    assert all(o.status == "done" for o in outcomes), [o.message for o in outcomes]
    problems = [p for o in outcomes for p in o.to_json()["problems"] if p["severity"] == "error"]
    assert {p["product"] for p in problems} == {"model-biker-jacket"}
    assert all("repeats the options" in p["reason"] or "held back" in p["reason"] for p in problems)
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    variants = {v["source_variant_code"]: code for code, p in stored.items() for v in p["variants"]}
    with open(CORPUS / join["files"][1], encoding="utf-8", newline="") as f:
        parents = {r["sku"]: r["parent"] for r in csv.DictReader(f, delimiter=";") if r["parent"]}
    under_models = [sku for sku in parents if sku in variants]
    roots = {variants[sku] for sku in under_models}
    assert len(under_models) == join["products_with_parent"] - 6  # model-biker-jacket's 6 variants held back
    assert len(roots) == join["root_models_used"] - 1
    for sku, facts in join["samples"].items():
        product = stored[variants[sku]]
        assert product["source_product_code"] == facts["root_model"], sku
        assert product["collection"] == facts["root_collection"]
    # products first: model-biker-jacket's rows waited, and wait on since their product was held back
    waiting = pipeline.ledger.waiting_rows(pipeline.endpoint)
    assert len(waiting) == (6 if order == "products first" else 0)
    assert {w.value.casefold() for w in waiting} <= {"model-biker-jacket-leather", "model-biker-jacket-polyester"}
