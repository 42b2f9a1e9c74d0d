"""check_products: required fields and Stock2Shop's product/option/variant rules, table-driven."""

from __future__ import annotations

import pytest

from connector.checks import check_products
from connector.model import Product


def item(code: str = "P1", sku: str = "S1", *, title: str | None = "Shirt", active: str = "true", options: dict | None = None, **variant) -> dict:
    """One API item; `options` is {name: value} in position order."""
    product: dict = {}
    if title is not None:
        product["title"] = title
    body_variant = {"source_variant_code": sku, "sku": sku, **variant}
    if options:
        product["options"] = [{"name": n, "position": i} for i, n in enumerate(options, 1)]
        for i, v in enumerate(options.values(), 1):
            body_variant[f"option{i}"] = v
    product["variants"] = {k: v for k, v in body_variant.items() if v is not None}
    return {
        "source": {"source_id": 1, "product_active": active, "source_product_code": code, "sync_token": "0", "fetch_token": "0"},
        "product": product,
    }


def product(*items: dict, code: str = "P1", first_line: int = 2) -> Product:
    return Product(code=code, items=list(items), lines=list(range(first_line, first_line + len(items))))


def summary(problems) -> list[tuple]:
    return [(p.kind, p.severity, p.line, p.product) for p in problems]


@pytest.mark.parametrize(
    "items, expected",
    [
        # a simple product: one variant, no options
        ([item()], []),
        # variants with distinct options
        ([item(options={"Size": "S"}), item(sku="S2", options={"Size": "M"})], []),
        # required fields
        ([item(title=None)], [("required", "error", 2, "P1")]),
        ([item(title="")], [("required", "error", 2, "P1")]),
        ([item(title=None, active="false")], []),  # a delete needs only its keys
        ([item(sku="")], [("required", "error", 2, "P1"), ("required", "error", 2, "P1")]),
        # at most 3 options
        ([item(options={"A": "1", "B": "2", "C": "3", "D": "4"})], [("options", "error", 2, "P1")]),
        ([item(options={"A": "1", "B": "2", "C": "3"})], []),
        # unique combinations
        ([item(options={"Size": "S"}), item(sku="S2", options={"Size": "S"})], [("options", "error", 3, "P1")]),
        ([item(), item(sku="S2")], [("options", "error", 3, "P1")]),  # two variants, nothing to tell them apart
        # every variant fills the same options, under the same names
        ([item(options={"Size": "S", "Colour": "Red"}), item(sku="S2", options={"Size": "M"})], [("options", "error", 3, "P1")]),
        ([item(options={"Size": "S"}), item(sku="S2", options={"Colour": "S"})], [("options", "error", 3, "P1")]),
        ([item(options={"Size": "S"}), item(sku="S2")], [("options", "error", 3, "P1")]),
        # one title per product
        ([item(), item(sku="S2", title="Shirt ")], [("conflict", "error", 3, "P1"), ("options", "error", 3, "P1")]),
        ([item(options={"S": "1"}), item(sku="S2", title="Other", options={"S": "2"})], [("conflict", "error", 3, "P1")]),
        # numbers in range
        ([item(price=-1.0)], [("range", "error", 2, "P1")]),
        ([item(grams=-5)], [("range", "error", 2, "P1")]),
        ([item(price_tiers=[{"tier": "Trade", "price": -2.0}])], [("range", "error", 2, "P1")]),
        ([item(qty=-3)], [("range", "warning", 2, "P1")]),  # Stock2Shop stores it as 0
        ([item(qty_availability=[{"description": "JHB", "qty": -1}])], [("range", "warning", 2, "P1")]),
        ([item(price=0.0, qty=0, grams=0)], []),
    ],
)
def test_rules_of_one_product(items, expected):
    kept, problems, held = check_products([product(*items)])
    assert summary(problems) == expected
    failed = any(e[1] == "error" for e in expected)
    assert (kept == []) is failed
    assert held == ({"P1": [(None, line) for line in range(2, 2 + len(items))]} if failed else {})


def test_conflicting_titles_name_both_lines():
    _, problems, _ = check_products([product(item(options={"S": "1"}), item(sku="S2", title="Blouse", options={"S": "2"}))])
    (problem,) = problems
    assert problem.reason == 'title "Blouse" differs from "Shirt" on line 2 (one title per product)'
    assert (problem.line, problem.column, problem.value) == (3, "title", "Blouse")


def test_repeated_options_name_the_first_line():
    _, problems, _ = check_products([product(item(options={"Size": "S"}), item(sku="S2", options={"Size": "S"}))])
    assert "repeats the options of line 2 (Size S)" in problems[0].reason


def test_differing_descriptions_are_only_a_warning():
    items = [item(options={"S": "1"}), item(sku="S2", options={"S": "2"})]
    items[1]["product"]["vendor"] = "B"
    items[0]["product"]["vendor"] = "A"
    kept, problems, held = check_products([product(*items)])
    assert summary(problems) == [("conflict", "warning", 3, "P1")] and len(kept) == 1 and not held


def test_duplicate_variant_code_across_products_holds_back_both():
    p1 = product(item("P1", "DUP"), code="P1", first_line=2)
    p2 = product(item("P2", "DUP"), code="P2", first_line=7)
    p3 = product(item("P3", "OK"), code="P3", first_line=9)
    kept, problems, held = check_products([p1, p2, p3])
    assert [p.code for p in kept] == ["P3"]
    assert held == {"P1": [(None, 2)], "P2": [(None, 7)]}
    assert sorted((p.kind, p.line, p.product, p.value) for p in problems) == [("duplicate", 2, "P1", "DUP"), ("duplicate", 7, "P2", "DUP")]
    assert any("line 2 (product P1)" in p.reason for p in problems)


def test_duplicate_variant_code_within_a_product():
    kept, problems, held = check_products([product(item(sku="A", options={"S": "1"}), item(sku="A", options={"S": "2"}))])
    assert not kept and held == {"P1": [(None, 2), (None, 3)]}
    assert [(p.kind, p.line) for p in problems] == [("duplicate", 3)]


def test_other_products_go_on_when_one_fails():
    good = product(item("G", "G1"), code="G", first_line=5)
    bad = product(item("B", "B1", title=None), code="B", first_line=6)
    kept, _, held = check_products([good, bad])
    assert [p.code for p in kept] == ["G"] and held == {"B": [(None, 6)]}


def with_names(one: dict, *names: str) -> dict:
    """`one` with its options renamed (two of one name are possible only so)."""
    one["product"]["options"] = [{"name": n, "position": i} for i, n in enumerate(names, 1)]
    return one


def test_two_options_of_one_name_hold_the_product_back_with_one_problem():
    shirts = product(with_names(item(sku="S1", options={"a": "Red", "b": "Blue"}), "Colour", "colour"),
                     with_names(item(sku="S2", options={"a": "Red", "b": "Green"}), "Colour", "colour"))
    caps = product(item(code="C1", sku="C-1", options={"Size": "S", "Colour": "Red"}), code="C1")
    kept, problems, held = check_products([shirts, caps])
    assert [p.code for p in kept] == ["C1"] and list(held) == ["P1"]
    assert [(p.kind, p.line, p.column, p.value, p.product) for p in problems] == [
        ("options", 2, "options", "colour", "P1")]
    assert 'fills option "colour" twice (Colour, colour)' in problems[0].reason
