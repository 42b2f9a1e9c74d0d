"""Files without a header row (`source.header: none`): columns named by position or by `source.columns`.

Every row is data: the first row is never taken for a header and lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.columns import Header, column_key, positional_names
from connector.errors import MappingError
from connector.mapping import parse_mapping
from connector.read import ReadError, read_table
from tests.support import pipeline_for

# A supplier's export: no header, every field quoted, leading-zero article numbers, decimal commas.
SUPPLIER = (
    '"00123";"Kettle 2L";"1 299,50";"4"\r\n'
    '"00124";"Toaster";"499,00";"0"\r\n'
    '"00999";"Mug, blue";"35,5";"12"\r\n'
    '"01000";"Tea towel";"0,99";"100"\r\n'
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


# --------------------------------------------------------------------------- reading


def test_headerless_csv_names_columns_by_position_and_keeps_the_first_row(tmp_path):
    table = read_table(write(tmp_path, "s.csv", SUPPLIER), header_row=0)
    assert table.header == ["1", "2", "3", "4"]
    assert table.header_row is None
    assert [r.cells["1"] for r in table.rows] == ["00123", "00124", "00999", "01000"]
    assert table.rows[0].cells == {"1": "00123", "2": "Kettle 2L", "3": "1 299,50", "4": "4"}
    assert [(r.line, r.row_number) for r in table.rows] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert table.problems == []


def test_headerless_csv_with_named_columns_numbers_the_rest(tmp_path):
    table = read_table(write(tmp_path, "s.csv", SUPPLIER), header_row=0, columns=["code", "name"])
    assert table.header == ["code", "name", "3", "4"]
    assert table.rows[2].cells == {"code": "00999", "name": "Mug, blue", "3": "35,5", "4": "12"}


def test_headerless_csv_refuses_a_row_wider_than_the_others(tmp_path):
    table = read_table(write(tmp_path, "s.csv", SUPPLIER + '"02000";"Extra";"1,00";"1";"surprise"\r\n'), header_row=0)
    assert len(table.rows) == 4
    [problem] = table.problems
    assert (problem.kind, problem.line, problem.row_number) == ("shape", 5, 5)
    assert "source.columns" in problem.reason


def test_headerless_workbook_names_columns_by_their_excel_position(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Stock"
    ws["B1"], ws["C1"], ws["D1"] = "00123", "Kettle", 4  # the used range starts at column B
    ws["B2"], ws["C2"], ws["D2"] = "00124", "Toaster", 0
    wb.save(tmp_path / "s.xlsx")
    table = read_table(tmp_path / "s.xlsx", header_row=0)
    assert table.header == ["2", "3", "4"]
    assert [r.cells for r in table.rows] == [{"2": "00123", "3": "Kettle", "4": "4"},
                                            {"2": "00124", "3": "Toaster", "4": "0"}]
    assert [(r.line, r.row_number) for r in table.rows] == [(1, 1), (2, 2)]
    named = read_table(tmp_path / "s.xlsx", header_row=0, columns=["sku"])
    assert named.header == ["sku", "3", "4"]


def test_duplicate_names_in_columns_are_refused(tmp_path):
    with pytest.raises(ReadError, match="duplicate column names"):
        read_table(write(tmp_path, "s.csv", SUPPLIER), header_row=0, columns=["a", "a"])


@pytest.mark.parametrize("width, columns, first, expected", [
    (3, (), 0, ["1", "2", "3"]),
    (3, ("sku",), 0, ["sku", "2", "3"]),
    (1, ("sku", "name"), 0, ["sku", "name"]),
    (2, (), 2, ["3", "4"]),
])
def test_positional_names(width, columns, first, expected):
    assert positional_names(width, columns, first) == expected


def test_the_reader_and_the_mapping_match_column_names_alike():
    assert column_key("\ufeff Unit\u00a0 Price ") == column_key("unit price") == "unit price"
    header = Header(["SKU", "Unit  Price"])
    assert header.find("unit price", "variant.price") == "Unit  Price"
    assert header.find("nope", "variant.sku") is None and header.missing == {"nope": "variant.sku"}


# --------------------------------------------------------------------------- the mapping


def test_mapping_header_none_reads_from_row_one_with_columns():
    spec = parse_mapping({"group_by": 1, "variant": {"source_variant_code": 1, "sku": "1"},
                          "source": {"header": "none", "columns": ["code", "name"]}})
    assert (spec.source.header_row, spec.source.columns) == (0, ("code", "name"))
    assert spec.group_by.column == "1"  # a position may be written as a number


@pytest.mark.parametrize("source, message", [
    ({"columns": ["a", "b"]}, "source.columns: names the columns of a file without a header row: add `header: none`"),
    ({"header": "none", "header_row": 2}, "source.header_row: cannot be used with header: none"),
    ({"header": "none", "find_header": ["sku"]}, "source.find_header: cannot be used with header: none"),
    ({"header": "none", "columns": ["a", "a"]}, "source.columns: names a column twice: a"),
    ({"header": "no"}, 'source.header: "no" is not allowed'),
    ({"legacy_encoding": ["cp1252", "klingon"]}, 'source.legacy_encoding: "klingon" is not a known text encoding'),
])
def test_mapping_header_options_are_checked(source, message):
    with pytest.raises(MappingError) as caught:
        parse_mapping({"group_by": "sku", "variant": {"source_variant_code": "sku", "sku": "sku"}, "source": source})
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_mapping_legacy_encoding_may_be_a_list():
    spec = parse_mapping({"group_by": "sku", "variant": {"source_variant_code": "sku", "sku": "sku"},
                          "source": {"legacy_encoding": ["mac_roman", "cp1252"]}})
    assert spec.source.legacy_encoding == ("mac_roman", "cp1252")


# --------------------------------------------------------------------------- end to end


HEADERLESS_MAPPING = """\
source:
  header: none
  columns: [code]          # the first column has a name; the others are used by position
  decimal: ","
  thousands: " "
