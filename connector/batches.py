"""Products → request bodies, by item count and body size (pure).

    batches = make_batches(products, max_items=500, max_bytes=2 * 1024 * 1024)
    body = {"system_products": batches[0]}

A product is sent whole: its items (one per variant) stay in one batch, so the server never
sees half a product's variants. Only a product too big for one batch on its own is split, over
consecutive batches. Batches follow the products' order, which is the file's order.

Sizes are of the compact body `wire.encode({"system_products": items})`, the encoder the
sender uses, so the bound holds for what is really sent.
"""

from __future__ import annotations

from typing import Any

from .errors import OversizedItem
from .model import Product
from .wire import encode as _dumps

_ENVELOPE = len(b'{"system_products":[]}')  # the body around the items; items add a comma between


def make_batches(
    products: list[Product], *, max_items: int = 500, max_bytes: int = 2 * 1024 * 1024
) -> list[list[dict[str, Any]]]:
    """Group the products' items into batches of at most `max_items` items and `max_bytes` bytes.

    Items of one product share a batch unless the product alone exceeds a limit; then it
    starts a fresh batch and fills as many consecutive ones as it needs. Raises OversizedItem,
    naming the product, when a single item is bigger than `max_bytes` on its own.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    batches: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    current_bytes = _ENVELOPE  # body size of `current`, kept as a running sum

    def flush() -> None:
        nonlocal current, current_bytes
        if current:
            batches.append(current)
        current, current_bytes = [], _ENVELOPE

    for product in products:
        sizes = [_item_size(item, product.code, max_bytes) for item in product.items]
        if not sizes:
            continue
        product_bytes = sum(sizes) + len(sizes) - 1  # items plus the commas between them
        if len(sizes) <= max_items and _ENVELOPE + product_bytes <= max_bytes:
            if current and (
                len(current) + len(sizes) > max_items or current_bytes + 1 + product_bytes > max_bytes
            ):
                flush()
            current_bytes += product_bytes + (1 if current else 0)
            current.extend(product.items)
            continue
        # Too big for any one batch: split it, starting afresh so it spans as few batches as it can.
        flush()
        for item, size in zip(product.items, sizes, strict=True):
            if current and (len(current) + 1 > max_items or current_bytes + 1 + size > max_bytes):
                flush()
            current_bytes += size + (1 if current else 0)
            current.append(item)
    flush()
    return batches


def _item_size(item: dict[str, Any], code: str, max_bytes: int) -> int:
    size = len(_dumps(item))
    if _ENVELOPE + size > max_bytes:
        raise OversizedItem(code, size, max_bytes)
    return size
