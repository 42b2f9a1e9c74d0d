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
from tests.support import workbook

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


def errors(table) -> list:
    """The records refused (without warnings such as an encoding chosen on thin evidence)."""
    return [p for p in table.problems if p.severity == "error"]


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
    with pytest.raises(ReadError, match=r"p\.csv: line 3: byte 0x81 at column 9 is not valid cp1252$"):
        read_table(path, legacy_encoding="cp1252")
    with pytest.raises(ReadError, match=r"line 3: byte 0x81 at column 9 is not valid cp1252, and no other "
                                        r"legacy_encoding candidate \(cp1250\) reads the file either"):
        read_table(path, legacy_encoding=["cp1252", "cp1250"])


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
    assert [(p.line, p.reason) for p in errors(table)] == [(2, "invalid UTF-8 byte 0xff at column 8 (line 3)")]


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
    "header, names, twice",
    [
        ("sku,SKU ,sku", ["sku", "SKU", "sku (2)"], {"sku": [1, 3]}),
        ("sku,\u00a0sku\u200b,title", ["sku", "sku (2)", "title"], {"sku": [1, 2]}),
        ("a,b,a,b,a (2)", ["a", "b", "a (3)", "b (2)", "a (2)"], {"a": [1, 3], "b": [2, 4]}),
    ],
)
def test_a_name_the_header_holds_twice_is_read_under_a_name_of_its_own_with_a_warning(tmp_path, header, names,
                                                                                        twice):
    width = len(header.split(","))
    path = write(tmp_path, "p.csv", header + "\n" + ",".join(str(i) for i in range(width)) + "\n")
    table = read_table(path)
    assert table.header == names and table.twice == twice
    assert list(table.rows[0].cells.values()) == [str(i) for i in range(width)]  # no value lost
    warnings = [p for p in table.problems if p.kind == "header"]
    assert len(warnings) == len(twice) and all(p.severity == "warning" and p.line == 1 for p in warnings)
    assert f"names the column {next(iter(twice))!r} 2 times" in warnings[0].reason


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
    with pytest.raises(ReadError, match=r"nope\.csv: cannot read the file"):
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


