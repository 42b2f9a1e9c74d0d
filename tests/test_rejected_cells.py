"""Records the reader refuses keep what could be read of them in the rejected-rows files, and a
file without a header row gets rejected files that the same mapping reads back."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import openpyxl

from connector.config import Settings
from connector.mapping import parse_mapping
from connector.pipeline import plan_file
from connector.read import MAX_LISTED_PER_KIND
from connector.report import Report, write_report_files
from tests.support import assert_every_row_once, pipeline_for, settings_for

MAPPING = parse_mapping({"group_by": "code", "product": {"title": "title"},
                         "variant": {"source_variant_code": "sku", "sku": "sku", "price": "price"}})


def rejected_csv(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[list[str]]:
    with open(path, encoding=encoding, newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def test_records_the_reader_refuses_keep_their_cells_in_the_rejected_files(tmp_path):
    lines = [b"code,sku,title,price"]
    lines += [f"P{i},S{i},Caf\u00e9 cr\u00e8me {i},10".encode() for i in range(20)]  # UTF-8 accents
    lines.insert(5, b"Q1,T1,Cr\xe8me br\xfbl\xe9e,12")  # cp1252 bytes in a UTF-8 file: refused
    lines.insert(8, b"Q2,T2,Mug,1,299.50")  # a thousands comma: one field too many
    data = b"\n".join(lines) + b"\nQ3,T3,Cut"  # the last record cut short
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    plan = plan_file(path, Settings(), mapping=MAPPING)
    assert_every_row_once(plan)
    assert plan.rows.refused == 3 and plan.rows.items == 20
    refused = {r.row.line: r for r in plan.rejected}
    assert refused[6].row.cells == {"code": "Q1", "sku": "T1", "title": "Cr\ufffdme br\ufffdl\ufffde", "price": "12"}
    assert refused[9].row.cells == {"code": "Q2", "sku": "T2", "title": "Mug", "price": "1"}
    assert refused[9].reason.endswith("extra values are not read: 299.50")
    assert refused[24].row.cells == {"code": "Q3", "sku": "T3", "title": "Cut", "price": ""}
    assert refused[6].row.row_number == 6

    report = plan.fill(Report(file="export.csv"))
    write_report_files(report, tmp_path / "export.csv")
    table = rejected_csv(tmp_path / "export.csv.rejected.csv")
    assert [row[:4] for row in table[1:]] == [["Q1", "T1", "Cr\ufffdme br\ufffdl\ufffde", "12"],
                                             ["Q2", "T2", "Mug", "1"], ["Q3", "T3", "Cut", ""]]
    ws = openpyxl.load_workbook(tmp_path / "export.csv.rejected.xlsx").active
    assert [c.value for c in ws[2]][:4] == ["Q1", "T1", "Cr\ufffdme br\ufffdl\ufffde", "12"]


def test_cells_of_refused_records_are_kept_for_the_first_ones_only(tmp_path):
    """A hostile file of refused records keeps the cells of the first few; every one is counted."""
    good = [f"P{i},S{i},Tee,10" for i in range(10)]
    bad = [f"Q{i},T{i},Mug,5,extra" for i in range(MAX_LISTED_PER_KIND + 500)]
    path = tmp_path / "wide.csv"
    path.write_text("code,sku,title,price\n" + "\n".join(good + bad) + "\n", encoding="utf-8")
    plan = plan_file(path, Settings(), mapping=MAPPING)
    assert plan.table.rows_refused == MAX_LISTED_PER_KIND + 500
    assert len(plan.table.refused_rows) == MAX_LISTED_PER_KIND
    assert plan.rows.refused == MAX_LISTED_PER_KIND + 500 and plan.rows.balanced
    assert all(r.row.cells for r in plan.rejected)


HEADERLESS = """
    source: {header: none, decimal: ",", delimiter: ";", encoding: cp1252}
    group_by: 1
    product: {title: 2}
    variant:
      source_variant_code: 1
      sku: 1
      price: {column: 3, type: decimal}
