"""The JSON the API receives, made by one encoder.

Batches are sized, requests are sent and acknowledged items are hashed from the same bytes:
compact separators, UTF-8 (not ASCII escapes, which would make accented text up to six times
longer). Three encoders that had to agree byte for byte became this one.

    >>> encode({"title": "Café", "qty": 2})
    b'{"title":"Caf\\xc3\\xa9","qty":2}'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(value: Any) -> bytes:
    """`value` as the compact UTF-8 JSON the API is sent."""
    return _ENCODER.encode(value).encode("utf-8")


def encode_text(value: Any) -> str:
    """The same JSON as `encode`, as text (for the ledger, which stores text)."""
    return _ENCODER.encode(value)


def item_hash(item: dict[str, Any]) -> str:
    """The sha256 of an item exactly as it is sent: equal hashes mean the API was sent the same."""
    return hashlib.sha256(encode(item)).hexdigest()
