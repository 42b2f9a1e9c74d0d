"""Records spread over rows and computed numbers: continuation rows, `{sum: <family>}`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from connector.build import apply_totals, build_products
from connector.checks import check_products
from connector.mapping import MappingError, parse_mapping
from connector.model import Row
from connector.pipeline import plan_file
from tests.support import pipeline_for, settings_for


def mapping(text: str):
    return parse_mapping(yaml.safe_load(textwrap.dedent(text)))


def write_csv(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- {sum: <family>}

OUTLETS = """
    group_by: sku
    product: {title: name}
    variant:
      source_variant_code: sku
      sku: sku
      qty_availability: {columns: "^qty_(?P<warehouse>.+)$", type: int}
      qty: {sum: qty_availability}
"""


def test_qty_is_the_sum_of_the_outlets_and_blank_when_no_outlet_has_a_value():
    rows = [Row(2, {"sku": "A", "name": "Mug", "qty_JHB": "3", "qty_CPT": "4", "qty_DBN": ""}),
            Row(3, {"sku": "B", "name": "Cup", "qty_JHB": "", "qty_CPT": "", "qty_DBN": ""}),
            Row(4, {"sku": "C", "name": "Jug", "qty_JHB": "0", "qty_CPT": "-2", "qty_DBN": "5"})]
    built = build_products(rows, mapping(OUTLETS), source_id=1)
    variants = {i["product"]["variants"]["sku"]: i["product"]["variants"] for p in built.products for i in p.items}
    assert variants["A"]["qty"] == 7 and len(variants["A"]["qty_availability"]) == 2
    assert "qty" not in variants["B"]  # no outlet has a value: blank, never 0
    assert variants["C"]["qty"] == 3


def test_a_summed_qty_adds_up_over_rows_repeating_a_variant():
    m = mapping(OUTLETS + "    same_variant: sum\n")
    rows = [Row(2, {"sku": "A", "name": "Mug", "qty_JHB": "3", "qty_CPT": ""}),
            Row(3, {"sku": "A", "name": "Mug", "qty_JHB": "1", "qty_CPT": "6"})]
    variant = build_products(rows, m, source_id=1).products[0].items[0]["product"]["variants"]
    assert variant["qty"] == 10
    assert variant["qty_availability"] == [{"description": "JHB", "qty": 4}, {"description": "CPT", "qty": 6}]


def test_adding_up_a_repeated_variant_leaves_other_variants_with_equal_stock_alone():
    """Equal family entries are shared between items; summing one variant must not change another's."""
    m = mapping(OUTLETS + "    same_variant: sum\n")
    rows = [Row(2, {"sku": "A", "name": "Mug", "qty_JHB": "3", "qty_CPT": "6"}),
            Row(3, {"sku": "B", "name": "Cup", "qty_JHB": "3", "qty_CPT": "6"}),
            Row(4, {"sku": "A", "name": "Mug", "qty_JHB": "1", "qty_CPT": ""})]
    built = build_products(rows, m, source_id=1)
    variants = {i["product"]["variants"]["sku"]: i["product"]["variants"] for p in built.products for i in p.items}
    assert variants["A"]["qty_availability"] == [{"description": "JHB", "qty": 4}, {"description": "CPT", "qty": 6}]
    assert variants["B"]["qty_availability"] == [{"description": "JHB", "qty": 3}, {"description": "CPT", "qty": 6}]
    assert (variants["A"]["qty"], variants["B"]["qty"]) == (10, 9)


def test_apply_totals_recomputes_after_a_family_changed():
    variant = {"qty": 1, "price_tiers": [{"tier": "a", "price": 1.5}, {"tier": "b", "price": 2.0}]}
    apply_totals(variant, (("price", "price_tiers"),))
    assert variant["price"] == 3.5
    variant["price_tiers"] = []
    apply_totals(variant, (("price", "price_tiers"),))
    assert "price" not in variant


@pytest.mark.parametrize("variant, says", [
    ({"qty": {"sum": "qty_availabilty"}, "qty_availability": "^q_(.+)$"},
     'variant.qty.sum: "qty_availabilty" is not a family of numbers; did you mean "qty_availability"? '
     "(valid choices: price_tiers, qty_availability)"),
    ({"qty": {"sum": "meta"}}, 'variant.qty.sum: "meta" is not a family of numbers'),
    ({"qty": {"sum": "qty_availability"}}, "variant.qty.sum: the mapping has no variant.qty_availability to add up"),
    ({"qty": {"sum": "price_tiers"}, "price_tiers": "^p_(.+)$"},
     "variant.qty.sum: qty is a whole number; price_tiers holds decimal numbers"),
    ({"qty": {"sum": "qty_availability", "type": "int"}, "qty_availability": "^q_(.+)$"},
     "variant.qty: a sum takes no other keys (found type)"),
    ({"barcode": {"sum": "qty_availability"}, "qty_availability": "^q_(.+)$"},
     "variant.barcode.sum: only number fields (price, qty, grams) can be a sum"),
])
def test_a_sum_must_name_a_family_of_numbers_of_the_mapping(variant, says):
    doc = {"group_by": "sku", "variant": {"source_variant_code": "sku", "sku": "sku", **variant}}
    with pytest.raises(MappingError) as err:
        parse_mapping(doc)
    assert any(p.startswith(says) for p in err.value.problems), err.value.problems


