"""read.py: files on disk -> rows of text. Real files in tmp_path; workbooks written by openpyxl/xlwt."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from connector.read import ReadError, _cell_text, detect_delimiter, normalise_name, read_table

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


def write(tmp_path: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def cells(table) -> list[dict[str, str]]:
    return [r.cells for r in table.rows]


def lines(table) -> list[int]:
    return [r.line for r in table.rows]


# --------------------------------------------------------------------------- CSV values


@pytest.mark.parametrize("value", ["00123", "NA", "NULL", "1E5", "TRUE", "6.00988E+12", "None", " 12 ", "-0"])
def test_csv_cell_is_kept_verbatim(tmp_path, value):
    path = write(tmp_path, "p.csv", f'sku,value\nA1,"{value}"\nA2,x\n')
    table = read_table(path)
    assert table.rows[0].cells == {"sku": "A1", "value": value}


def test_cp1252_file_is_decoded_and_recorded(tmp_path):
    path = write(tmp_path, "p.csv", "sku;title\n001;Café – crème\n002;Plain\n", encoding="cp1252")
    table = read_table(path)
    assert table.encoding == "cp1252"
    assert table.rows[0].cells["title"] == "Café – crème"


def test_legacy_encoding_is_configurable(tmp_path):
    path = write(tmp_path, "p.csv", "sku;title\n001;Łódź\n", encoding="cp1250")
    table = read_table(path, legacy_encoding="cp1250")
    assert (table.encoding, table.rows[0].cells["title"]) == ("cp1250", "Łódź")


def test_legacy_decoding_failure_names_line_and_byte(tmp_path):
    path = write(tmp_path, "p.csv", b"sku;title\n001;ok\n002;bad \x81 byte\n")
    with pytest.raises(ReadError, match=r"p\.csv: line 3: byte 0x81 at column 9"):
        read_table(path)


def test_explicit_encoding_is_strict(tmp_path):
    path = write(tmp_path, "p.csv", "sku;title\n001;Café\n", encoding="cp1252")
    with pytest.raises(ReadError, match=r"line 2: byte 0xe9 .* not valid utf-8"):
        read_table(path, encoding="utf-8")
    assert read_table(path, encoding="cp1252").rows[0].cells["title"] == "Café"


def test_utf8_bom_is_stripped_from_first_header(tmp_path):
    path = write(tmp_path, "p.csv", "\ufeffID,Name\n1,Été\n")
    table = read_table(path)
    assert table.header == ["ID", "Name"]
    assert table.encoding == "utf-8-sig"
    assert table.rows[0].cells == {"ID": "1", "Name": "Été"}


def test_utf16_le_with_bom_tab_delimited(tmp_path):
    text = "sku\ttitle\tprice\n00123\tCafé\t1 299,50\n00124\tTé\t5,00\n"
    path = write(tmp_path, "p.txt", b"\xff\xfe" + text.encode("utf-16-le"))
    table = read_table(path)
    assert (table.encoding, table.delimiter) == ("utf-16", "\t")
    assert table.rows[0].cells == {"sku": "00123", "title": "Café", "price": "1 299,50"}


def test_utf8_with_bad_bytes_refuses_only_those_records(tmp_path):
    data = "sku;title\n1;Crème\n2;bad ".encode() + b"\xff" + " here\n3;Brûlée\n".encode()
    table = read_table(write(tmp_path, "p.csv", data))
    assert table.encoding == "utf-8"
    assert [r.cells["sku"] for r in table.rows] == ["1", "3"]
    [problem] = table.problems
    assert (problem.kind, problem.severity, problem.line) == ("encoding", "error", 3)
    assert problem.reason == "invalid UTF-8 byte 0xff at column 7"


def test_nul_byte_refuses_its_record(tmp_path):
    table = read_table(write(tmp_path, "p.csv", b"sku,title\n1,ok\n2,n\x00l\n3,ok\n"))
    assert [r.cells["sku"] for r in table.rows] == ["1", "3"]
    assert [(p.line, p.reason) for p in table.problems] == [(3, "NUL byte at column 4")]


# --------------------------------------------------------------------------- CSV structure


@pytest.mark.parametrize(
    "sample, expected",
    [
        ("a,b,c\n1,2,3\n4,5,6\n", ","),
        ("a;b;c\n1,5;2,25;3\n4;5;6\n", ";"),  # decimal commas must not win
        ("name;price\nWidget;1 234,50\nGadget;99,00\n", ";"),
        ("a\tb\n1\t2\n", "\t"),
        ("a|b|c\nx|y|z\n", "|"),
        ('a,b\n"x;y;z",1\n"p;q;r",2\n', ","),  # delimiters inside quotes do not count
        ("Categories (x;y;z),Name\na;b,c\nd;e,f\n", ","),
        ("single\nvalue\n", ","),
    ],
)
def test_delimiter_is_detected_from_several_lines(sample, expected):
    assert detect_delimiter(sample)[0] == expected


def test_semicolon_file_with_decimal_commas(tmp_path):
    path = write(tmp_path, "p.csv", "sku;price;qty\n00123;1 299,50;3\n00124;12,00;0\n")
    table = read_table(path)
    assert table.delimiter == ";"
    assert cells(table) == [
        {"sku": "00123", "price": "1 299,50", "qty": "3"},
        {"sku": "00124", "price": "12,00", "qty": "0"},
    ]


def test_sep_line_sets_delimiter_and_counts_as_a_line(tmp_path):
    path = write(tmp_path, "p.csv", "sep=;\nsku;price\n001;1,5\n002;2,5\n")
    table = read_table(path)
    assert (table.delimiter, table.header) == (";", ["sku", "price"])
    assert lines(table) == [3, 4]


@pytest.mark.parametrize("delim", ["|", "\t", ";", ","])
def test_pipe_tab_semicolon_comma_files(tmp_path, delim):
    path = write(tmp_path, "p.csv", delim.join(["sku", "title", "qty"]) + "\n" + delim.join(["007", "Hat", "3"]) + "\n")
    table = read_table(path)
    assert table.delimiter == delim
    assert cells(table) == [{"sku": "007", "title": "Hat", "qty": "3"}]


def test_delimiter_argument_overrides_detection(tmp_path):
    path = write(tmp_path, "p.csv", "a;b,c\n1;2,3\n4;5,6\n")
    table = read_table(path, delimiter=",")
    assert table.header == ["a;b", "c"]


def test_quoted_newlines_keep_start_lines(tmp_path):
    text = 'sku,body\n1,"line one\nline two\nline three"\n2,plain\n3,"a\r\nb"\n4,end\n'
    table = read_table(write(tmp_path, "p.csv", text))
    assert lines(table) == [2, 5, 6, 8]
    assert table.rows[0].cells["body"] == "line one\nline two\nline three"


@pytest.mark.parametrize("ending", ["\r", "\r\n"])
def test_cr_and_crlf_line_endings(tmp_path, ending):
    text = ending.join(["sku,body", '1,"a' + ending + 'b"', "2,x", ""])
    table = read_table(write(tmp_path, "p.csv", text))
    assert [(r.line, r.cells["body"]) for r in table.rows] == [(2, "a" + ending + "b"), (4, "x")]


def test_bad_byte_inside_a_multiline_record_refuses_it(tmp_path):
    data = 'sku,body\n1,"caf\xc3\xa9\nsecond \xff line"\n2,ok\n'.encode("latin-1")
    table = read_table(write(tmp_path, "p.csv", data))
    assert [r.cells["sku"] for r in table.rows] == ["2"]
    assert [(p.line, p.reason) for p in table.problems] == [(2, "invalid UTF-8 byte 0xff at column 8 (line 3)")]


def test_bad_byte_in_the_header_is_a_read_error(tmp_path):
    data = "sku,t\xeftle\n1,caf\xc3\xa9\n".encode("latin-1")
    with pytest.raises(ReadError, match=r"line 1: the header holds a bad byte: invalid UTF-8 byte 0xef"):
        read_table(write(tmp_path, "p.csv", data))


def test_blank_rows_are_dropped_and_lines_kept(tmp_path):
    text = "sku;qty\n1;2\n\n;\n  ;  \n3;4\n"
    table = read_table(write(tmp_path, "p.csv", text))
    assert [(r.line, r.cells["sku"]) for r in table.rows] == [(2, "1"), (6, "3")]
    assert table.problems == []


@pytest.mark.parametrize(
    "header, names",
    [
        ("sku,SKU ,sku", "'sku'"),
        ("sku,\u00a0sku\u200b,title", "'sku'"),
        ("a,b,a,b", "'a', 'b'"),
    ],
)
def test_duplicate_headers_are_an_error_naming_them(tmp_path, header, names):
    path = write(tmp_path, "p.csv", header + "\n" + ",".join("x" * len(header.split(","))) + "\n")
    with pytest.raises(ReadError) as err:
        read_table(path)
    assert "duplicate column names" in str(err.value) and names in str(err.value)
    assert "p.csv" in str(err.value) and "\n" not in str(err.value)


def test_empty_header_cells_are_named_by_position(tmp_path):
    table = read_table(write(tmp_path, "p.csv", "sku,,qty,\n1,a,2,b\n"))
    assert table.header == ["sku", "column_2", "qty", "column_4"]


def test_header_names_are_normalised(tmp_path):
    table = read_table(write(tmp_path, "p.csv", "\ufeff sku\u00a0,\u200btitle \n1,2\n"))
    assert table.header == ["sku", "title"]


@pytest.mark.parametrize(
    "raw, expected",
    [("\ufeffSKU", "SKU"), ("  Price\u00a0", "Price"), ("Q\u200bty", "Qty"), ("a  b", "a  b")],
)
def test_normalise_name(raw, expected):
    assert normalise_name(raw) == expected


def test_ragged_rows(tmp_path):
    text = "sku;title;qty\n1;a;2;\n2;b;3;;;\n3;c\n4;d;5;surprise\n5;e;6\n"
    table = read_table(write(tmp_path, "p.csv", text))
    assert cells(table) == [
        {"sku": "1", "title": "a", "qty": "2"},  # PrestaShop's trailing ';' dropped silently
        {"sku": "2", "title": "b", "qty": "3"},
        {"sku": "3", "title": "c", "qty": ""},  # short row padded
        {"sku": "5", "title": "e", "qty": "6"},
    ]
    [problem] = table.problems
    assert (problem.kind, problem.line, problem.value) == ("shape", 5, "surprise")


def test_one_column_header_over_wider_rows_is_an_error(tmp_path):
    path = write(tmp_path, "p.csv", "sku price qty\n1;2;3\n4;5;6\n7;8;9\n")
    with pytest.raises(ReadError, match="header has one column but the rows have 3 fields"):
        read_table(path)


def test_find_header_skips_banner_rows(tmp_path):
    text = "Stock report\nPrinted 2024-03-01,,\n\nCode,Description,Qty\n001,Hat,2\n002,Cap,3\n"
    table = read_table(write(tmp_path, "p.csv", text), find_header=["code", "QTY"])
    assert table.header == ["Code", "Description", "Qty"]
    assert [(r.line, r.cells["Code"]) for r in table.rows] == [(5, "001"), (6, "002")]


def test_header_row_option(tmp_path):
    table = read_table(write(tmp_path, "p.csv", "banner,\nsku,qty\n1,2\n"), header_row=2)
    assert (table.header, lines(table)) == (["sku", "qty"], [3])


@pytest.mark.parametrize(
    "content, kwargs, message",
    [
        (b"", {}, "the file is empty"),
        (b"  \n\n", {}, "the file is empty"),
        (b"a,b\n1,2\n", {"header_row": 5}, "fewer than 5 rows"),
        (b"a,b\n1,2\n", {"find_header": ["sku"]}, "no header row with the columns sku"),
    ],
)
def test_file_level_problems_raise_one_line(tmp_path, content, kwargs, message):
    with pytest.raises(ReadError, match=message) as err:
        read_table(write(tmp_path, "p.csv", content), **kwargs)
    assert "\n" not in str(err.value)


def test_missing_file_is_a_read_error(tmp_path):
    with pytest.raises(ReadError, match="nope.csv: cannot read the file"):
        read_table(tmp_path / "nope.csv")


# --------------------------------------------------------------------------- workbooks


@pytest.mark.parametrize(
    "value, text",
    [
        (479.0, "479"),
        (0.87, "0.87"),
        (20101225.0, "20101225"),
        (6009880000000.0, "6009880000000"),
        (-3.5, "-3.5"),
        (12, "12"),
        (True, "TRUE"),
        (False, "FALSE"),
        (datetime(2016, 6, 24), "2016-06-24"),
        (datetime(2016, 6, 24, 10, 30), "2016-06-24T10:30:00"),
        (date(2016, 6, 24), "2016-06-24"),
        (time(7, 5, 9), "07:05:09"),
        (timedelta(hours=26, minutes=3), "26:03:00"),
        (None, ""),
        ("", ""),
        ("00123", "00123"),
    ],
)
def test_cell_text(value, text):
    assert _cell_text(value) == text


def make_xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def test_xlsx_typed_cells_become_text(tmp_path):
    path = make_xlsx(tmp_path / "p.xlsx", {"Products": [
        ["sku", "qty", "rate", "barcode", "date", "when", "active", "lot"],
        ["00123", 479, 0.87, "6001234567893", date(2016, 6, 24), datetime(2016, 6, 24, 10, 30), True, 20101225.0],
        [],
        ["00124", 0, 1.5, "6001234567800", None, None, False, "L1"],
    ]})
    table = read_table(path)
    assert (table.format, table.sheet) == ("xlsx", "Products")
    assert cells(table) == [
        {"sku": "00123", "qty": "479", "rate": "0.87", "barcode": "6001234567893", "date": "2016-06-24",
         "when": "2016-06-24T10:30:00", "active": "TRUE", "lot": "20101225"},
        {"sku": "00124", "qty": "0", "rate": "1.5", "barcode": "6001234567800", "date": "",
         "when": "", "active": "FALSE", "lot": "L1"},
    ]
    assert lines(table) == [2, 4]


def test_xls_via_xlwt(tmp_path):
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("Stock")
    for r, row in enumerate([["code", "qty", "price", "ok"], ["00123", 479, 0.87, True], ["AD66 ", 2.5, 10, False]]):
        for c, value in enumerate(row):
            sheet.write(r, c, value)
    path = tmp_path / "p.xls"
    book.save(str(path))
    table = read_table(path)
    assert table.format == "xls"
    assert cells(table) == [
        {"code": "00123", "qty": "479", "price": "0.87", "ok": "TRUE"},
        {"code": "AD66 ", "qty": "2.5", "price": "10", "ok": "FALSE"},
    ]


@pytest.fixture
def three_sheets(tmp_path) -> Path:
    return make_xlsx(tmp_path / "book.xlsx", {
        "Notes": [["nothing to see here"]],
        "North": [["Report north"], [], ["sku", "qty"], ["001", 1], ["002", 2]],
        "South": [["sku", "qty", "bin"], ["003", 3, "B1"]],
    })


def test_sheet_by_name_and_index(three_sheets):
    by_name = read_table(three_sheets, sheet="South")
    by_index = read_table(three_sheets, sheet=2)
    assert cells(by_name) == cells(by_index) == [{"sku": "003", "qty": "3", "bin": "B1"}]
    assert by_name.sheet == "South"


def test_first_sheet_by_default(three_sheets):
    table = read_table(three_sheets)
    assert (table.sheet, table.header, table.rows) == ("Notes", ["nothing to see here"], [])


@pytest.mark.parametrize("sheet, message", [("West", "no sheet named 'West' (sheets: Notes, North, South)"),
                                            (7, "no sheet number 7")])
def test_unknown_sheet_names_the_choices(three_sheets, sheet, message):
    with pytest.raises(ReadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_table(three_sheets, sheet=sheet)


def test_all_sheets_with_find_header(three_sheets):
    table = read_table(three_sheets, sheet="*", find_header=["SKU"])
    assert table.header == ["sku", "qty", "bin"]  # union in first-seen order
    assert [(r.sheet, r.line, r.cells) for r in table.rows] == [
        ("North", 4, {"sku": "001", "qty": "1", "bin": ""}),
        ("North", 5, {"sku": "002", "qty": "2", "bin": ""}),
        ("South", 2, {"sku": "003", "qty": "3", "bin": "B1"}),
    ]
    [warning] = table.problems
    assert (warning.severity, warning.sheet) == ("warning", "Notes")


def test_find_header_in_one_sheet(three_sheets):
    table = read_table(three_sheets, sheet="North", find_header=["qty"])
    assert lines(table) == [4, 5]


def test_workbook_duplicate_header_names_sheet(tmp_path):
    path = make_xlsx(tmp_path / "p.xlsx", {"S": [["sku", "SKU", "sku"], ["1", "2", "3"]]})
    with pytest.raises(ReadError, match=r"p\.xlsx, sheet 'S', row 1: duplicate column names in the header: 'sku'"):
        read_table(path)


@pytest.mark.parametrize(
    "name, content, looks",
    [
        ("p.xlsx", b"sku,qty\n1,2\n", "CSV text"),
        ("p.xlsx", b"<html><body><table><tr><td>1</td></tr></table></body></html>", "an HTML page"),
        ("p.xls", b"sku;qty\n1;2\n", "CSV text"),
        ("p.ods", b"%PDF-1.4 ...", "a PDF"),
    ],
)
def test_mislabelled_workbook_is_refused(tmp_path, name, content, looks):
    with pytest.raises(ReadError, match=rf"not an? \w+ workbook \(it looks like {looks}"):
        read_table(write(tmp_path, name, content))


def test_damaged_zip_is_a_read_error(tmp_path):
    with pytest.raises(ReadError, match="damaged|cannot read"):
        read_table(write(tmp_path, "p.xlsx", b"PK\x03\x04" + b"\x00" * 100))


def test_zip_that_is_no_workbook_is_a_read_error(tmp_path):
    path = tmp_path / "p.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "not a workbook")
    with pytest.raises(ReadError, match=r"p\.xlsx: cannot read the XLSX workbook \("):
        read_table(path)


def test_zip_bomb_ratio_is_refused(tmp_path):
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"<worksheet>" + b" " * (8 * 2**20) + b"</worksheet>")
    with pytest.raises(ReadError, match=r"unpacks \d+x \(limit 200x\)"):
        read_table(path)


def _bomb(path: Path, declared: bool) -> Path:
    """A tiny workbook with cells A1 and XFD1048576 (reliability.md E3), with or without <dimension>."""
    make_xlsx(path, {"S": [["sku"]]})
    data = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            data[info.filename] = z.read(info)
    sheet = data["xl/worksheets/sheet1.xml"]
    far = b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row></sheetData>'
    sheet = sheet.replace(b"</sheetData>", far)
    if not declared:
        import re

        sheet = re.sub(rb"<dimension[^>]*>", b"", sheet)
    data["xl/worksheets/sheet1.xml"] = sheet
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in data.items():
            z.writestr(name, body)
    return path


@pytest.mark.parametrize("declared", [True, False])
def test_dimension_bomb_is_refused_before_calamine(tmp_path, declared):
    path = _bomb(tmp_path / "bomb.xlsx", declared)
    assert path.stat().st_size < 10_000
    # In a child process: if calamine ever saw this file it would abort the interpreter.
    code = (
        "import sys; from pathlib import Path; from connector.read import read_table, ReadError\n"
        "try:\n    read_table(Path(sys.argv[1]))\nexcept ReadError as e:\n    print(e)\n"
        "print('python_calamine' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr[-500:]
    message, loaded = done.stdout.strip().splitlines()
    assert "refused" in message and "1,048,576 rows x 16,384 columns" in message
    assert loaded == "False"


# --------------------------------------------------------------------------- corpus


def corpus_file(relative: str) -> Path:
    path = CORPUS / relative
    if not path.exists():
        pytest.skip(f"corpus file {relative} is not present beside the repository")
    return path


def corpus_facts(relative: str) -> dict:
    return json.loads((CORPUS / "facts.json").read_text())["files"][relative]


def test_corpus_non_utf8_refuses_exactly_the_bad_lines():
    path = corpus_file("akeneo/non_utf8.csv")
    facts = corpus_facts("akeneo/non_utf8.csv")
    table = read_table(path)
    assert (table.encoding, table.delimiter, table.header) == ("utf-8", facts["delimiter"], facts["header"])
    got: dict[int, list[str]] = {}
    for problem in table.problems:
        got.setdefault(problem.line, []).append(problem.reason.lower())
    assert got == {bad["line"]: [p.lower() for p in bad["problems"]] for bad in facts["bad_lines"]}
    assert len(table.rows) == facts["records"] - len(facts["bad_lines"])
    assert 11 not in lines(table) and 15 not in lines(table)


def test_corpus_inventory_xls_all_sheets():
    path = corpus_file("openboxes/inventory.xls")
    facts = corpus_facts("openboxes/inventory.xls")
    table = read_table(path, sheet="*", find_header=["CODE"])
    assert table.problems == []
    by_sheet: dict[str, int] = {}
    for row in table.rows:
        if row.cells["CODE"].strip():  # subtotal rows have no product code
            by_sheet[row.sheet] = by_sheet.get(row.sheet, 0) + 1
    assert by_sheet == {s["name"]: s["records"] for s in facts["sheets"]}
    assert sum(by_sheet.values()) == facts["records"]
    lots = {r.cells["NUMERO DE LOT"] for r in table.rows if r.sheet == "Expiration proche et perimes"}
    assert "20101225" in lots  # a lot number stored as a number cell, read as the digits


@pytest.mark.parametrize(
    "relative",
    ["prestashop/products_import.csv", "woocommerce/sample_products.csv", "magento2/products.csv",
     "shopify/product_template.csv", "thirtybees/products_import.csv"],
)
def test_corpus_csv_matches_facts(relative):
    path = corpus_file(relative)
    facts = corpus_facts(relative)
    table = read_table(path)
    assert table.delimiter == facts["delimiter"]
    assert table.header[: len(facts["header"])] == [normalise_name(h) for h in facts["header"]]
    assert len(table.rows) + len(table.problems) == facts["records"] - facts.get("blank_records_skipped", 0)


def test_a_workbook_that_exhausts_the_readers_memory_is_refused_and_the_process_lives_on(tmp_path, monkeypatch):
    """Workbooks are read in a child process under a memory limit: a file that needs more
    (a real bomb would make the spreadsheet library abort) ends the child, not us."""
    from openpyxl import Workbook

    import connector.read as read

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Stock")
    ws.append(["sku", "title", "price"])
    for i in range(20_000):
        ws.append([f"SKU{i:06d}", f"A product with a long enough title number {i}", i * 1.5])
    path = tmp_path / "big.xlsx"
    wb.save(path)
    assert len(read_table(path).rows) == 20_000  # fine with the normal limit

    monkeypatch.setattr(read, "WORKBOOK_MEMORY_LIMIT", 64 * 1024**2)  # far too little for this file
    with pytest.raises(ReadError) as caught:
        read_table(path)
    assert "big.xlsx" in str(caught.value) and "memory" in str(caught.value)