def test_xlsx_typed_cells_become_text(tmp_path):
    path = workbook(tmp_path / "p.xlsx", {"Products": [
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
    return workbook(tmp_path / "book.xlsx", {
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
    # each sheet's rows have that sheet's columns: the mapping matches names on each sheet's own header
    assert [(r.sheet, r.line, r.cells) for r in table.rows] == [
        ("North", 4, {"sku": "001", "qty": "1"}),
        ("North", 5, {"sku": "002", "qty": "2"}),
        ("South", 2, {"sku": "003", "qty": "3", "bin": "B1"}),
    ]
    [warning] = table.problems
    assert (warning.severity, warning.sheet) == ("warning", "Notes")


def test_find_header_in_one_sheet(three_sheets):
    table = read_table(three_sheets, sheet="North", find_header=["qty"])
    assert lines(table) == [4, 5]


def test_workbook_duplicate_header_names_are_read_apart(tmp_path):
    path = workbook(tmp_path / "p.xlsx", {"S": [["sku", "SKU", "sku"], ["1", "2", "3"]]})
    table = read_table(path)
    assert table.header == ["sku", "SKU", "sku (2)"] and table.twice == {"sku": [1, 3]}
    assert dict(table.rows[0].cells) == {"sku": "1", "SKU": "2", "sku (2)": "3"}
    assert [p.severity for p in table.problems] == ["warning"]


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
    with pytest.raises(ReadError, match=r"damaged|cannot read"):
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
    workbook(path, {"S": [["sku"]]})
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


# --------------------------------------------------------------------------- hostile CSV files


def _strict_utf8_errors(line: bytes) -> list[tuple[int, int]]:
    """(1-based column, byte) of each error as the strict decoder meets them: the reference."""
    errors, pos = [], 0
    while pos < len(line):
        try:
            line[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            errors.append((pos + exc.start + 1, line[pos + exc.start]))
            pos += exc.end
    return errors


def test_nul_bytes_are_listed_up_to_a_cap_and_counted_exactly(tmp_path):
    from connector.read import MAX_LISTED_PER_KIND
    from connector.report import Report

    # 3,000 records with 2 NULs each and one with 5,000: every one refused, 11,000 NULs in all.
    body = "".join(f"{i},a\x00b\x00c\n" for i in range(3000)) + "x," + "\x00" * 5000 + "\n"
    table = read_table(write(tmp_path, "p.csv", "sku,title\n" + body + "ok,fine\n"))
    assert [r.cells["sku"] for r in table.rows] == ["ok"]
    listed = [p for p in table.problems if p.count is None]
    [summary] = [p for p in table.problems if p.count is not None]
    assert len(listed) == MAX_LISTED_PER_KIND
    assert (listed[0].line, listed[0].reason) == (2, "NUL byte at column 4")
    assert (summary.kind, summary.count) == ("encoding", 11_000 - MAX_LISTED_PER_KIND)
    typed = Report("p.csv")
    typed.problems.add(table.problems)
    report = typed.to_json()
    assert report["problems_by_kind"] == {"encoding": 11_000}
    assert report["problems_truncated"] == 11_000 - MAX_LISTED_PER_KIND


def test_a_million_nul_bytes_cost_no_more_than_the_file(tmp_path):
    # 1,000,000 NULs in 2 MB: one Problem each used to take ~200 MB and seconds.
    import time as clock
    import tracemalloc

    data = b"sku,title\n" + b"".join(b"%d,%s\n" % (i, b"ab\x00" * 100) for i in range(10_000))
    path = write(tmp_path, "p.csv", data)
    tracemalloc.start()
    started = clock.perf_counter()
    table = read_table(path)
    seconds = clock.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sum(p.count or 1 for p in table.problems) == 1_000_000
    assert len(table.problems) <= 1001 and table.rows == []
    assert peak < 12 * len(data), f"{peak / 2**20:.0f} MiB for a {len(data) / 2**20:.0f} MB file"
    assert seconds < 5


@pytest.mark.parametrize("content, nuls", [(b"\x00" * 300_000, 300_000),
                                           (b"sku,title\n1,ok\n" + b"\x00" * 100_000, 100_000)])
def test_file_mostly_nul_bytes_is_refused(tmp_path, content, nuls):
    with pytest.raises(ReadError) as err:
        read_table(write(tmp_path, "p.csv", content))
    assert str(err.value) == (f"p.csv: the file is mostly NUL bytes ({nuls:,} of {len(content):,} bytes): it was "
                              f"probably cut by a power failure or a full disk; export it again")


def test_nul_tail_below_half_refuses_only_its_record(tmp_path):
    head = "sku,title\n" + "".join(f"{i},product {i}\n" for i in range(1000))
    table = read_table(write(tmp_path, "p.csv", head.encode() + b"\x00" * 10_000))
    assert len(table.rows) == 1000
    assert sum(p.count or 1 for p in table.problems) == 10_000
    assert {p.line for p in table.problems if p.count is None} == {1002}


def _stray_quote_file(rows: int, stray_line: int) -> str:
    lines = ["sku,title,price"] + [f"S{n},Widget {n},{n}.50" for n in range(2, rows + 1)]
    lines[stray_line - 1] = f'S{stray_line},"Widget {stray_line},{stray_line}.50'
    return "\n".join(lines) + "\n"


def test_stray_quote_running_to_the_end_refuses_the_file_naming_its_line(tmp_path):
    with pytest.raises(ReadError) as err:
        read_table(write(tmp_path, "p.csv", _stray_quote_file(200, 3)))
    assert str(err.value).startswith("p.csv: line 3: a quoted value opened on this line is still open at the end "
                                     "of the file (line 200)")


def test_stray_quote_in_the_header_refuses_the_file(tmp_path):
    with pytest.raises(ReadError, match=r"line 1: a quoted value opened on this line is still open"):
        read_table(write(tmp_path, "p.csv", 'sku,"title,price\n1,a,2\n3,b,4\n'))


def test_quoted_value_over_too_many_lines_refuses_the_file(tmp_path):
    from connector.read import MAX_CELL_LINES

    text = _stray_quote_file(300, 5)
    lines = text.splitlines()
    lines[5 + MAX_CELL_LINES + 10] = 'S999,Widget" closed here,1.00'  # a second stray quote closes it
    with pytest.raises(ReadError) as err:
        read_table(write(tmp_path, "p.csv", "\n".join(lines) + "\n"))
    assert str(err.value).startswith(f"p.csv: line 5: a quoted value opened on this line runs over "
                                     f"{MAX_CELL_LINES + 12} lines (to line {MAX_CELL_LINES + 16})")


def test_multiline_descriptions_of_a_few_lines_are_values(tmp_path):
    body = "\n".join(f"paragraph {n}, with a comma" for n in range(40))
    text = f'sku,body,price\n1,"{body}",2.50\n2,"two\nlines",3.00\n3,plain,4.00\n'
    table = read_table(write(tmp_path, "p.csv", text))
    assert [(r.line, r.cells["price"]) for r in table.rows] == [(2, "2.50"), (42, "3.00"), (44, "4.00")]
    assert table.rows[0].cells["body"] == body and table.problems == []


def test_long_cell_is_read_whole(tmp_path):
    description = "Long description. " * 7800  # 140,400 characters: over csv's default 131,072
    text = f"sku;title;description\n1;Hat;{description}\n2;Cap;short\n"
    table = read_table(write(tmp_path, "p.csv", text))
    assert table.delimiter == ";"
    assert [len(r.cells["description"]) for r in table.rows] == [len(description), 5]


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xe2\x82x", b"\xf0\x90\x80", b"\xed\xa0\x80", b"\xc3", b"\xe0\x80\x80", b"\xf4\x90\x80\x80",
     b"\xef\xbb", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xe1\x80\xe1", b"\xf1\x80\x80\xff\x80"],
)
def test_invalid_utf8_is_reported_as_the_strict_decoder_meets_it(tmp_path, bad):
    line = "2,Caf\u00e9 ".encode() + bad + b" end"
    table = read_table(write(tmp_path, "p.csv", b"sku,title\n1,\xc3\xa9\n" + line + b"\n3,ok\n"))
    expected = [f"invalid UTF-8 byte 0x{byte:02x} at column {col}" for col, byte in _strict_utf8_errors(line)]
    assert [p.reason for p in errors(table)] == expected
    assert [r.cells["sku"] for r in table.rows] == ["1", "3"]


def test_random_damage_is_reported_as_the_strict_decoder_meets_it(tmp_path):
    import random

    rng = random.Random(7)
    good = "Crème brûlée – 10 € ".encode()
    for _ in range(30):
        line = b"".join(rng.choice([good[: rng.randrange(1, 20)], bytes([rng.randrange(128, 256)])])
                        for _ in range(40)).replace(b"\n", b"").replace(b",", b"")
        table = read_table(write(tmp_path, "p.csv", b"sku,title\n1,\xc3\xa9\n2," + line + b"\n"))
        expected = [f"invalid UTF-8 byte 0x{b:02x} at column {c + 2}" for c, b in _strict_utf8_errors(line)]
        assert table.encoding == "utf-8"  # one clean line of UTF-8 against one damaged: UTF-8 (with a warning)
        assert [p.reason for p in errors(table)] == expected


def test_long_line_of_invalid_bytes_is_decoded_in_linear_time(tmp_path):
    # 400 KB with 100,000 bad bytes: re-decoding the rest of the line after each one took ~10 s.
    import time as clock

    line = b"ab\xe9 " * 100_000
    path = write(tmp_path, "p.csv", "sku,title\n1,Caf\u00e9\n".encode() + b"2," + line + b"\n3,ok\n")
    started = clock.perf_counter()
    table = read_table(path)
    assert clock.perf_counter() - started < 2
    assert [r.cells["sku"] for r in table.rows] == ["1", "3"]
    assert sum(p.count or 1 for p in errors(table)) == 100_000
    assert errors(table)[1].reason == "invalid UTF-8 byte 0xe9 at column 9"


@pytest.mark.parametrize(
    "last, why",
    [("3,Gadget,12", "it has 3 of the header's 4 fields and no line end"),
     ('3,Gadget,"A cut desc', "a quoted value opened on it is never closed"),
     ('3,Gadget,1234.50,"A cut desc', "a quoted value opened on it is never closed"),
     ('3,Gadget,1234.50,"A stray quote\n', "a quoted value opened on it is never closed")],
)
def test_last_record_cut_short_is_refused(tmp_path, last, why):
    text = "sku,title,price,description\n1,Hat,10.00,ok\n2,Cap,5.00,ok\n" + last
    table = read_table(write(tmp_path, "p.csv", text))
    assert [r.cells["sku"] for r in table.rows] == ["1", "2"]
    [problem] = table.problems
    assert (problem.kind, problem.line) == ("cut", 4)
    assert problem.reason == (f"the last record looks cut short ({why}): the file was probably still being "
                              f"written or the disk was full; the record is not read")


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_last_line_without_line_end_is_read_when_whole(tmp_path, ending):
    text = "sku,title,price\n1,Hat,10.00\n2,Cap,5.00" + ending
    table = read_table(write(tmp_path, "p.csv", text))
    assert [r.cells["price"] for r in table.rows] == ["10.00", "5.00"]
    assert table.problems == []


def test_short_last_row_with_a_line_end_is_padded_as_before(tmp_path):
    table = read_table(write(tmp_path, "p.csv", "sku;title;qty\n1;a;2\n3;c\n"))
    assert cells(table)[-1] == {"sku": "3", "title": "c", "qty": ""} and table.problems == []


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_read(tmp_path, codec):
    text = "sku\ttitle\tprice\n00123\tCafé\t1 299,50\n00124\tTé\t5,00\n"
    table = read_table(write(tmp_path, "p.txt", text.encode(codec)))
    assert (table.encoding, table.delimiter, table.problems) == (codec, "\t", [])
    assert table.rows[0].cells == {"sku": "00123", "title": "Café", "price": "1 299,50"}


def test_cut_utf16_without_bom_says_so(tmp_path):
    data = "sku,title\n1,Hat\n2,Cap\n".encode("utf-16-le")[:-1]
    with pytest.raises(ReadError, match=r"p\.csv: the file looks like UTF-16 without a byte-order mark \(UTF-16-LE\)"):
        read_table(write(tmp_path, "p.csv", data))


def test_row_ceiling_refuses_a_csv_naming_the_setting(tmp_path):
    path = write(tmp_path, "p.csv", "sku,qty\n" + "".join(f"{i},1\n" for i in range(50)))
    assert len(read_table(path, max_rows=50).rows) == 50
    with pytest.raises(ReadError) as err:
        read_table(path, max_rows=40)
    assert str(err.value) == ("p.csv: the file is too large for this machine: 50 rows, limit 40; "
                              "raise `limits.max_rows` in connector.yaml if the machine has the memory for it")


def test_row_ceiling_refuses_a_workbook_before_its_rows_are_made(tmp_path):
    path = workbook(tmp_path / "p.xlsx", {"S": [["sku", "qty"]] + [[f"A{i}", i] for i in range(30)]})
    assert len(read_table(path, max_rows=30).rows) == 30
    with pytest.raises(ReadError, match=r"p\.xlsx, sheet 'S': the file is too large for this machine: 30 rows, "
                                        r"limit 20; raise `limits.max_rows`"):
        read_table(path, max_rows=20)


def test_row_ceiling_comes_from_the_settings(tmp_path):
    from connector.config import load_settings
    from connector.pipeline import _read_options, load_mapping_for

    config = write(tmp_path, "connector.yaml", "limits:\n  max_rows: 1234\n")
    settings = load_settings(config, {})
    assert _read_options(load_mapping_for(tmp_path / "p.csv", settings), settings)["max_rows"] == 1234


def test_a_csv_rows_cells_read_as_a_dict_of_its_header(tmp_path):
    """Rows share their header (a compact mapping each), yet read, compare and serialise as dicts."""
    path = tmp_path / "a.csv"
    path.write_text("sku,price,qty\nA1,10.50,3\nB2,,7\n", encoding="utf-8")
    first, second = read_table(path).rows
    assert first.cells == {"sku": "A1", "price": "10.50", "qty": "3"}
    assert dict(second.cells) == {"sku": "B2", "price": "", "qty": "7"}
    assert first.cells["price"] == "10.50" and first.cells.get("missing", "") == "" and "qty" in first.cells
    assert list(first.cells) == ["sku", "price", "qty"] and len(first.cells) == 3
    assert list(second.cells.items()) == [("sku", "B2"), ("price", ""), ("qty", "7")]
    assert json.loads(json.dumps(dict(second.cells))) == {"sku": "B2", "price": "", "qty": "7"}
    with pytest.raises(KeyError):
        first.cells["missing"]


def test_a_column_named_twice_refuses_the_file_only_when_the_mapping_reads_it(tmp_path):
    from connector.config import Settings
    from connector.mapping import parse_mapping
    from connector.pipeline import plan_file

    path = write(tmp_path, "stock.csv", "Code,Title,Note,Notes,Notes\nA1,Kettle,n,front,back\n")
    base = {"group_by": "Code", "product": {"title": "Title"}, "variant": {"source_variant_code": "Code", "sku": "Code"}}
    plan = plan_file(path, Settings(), mapping=parse_mapping(base))  # never reads Notes: mapped, with a warning
    assert [p.code for p in plan.products] == ["A1"]
    assert [(p.kind, p.severity) for p in plan.problems] == [("header", "warning")]
    for reads in ({"column": "notes", "fallback": "Title"}, "NOTES"):  # a fallback, any case: it reads Notes
        spec = parse_mapping({**base, "product": {"title": "Title", "body_html": reads}})
        with pytest.raises(ReadError, match="the header names the column 'Notes' 2 times \\(columns 4, 5\\) and "
                                            "the mapping reads 'Notes': which one it means is not clear"):
            plan_file(path, Settings(), mapping=spec)