def test_a_product_field_cannot_be_a_sum():
    with pytest.raises(MappingError) as err:
        parse_mapping({"group_by": "sku", "product": {"title": {"sum": "meta"}},
                       "variant": {"source_variant_code": "sku", "sku": "sku"}})
    assert err.value.problems == ["product.title.sum: only variant number fields (price, qty, grams) can be a sum"]


def test_sum_of_outlets_reaches_the_sandbox(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "outlets.yaml").write_text(textwrap.dedent(OUTLETS), encoding="utf-8")
    path = write_csv(tmp_path / "stock.csv", """
        sku,name,qty_Sandton,qty_Rosebank,qty_Menlyn
        MUG-1,Mug,3,,12
        CUP-1,Cup,,,
    """)
    outcome = pipeline_for(tmp_path, sb).run_file(path, mapping="outlets")
    assert outcome.status == "done", outcome.message
    stored = {v["sku"]: v for p in sb.state()["products"] for v in p["variants"]}
    assert stored["MUG-1"]["qty"] == 15
    assert {q["description"]: q["qty"] for q in stored["MUG-1"]["qty_availability"]} == {"Sandton": 3, "Menlyn": 12}
    assert stored["CUP-1"].get("qty") in (None, "")


# --------------------------------------------------------------------------- continuation rows

# An Odoo "Export" of product variants (product.product) with its x2many fields: a variant's
# second attribute value and its template's second tag are on the row under it, every other
# cell blank (Odoo writes a record's several values that way; see docs/mapping.md).
ODOO_VARIANTS = """
    ID,Internal Reference,Name,Product Template/ID,Sales Price,Product Tags,Attribute Values/Attribute,Attribute Values/Value,Quantity On Hand
    __export__.product_product_11_1a2b,TSHIRT-R-S,T-shirt,__export__.product_template_5_9f,25.0,Summer,Color,Red,10.0
    ,,,,,Cotton,Size,S,
    __export__.product_product_12_3c4d,TSHIRT-R-M,T-shirt,__export__.product_template_5_9f,25.0,Summer,Color,Red,4.0
    ,,,,,Cotton,Size,M,
    __export__.product_product_13_5e6f,TSHIRT-B-S,T-shirt,__export__.product_template_5_9f,25.0,Summer,Color,Blue,0.0
    ,,,,,Cotton,Size,S,
    __export__.product_product_20_7a8b,MUG-1,Mug,__export__.product_template_9_2c,8.5,,,,30.0
"""

ODOO_MAPPING = """
    group_by: Product Template/ID
    continuation_rows: true
    product:
      title: Name
      tags: Product Tags
    variant:
      source_variant_code: Internal Reference
      sku: Internal Reference
      price: Sales Price
      qty: Quantity On Hand
    options:
      - {name: {column: Attribute Values/Attribute}, value: Attribute Values/Value}
"""


def odoo_rows(text: str = ODOO_VARIANTS) -> list[Row]:
    import csv
    import io

    records = list(csv.reader(io.StringIO(textwrap.dedent(text).strip())))
    header = records[0]
    return [Row(n, dict(zip(header, r, strict=True))) for n, r in enumerate(records[1:], 2)]


def test_odoo_continuation_rows_give_each_variant_all_its_attribute_values_and_tags():
    built = build_products(odoo_rows(), mapping(ODOO_MAPPING), source_id=1)
    kept, problems, _ = check_products(built.products)
    assert [p for p in built.problems + problems if p.severity == "error"] == []
    shirt = next(p for p in kept if p.code == "__export__.product_template_5_9f")
    variants = [it["product"]["variants"] for it in shirt.items]
    assert [(v["sku"], v["option1"], v["option2"], v["qty"]) for v in variants] == [
        ("TSHIRT-R-S", "Red", "S", 10), ("TSHIRT-R-M", "Red", "M", 4), ("TSHIRT-B-S", "Blue", "S", 0)]
    assert shirt.items[0]["product"]["options"] == [{"name": "Color", "position": 1}, {"name": "Size", "position": 2}]
    assert shirt.items[0]["product"]["tags"] == "Summer,Cotton"
    assert shirt.lines == [2, 4, 6]
    assert built.folded == {(None, 3): "continuation", (None, 5): "continuation", (None, 7): "continuation"}


