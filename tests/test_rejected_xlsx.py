"""<name>.rejected.xlsx: refused rows a person fixes in Excel and drops back into the inbox."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import openpyxl

from connector import inbox
from connector.config import Folders, Rule, Settings
from connector.model import Rejected, Row
from connector.report import Report, write_rejected_xlsx, write_report_files
from tests.support import pipeline_for, report_of, settings_for

HEADER = ["sku", "barcode", "title", "price"]


def sheet_of(path: Path):
    return openpyxl.load_workbook(path).active


def test_every_cell_is_text_and_the_refused_cell_is_highlighted_with_its_reason(tmp_path):
    path = tmp_path / "export.csv.rejected.xlsx"
    rejected = [
        Rejected(Row(3, {"sku": "00123", "barcode": "6001234000013", "title": "=1+1", "price": "12,5O"}),
                 'price "12,5O" is not a number', "price"),
        Rejected(Row(7, {"sku": "0042", "barcode": "6.00123E+12", "title": "#N/A\x07", "price": "5"}),
                 "product 0042 held back because of line 3"),
    ]
    write_rejected_xlsx(path, HEADER, rejected)
    ws = sheet_of(path)
    rows = [[c.value for c in row] for row in ws.iter_rows()]
    assert rows == [
        ["sku", "barcode", "title", "price", "line", "reason"],
        ["00123", "6001234000013", "=1+1", "12,5O", "3", 'price "12,5O" is not a number'],
        ["0042", "6.00123E+12", "#N/A", "5", "7", "product 0042 held back because of line 3"],
    ]
    for row in ws.iter_rows():
        for cell in row:
            assert cell.data_type == "s" and cell.number_format == "@", (cell.coordinate, cell.data_type)
    flagged = {c.coordinate: c.comment.text if c.comment else None
               for row in ws.iter_rows() for c in row if c.fill.fgColor.rgb not in (None, "00000000")}
    # the price cell of line 3; line 7 was refused for no cell of its own: its reason cell
    assert flagged == {"D2": 'price "12,5O" is not a number', "F3": "product 0042 held back because of line 3"}
    assert ws.freeze_panes == "A2" and ws["A1"].font.b


def test_comments_stop_at_a_bound_but_every_refusal_is_highlighted(tmp_path):
    path = tmp_path / "many.rejected.xlsx"
    rejected = [Rejected(Row(n, {"sku": f"{n:05d}", "price": "x"}), "price: not a number", "price")
                for n in range(2, 52)]
    write_rejected_xlsx(path, HEADER, rejected, max_comments=10, sheet="Stock [JHB]: all")
    ws = sheet_of(path)
    assert ws.title == "Stock _JHB__ all"
    prices = [ws.cell(row=r, column=4) for r in range(2, 52)]
    assert all(c.fill.fgColor.rgb.endswith("FFC7CE") for c in prices)
    assert sum(c.comment is not None for c in prices) == 10


def test_report_files_include_the_workbook_wherever_the_csv_goes(tmp_path):
    report = Report(file="x.csv", header=HEADER, rejected=[Rejected(Row(2, {"sku": "1"}), "bad", "sku")])
    write_report_files(report, tmp_path / "x.csv")
    assert (tmp_path / "x.csv.rejected.csv").is_file() and (tmp_path / "x.csv.rejected.xlsx").is_file()
    clean = Report(file="y.csv", header=HEADER)
    write_report_files(clean, tmp_path / "y.csv")
    assert not (tmp_path / "y.csv.rejected.xlsx").exists()  # nothing refused, no workbook

    folders = Folders(inbox=tmp_path / "in", processing=tmp_path / "proc", archive=tmp_path / "arch",
                      failed=tmp_path / "failed", state=tmp_path / "state")
    folders.processing.mkdir()
    (folders.processing / "z.csv").write_bytes(b"sku\n1\n")
    done = report_of("done", {}, HEADER, [(Row(2, {"sku": "1"}), "bad", "sku")])
    placed = inbox.place(folders.processing / "z.csv", done, folders, datetime(2025, 6, 14, tzinfo=UTC))
    assert Path(f"{placed}.rejected.xlsx").is_file() and Path(f"{placed}.rejected.csv").is_file()
    assert inbox.count_files(folders.archive) == 1  # the workbook is a sidecar, not a data file


def test_a_rejected_workbook_fixed_in_excel_pushes_with_the_same_mapping(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "stock.yaml").write_text(textwrap.dedent("""
        group_by: code
        product: {title: title}
        variant:
          source_variant_code: code
          sku: code
          barcode: {column: barcode, type: gtin}
          price: price
    """), encoding="utf-8")
    export = tmp_path / "stock.csv"
    export.write_text("code,barcode,title,price\n"
                      "00471,6001234010012,Mug,79.95\n"
                      "00472,6001234010028,Jug,12.50\n"     # a wrong check digit: refused
                      "00473,6001234010036,Cup,9.5O\n", encoding="utf-8")  # not a number: refused
    settings = settings_for(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings).run_file(export, mapping="stock")
    assert first.status == "done" and first.counts.items_sent == 1 and first.counts.rows_refused == 2
    (tmp_path / "reports").mkdir()
    write_report_files(first, tmp_path / "reports" / "stock.csv")  # as push does
    workbook_path = tmp_path / "reports" / "stock.csv.rejected.xlsx"

    workbook = openpyxl.load_workbook(workbook_path)  # a person fixes the rows in Excel
    ws = workbook.active
    header = [c.value for c in ws[1]]
    by_code = {row[0].value: row for row in ws.iter_rows(min_row=2)}
    assert set(by_code) == {"00472", "00473"}  # leading zeros kept
    assert by_code["00473"][header.index("price")].value == "9.5O"
    by_code["00473"][header.index("price")].value = "9.50"
    assert by_code["00472"][header.index("barcode")].fill.fgColor.rgb.endswith("FFC7CE")
    by_code["00472"][header.index("barcode")].value = "6001234010029"
    fixed = tmp_path / "stock-fixed.xlsx"
    workbook.save(fixed)

    again = pipeline_for(tmp_path, sb, settings).run_file(fixed, mapping="stock")
    assert again.status == "done", again.message
    assert again.counts.rows_refused == 0 and again.counts.items_sent == 2
    stored = {v["sku"]: v for p in sb.state()["products"] for v in p["variants"]}
    assert stored["00473"]["price"] == 9.5 and stored["00473"]["barcode"] == "6001234010036"
    assert stored["00472"]["barcode"] == "6001234010029" and set(stored) == {"00471", "00472", "00473"}


def test_the_workbook_puts_its_header_where_the_mapping_looks_for_it(make_sandbox, tmp_path):
    """A Pastel-style export with its header on row 3: the fixed workbook is read by the same mapping."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "pastel.yaml").write_text(textwrap.dedent("""
        source: {header_row: 3}
        group_by: ItemCode
        product: {title: Description}
        variant: {source_variant_code: ItemCode, sku: ItemCode, qty: {column: OnHand, type: int}}
    """), encoding="utf-8")
    export = tmp_path / "pastel.csv"
    export.write_text("Stock list\nPrinted 2025-06-14\nItemCode,Description,OnHand\n007,Tap,4.5\n008,Pipe,3\n",
                      encoding="utf-8")
    settings = settings_for(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings).run_file(export, mapping="pastel")
    assert first.counts.rows_refused == 1
    write_report_files(first, tmp_path / "pastel.csv")
    workbook = openpyxl.load_workbook(tmp_path / "pastel.csv.rejected.xlsx")
    ws = workbook.active
    assert ws["A1"].value.startswith("Rows of pastel.csv that were refused") and ws.freeze_panes == "A4"
    assert [c.value for c in ws[3]] == ["ItemCode", "Description", "OnHand", "line", "reason"]
    assert ws["A4"].value == "007" and ws["C4"].fill.fgColor.rgb.endswith("FFC7CE")
    ws["C4"].value = "4"
    workbook.save(tmp_path / "pastel-fixed.xlsx")
    again = pipeline_for(tmp_path, sb, settings).run_file(tmp_path / "pastel-fixed.xlsx", mapping="pastel")
    assert again.status == "done" and again.counts.items_sent == 1 and again.counts.rows_refused == 0
    assert {v["sku"]: v["qty"] for p in sb.state()["products"] for v in p["variants"]} == {"007": 4, "008": 3}


def test_past_a_bound_the_rows_are_left_to_the_csv_and_a_second_sheet_says_so(tmp_path):
    path = tmp_path / "big.csv.rejected.xlsx"
    rejected = [Rejected(Row(n, {"sku": str(n)}), "bad", "sku") for n in range(2, 32)]
    write_rejected_xlsx(path, HEADER, rejected, max_rows=20, file="big.csv")
    workbook = openpyxl.load_workbook(path)
    first, note = workbook.worksheets
    assert first.max_row == 21  # the header and 20 rows
    assert note["A1"].value == "30 rows were refused; the first 20 are on the first sheet, and all of them are in " \
                               "big.csv.rejected.csv"


def test_a_workbook_dropped_back_takes_the_mapping_of_the_file_it_came_from():
    settings = Settings(rules=[Rule(pattern="pastel_*.csv", mapping="pastel"),
                               Rule(pattern="*.xlsx", mapping="workbooks")])
    assert settings.mapping_for("pastel_0614.csv.rejected.xlsx") == "workbooks"  # a rule naming it wins
    settings.rules = settings.rules[:1]
    assert settings.mapping_for("PASTEL_0614.csv.rejected.xlsx") == "pastel"
    assert settings.mapping_for("pastel_0614__20250614T101502Z__ab12cd34.csv.rejected.xlsx") == "pastel"  # archived
    assert settings.mapping_for("other.csv.rejected.xlsx") == settings.default_mapping
