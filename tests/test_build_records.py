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