def test_without_continuation_rows_odoo_variants_repeat_a_combination_and_are_held_back():
    doc = yaml.safe_load(textwrap.dedent(ODOO_MAPPING))
    del doc["continuation_rows"]
    built = build_products(odoo_rows(), parse_mapping(doc), source_id=1)
    refused = [p for p in built.problems if p.severity == "error"]
    assert [p.line for p in refused] == [3, 5, 7]
    assert all("no product code" in p.reason for p in refused)


BASE_CONT = """
    group_by: code
    continuation_rows: true
    product:
      title: title
      tags: {column: tags, split: "|"}
      meta: {columns: "^meta_(?P<key>.+)$"}
    variant:
      source_variant_code: sku
      sku: sku
      price: price
      qty_availability: {columns: "^qty_(?P<warehouse>.+)$", type: int}
      qty: {sum: qty_availability}
    images: {columns: [image]}
"""


def rows(*cells: dict) -> list[Row]:
    columns = ["code", "sku", "title", "tags", "price", "meta_colour", "qty_JHB", "image"]
    return [Row(n, {c: one.get(c, "") for c in columns}) for n, one in enumerate(cells, 2)]


def test_continuation_rows_add_images_tags_meta_and_warehouses_to_the_record_above():
    built = build_products(rows(
        {"code": "P1", "sku": "S1", "title": "Tee", "tags": "a|b", "price": "10", "meta_colour": "red",
         "qty_JHB": "3", "image": "front.jpg"},
        {"tags": "c|a", "image": "back.jpg", "meta_colour": "crimson"},
        {"image": "side.jpg", "qty_JHB": "2"},
    ), mapping(BASE_CONT), source_id=1)
    assert [p for p in built.problems if p.severity == "error"] == []
    (product,) = built.products
    item = product.items[0]["product"]
    assert item["tags"] == "a,b,c"
    assert item["meta"] == [{"key": "colour", "value": "red"}, {"key": "colour", "value": "crimson"}]
    assert item["variants"]["qty_availability"] == [{"description": "JHB", "qty": 3}, {"description": "JHB", "qty": 2}]
    assert item["variants"]["qty"] == 5  # the total counts the continuation's warehouse entry
    assert [(i.name, i.line) for i in product.images] == [("front.jpg", 2), ("back.jpg", 3), ("side.jpg", 4)]


def test_a_continuation_row_that_changes_a_single_value_is_refused_with_its_record():
    built = build_products(rows({"code": "P1", "sku": "S1", "title": "Tee", "price": "10"},
                                {"price": "12", "tags": "x"},
                                {"code": "P2", "sku": "S2", "title": "Mug", "price": "5"}),
                           mapping(BASE_CONT), source_id=1)
    assert [p.code for p in built.products] == ["P2"]
    (error,) = [p for p in built.problems if p.severity == "error"]
    assert error.line == 3 and error.column == "price" and error.product == "P1"
    assert 'price "12.0" differs from "10.0" on line 2, the row it continues' in error.reason
    assert built.held == {"P1": [(None, 2), (None, 3)]}


def test_a_field_the_record_left_blank_is_taken_from_its_continuation():
    built = build_products(rows({"code": "P1", "sku": "S1", "title": "Tee"}, {"price": "12"}),
                           mapping(BASE_CONT), source_id=1)
    assert built.products[0].items[0]["product"]["variants"]["price"] == 12.0


def test_continuations_share_the_fate_of_their_record():
    m = mapping(BASE_CONT + """
    skip_rows: [{column: title, equals: DISCONTINUED}]
    """)
    built = build_products(rows({"tags": "orphan"},                                   # 2: nothing above it
                                {"sku": "S0", "title": "Lost"},                      # 3: no product above it
                                {"code": "P1", "sku": "S1", "title": "DISCONTINUED"},
                                {"tags": "x"},                                       # 5: skipped with line 4
                                {"sku": "S9"},                                       # 6: a variant of P1: skipped
                                {"image": "z.jpg"},                                  # 7: skipped with line 6
                                {"code": "P3", "sku": "S3", "title": "Cup", "price": "abc"},
                                {"image": "y.jpg"},                                  # 9: held back with line 8
                                {"code": "P2", "sku": "S2", "title": "Mug"}),
                           m, source_id=1)
    assert [p.code for p in built.products] == ["P2"]
    fates = {p.line: (p.severity, p.reason) for p in built.problems}
    assert fates[2][0] == "error" and "no row above it to continue" in fates[2][1]
    assert fates[3][0] == "error" and "no row above it to take its product from" in fates[3][1]
    assert {line: fates[line][0] for line in (4, 5, 6, 7)} == dict.fromkeys((4, 5, 6, 7), "skipped")
    assert fates[5][1] == "skipped with line 4, the row it continues"
    rule = 'skip_rows[0]: column "title" is "DISCONTINUED"'
    assert {built.skipped[(None, line)] for line in (4, 5, 6, 7)} == {rule}
    assert fates[8][0] == "error" and built.held == {"P3": [(None, 8), (None, 9)]}