group_by: code
product:
  title: "2"
variant:
  source_variant_code: code
  sku: code
  price: {column: 3, type: decimal}
  qty: {column: "4", type: int}
skip_rows:
  - {column: 4, equals: "skip"}
"""


def test_headerless_quoted_decimal_comma_file_maps_every_row(make_sandbox, tmp_path):
    sandbox = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    mapping = tmp_path / "supplier.yaml"
    mapping.write_text(HEADERLESS_MAPPING)
    path = write(tmp_path, "supplier.csv", SUPPLIER)
    report = pipeline_for(tmp_path, sandbox).run_file(path, mapping=str(mapping))
    assert report.status == "done", report.message
    assert report.counts.rows_refused == 0 and report.counts.products == 4
    read = report.to_json()["read"]
    assert (read["header_row"], read["columns"], read["rows"]) == (None, ["code", "2", "3", "4"], 4)
    products = {p["source_product_code"]: p for p in sandbox.state()["products"]}
    assert sorted(products) == ["00123", "00124", "00999", "01000"]  # the first row too, zeros kept
    kettle = products["00123"]
    assert kettle["title"] == "Kettle 2L"
    assert float(kettle["variants"][0]["price"]) == 1299.5 and int(kettle["variants"][0]["qty"]) == 4
    assert float(products["01000"]["variants"][0]["price"]) == 0.99


def test_positions_work_wherever_a_column_is_named(tmp_path):
    from connector.build import build_products

    text = ('"T1";"Tee";"S";"Red";"t1.jpg";"x"\n'
            '"T1";"";"M";"Red";"";"x"\n'
            '"K1";"Kettle";"";"";"";"discontinued"\n')
    table = read_table(write(tmp_path, "s.csv", text), header_row=0)
    spec = parse_mapping({
        "source": {"header": "none"},
        "group_by": 1,
        "fill_down": [2],
        "skip_rows": [{"column": 6, "equals": "discontinued"}],
        "product": {"title": {"template": "{2} ({1})"}},
        "variant": {"source_variant_code": {"template": "{1}-{3}"}, "sku": {"template": "{1}-{3}"}},
        "options": [{"name": {"value": "Size"}, "value": 3}, {"name": {"value": "Colour"}, "value": "4"}],
        "images": {"columns": [5]},
    })
    built = build_products(table.rows, spec, source_id=1)
    assert [p.code for p in built.products] == ["T1"]
    items = built.products[0].items
    assert [i["product"]["title"] for i in items] == ["Tee (T1)", "Tee (T1)"]  # filled down from row 1
    assert [i["product"]["variants"]["sku"] for i in items] == ["T1-S", "T1-M"]
    assert [i["product"]["variants"]["option2"] for i in items] == ["Red", "Red"]
    assert [ref.name for ref in built.products[0].images] == ["t1.jpg"]
    assert [p.kind for p in built.problems] == ["filter"]  # K1 skipped by the rule on column 6


def test_the_headerless_example_in_the_docs_loads():
    import json

    import jsonschema
    import yaml

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "mapping.md").read_text()
    example = text.split("A file without a header row (a supplier", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    schema = json.loads((root / "connector" / "schema" / "mapping.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(example))
    spec = parse_mapping(yaml.safe_load(example))
    assert (spec.source.header_row, spec.source.columns, spec.source.decimal) == (0, ("code",), ",")


def test_a_header_row_of_numbers_warns_that_the_file_may_have_none(tmp_path):
    table = read_table(write(tmp_path, "s.csv", SUPPLIER))  # read as if row 1 were the header
    [warning] = table.problems
    assert (warning.kind, warning.severity, warning.row_number) == ("header", "warning", 1)
    assert "(00123, 1 299,50)" in warning.reason and "`source: {header: none}`" in warning.reason
    assert read_table(write(tmp_path, "h.csv", "sku,2024,2025,1,2\nA,1,2,3,4\n")).problems == []  # years, sizes
