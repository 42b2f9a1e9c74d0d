"""Batching of product items by count and body size."""

from __future__ import annotations

import json

import pytest

from connector.batches import make_batches
from connector.errors import OversizedItem
from connector.model import Product
from connector.wire import encode


def body_size(items: list[dict]) -> int:
    """Bytes of the request body the API client sends for `items` (the oracle the batches must respect)."""
    return len(encode({"system_products": items}))


def item(code: str, variant: str, pad: int = 0) -> dict:
    return {
        "source": {"source_product_code": code},
        "product": {"title": "x" * pad, "variants": {"source_variant_code": variant, "sku": variant}},
    }


def product(code: str, n: int, pad: int = 0) -> Product:
    return Product(code=code, items=[item(code, f"{code}-{i}", pad) for i in range(n)], lines=list(range(n)))


def shape(batches: list[list[dict]]) -> list[list[str]]:
    """Each batch as its items' source_variant_code, for readable assertions."""
    return [[i["product"]["variants"]["source_variant_code"] for i in batch] for batch in batches]


def test_body_size_is_the_compact_utf8_body():
    items = [item("A", "A-1", 0), {"title": "Café ☕"}]
    expected = json.dumps({"system_products": items}, separators=(",", ":"), ensure_ascii=False).encode()
    assert body_size(items) == len(expected)
    assert body_size([]) == len(b'{"system_products":[]}')


@pytest.mark.parametrize(
    "sizes, max_items, expected",
    [
        ([1, 1, 1], 500, [["A-0", "B-0", "C-0"]]),
        ([1, 1, 1], 2, [["A-0", "B-0"], ["C-0"]]),
        # B is kept whole: it does not fit beside A, so it starts the next batch
        ([2, 2, 1], 3, [["A-0", "A-1"], ["B-0", "B-1", "C-0"]]),
        # B alone exceeds the count: split over consecutive batches, C continues after it
        ([1, 5, 1], 2, [["A-0"], ["B-0", "B-1"], ["B-2", "B-3"], ["B-4", "C-0"]]),
        ([], 500, []),
        ([0, 1], 500, [["B-0"]]),
    ],
)
def test_batches_respect_the_item_count_and_keep_products_whole(sizes, max_items, expected):
    products = [product(code, n) for code, n in zip("ABCDE", sizes, strict=False)]  # the codes for as many sizes as given
    assert shape(make_batches(products, max_items=max_items)) == expected


def test_batches_respect_the_byte_limit_and_keep_products_whole():
    products = [product(code, 3, pad=200) for code in "ABCDEFGH"]
    one_product = body_size(products[0].items)
    limit = 2 * one_product + 100  # two products fit, three do not
    batches = make_batches(products, max_items=500, max_bytes=limit)
    assert shape(batches) == [
        [f"{c}-{i}" for c in pair for i in range(3)] for pair in ("AB", "CD", "EF", "GH")
    ]
    assert all(body_size(b) <= limit for b in batches)


def test_batches_are_exactly_filled_to_the_byte_limit():
    products = [product(code, 1, pad=50) for code in "ABC"]
    limit = body_size(products[0].items + products[1].items)
    batches = make_batches(products, max_bytes=limit)
    assert shape(batches) == [["A-0", "B-0"], ["C-0"]]
    assert body_size(batches[0]) == limit
    assert shape(make_batches(products, max_bytes=limit - 1)) == [["A-0"], ["B-0"], ["C-0"]]


def test_a_product_bigger_than_the_byte_limit_is_split_in_order():
    products = [product("A", 1, pad=100), product("B", 10, pad=100), product("C", 1, pad=100)]
    limit = body_size(products[1].items[:3])  # three of B's items per batch
    batches = make_batches(products, max_bytes=limit)
    flat = [code for batch in shape(batches) for code in batch]
    assert flat == ["A-0"] + [f"B-{i}" for i in range(10)] + ["C-0"]
    assert shape(batches)[0] == ["A-0"]  # B starts afresh rather than sharing A's batch
    assert all(body_size(b) <= limit for b in batches)
    assert len(batches) == 1 + 4  # B needs 4 batches (3+3+3+1); C joins B's last one


def test_an_item_bigger_than_the_byte_limit_names_its_product():
    products = [product("A", 1), product("HUGE-1", 1, pad=5000)]
    with pytest.raises(OversizedItem, match="HUGE-1"):
        make_batches(products, max_bytes=2000)


def test_batches_hold_the_original_item_objects_in_file_order():
    products = [product("B", 2), product("A", 1)]
    batches = make_batches(products)
    assert batches == [products[0].items + products[1].items]
    assert batches[0][0] is products[0].items[0]


def test_a_large_file_batches_quickly_with_default_limits():
    # 100k items, 4 per product: sizes are summed, never re-serialised per batch
    products = [product(f"P{i}", 4, pad=60) for i in range(25_000)]
    batches = make_batches(products)
    assert sum(len(b) for b in batches) == 100_000
    assert all(len(b) <= 500 for b in batches)
    assert all(body_size(b) <= 2 * 1024 * 1024 for b in batches[:5])
