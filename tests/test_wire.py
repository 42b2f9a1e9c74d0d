"""wire.encode: the compact UTF-8 JSON the API is sent, the same bytes whichever encoder makes them."""

from __future__ import annotations

import json

import pytest

from connector.wire import encode, encode_text


@pytest.mark.parametrize(
    "value",
    [
        {"title": "Café", "qty": 2, "price": 585.31, "tags": ["a", "b"], "active": True, "barcode": None},
        {1: "a key that is not text", "b": {2: [3, 4.5]}},  # orjson's option for such keys
        {True: 1, None: 2},
        {"qty": 2**70},  # beyond 64 bits: the standard library
        {"line": "a\u2028b\x00c\"\\"},
    ],
)
def test_encode_gives_the_standard_librarys_compact_utf8_json(value):
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert encode(value) == expected
    assert encode_text(value) == expected.decode("utf-8")
