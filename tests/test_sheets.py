"""Workbooks read with `sheet: "*"`: rows are keyed by (sheet, line), so the same line on two sheets
is two rows, in the row accounting and in the rejected-rows files alike."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import openpyxl
import pytest

from connector.config import Settings
from connector.mapping import parse_mapping
from connector.pipeline import plan_file
from connector.report import Report, write_report_files
from tests.support import assert_every_row_once, pipeline_for, settings_for, workbook

MAPPING = {"source": {"sheet": "*"}, "group_by": "code", "product": {"title": "title"},
           "variant": {"source_variant_code": "sku", "sku": "sku", "price": "price"}}


HEADER = ["code", "sku", "title", "price"]


def two_sheets(tmp_path: Path) -> Path:
    return workbook(tmp_path / "stock.xlsx", {
        "Johannesburg": [HEADER, ["P1", "S1", "Mug", "10"], ["P2", "S2", "Jug", "x1"], ["P3", "S3", "Cup", "5"]],
        "Cape Town": [HEADER, ["P4", "S4", "Pot", "7"], ["P5", "S5", "Pan", "y2"], ["P6", "S6", "Lid", "3"]],
    })


def test_the_same_line_refused_on_two_sheets_is_two_refused_rows(tmp_path):
    plan = plan_file(two_sheets(tmp_path), Settings(), mapping=parse_mapping(MAPPING))
    rows = assert_every_row_once(plan)
    assert (rows.read, rows.items, rows.refused) == (6, 4, 2) and rows.balanced
    assert [(r.row.sheet, r.row.line, r.row.cells["code"]) for r in plan.rejected] == [
        ("Johannesburg", 3, "P2"), ("Cape Town", 3, "P5")]
    assert not any(p.kind == "accounting" for p in plan.problems)


def test_a_product_held_back_on_one_sheet_refuses_its_rows_there_only(tmp_path):
    """P1 has a row on each sheet, at the same line; its bad price on Cape Town holds both back."""
    path = workbook(tmp_path / "split.xlsx", {
        "A": [HEADER, ["P1", "S1", "Mug", "10"], ["P2", "S2", "Jug", "4"]],
        "B": [HEADER, ["P1", "S1b", "Mug", "z"], ["P3", "S3", "Cup", "5"]],
    })
    plan = plan_file(path, Settings(), mapping=parse_mapping(MAPPING))
    assert plan.rows.refused == 2 and plan.rows.items == 2 and plan.rows.balanced
    refused = {(r.row.sheet, r.row.line): r.reason for r in plan.rejected}
    assert set(refused) == {("A", 2), ("B", 2)}
    assert refused[("A", 2)] == "product P1 held back because of sheet 'B', row 2"
    assert refused[("B", 2)].startswith('price "z" is not a number')


def test_duplicate_variant_codes_on_two_sheets_name_each_row(tmp_path):
    path = workbook(tmp_path / "dup.xlsx", {
        "A": [HEADER, ["P1", "S1", "Mug", "10"]],
        "B": [HEADER, ["P2", "S1", "Jug", "4"]],
    })
    plan = plan_file(path, Settings(), mapping=parse_mapping(MAPPING))
    assert plan.rows.refused == 2 and plan.rows.balanced
    assert {(r.row.sheet, r.row.line) for r in plan.rejected} == {("A", 2), ("B", 2)}
    assert {p.sheet for p in plan.problems if p.kind == "duplicate"} == {"A", "B"}


def test_rejected_files_hold_both_rows_with_their_sheet_and_read_back(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "stock.yaml").write_text(textwrap.dedent("""
        source: {sheet: "*"}
        group_by: code
        product: {title: title}
        variant: {source_variant_code: sku, sku: sku, price: price}
    """), encoding="utf-8")
    settings = settings_for(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings).run_file(two_sheets(tmp_path), mapping="stock")
    assert first.status == "done" and first.counts.items_sent == 4 and first.counts.rows_refused == 2
    assert first.rows is not None and first.rows.balanced
    write_report_files(first, tmp_path / "stock.xlsx")

    with open(tmp_path / "stock.xlsx.rejected.csv", encoding="utf-8-sig", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == [*HEADER, "sheet", "row", "line", "reason"]
    assert [(r[0], r[4], r[5]) for r in table[1:]] == [("P2", "Johannesburg", "3"), ("P5", "Cape Town", "3")]

    wb = openpyxl.load_workbook(tmp_path / "stock.xlsx.rejected.xlsx")
    assert wb.sheetnames == ["Johannesburg", "Cape Town"]  # each row on a sheet named as its own
    for name, price in (("Johannesburg", "11"), ("Cape Town", "12")):
        ws = wb[name]
        assert [c.value for c in ws[1]][:4] == HEADER and ws.max_row == 2
        ws["D2"].value = price
    wb.save(tmp_path / "fixed.xlsx")
    again = pipeline_for(tmp_path, sb, settings).run_file(tmp_path / "fixed.xlsx", mapping="stock")
    assert again.status == "done" and again.counts.items_sent == 2 and again.counts.rows_refused == 0
    prices = {v["sku"]: v["price"] for p in sb.state()["products"] for v in p["variants"]}
    assert prices["S2"] == 11 and prices["S5"] == 12


def test_the_report_keeps_the_sheet_of_each_refused_row_in_the_ledger(tmp_path):
    plan = plan_file(two_sheets(tmp_path), Settings(), mapping=parse_mapping(MAPPING))
    report = plan.fill(Report(file="stock.xlsx"))
    data, rejected = report.to_ledger()
    again = Report.from_ledger(data, rejected)
    assert [(r.row.sheet, r.row.line) for r in again.rejected] == [("Johannesburg", 3), ("Cape Town", 3)]


def test_an_update_workbook_of_several_sheets_refuses_a_merged_row_on_its_own_sheet(make_sandbox, tmp_path):
    """Rows refused once merged with the catalogue (a price below 0) are found on their sheet too."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "full.yaml").write_text(textwrap.dedent("""
        group_by: code
        product: {title: title, vendor: brand}
        variant: {source_variant_code: sku, sku: sku, price: price}
    """), encoding="utf-8")
    (tmp_path / "mappings" / "prices.yaml").write_text(textwrap.dedent("""
        mode: update
        update: {clear: "-"}
        source: {sheet: "*"}
        group_by: code
        product: {vendor: brand}
        variant: {source_variant_code: sku, price: price}
    """), encoding="utf-8")
    settings = settings_for(tmp_path, sb)
    full = tmp_path / "full.csv"
    full.write_text("code,sku,title,brand,price\nP1,S1,Mug,Acme,10\nP2,S2,Jug,Acme,4\n", encoding="utf-8")
    assert pipeline_for(tmp_path, sb, settings).run_file(full, mapping="full").status == "done"
    path = workbook(tmp_path / "prices.xlsx", {
        "A": [["code", "sku", "brand", "price"], ["P1", "S1", "Bolt", "12"]],
        "B": [["code", "sku", "brand", "price"], ["P2", "S2", "-", "-5"]],
    })
    report = pipeline_for(tmp_path, sb, settings).run_file(path, mapping="prices")
    assert report.status == "done", report.message
    assert [(r.row.sheet, r.row.line, r.row.cells["price"]) for r in report.rejected] == [("B", 2, "-5")]
    assert report.rows is not None and (report.rows.items, report.rows.refused) == (1, 1) and report.rows.balanced
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    assert stored["P1"]["variants"][0]["price"] == 12 and stored["P1"]["vendor"] == "Bolt"  # not cleared by B's "-"
    assert stored["P2"]["variants"][0]["price"] == 4


@pytest.mark.parametrize("sheet", [1, "Stock"])
def test_a_rejected_workbook_of_a_sheet_chosen_by_position_or_name_reads_back(make_sandbox, tmp_path, sheet):
    """A mapping reading one sheet of several (`sheet: 1`, `sheet: Stock`) reads its own rejected.xlsx
    once a person fixed it: the refused rows are where that mapping looks for them."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "stock.yaml").write_text(textwrap.dedent(f"""
        source: {{sheet: {sheet}}}
        group_by: code
        product: {{title: title}}
        variant: {{source_variant_code: sku, sku: sku, price: price}}
    """), encoding="utf-8")
    export = workbook(tmp_path / "stock.xlsx", {
        "Read me": [["Stock export of the Johannesburg warehouse"]],
        "Stock": [HEADER, ["P1", "S1", "Mug", "10"], ["P2", "S2", "Jug", "x1"]],
        "Totals": [["lines", "2"]],
    })
    settings = settings_for(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings).run_file(export, mapping="stock")
    assert first.counts.items_sent == 1 and first.counts.rows_refused == 1
    write_report_files(first, tmp_path / "stock.xlsx")

    wb = openpyxl.load_workbook(tmp_path / "stock.xlsx.rejected.xlsx")
    ws = wb.worksheets[1] if sheet == 1 else wb[sheet]
    assert [c.value for c in ws[1]][:4] == HEADER and ws["B2"].value == "S2" and ws["D2"].value == "x1"
    ws["D2"].value = "11"  # fixed by a person
    wb.save(tmp_path / "fixed.xlsx")
    again = pipeline_for(tmp_path, sb, settings).run_file(tmp_path / "fixed.xlsx", mapping="stock")
    assert again.status == "done" and again.counts.items_sent == 1 and again.counts.rows_refused == 0
    assert {v["sku"]: v["price"] for p in sb.state()["products"] for v in p["variants"]} == {"S1": 10, "S2": 11}


def test_a_merged_product_held_back_while_batching_refuses_its_row_on_its_own_sheet(make_sandbox, tmp_path):
    """Pipeline._changed hands the batching products without their sheets; a product held back there is
    taken from the plan's own products, which keep them: B's line 2 is refused on B, A's line 2 goes. The
    update finds its rows by SKU, so the product's code (P2) is not a code the file was built with."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "full.yaml").write_text(textwrap.dedent("""
        group_by: code
        product: {title: title, vendor: brand}
        variant: {source_variant_code: sku, sku: sku, price: price}
    """), encoding="utf-8")
    (tmp_path / "mappings" / "brands.yaml").write_text(textwrap.dedent("""
        mode: update
        update: {key: sku}
        source: {sheet: "*"}
        group_by: sku
        product: {vendor: brand, product_type: kind, collection: range}
        variant: {sku: sku}
    """), encoding="utf-8")
    settings = settings_for(tmp_path, sb)
    settings.batch.max_bytes = 64 * 1024  # (a cell holds at most 32,767 characters: three make the item too big)
    full = tmp_path / "full.csv"
    full.write_text("code,sku,title,brand,price\nP1,S1,Mug,Acme,10\nP2,S2,Jug,Acme,4\n", encoding="utf-8")
    assert pipeline_for(tmp_path, sb, settings).run_file(full, mapping="full").status == "done"
    path = workbook(tmp_path / "brands.xlsx", {
        "A": [["sku", "brand", "kind", "range"], ["S1", "Bolt", "", ""]],
        "B": [["sku", "brand", "kind", "range"], ["S2", "x" * 30000, "y" * 30000, "z" * 30000]],
    })
    report = pipeline_for(tmp_path, sb, settings).run_file(path, mapping="brands")
    assert report.status == "done", report.message
    assert report.counts.products_held_back == 1 and report.counts.items_sent == 1
    assert [(r.row.sheet, r.row.line, r.row.cells["sku"]) for r in report.rejected] == [("B", 2, "S2")]
    assert report.rejected[0].reason.startswith("product P2 held back: an item is ")
    assert report.rows is not None and (report.rows.items, report.rows.refused) == (1, 1) and report.rows.balanced
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    assert stored["P1"]["vendor"] == "Bolt" and stored["P2"]["vendor"] == "Acme"


def test_a_column_one_sheet_lacks_is_missing_on_that_sheet(tmp_path):
    """Each sheet is mapped with its own header: a column another sheet has does not make it blank here."""
    path = workbook(tmp_path / "stores.xlsx", {
        "A": [HEADER, ["P1", "S1", "Mug", "10"]],
        "B": [["code", "sku", "title"], ["P2", "S2", "Jug"]],
    })
    plan = plan_file(path, Settings(), mapping=parse_mapping(MAPPING))
    missing = [(p.sheet, p.column, p.severity) for p in plan.problems if p.kind == "column"]
    assert missing == [("B", "price", "warning")]
    assert sorted(p.code for p in plan.products) == ["P1", "P2"]

    refused = plan_file(path, Settings(), mapping=parse_mapping({**MAPPING, "missing_columns": "error"}))
    assert [(p.sheet, p.column, p.severity) for p in refused.problems if p.kind == "column"] == [("B", "price", "error")]
    assert refused.products == []


def test_rejected_files_of_sheets_with_different_headers_hold_each_row_under_its_columns(tmp_path):
    path = workbook(tmp_path / "mixed.xlsx", {
        "A": [HEADER, ["P1", "S1", "Mug", "x1"], ["P2", "S2", "Jug", "4"]],
        "B": [["CODE", "SKU", "Title", "Price", "Bin"], ["P3", "S3", "Cup", "y2", "B7"]],
    })
    plan = plan_file(path, Settings(), mapping=parse_mapping(MAPPING))
    assert [(r.row.sheet, r.row.line, dict(r.row.cells)) for r in plan.rejected] == [
        ("A", 2, {"code": "P1", "sku": "S1", "title": "Mug", "price": "x1"}),
        ("B", 2, {"CODE": "P3", "SKU": "S3", "Title": "Cup", "Price": "y2", "Bin": "B7"})]
    assert [p.code for p in plan.products] == ["P2"]
    report = plan.fill(Report(file="mixed.xlsx"))
    write_report_files(report, tmp_path / "mixed.xlsx")
    wb = openpyxl.load_workbook(tmp_path / "mixed.xlsx.rejected.xlsx")
    assert [[c.value for c in wb[name][1]] for name in ("A", "B")] == [  # each sheet under its own header
        [*HEADER, "line", "reason"], ["CODE", "SKU", "Title", "Price", "Bin", "line", "reason"]]
    assert [c.value for c in wb["B"][2]][:5] == ["P3", "S3", "Cup", "y2", "B7"]
