"""Row numbers a person can find: the spreadsheet row beside the CSV's physical line, everywhere a row is named."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from connector.config import Settings
from connector.model import Rejected, Row, describe_place
from connector.pipeline import plan_file
from connector.read import ReadError, read_table
from connector.report import Report, write_rejected_csv

MAPPING = "group_by: sku\nproduct: {title: title, body_html: body}\nvariant: {source_variant_code: sku, sku: sku, price: price}\n"


def settings() -> Settings:
    s = Settings()
    s.api.source_id = 1
    return s


def multiline_export() -> str:
    """Descriptions of 5 lines each: by the last record the line is far from the row."""
    body = '"Line one\nline two\nline three\nline four\nline five"'
    rows = [f"A{i},Item {i},{body},{i}.00" for i in range(1, 7)]
    rows[4] = f"A5,Item 5,{body},abc"  # a bad price on the 5th data row: spreadsheet row 6
    return "sku,title,body,price\n" + "\n".join(rows) + "\n"


def test_rows_carry_the_spreadsheet_row_beside_the_line(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(multiline_export())
    table = read_table(path)
    assert [r.row_number for r in table.rows] == [2, 3, 4, 5, 6, 7]
    assert [r.line for r in table.rows] == [2, 7, 12, 17, 22, 27]
    assert table.header_row == 1


def test_a_refused_row_is_named_by_its_spreadsheet_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(multiline_export())
    (tmp_path / "m.yaml").write_text(MAPPING)
    plan = plan_file(path, settings(), mapping=str(tmp_path / "m.yaml"))
    [problem] = [p for p in plan.problems if p.severity == "error"]
    assert (problem.line, problem.row_number, problem.column) == (22, 6, "price")
    assert problem.as_dict()["row_number"] == 6
    [rejected] = plan.rejected
    assert (rejected.row.row_number, rejected.row.line) == (6, 22)
    assert rejected.row.where == "row 6 (line 22)"
    out = tmp_path / "rejected.csv"
    write_rejected_csv(out, plan.table.header, plan.rejected)
    with open(out, encoding="utf-8-sig", newline="") as f:
        [row] = list(csv.DictReader(f))
    assert (row["sku"], row["row"], row["line"]) == ("A5", "6", "22")


def test_an_image_not_found_is_named_by_its_spreadsheet_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(multiline_export().replace("sku,title,body,price", "sku,title,body,price,image")
                    .replace(".00\n", ".00,missing.jpg\n"))
    (tmp_path / "m.yaml").write_text(MAPPING + "images: {columns: [image]}\n")
    (tmp_path / "images").mkdir()
    plan = plan_file(path, settings(), mapping=str(tmp_path / "m.yaml"))
    found = sorted((p.line, p.row_number) for p in plan.problems if p.kind == "image")
    assert found == [(2, 2), (7, 3), (12, 4), (17, 5), (27, 7)]  # A5, with its bad price, is held back


def test_records_refused_while_reading_keep_their_row(tmp_path):
    # a sep= line Excel hides, a blank line Excel shows, then a record with too many values
    text = 'sep=,\nsku,title,body,price\n\nA1,One,"two\nlines",1.00\nA2,Two,x,2.00,extra\nA3,Three,y,3.00\n'
    path = tmp_path / "p.csv"
    path.write_text(text)
    table = read_table(path)
    assert [(r.cells["sku"], r.row_number, r.line) for r in table.rows] == [("A1", 3, 4), ("A3", 5, 7)]
    [shape] = table.problems
    assert (shape.kind, shape.row_number, shape.line) == ("shape", 4, 6)
    (tmp_path / "m.yaml").write_text(MAPPING)
    plan = plan_file(path, settings(), mapping=str(tmp_path / "m.yaml"))
    [rejected] = plan.rejected
    assert (rejected.row.row_number, rejected.row.line) == (4, 6)


def test_workbook_rows_are_excel_rows(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["Stock list"])  # a banner row above the header
    ws.append([])
    ws.append(["sku", "title", "body", "price"])
    ws.append(["A1", "One", "x", 1])
    ws.append(["A2", "Two", "y", "abc"])
    wb.save(tmp_path / "p.xlsx")
    (tmp_path / "m.yaml").write_text(MAPPING + "source: {find_header: [sku, price]}\n")
    plan = plan_file(tmp_path / "p.xlsx", settings(), mapping=str(tmp_path / "m.yaml"))
    assert plan.table.header_row == 3
    [problem] = [p for p in plan.problems if p.severity == "error"]
    assert (problem.line, problem.row_number) == (5, 5)
    report = plan.fill(Report(file="p.xlsx"))
    read = report.to_json()["read"]
    assert (read["header_row"], read["columns"]) == (3, ["sku", "title", "body", "price"])


def test_a_header_not_found_shows_the_header_that_was_read(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("Report of 2026-01-31,,\nCode,Name,Price\nA1,One,1.00\n")
    with pytest.raises(ReadError, match=r"no header row with the columns sku, price .*; "
                                        r"the first row reads: Report of 2026-01-31, ,"):
        read_table(path, find_header=["sku", "price"])
    (tmp_path / "m.yaml").write_text(MAPPING)
    plan = plan_file(path, settings(), mapping=str(tmp_path / "m.yaml"))
    column = next(p for p in plan.problems if p.kind == "column" and p.severity == "error")
    assert column.reason.endswith("the file's header (row 1) reads: Report of 2026-01-31, column_2, column_3")


@pytest.mark.parametrize("line, row, sheet, shown", [
    (22, 6, None, "row 6 (line 22)"),
    (5, 5, None, "row 5"),
    (5, 5, "North", "sheet 'North', row 5"),
    (7, None, None, "row 7"),
    (None, None, None, ""),
])
def test_describe_place(line, row, sheet, shown):
    assert describe_place(line, row, sheet) == shown


def test_rows_made_without_a_number_still_read_as_before():
    row = Row(3, {"sku": "x"})
    assert (row.line, row.sheet, row.row_number, row.where) == (3, None, None, "row 3")


def test_the_ledger_keeps_the_row_number_of_rejected_rows():
    report = Report(file="p.csv")
    report.rejected = [Rejected(Row(22, {"sku": "A5"}, None, 6), "bad")]
    data, rejected = report.to_ledger()
    again = Report.from_ledger(data, rejected)
    assert (again.rejected[0][0].row_number, again.rejected[0][0].line) == (6, 22)
    old = Report.from_ledger(data, {"rows": [[22, None, {"sku": "A5"}, "bad"]]})  # kept before row numbers
    assert (old.rejected[0][0].row_number, old.rejected[0][0].line) == (None, 22)


def test_a_row_without_a_number_is_written_with_its_line_as_its_row(tmp_path: Path):
    out = tmp_path / "r.csv"
    write_rejected_csv(out, ["sku"], [Rejected(Row(9, {"sku": "B"}), "held back")])
    with open(out, encoding="utf-8-sig", newline="") as f:
        assert list(csv.reader(f))[1] == ["B", "9", "9", "held back"]


def test_a_reason_naming_another_record_names_its_row(tmp_path):
    # two variants with the same options: the check names the first one's row, not only its line
    body = '"one\ntwo\nthree"'
    text = ("sku,code,title,body,size\n"
            f"P1,V1,Tee,{body},M\n"
            f"P1,V2,Tee,{body},M\n")
    path = tmp_path / "p.csv"
    path.write_text(text)
    (tmp_path / "m.yaml").write_text("group_by: sku\nproduct: {title: title, body_html: body}\n"
                                     "variant: {source_variant_code: code, sku: code}\n"
                                     "options: [{name: {value: Size}, value: size}]\n")
    plan = plan_file(path, settings(), mapping=str(tmp_path / "m.yaml"))
    [problem] = [p for p in plan.problems if p.kind == "options"]
    assert (problem.line, problem.row_number) == (5, 3)
    assert "repeats the options of row 2 (line 2)" not in problem.reason  # row == line: just "row 2"
    assert "repeats the options of row 2 " in problem.reason
    reasons = {r.row.row_number: r.reason for r in plan.rejected}
    assert reasons[2] == "product P1 held back because of row 3 (line 5)"
