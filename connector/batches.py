"""Products → request bodies, by item count and body size (pure).

    batches = make_batches(products, max_items=500, max_bytes=2 * 1024 * 1024)
    body = {"system_products": batches[0]}

A product is sent whole: its items (one per variant) stay in one batch, so the server never
sees half a product's variants. Only a product too big for one batch on its own is split, over
consecutive batches. Batches follow the products' order, which is the file's order.

Sizes are of the compact body `wire.encode({"system_products": items})`, the encoder the
sender uses, so the bound holds for what is really sent. Each item is encoded once, here:
a Batch keeps the bytes beside its items, and they are what the ledger keeps and the API gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import OversizedItem
from .model import Product
from .wire import encode as _dumps
from .wire import hash_of

_ENVELOPE = len(b'{"system_products":[]}')  # the body around the items; items add a comma between


class Batch(list):
    """One request's items (a list, in order), each encoded once beside it in `parts`.

    The parts are the bytes the batch was sized by; `payload()` joins them into the JSON
    array the ledger keeps and a request sends, and `hashes()` are of the same bytes, so
    nothing is encoded again on the way to the API.
    """

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def payload(self) -> bytes:
        """The items as one compact JSON array: `wire.encode(list(self))`, byte for byte."""
        return b"[" + b",".join(self.parts) + b"]"

    def hashes(self) -> list[tuple[str, str, str]]:
        """(product code, variant code, sha256 of the item's bytes) for every item, in order."""
        return [(item["source"]["source_product_code"], item["product"]["variants"].get("source_variant_code", ""),
                 hash_of(part)) for item, part in zip(self, self.parts, strict=True)]


def make_batches(
    products: list[Product], *, max_items: int = 500, max_bytes: int = 2 * 1024 * 1024
) -> list[Batch]:
    """Group the products' items into batches of at most `max_items` items and `max_bytes` bytes.

    Items of one product share a batch unless the product alone exceeds a limit; then it
    starts a fresh batch and fills as many consecutive ones as it needs. Raises OversizedItem,
    naming the product, when a single item is bigger than `max_bytes` on its own.
    """
    return list(iter_batches(products, max_items=max_items, max_bytes=max_bytes))


def iter_batches(
    products: Iterable[Product], *, max_items: int = 500, max_bytes: int = 2 * 1024 * 1024,
    oversized: Callable[[OversizedItem], None] | None = None,
) -> Iterator[Batch]:
    """`make_batches` one batch at a time, so only one batch's bytes are held at once.

    With `oversized`, a product with an item bigger than `max_bytes` is left out and passed
    to it (as the OversizedItem that would have been raised); the batching goes on.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    current = Batch()
    current_bytes = _ENVELOPE  # body size of `current`, kept as a running sum

    def fits(count: int, size: int) -> bool:
        return not current or (len(current) + count <= max_items and current_bytes + 1 + size <= max_bytes)

    for product in products:
        try:
            parts = [_encoded(item, product.code, max_bytes) for item in product.items]
        except OversizedItem as exc:
            if oversized is None:
                raise
            oversized(exc)
            continue
        if not parts:
            continue
        product_bytes = sum(map(len, parts)) + len(parts) - 1  # items plus the commas between them
        whole = len(parts) <= max_items and _ENVELOPE + product_bytes <= max_bytes
        pieces = [(product.items, parts, product_bytes)] if whole else [
            ([item], [part], len(part)) for item, part in zip(product.items, parts, strict=True)]
        if not whole and current:  # too big for any one batch: split it, starting afresh
            yield current
            current, current_bytes = Batch(), _ENVELOPE
        for items, encoded, size in pieces:
            if not fits(len(items), size):
                yield current
                current, current_bytes = Batch(), _ENVELOPE
            current_bytes += size + (1 if current else 0)
            current.extend(items)
            current.parts.extend(encoded)
    if current:
        yield current


def _encoded(item: dict[str, Any], code: str, max_bytes: int) -> bytes:
    data = _dumps(item)
    if _ENVELOPE + len(data) > max_bytes:
        raise OversizedItem(code, len(data), max_bytes)
    return data
