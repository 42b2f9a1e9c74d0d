"""Defects found in review of the merged round (catalogue, update files, joins), shown end to end.

A test still marked xfail(strict=True) shows a defect not fixed yet: it turns the suite red
(XPASS) once the defect is fixed, so the mark is then removed. The others guard the fixes.
"""

from __future__ import annotations

import shutil

import openpyxl
import pytest

from connector.config import Rule
from connector.report import summarise, write_report_files
from tests.support import pipeline_for
from tests.test_catalogue import copy_corpus, stock_settings, stored


def test_a_changed_product_file_after_the_warehouse_files_keeps_their_stock(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.rules = [Rule(pattern="*WarehouseInventory.csv", mapping="warehouse-stock", warehouse="{stem}")]
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    assert pipeline.run_file(drop / "mainWarehouseInventory.csv").status == "done"
    text = (drop / "products.csv").read_text(encoding="utf-8")  # the nightly export: one title changed
    (drop / "products.csv").write_text(text.replace("Morphine 10mg immediate release tablet", "Morphine 10 mg"),
                                       encoding="utf-8")
    again = pipeline.run_file(drop / "products.csv", mapping="openboxes")
    assert again.status == "done" and again.to_json()["counts"]["items_sent"] == 1  # only the changed title
    (ts894,) = stored(fast_sandbox)["TS894"]["variants"]  # a product whose row did not change at all
    assert ts894["qty_availability"] == [{"description": "mainWarehouseInventory", "qty": 2000}]
    assert ts894["qty"] == 2000


def test_a_field_the_full_file_maps_and_leaves_blank_is_blank_though_an_update_set_it(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "mappings" / "shop-prices.yaml").write_text(
        "name: shop-prices\nmode: update\ngroup_by: id\n"
        "variant: {source_variant_code: ref, price: {column: price, type: decimal}, qty: {column: qty, type: int}}\n",
        encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\n", encoding="utf-8")
    (tmp_path / "prices.csv").write_text("id,ref,price,qty\nP8,P8-own,120,7\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    assert pipeline.run_file(tmp_path / "prices.csv", mapping="shop-prices").status == "done"
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget 2,P8-own,\n", encoding="utf-8")
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    (variant,) = stored(fast_sandbox)["P8"]["variants"]
    assert "price" not in variant or variant["price"] is None  # mapped, blank on purpose: the file's truth
    assert variant["qty"] == 7  # not mapped by the product file: the update's value is kept


def test_the_same_bytes_as_another_warehouse_file_are_that_warehouse_s_stock(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "bostonWarehouseInventory.csv")
    shutil.copy(drop / "bostonWarehouseInventory.csv", drop / "denverWarehouseInventory.csv")
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.rules = [Rule(pattern="*WarehouseInventory.csv", mapping="warehouse-stock", warehouse="{stem}")]
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    assert pipeline.run_file(drop / "bostonWarehouseInventory.csv").status == "done"
    assert pipeline.run_file(drop / "denverWarehouseInventory.csv").status == "done"
    (qx039,) = stored(fast_sandbox)["QX039"]["variants"]
    assert {e["description"] for e in qx039["qty_availability"]} == {"bostonWarehouseInventory",
                                                                     "denverWarehouseInventory"}


UPDATE = """
name: big-stock
mode: update
group_by: code
variant:
  source_variant_code: code
  qty: {column: qty, type: int}
  qty_availability: {columns: "^wh_(?P<warehouse>.+)$", type: int}
"""
FULL = """
name: big-products
group_by: code
product: {title: title, body_html: body}
variant: {source_variant_code: code, sku: code, price: price}
"""


def test_an_oversized_merged_item_beside_a_waiting_row_keeps_every_row_accounted(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.batch.max_bytes = 64 * 1024
    (tmp_path / "mappings" / "big-stock.yaml").write_text(UPDATE, encoding="utf-8")
    (tmp_path / "mappings" / "big-products.yaml").write_text(FULL, encoding="utf-8")
    (tmp_path / "p.csv").write_text(f"code,title,body,price\nBIG1,Big,{'x' * 64900},10\nSMALL1,Small,,5\n",
                                    encoding="utf-8")
    warehouses = [f"wh_warehouse_number_{i:03d}" for i in range(40)]
    (tmp_path / "s.csv").write_text(
        "code,qty," + ",".join(warehouses) + "\n" + "".join(
            f"{code},5," + ",".join("1000" for _ in warehouses) + "\n" for code in ("BIG1", "SMALL1", "UNKNOWN1")),
        encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "p.csv", mapping="big-products").status == "done"
    report = pipeline.run_file(tmp_path / "s.csv", mapping="big-stock").to_json()
    assert not [p for p in report["problems"] if p["kind"] == "accounting"]
    assert report["rows"]["read"] == 3 and report["counts"]["rows_waiting"] == 1
    assert report["rows"]["refused"] == 1 and report["counts"]["products_held_back"] == 1  # BIG1, too big merged


PRODUCTS = """
name: shop-products
group_by: id
product: {title: name}
variant: {source_variant_code: ref, sku: ref, price: {column: price, type: decimal}}
"""
COMBINATIONS = """
name: shop-combinations
group_by: id
join: {add: [price]}
variant: {source_variant_code: ref, sku: ref, price: {column: impact, type: decimal}}
options:
  - {name: Size, value: size}
"""


def test_a_combination_cheaper_than_its_product_goes_at_the_product_s_price_less_the_impact(fast_sandbox,
                                                                                            tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\n", encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-S,S,-10\nP8,P8-L,L,0\n",
                                               encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    outcome = pipeline.run_file(tmp_path / "combinations.csv", mapping="shop-combinations")
    assert outcome.status == "done", outcome.message
    prices = {v["source_variant_code"]: v["price"] for v in stored(fast_sandbox)["P8"]["variants"]}
    assert prices == {"P8-S": 90.0, "P8-L": 100.0}


def test_two_stock_files_before_their_products_the_newer_figure_goes(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    text = (drop / "mainWarehouseInventory.csv").read_text(encoding="utf-8")
    (drop / "mainWarehouseInventory.csv").rename(drop / "stock-0800.csv")
    (drop / "stock-0815.csv").write_text(text.replace(",100000,", ",5,"), encoding="utf-8")
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.rules = [Rule(pattern="stock-*.csv", mapping="warehouse-stock", warehouse="main")]
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(drop / "stock-0800.csv").status == "done"  # both wait for their products
    assert pipeline.run_file(drop / "stock-0815.csv").status == "done"
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    (qx039,) = stored(fast_sandbox)["QX039"]["variants"]
    assert qx039["qty_availability"] == [{"description": "main", "qty": 5}] and qx039["qty"] == 5


def test_a_product_deleted_in_the_product_file_retires_its_combinations(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(
        PRODUCTS + "active: {column: active, active: ['1'], delete: ['0']}\n", encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price,active\nP8,Widget,P8-own,100,1\n", encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-S,S,0\nP8,P8-L,L,5\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    assert pipeline.run_file(tmp_path / "combinations.csv", mapping="shop-combinations").status == "done"
    assert {v["source_variant_code"] for v in stored(fast_sandbox)["P8"]["variants"]} == {"P8-S", "P8-L"}
    (tmp_path / "products.csv").write_text("id,name,ref,price,active\nP8,Widget,P8-own,100,0\n", encoding="utf-8")
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    assert "P8" not in stored(fast_sandbox) or not any(v["active"] for v in stored(fast_sandbox)["P8"]["variants"])


def test_the_same_complete_product_file_again_deletes_nothing(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(
        PRODUCTS + "complete: true\nvanished: delete\nmax_vanished: 10\nimages: {pattern: ['{sku}.jpg']}\n",
        encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\nP9,Gadget,P9-own,50\n",
                                           encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-S,S,0\nP8,P8-L,L,5\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    assert pipeline.run_file(tmp_path / "combinations.csv", mapping="shop-combinations").status == "done"
    pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")  # the same nightly file once more
    assert {v["source_variant_code"] for v in stored(fast_sandbox)["P8"]["variants"]} == {"P8-S", "P8-L"}


def test_an_error_page_saved_as_the_complete_export_is_refused_and_deletes_nothing(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(
        PRODUCTS + "complete: true\nvanished: delete\nmax_vanished: 10\n", encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\nP9,Gadget,P9-own,50\n",
                                           encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    (tmp_path / "products.csv").write_text("<html><body>Error 500</body></html>\n", encoding="utf-8")
    outcome = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")
    assert outcome.status == "refused"
    assert set(stored(fast_sandbox)) == {"P8", "P9"}


def test_a_complete_export_with_its_header_and_no_rows_is_refused_and_deletes_nothing(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(
        PRODUCTS + "complete: true\nvanished: delete\nmax_vanished: 10\n", encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="shop-products").status == "done"
    (tmp_path / "products.csv").write_text("id,name,ref,price\n", encoding="utf-8")  # the export stopped early
    outcome = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")
    assert outcome.status == "refused" and "no data rows" in outcome.message
    assert stored(fast_sandbox)["P8"]["variants"][0]["active"]


@pytest.mark.parametrize("order", ["products first", "combinations first"])
def test_a_combination_of_a_product_without_price_is_refused_saying_so(fast_sandbox, tmp_path, order):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,\nP9,Gadget,P9-own,50\n",
                                           encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-S,S,-10\nP8,P8-L,L,0\nP9,P9-S,S,5\n",
                                               encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    files = [("products.csv", "shop-products"), ("combinations.csv", "shop-combinations")]
    outcomes = [pipeline.run_file(tmp_path / name, mapping=m) for name, m in
                (files if order == "products first" else files[::-1])]
    assert all(o.status == "done" for o in outcomes), [o.message for o in outcomes]
    prices = {v["source_variant_code"]: v.get("price") for v in stored(fast_sandbox)["P9"]["variants"] if v["active"]}
    assert prices == {"P9-S": 55.0}
    p8 = [v for v in stored(fast_sandbox).get("P8", {}).get("variants", []) if v["active"]]
    assert not [v for v in p8 if v["source_variant_code"] == "P8-S"]  # never sent at -10 as if it were a price
    reasons = [p["reason"] for o in outcomes for p in o.to_json()["problems"] if p["kind"] == "join"]
    assert reasons and "product P8 has no price" in reasons[0]
    assert not [p for o in outcomes for p in o.to_json()["problems"] if p["kind"] == "accounting"]


def test_a_fixed_rejected_warehouse_workbook_is_that_warehouse_s_stock(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "bostonWarehouseInventory.csv")
    text = (drop / "bostonWarehouseInventory.csv").read_text(encoding="utf-8")
    (drop / "bostonWarehouseInventory.csv").write_text(text.replace(",3000,", ",7x0,", 1), encoding="utf-8")
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.rules = [Rule(pattern="*WarehouseInventory.csv", mapping="warehouse-stock", warehouse="{stem}")]
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    first = pipeline.run_file(drop / "bostonWarehouseInventory.csv")
    assert first.status == "done" and first.counts.rows_refused == 1
    reasons = [r.reason for r in first.rejected]
    assert any('bostonWarehouseInventory "7x0"' in r for r in reasons), reasons  # the name, not "{warehouse}"
    (tmp_path / "reports").mkdir()
    write_report_files(first, tmp_path / "reports" / "bostonWarehouseInventory.csv")
    workbook = openpyxl.load_workbook(tmp_path / "reports" / "bostonWarehouseInventory.csv.rejected.xlsx")
    ws = workbook.active
    column = [c.value for c in ws[1]].index("Physical QOH")
    row = next(r for r in ws.iter_rows(min_row=2) if r[column].value == "7x0")
    row[column].value = "70"
    workbook.save(drop / "bostonWarehouseInventory.csv.rejected.xlsx")  # fixed and dropped back
    again = pipeline.run_file(drop / "bostonWarehouseInventory.csv.rejected.xlsx")
    assert again.status == "done", again.message
    (qx039,) = stored(fast_sandbox)["QX039"]["variants"]
    assert {e["description"] for e in qx039["qty_availability"]} == {"bostonWarehouseInventory"}


def test_the_summary_of_a_push_that_deleted_products_says_how_many(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(
        PRODUCTS + "complete: true\nvanished: delete\nmax_vanished: 10\n", encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\nP9,Gadget,P9-own,50\n",
                                           encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    first = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")
    assert first.status == "done" and "vanished" not in summarise(first)
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP8,Widget,P8-own,100\n", encoding="utf-8")
    outcome = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")
    assert outcome.status == "done" and "P9" not in stored(fast_sandbox)  # retired at the API
    assert "products vanished (not in this complete file): 1; deleted: 1" in summarise(outcome)


def test_a_full_file_keeps_the_warehouses_it_has_no_column_for_and_sums_them_again(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "wh-products.yaml").write_text("""
name: wh-products
group_by: code
product: {title: title}
variant:
  source_variant_code: code
  sku: code
  qty_availability: {columns: "^wh_(?P<warehouse>.+)$", type: int}
  qty: {sum: qty_availability}
""", encoding="utf-8")
    (tmp_path / "mappings" / "cpt-stock.yaml").write_text("""
name: cpt-stock
mode: update
group_by: code
variant:
  source_variant_code: code
  qty_availability: {entries: [{name: cpt, value: {column: qty, type: int}}]}
  qty: {sum: qty_availability}
""", encoding="utf-8")
    (tmp_path / "products.csv").write_text("code,title,wh_jhb\nA1,Kettle,3\n", encoding="utf-8")
    (tmp_path / "cpt.csv").write_text("code,qty\nA1,4\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="wh-products").status == "done"
    assert pipeline.run_file(tmp_path / "cpt.csv", mapping="cpt-stock").status == "done"
    (tmp_path / "products.csv").write_text("code,title,wh_jhb\nA1,Kettle 2L,5\n", encoding="utf-8")
    assert pipeline.run_file(tmp_path / "products.csv", mapping="wh-products").status == "done"
    (a1,) = stored(fast_sandbox)["A1"]["variants"]
    assert {e["description"]: e["qty"] for e in a1["qty_availability"]} == {"jhb": 5, "cpt": 4} and a1["qty"] == 9
    (tmp_path / "products.csv").write_text("code,title,wh_jhb\nA1,Kettle 2L,\n", encoding="utf-8")  # jhb: blank
    assert pipeline.run_file(tmp_path / "products.csv", mapping="wh-products").status == "done"
    (a1,) = stored(fast_sandbox)["A1"]["variants"]
    assert a1["qty_availability"] == [{"description": "cpt", "qty": 4}] and a1["qty"] == 4