"""


def test_a_headerless_files_rejected_files_have_no_header_and_read_back(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "plain.yaml").write_text(textwrap.dedent(HEADERLESS), encoding="utf-8")
    export = tmp_path / "plain.csv"
    export.write_text('"00471";"Mug";"79,95"\n"00472";"Théière";"12,5O"\n"00473";"Cup";"x"\n', encoding="cp1252")
    settings = settings_for(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings).run_file(export, mapping="plain")
    assert first.status == "done" and first.counts.items_sent == 1 and first.counts.rows_refused == 2
    (tmp_path / "reports").mkdir()
    write_report_files(first, tmp_path / "reports" / "plain.csv")
    assert Report.from_ledger(*first.to_ledger()).header_row == 0  # the final report, read back, has no header

    table = rejected_csv(tmp_path / "reports" / "plain.csv.rejected.csv", ";", "cp1252")  # as the mapping names
    assert [row[:3] for row in table] == [["00472", "Théière", "12,5O"], ["00473", "Cup", "x"]]  # no header row
    ws = openpyxl.load_workbook(tmp_path / "reports" / "plain.csv.rejected.xlsx").active
    assert [c.value for c in ws[1]][:3] == ["00472", "Théière", "12,5O"] and ws.max_row == 2
    ws["C1"].value, ws["C2"].value = "12,50", "9,95"
    ws.parent.save(tmp_path / "plain-fixed.xlsx")
    fixed_csv = tmp_path / "plain-fixed.csv"
    fixed_csv.write_text((tmp_path / "reports" / "plain.csv.rejected.csv").read_text(encoding="cp1252")
                         .replace("12,5O", "12,50").replace('"x"', '"9,95"').replace(";x;", ";9,95;"),
                         encoding="cp1252")

    for fixed in (tmp_path / "plain-fixed.xlsx", fixed_csv):
        again = pipeline_for(tmp_path, sb, settings).run_file(fixed, mapping="plain", )
        assert again.status == "done", again.message
        assert again.counts.rows_refused == 0 and again.rows is not None and again.rows.items == 2
    prices = {v["sku"]: v["price"] for p in sb.state()["products"] for v in p["variants"]}
    assert prices == {"00471": 79.95, "00472": 12.5, "00473": 9.95}
    assert {p["title"] for p in sb.state()["products"]} == {"Mug", "Théière", "Cup"}  # the CSV read back in cp1252


def test_a_headerless_sheet_keeps_its_columns_where_they_were(tmp_path):
    """Positions of a sheet are Excel columns: a sheet starting at column B names it 2, and so does
    its rejected workbook, even when that column is blank in every refused row."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append([None, "00471", "Mug", "79.95"])
    ws.append([None, "", "Jug", "12.50"])  # no code: refused
    wb.save(tmp_path / "sheet.xlsx")
    mapping = parse_mapping({"source": {"header": "none"}, "group_by": "2", "product": {"title": "3"},
                             "variant": {"source_variant_code": "2", "sku": "2", "price": "4"}})
    plan = plan_file(tmp_path / "sheet.xlsx", Settings(), mapping=mapping)
    assert plan.rows.refused == 1 and plan.table.header == ["2", "3", "4"]
    write_report_files(plan.fill(Report(file="sheet.xlsx")), tmp_path / "sheet.xlsx")
    again = plan_file(tmp_path / "sheet.xlsx.rejected.xlsx", Settings(), mapping=mapping)
    assert again.table.header[:3] == ["2", "3", "4"]
    assert [(r.cells["3"], r.cells["4"]) for r in again.table.rows] == [("Jug", "12.50")]


def test_the_rejected_csv_puts_its_header_where_the_mapping_looks_for_it(tmp_path):
    mapping = parse_mapping({"source": {"header_row": 3}, "group_by": "ItemCode", "product": {"title": "Description"},
                             "variant": {"source_variant_code": "ItemCode", "sku": "ItemCode",
                                         "qty": {"column": "OnHand", "type": "int"}}})
    export = tmp_path / "pastel.csv"
    export.write_text("Stock list\nPrinted 2025-06-14\nItemCode,Description,OnHand\n007,Tap,4.5\n008,Pipe,3\n",
                      encoding="utf-8")
    plan = plan_file(export, Settings(), mapping=mapping)
    write_report_files(plan.fill(Report(file="pastel.csv")), tmp_path / "pastel.csv")
    again = plan_file(tmp_path / "pastel.csv.rejected.csv", Settings(), mapping=mapping)
    assert again.table.header[:3] == ["ItemCode", "Description", "OnHand"]
    assert [r.cells["ItemCode"] for r in again.table.rows] == ["007"] and again.rows.refused == 1  # 4.5 still