def test_odoo_template_export_rows_with_a_variant_code_are_variants_of_the_product_above():
    """product.template exported with its variants: each variant line under the template's row."""
    m = mapping("""
        group_by: ID
        continuation_rows: true
        product: {title: Name, tags: Product Tags}
        variant:
          source_variant_code: Product Variants/Internal Reference
          sku: Product Variants/Internal Reference
          price: Product Variants/Sales Price
        options:
          - {name: {column: Product Variants/Attribute Values/Attribute},
             value: Product Variants/Attribute Values/Value}
    """)
    built = build_products(odoo_rows("""
        ID,Name,Product Tags,Product Variants/Internal Reference,Product Variants/Sales Price,Product Variants/Attribute Values/Attribute,Product Variants/Attribute Values/Value
        __export__.product_template_5,T-shirt,Summer,TSHIRT-R,25.0,Color,Red
        ,,Cotton,TSHIRT-B,26.0,Color,Blue
        ,,,TSHIRT-G,25.0,Color,Green
        __export__.product_template_9,Mug,,MUG-1,8.5,,
    """), m, source_id=1)
    assert [p for p in built.problems if p.severity == "error"] == []
    shirt, mug = built.products
    assert [(it["product"]["title"], it["product"]["tags"], it["product"]["variants"]["sku"],
             it["product"]["variants"]["option1"]) for it in shirt.items] == [
        ("T-shirt", "Summer,Cotton", "TSHIRT-R", "Red"), ("T-shirt", "Summer,Cotton", "TSHIRT-B", "Blue"),
        ("T-shirt", "Summer,Cotton", "TSHIRT-G", "Green")]
    assert shirt.lines == [2, 3, 4] and [it["product"]["variants"]["sku"] for it in mug.items] == ["MUG-1"]


def test_continuation_key_columns_can_be_named():
    m = mapping("""
        group_by: model
        continuation_rows: {key: [sku]}
        product: {title: title}
        variant: {source_variant_code: sku, sku: sku}
        options: [{name: Size, value: size}, {name: Colour, value: colour}]
    """)
    cells = [{"model": "M1", "sku": "S1", "title": "Tee", "size": "S", "colour": ""},
             {"model": "M1", "sku": "", "title": "", "size": "", "colour": "Red"}]  # the model is repeated
    built = build_products([Row(n, c) for n, c in enumerate(cells, 2)], m, source_id=1)
    variant = built.products[0].items[0]["product"]["variants"]
    assert (variant["option1"], variant["option2"]) == ("S", "Red")


@pytest.mark.parametrize("value, says", [
    ("yes", "continuation_rows: must be true, or {key: [the columns that are blank on a continuation row]}"),
    ({"keys": ["a"]}, 'continuation_rows.keys: unknown key; did you mean "key"?'),
])
def test_continuation_rows_option_is_checked(value, says):
    doc = yaml.safe_load(textwrap.dedent(ODOO_MAPPING))
    doc["continuation_rows"] = value
    with pytest.raises(MappingError) as err:
        parse_mapping(doc)
    assert any(p.startswith(says) for p in err.value.problems), err.value.problems


def test_odoo_export_with_continuation_rows_reaches_the_sandbox_whole(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "odoo.yaml").write_text(textwrap.dedent(ODOO_MAPPING), encoding="utf-8")
    path = write_csv(tmp_path / "product.product.csv", ODOO_VARIANTS)
    settings = settings_for(tmp_path, sb)
    plan = plan_file(path, settings, mapping="odoo")
    assert plan.rejected == []
    outcome = pipeline_for(tmp_path, sb, settings).run_file(path, mapping="odoo")
    assert outcome.status == "done", outcome.message
    assert outcome.counts.rows_refused == 0 and outcome.counts.items_sent == 4
    stored = {p["source_product_code"]: p for p in sb.state()["products"]}
    shirt = stored["__export__.product_template_5_9f"]
    assert sorted((v["option1"], v["option2"]) for v in shirt["variants"]) == [("Blue", "S"), ("Red", "M"),
                                                                                ("Red", "S")]
    assert shirt["tags"] == "Summer,Cotton"
