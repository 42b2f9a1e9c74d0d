"""build_products: rows of text + a mapping -> items grouped into products, and row problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from connector.build import build_products
from connector.checks import check_products
from connector.mapping import Mapping, load_mapping, parse_mapping
from connector.model import ImageRef, Row

ROOT = Path(__file__).resolve().parents[1]
BASE = {"group_by": "code", "variant": {"source_variant_code": "sku", "sku": "sku"}, "product": {"title": "title"}}


def mapping_of(extra: dict | str | None = None, **source) -> Mapping:
    doc = dict(BASE)
    if isinstance(extra, str):
        extra = yaml.safe_load(textwrap.dedent(extra))
    for key, value in (extra or {}).items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) and isinstance(doc.get(key), dict) else value
    if source:
        doc["source"] = source
    return parse_mapping(doc)


def rows_of(*cells: dict, start: int = 2) -> list[Row]:
    """Rows with every column of every row present (as a reader gives them) and lines from `start`."""
    columns: dict[str, None] = {}
    for c in cells:
        columns.update(dict.fromkeys(c))
    return [Row(start + i, {k: c.get(k, "") for k in columns}) for i, c in enumerate(cells)]


def row(**cells: str) -> dict:
    return {"code": "P1", "sku": "S1", "title": "Shirt", **cells}


def variant_of(mapping: Mapping, **cells: str):
    built = build_products(rows_of(row(**cells)), mapping, source_id=9)
    assert built.products, [p.reason for p in built.problems]
    return built.products[0].items[0]["product"]["variants"]


def errors_of(mapping: Mapping, *cells: dict):
    built = build_products(rows_of(*cells), mapping, source_id=9)
    return [p for p in built.problems if p.severity == "error"]


# --------------------------------------------------------------------------- the item


def test_item_has_the_api_shape_with_one_variant_object():
    mapping = mapping_of({"variant": {"price": "price", "qty": "qty", "inventory_management": "im", "grams": "g"}})
    built = build_products(rows_of(row(price="1299.50", qty="7", im="TRUE", g="250")), mapping, source_id=9)
    assert built.products[0].items == [
        {
            "source": {"source_id": 9, "product_active": "true", "source_product_code": "P1", "sync_token": "0", "fetch_token": "0"},
            "product": {
                "title": "Shirt",
                "variants": {"source_variant_code": "S1", "sku": "S1", "price": 1299.5, "qty": 7, "inventory_management": "true", "grams": 250},
            },
        }
    ]


def test_blank_cells_are_left_out_not_sent_empty():
    mapping = mapping_of({"product": {"vendor": "vendor"}, "variant": {"barcode": "barcode", "price": "price"}})
    item = build_products(rows_of(row(vendor="  ", barcode="", price="")), mapping, source_id=1).products[0].items[0]
    assert "vendor" not in item["product"]
    assert set(item["product"]["variants"]) == {"source_variant_code", "sku"}


@pytest.mark.parametrize(
    "spec, cells, expected",
    [
        ("sku", {"sku": " 00123 "}, "00123"),  # codes keep leading zeros, surrounding spaces go
        ({"column": "sku", "upper": True}, {"sku": "ab-1"}, "AB-1"),
        ({"column": "sku", "lower": True}, {"sku": "AB-1"}, "ab-1"),
        ({"column": "sku", "zero_pad": 6}, {"sku": "123"}, "000123"),
        ({"column": "sku", "zero_pad": 6}, {"sku": "AB1"}, "AB1"),  # only digits are padded
        ({"column": "sku", "replace": {"pattern": "[^A-Z0-9]", "with": ""}}, {"sku": "AB-1 2"}, "AB12"),
        ({"column": "sku", "prefix": "X-", "suffix": "-Z"}, {"sku": "1"}, "X-1-Z"),
        ({"column": "sku", "map": {"old1": "NEW1"}}, {"sku": "OLD1"}, "NEW1"),
        ({"template": "{Brand}-{sku}"}, {"Brand": "ACME", "sku": "1"}, "ACME-1"),
        ({"column": "sku", "default": "NONE"}, {"sku": ""}, "NONE"),
        ({"value": "FIXED"}, {"sku": "1"}, "FIXED"),
        ({"column": "sku", "strip": False}, {"sku": " 1 "}, " 1 "),
    ],
)
def test_variant_field_sources_and_transforms(spec, cells, expected):
    mapping = mapping_of({"variant": {"source_variant_code": spec, "sku": {"value": "S"}}})
    assert variant_of(mapping, **cells)["source_variant_code"] == expected


@pytest.mark.parametrize(
    "spec, cell, source, expected",
    [
        ({"column": "kg", "type": "decimal", "multiply": 1000, "round": 0}, "1,2345", {"decimal": ","}, 1235),
        ({"column": "kg", "type": "decimal", "multiply": 1000}, "0.25", {}, 250),
        ({"column": "kg", "type": "int"}, "479.0", {}, 479),
        ({"column": "kg", "type": "int"}, "479,0", {"decimal": ","}, 479),
        ({"column": "kg", "type": "int", "default": 0}, "", {}, 0),
    ],
)
def test_grams_from_units(spec, cell, source, expected):
    mapping = mapping_of({"variant": {"grams": spec}}, **source)
    assert variant_of(mapping, kg=cell)["grams"] == expected


@pytest.mark.parametrize(
    "cell, source, expected",
    [("1 299,50", {"decimal": ",", "thousands": " "}, 1299.5), ("1299.50", {}, 1299.5), ("0", {}, 0.0), ("1.299,5", {"decimal": ",", "thousands": "."}, 1299.5)],
)
def test_price_is_a_json_number(cell, source, expected):
    price = variant_of(mapping_of({"variant": {"price": "price"}}, **source), price=cell)["price"]
    assert price == expected and isinstance(price, float)


def _price_or_reason(mapping: Mapping, cell: str):
    built = build_products(rows_of(row(price=cell)), mapping, source_id=9)
    if built.products:
        return built.products[0].items[0]["product"]["variants"].get("price")
    return [p.reason for p in built.problems if p.severity == "error"]


@pytest.mark.parametrize("decimal", [".", ","])
@pytest.mark.parametrize(
    "cell", ["-1.5", "1.", "5,", ".5", ",5", "1.2.3", "1,2,3", "\u0663.\u0665", "--1", "1e5", "-0", "007.50", "1,5",
             "-", "12,5O", "1" * 40, "1" * 41, "\u00b2"],
)
def test_a_price_read_by_the_shortcut_is_what_the_number_parser_reads(cell, decimal):
    """Plain decimals skip the general parser; `multiply: 1` always takes it: both give one answer."""
    shortcut = _price_or_reason(mapping_of({"variant": {"price": "price"}}, decimal=decimal), cell)
    general = _price_or_reason(mapping_of({"variant": {"price": {"column": "price", "type": "decimal", "multiply": 1}}},
                                          decimal=decimal), cell)
    assert shortcut == general


@pytest.mark.parametrize(
    "field, cell, reason",
    [
        ("price", "12,5O", 'price "12,5O" is not a number (decimal separator ".")'),
        ("price", "1,299", 'price "1,299" is ambiguous'),
        ("qty", "4.5", 'qty "4.5" is not a whole number'),
        ("grams", "1.5", 'grams "1.5" is not a whole number'),
        ("inventory_management", "maybe", 'inventory_management "maybe" is not a yes/no value'),
        ("barcode", "6.00988E+12", 'barcode "6.00988E+12" is in scientific notation'),
    ],
)
def test_cell_errors_name_line_column_value_and_product(field, cell, reason):
    mapping = mapping_of({"variant": {field: {"column": "cell", "type": "code"} if field == "barcode" else "cell"}})
    (problem,) = errors_of(mapping, row(cell=cell))
    assert problem.reason.startswith(reason)
    assert (problem.kind, problem.line, problem.column, problem.value, problem.product) == ("type", 2, "cell", cell, "P1")


def test_gtin_type_checks_the_barcode():
    mapping = mapping_of({"variant": {"barcode": {"column": "b", "type": "gtin"}}})
    assert variant_of(mapping, b="6001234567899")["barcode"] == "6001234567899"
    (problem,) = errors_of(mapping, row(b="6001234567891"))
    assert "check digit" in problem.reason


def test_bool_spellings_per_field():
    mapping = mapping_of({"variant": {"inventory_management": {"column": "im", "true_values": ["Ja"], "false_values": ["Nee"]}}})
    assert variant_of(mapping, im="ja")["inventory_management"] == "true"
    assert variant_of(mapping, im="NEE")["inventory_management"] == "false"


def test_product_fields_from_template_skip_blank_parts():
    mapping = mapping_of({"product": {"title": {"template": "{Brand} {Name}"}, "tags": {"column": "tags", "split": "|"}}})
    built = build_products(rows_of(row(Brand="", Name="Shirt", tags="a | b|a||c"), row(code="P2", sku="S2", Brand="", Name="")), mapping, source_id=1)
    product = built.products[0].items[0]["product"]
    assert product["title"] == "Shirt" and product["tags"] == "a,b,c"
    assert [(p.kind, p.product, p.column) for p in built.problems] == [("required", "P2", "Brand")]


# --------------------------------------------------------------------------- families and options


def test_column_families_become_lists_and_skip_blank_cells():
    mapping = load_mapping(ROOT / "mappings" / "stock2shop.yaml")
    cells = {
        "source_product_code": "P1", "source_variant_code": "S1", "sku": "S1", "title": "T",
        "price": "10", "price_wholesale": "8.5", "price_retail": "", "qty": "3", "qty_JHB": "2", "qty_CPT": "-1",
        "meta_colour": "Red", "meta_fabric": "",
    }
    item = build_products([Row(2, cells)], mapping, source_id=1).products[0].items[0]
    variant = item["product"]["variants"]
    assert variant["price"] == 10.0 and variant["qty"] == 3  # plain price/qty are not swallowed by the families
    assert variant["price_tiers"] == [{"tier": "wholesale", "price": 8.5}]
    assert variant["qty_availability"] == [{"description": "JHB", "qty": 2}, {"description": "CPT", "qty": -1}]
    assert item["product"]["meta"] == [{"key": "colour", "value": "Red"}]


def test_family_entries_listed_by_name():
    mapping = mapping_of({"variant": {"price_tiers": {"entries": [{"name": "Trade", "value": "Price B"}]}}})
    assert variant_of(mapping, **{"Price B": "5"})["price_tiers"] == [{"tier": "Trade", "price": 5.0}]


def test_family_cell_error_names_the_column():
    mapping = mapping_of({"variant": {"qty_availability": {"columns": "^qty_(?P<w>.+)$"}}})
    (problem,) = errors_of(mapping, row(qty_JHB="lots"))
    assert problem.column == "qty_JHB" and problem.value == "lots"


def test_options_fill_exactly_the_slots_the_row_has():
    mapping = mapping_of({"options": [{"name": "Size", "value": "Size"}, {"name": {"column": "o2n"}, "value": "o2v"}, {"name": "Fit", "value": "Fit"}]})
    built = build_products(rows_of(row(Size="L", o2n="Colour", o2v="Red", Fit=""), row(sku="S2", Size="", o2n="", o2v="", Fit="Slim")), mapping, source_id=1)
    first, second = (i["product"] for i in built.products[0].items)
    assert first["options"] == [{"name": "Size", "position": 1}, {"name": "Colour", "position": 2}]
    assert (first["variants"]["option1"], first["variants"]["option2"]) == ("L", "Red") and "option3" not in first["variants"]
    assert second["options"] == [{"name": "Fit", "position": 1}] and second["variants"]["option1"] == "Slim"


def test_option_value_without_a_name_is_an_error():
    mapping = mapping_of({"options": [{"name": {"column": "o1n"}, "value": "o1v"}]})
    (problem,) = errors_of(mapping, row(o1n="", o1v="Red"))
    assert problem.kind == "options" and "no option name" in problem.reason


# --------------------------------------------------------------------------- grouping, status, filters


def test_rows_of_a_product_need_not_be_adjacent():
    built = build_products(rows_of(row(sku="A1"), row(code="P2", sku="B1"), row(sku="A2")), mapping_of(), source_id=1)
    assert [(p.code, p.lines) for p in built.products] == [("P1", [2, 4]), ("P2", [3])]
    assert [i["product"]["variants"]["sku"] for i in built.products[0].items] == ["A1", "A2"]


def test_a_bad_row_holds_back_its_whole_product_but_not_others():
    mapping = mapping_of({"variant": {"price": "price"}})
    built = build_products(rows_of(row(sku="A1", price="1"), row(code="P2", sku="B1", price="2"), row(sku="A2", price="x")), mapping, source_id=1)
    assert [p.code for p in built.products] == ["P2"]
    assert built.held == {"P1": [(None, 2), (None, 4)]}
    (problem,) = [p for p in built.problems if p.severity == "error"]
    assert (problem.line, problem.product) == (4, "P1")


def test_a_row_without_a_product_code_is_an_error_without_a_product():
    built = build_products(rows_of(row(code=" "), row(sku="S2")), mapping_of(), source_id=1)
    (problem,) = built.problems
    assert (problem.kind, problem.line, problem.product, problem.column) == ("required", 2, None, "code")
    assert [p.code for p in built.products] == ["P1"]


def test_missing_sku_is_required():
    problems = errors_of(mapping_of(), row(sku=""))
    # one message per cell: the blank "sku" cell gives source_variant_code and sku, told once
    assert [(p.kind, p.column) for p in problems] == [("required", "sku")]
    assert problems[0].reason == 'source_variant_code is required (column "sku" is blank)'


@pytest.mark.parametrize(
    "status, active, sent",
    [("A", "true", True), ("active", "true", True), ("", "true", True), ("D", "false", True), ("delete", "false", True), ("I", None, False)],
)
def test_status_values(status, active, sent):
    mapping = mapping_of({"active": {"column": "Status", "active": ["A", "Active"], "delete": ["D", "Delete"], "ignore": ["I", "Ignore"]}})
    built = build_products(rows_of(row(Status=status)), mapping, source_id=1)
    if sent:
        assert built.products[0].items[0]["source"]["product_active"] == active
    else:
        assert not built.products and built.rows_skipped == 1
        assert [(p.kind, p.severity, p.line) for p in built.problems] == [("ignored", "skipped", 2)]


def test_a_delete_row_needs_only_its_keys():
    mapping = mapping_of({"active": {"column": "Status", "delete": ["D"], "active": ["A"]}})
    built = build_products(rows_of(row(Status="D", title="")), mapping, source_id=1)
    assert built.products[0].items[0]["source"]["product_active"] == "false" and not built.problems


def test_unlisted_status_is_an_error():
    mapping = mapping_of({"active": {"column": "Status", "active": ["A"], "delete": ["D"]}})
    (problem,) = errors_of(mapping, row(Status="X"))
    assert problem.kind == "status" and "valid choices: a, d" in problem.reason


def test_skip_rows_are_reported_as_skipped():
    mapping = mapping_of({"skip_rows": [{"column": "sku", "matches": "^(Total|TOTAL)"}, {"column": "Type", "equals": "grouped"}]})
    built = build_products(rows_of(row(Type="simple"), row(code="", sku="TOTAL", Type=""), row(sku="S3", Type="grouped")), mapping, source_id=1)
    assert [p.lines for p in built.products] == [[2]]
    assert [(p.kind, p.severity, p.line, p.column) for p in built.problems] == [("filter", "skipped", 3, "sku"), ("filter", "skipped", 4, "Type")]
    assert built.rows_skipped == 2 and built.rows_read == 3


# --------------------------------------------------------------------------- images


def test_image_columns_in_order_split_and_deduplicated():
    mapping = mapping_of({"images": {"columns": "^image\\d+$", "separator": ","}})
    built = build_products(rows_of(row(image1="a.jpg, b.jpg", image2="a.jpg"), row(sku="S2", image1="c.png", image2="")), mapping, source_id=1)
    assert built.products[0].images == [
        ImageRef("a.jpg", 2, "image1", "S1"),
        ImageRef("b.jpg", 2, "image1", "S1"),
        ImageRef("c.png", 3, "image1", "S2"),
    ]


def test_image_patterns_use_mapped_values_and_count():
    mapping = mapping_of({"variant": {"sku": {"column": "sku", "lower": True}}, "images": {"pattern": ["{sku}.jpg", "{sku}-{n}.jpg"], "max": 2}})
    built = build_products(rows_of(row(sku="AB1")), mapping, source_id=1)
    assert [(i.name, i.column) for i in built.products[0].images] == [("ab1.jpg", None), ("ab1-1.jpg", None), ("ab1-2.jpg", None)]


def test_no_images_for_a_deleted_product():
    mapping = mapping_of({"active": {"column": "Status", "delete": ["D"], "active": ["A"]}, "images": {"columns": ["image1"]}})
    assert build_products(rows_of(row(Status="D", image1="a.jpg")), mapping, source_id=1).products[0].images == []


# --------------------------------------------------------------------------- header matching


def test_columns_match_ignoring_case_and_spaces():
    mapping = mapping_of({"variant": {"price": "Sell Price"}})
    assert variant_of(mapping, **{"sell  price ": "3"})["price"] == 3.0


def test_missing_optional_column_is_a_warning_and_left_out():
    mapping = mapping_of({"product": {"vendor": "Brand"}})
    built = build_products(rows_of(row()), mapping, source_id=1)
    assert [(p.kind, p.severity, p.column) for p in built.problems] == [("column", "warning", "Brand")]
    assert "vendor" not in built.products[0].items[0]["product"]


def test_missing_group_column_refuses_the_file():
    built = build_products(rows_of({"sku": "S1", "title": "T"}, {"sku": "S2", "title": "T"}), mapping_of(), source_id=1)
    assert not built.products and built.rows_read == 2
    assert [(p.kind, p.severity) for p in built.problems] == [("column", "error")]


def test_missing_columns_can_be_ignored():
    mapping = mapping_of({"product": {"vendor": "Brand"}, "missing_columns": "ignore"})
    assert not build_products(rows_of(row()), mapping, source_id=1).problems


# --------------------------------------------------------------------------- volume


def test_build_and_check_100k_rows_keeps_every_product():
    """Volume, not speed: bench/bench_pipeline.py measures the time."""
    mapping = load_mapping(ROOT / "mappings" / "stock2shop.yaml")
    rows = []
    for i in range(100_000):
        p, v = divmod(i, 4)
        rows.append(Row(i + 2, {
            "source_product_code": f"P{p}", "source_variant_code": f"P{p}-{v}", "sku": f"P{p}-{v}", "title": f"Product {p}",
            "body_html": "<p>x</p>", "vendor": "Acme", "product_type": "Widget", "collection": "C", "tags": "a,b",
            "barcode": "6001234567899", "price": "1299.50", "qty": "12", "grams": "500", "inventory_management": "true",
            "active": "true", "option1_name": "Size", "option1_value": "SMLX"[v], "option2_name": "Colour", "option2_value": "Red",
            "price_wholesale": "999.00", "qty_JHB": "5", "qty_CPT": "7", "meta_colour": "red", "image1": f"P{p}.jpg", "grams2": "",
        }))
    built = build_products(rows, mapping, source_id=1)
    kept, problems, held = check_products(built.products)
    assert len(kept) == 25_000 and not problems and not built.problems and not held
    assert sum(len(p.items) for p in kept) == 100_000


# --------------------------------------------------------------------------- packed cells, fallbacks, dates


@pytest.mark.parametrize(
    "pick, cell, expected",
    [
        ({"key": "size"}, "has_options=0,size=XS,color=Black", "XS"),
        ({"key": "colour"}, "size=XS,color=Black", None),  # key absent: blank
        ({"key": "b", "separator": ";", "equals": ":"}, "a:1; b: 2", "2"),
        ({"index": 1}, "Men/Tops,Collections/Eco", "Men/Tops"),
        ({"index": -1, "separator": "/"}, "Default Category/Men/Tops", "Tops"),
        ({"index": 3}, "a,b", None),  # past the end: blank
        ([{"index": 1}, {"index": -1, "separator": "/"}], "Default/Men/Hoodies,Default/Sale", "Hoodies"),
    ],
)
def test_pick_takes_one_part_of_a_packed_cell(pick, cell, expected):
    mapping = mapping_of({"product": {"vendor": {"column": "packed", "pick": pick}}})
    built = build_products(rows_of(row(packed=cell)), mapping, source_id=9)
    assert built.products[0].items[0]["product"].get("vendor") == expected


def test_replace_runs_before_pick():
    spec = {"column": "attrs", "replace": {"pattern": ";", "with": ","}, "pick": [{"index": 2}, {"index": 1, "separator": ":"}]}
    mapping = mapping_of({"product": {"vendor": spec}})
    built = build_products(rows_of(row(attrs="Color:color:0; Disk space:select:1")), mapping, source_id=9)
    assert built.products[0].items[0]["product"]["vendor"] == "Disk space"


@pytest.mark.parametrize(
    "cells, expected",
    [({"brand": "Acme", "alt": "zeta"}, "Acme"), ({"brand": "", "alt": "zeta"}, "ZETA"), ({"brand": " ", "alt": ""}, None)],
)
def test_fallback_is_used_only_when_the_field_is_blank(cells, expected):
    mapping = mapping_of({"product": {"vendor": {"column": "brand", "fallback": {"column": "alt", "upper": True}}}})
    built = build_products(rows_of(row(**cells)), mapping, source_id=9)
    assert built.products[0].items[0]["product"].get("vendor") == expected


def test_group_by_fallback_keeps_the_file_when_only_the_first_column_is_missing():
    mapping = mapping_of({"group_by": {"column": "parent", "fallback": "code"}})
    built = build_products(rows_of(row()), mapping, source_id=9)
    assert [p.code for p in built.products] == ["P1"]
    # the chain's other column is in the file: "parent" is a choice of spelling, not missing
    assert [p for p in built.problems if p.kind == "column"] == []


@pytest.mark.parametrize(
    "columns, warned",
    [
        ({"Weight (kg)": "1.5"}, []),  # the fallback's column is there: nothing is missing
        ({"Weight (g)": "1500"}, []),
        ({"weight": "1500"}, ["Weight (g)", "Weight (kg)"]),  # neither: both reported
    ],
)
def test_a_column_is_missing_only_when_no_column_of_its_fallback_chain_is_there(columns, warned):
    mapping = mapping_of({"variant": {"grams": {"column": "Weight (g)", "type": "decimal", "round": 0,
                                                "fallback": {"column": "Weight (kg)", "multiply": 1000, "round": 0}}}})
    built = build_products(rows_of(row(**columns)), mapping, source_id=9)
    assert [p.column for p in built.problems if p.kind == "column"] == warned
    if not warned:
        assert built.products[0].items[0]["product"]["variants"]["grams"] == 1500


def test_woocommerce_weight_in_kilograms_is_read_when_grams_are_absent():
    mapping = load_mapping(ROOT / "mappings" / "woocommerce.yaml")
    cells = {"ID": "1", "Type": "simple", "SKU": "W1", "Name": "Hat", "Published": "1", "Parent": "",
             "Regular price": "10", "Weight (kg)": ".5"}
    built = build_products(rows_of(cells), mapping, source_id=9)
    assert built.products[0].items[0]["product"]["variants"]["grams"] == 500
    assert not any(p.kind == "column" and "Weight" in (p.column or "") for p in built.problems)


# --------------------------------------------------------------------------- malformed numbers


@pytest.mark.parametrize(
    "spec, cell, says",
    [
        ({"qty": {"column": "n", "type": "int"}}, "9" * 5000, "is too long for a number (5000 characters; at most 40)"),
        ({"qty": {"column": "n", "type": "int"}}, "-" + "9" * 4400, "is too long for a number"),
        ({"price": {"column": "n", "type": "decimal"}}, "1" * 41, "is too long for a number (41 characters"),
        ({"price": {"column": "n", "type": "decimal", "round": 2}}, "1" * 30, "is not a number that can be sent"),
        ({"grams": {"column": "n", "type": "decimal", "multiply": 1000, "round": 0}}, "9" * 39, "is not a number that can be sent"),
        ({"qty": {"column": "n", "type": "decimal", "round": 0}}, "1" * 30, "is not a number that can be sent"),
        ({"price": {"column": "n", "type": "decimal", "multiply": "1e20"}}, "9" * 20, "is not a number that can be sent"),
        ({"price": {"column": "n", "type": "decimal"}}, "1" * 30, "is not a number that can be sent"),
        ({"qty": {"column": "n", "type": "int"}}, "-" + "9" * 29, "is not a number that can be sent"),
        ({"price": {"column": "n", "type": "int"}}, "12" * 15, "is not a number that can be sent"),
        ({"qty_availability": {"columns": "^n$", "type": "int"}}, "7" * 4500, "is too long for a number"),
    ],
)
def test_a_malformed_number_is_a_cell_error_naming_the_cell_never_a_crash(spec, cell, says):
    mapping = mapping_of({"variant": spec})
    built = build_products(rows_of(row(n=cell), row(code="P2", sku="S2", n="5")), mapping, source_id=9)
    errors = [p for p in built.problems if p.severity == "error"]
    assert len(errors) == 1 and errors[0].line == 2 and errors[0].column == "n" and errors[0].product == "P1"
    assert says in errors[0].reason and len(errors[0].reason) < 200  # the reason quotes a cut cell
    assert errors[0].value == cell  # the problem keeps the whole cell for the rejected-rows file
    assert [p.code for p in built.products] == ["P2"]


# --------------------------------------------------------------------------- units in another column

UNIT = {"grams": {"column": "weight", "type": "decimal", "round": 0,
                  "unit": {"column": "weight-unit", "factors": {"GRAM": 1, "KILOGRAM": 1000, "POUND": 453.59237}}}}


@pytest.mark.parametrize(
    "weight, unit, extra, grams, error",
    [
        ("25", "KILOGRAM", {}, 25000, None),
        ("250", "GRAM", {}, 250, None),
        ("1.5", "kilogram", {}, 1500, None),  # units match ignoring case
        ("1", "POUND", {}, 454, None),
        ("", "", {}, None, None),  # no weight: its unit does not matter
        ("", "STONE", {}, None, None),
        ("25", "", {"default": "GRAM"}, 25, None),
        ("25", "STONE", {}, None, ("weight-unit", 'grams "25" has the unit "STONE" (column "weight-unit"), which the mapping does not list')),
        ("25", "", {}, None, ("weight-unit", 'grams "25" has no unit (column "weight-unit" is blank')),
        ("0,5", "KILOGRAM", {}, None, ("weight", 'grams "0,5" is ambiguous')),  # the number's own error names its cell
    ],
)
def test_a_number_is_converted_by_the_unit_named_in_its_row(weight, unit, extra, grams, error):
    spec = {"grams": {**UNIT["grams"], "unit": {**UNIT["grams"]["unit"], **extra}}}
    mapping = mapping_of({"variant": spec})
    built = build_products(rows_of(row(**{"weight": weight, "weight-unit": unit})), mapping, source_id=9)
    errors = [(p.column, p.reason, p.line) for p in built.problems if p.severity == "error"]
    if error is not None:
        assert len(errors) == 1 and errors[0][0] == error[0] and error[1] in errors[0][1] and errors[0][2] == 2, errors
        return
    assert errors == []
    assert built.products[0].items[0]["product"]["variants"].get("grams") == grams


def test_a_missing_unit_column_is_reported_and_refuses_weights_rather_than_guessing():
    mapping = mapping_of({"variant": UNIT})
    built = build_products(rows_of(row(weight="25")), mapping, source_id=9)
    assert [p.column for p in built.problems if p.kind == "column"] == ["weight-unit"]
    assert [p.reason for p in built.problems if p.severity == "error"] == [
        'grams "25" has no unit (column "weight-unit" is blank; valid units: GRAM, KILOGRAM, POUND)']


# --------------------------------------------------------------------------- rows that only carry images


@pytest.mark.parametrize("keep, images", [(True, ["a.jpg", "b.jpg"]), (False, ["a.jpg"])])
def test_a_skipped_row_can_keep_its_images_for_its_product(keep, images):
    mapping = mapping_of({"skip_rows": [{"column": "price", "blank": True, "keep_images": keep}],
                          "variant": {"price": {"column": "price", "type": "decimal"}}, "images": {"columns": ["img"]}})
    rows = rows_of(row(price="5", img="a.jpg"), {"code": "P1", "img": "b.jpg"}, {"code": "P9", "img": "c.jpg"})
    built = build_products(rows, mapping, source_id=9)
    assert [p.code for p in built.products] == ["P1"]
    assert [i.name for i in built.products[0].images] == images
    assert [p.line for p in built.problems if p.severity == "skipped"] == [3, 4]
    assert not [p for p in built.problems if p.severity == "error"]


SHOPIFY_CSV = (
    "Handle,Title,Body (HTML),Vendor,Option1 Name,Option1 Value,Variant SKU,Variant Grams,"
    "Variant Inventory Qty,Variant Price,Image Src,Image Position,Image Alt Text\r\n"
    "tee,Tee,<p>Soft</p>,Acme,Size,Small,TEE-S,200,3,19.99,https://cdn.shopify.com/s/tee-front.jpg,1,front\r\n"
    "tee,,,,,Medium,TEE-M,210,4,19.99,,,\r\n"
    "tee,,,,,,,,,,https://cdn.shopify.com/s/tee-back.jpg,2,back\r\n"
)


def test_shopify_image_only_rows_are_not_variants_but_their_images_stay(tmp_path):
    """Shopify writes one row per image beyond the variant count, with only Handle and Image Src."""
    from connector.config import Settings
    from connector.pipeline import plan_file

    path = tmp_path / "products_export.csv"
    path.write_bytes(SHOPIFY_CSV.encode())
    settings = Settings()
    settings.folders.mappings = tmp_path / "mappings"
    plan = plan_file(path, settings, mapping=str(ROOT / "mappings" / "shopify.yaml"))
    assert plan.rejected == []
    [product] = plan.products
    assert [i["product"]["variants"]["sku"] for i in product.items] == ["TEE-S", "TEE-M"]
    assert [i["product"]["variants"]["option1"] for i in product.items] == ["Small", "Medium"]
    assert [(i.name, i.line) for i in product.images] == [
        ("https://cdn.shopify.com/s/tee-front.jpg", 2), ("https://cdn.shopify.com/s/tee-back.jpg", 4)]
    not_fetched = [p for p in plan.problems if p.kind == "image"]
    assert len(not_fetched) == 2 and all("not fetched" in p.reason for p in not_fetched)


@pytest.mark.parametrize(
    "cell, error",
    [("2016-06-24", None), ("2016-06-24T10:30:00", None), ("2016-06-31", "is not a date on the calendar"),
     ("24/06/2016", "is not a date (write it as YYYY-MM-DD)"), ("2016-06-24T25:00:00", "is not a time of day")],
)
def test_date_type_accepts_only_real_iso_dates(cell, error):
    mapping = mapping_of({"product": {"meta": {"entries": [{"name": "expires", "value": {"column": "d", "type": "date"}}]}}})
    built = build_products(rows_of(row(d=cell)), mapping, source_id=9)
    errors = [p for p in built.problems if p.severity == "error"]
    if error is None:
        assert built.products[0].items[0]["product"]["meta"] == [{"key": "expires", "value": cell}]
    else:
        assert [(p.line, p.column, p.value) for p in errors] == [(2, "d", cell)] and error in errors[0].reason


# --------------------------------------------------------------------------- parents, fill-down, repeated variants

WOO_PARENTS = {"parents": {"rows": {"column": "type", "equals": "variable"}, "key": "sku", "children_by": "parent"},
               "group_by": "sku", "options": [{"name": "Size", "value": "size"}],
               "product": {"title": "title", "tags": "tags"}, "images": {"columns": ["img"]}}


def test_a_parent_row_gives_the_product_and_its_children_are_the_variants():
    rows = rows_of(
        {"type": "variable", "sku": "TEE", "title": "Tee", "tags": "summer", "img": "tee.jpg"},
        {"type": "variation", "sku": "TEE-S", "parent": "TEE", "title": "Tee - S", "size": "S", "img": "s.jpg"},
        {"type": "simple", "sku": "CAP", "title": "Cap"},
        {"type": "variation", "sku": "TEE-M", "parent": "TEE", "title": "Tee - M", "size": "M"},
    )
    built = build_products(rows, mapping_of(WOO_PARENTS), source_id=9)
    tee, cap = built.products
    assert (tee.code, cap.code) == ("TEE", "CAP")
    assert [it["product"]["variants"]["sku"] for it in tee.items] == ["TEE-S", "TEE-M"]  # the parent is no variant
    assert {it["product"]["title"] for it in tee.items} == {"Tee"} and tee.items[1]["product"]["tags"] == "summer"
    assert [(i.name, i.source_variant_code) for i in tee.images] == [("tee.jpg", None), ("s.jpg", "TEE-S")]
    assert tee.lines == [3, 5] and check_products(built.products)[1] == []


def test_children_listed_in_a_packed_parent_cell_may_come_before_the_parent():
    spec = {"parents": {"rows": {"column": "type", "equals": "configurable"}, "key": "sku",
                        "children_in": {"column": "variations", "separator": "|", "pick": {"key": "sku"}}},
            "group_by": "sku", "product": {"title": "title"}}
    rows = rows_of(
        {"type": "simple", "sku": "MH01-XS", "title": "Hoodie-XS"},
        {"type": "simple", "sku": "LONE", "title": "Lone"},
        {"type": "simple", "sku": "MH01-S", "title": "Hoodie-S"},
        {"type": "configurable", "sku": "MH01", "title": "Hoodie", "variations": "sku=MH01-XS,size=XS|sku=MH01-S,size=S"},
    )
    built = build_products(rows, mapping_of(spec), source_id=9)
    assert {p.code: [it["product"]["variants"]["sku"] for it in p.items] for p in built.products} == {
        "MH01": ["MH01-XS", "MH01-S"], "LONE": ["LONE"]}
    assert built.products[0].items[0]["product"]["title"] == "Hoodie"


def test_a_child_naming_a_missing_parent_is_refused_and_a_childless_parent_is_skipped():
    rows = rows_of(
        {"type": "variation", "sku": "X-S", "parent": "X", "title": "X", "size": "S"},
        {"type": "variable", "sku": "LONELY", "title": "Lonely"},
    )
    built = build_products(rows, mapping_of(WOO_PARENTS), source_id=9)
    assert built.products == []
    by_line = {p.line: p for p in built.problems}
    assert by_line[2].severity == "error" and 'its parent "X" (column "parent") is not a parent row' in by_line[2].reason
    assert by_line[3].severity == "skipped" and "no variant rows" in by_line[3].reason


def test_a_parent_row_without_a_usable_code_refuses_its_children():
    rows = rows_of(
        {"type": "variable", "sku": "6.00988E+12", "title": "Tee"},  # Excel ate the digits of the code
        {"type": "variation", "sku": "TEE-S", "parent": "6.00988E+12", "size": "S"},
    )
    built = build_products(rows, mapping_of(WOO_PARENTS), source_id=9)
    assert built.products == []
    reasons = {p.line: p.reason for p in built.problems if p.severity == "error"}
    assert "scientific notation" in reasons[2] and reasons[3] == "its parent row on line 2 has no product code"


def test_fill_down_copies_blank_cells_from_the_products_earlier_row():
    spec = {"fill_down": ["title", "opt"], "options": [{"name": {"column": "opt"}, "value": "val"}]}
    rows = rows_of(
        {"code": "H1", "sku": "A", "title": "Shirt", "opt": "Size", "val": "S"},
        {"code": "H2", "sku": "C", "title": "Cap", "opt": "", "val": ""},
        {"code": "H1", "sku": "B", "title": "", "opt": "", "val": "M"},
    )
    built = build_products(rows, mapping_of(spec), source_id=9)
    shirt = built.products[0]
    assert [it["product"]["title"] for it in shirt.items] == ["Shirt", "Shirt"]
    assert [it["product"]["variants"]["option1"] for it in shirt.items] == ["S", "M"]
    assert built.products[1].items[0]["product"]["title"] == "Cap"  # another product's values never leak


@pytest.mark.parametrize("same_variant, qty, errors", [("sum", 12, 0), ("error", 5, 1)])
def test_rows_repeating_a_variant_add_up_only_when_the_mapping_says_so(same_variant, qty, errors):
    spec = {"same_variant": same_variant, "variant": {"source_variant_code": "sku", "sku": "sku", "qty": "qty"}}
    rows = rows_of(row(qty="5", lot="L1"), row(qty="7", lot="L2"))
    built = build_products(rows, mapping_of(spec), source_id=9)
    _kept, problems, _ = check_products(built.products)
    assert built.products[0].items[0]["product"]["variants"]["qty"] == qty
    assert bool([p for p in problems if p.severity == "error"]) == bool(errors)


def test_strip_leading_slash_makes_media_paths_relative_only_when_asked():
    for flag, name in ((True, "m/h/a.jpg"), (False, "/m/h/a.jpg")):
        mapping = mapping_of({"images": {"columns": ["img"], "strip_leading_slash": flag}})
        built = build_products(rows_of(row(img="/m/h/a.jpg")), mapping, source_id=9)
        assert [i.name for i in built.products[0].images] == [name]
