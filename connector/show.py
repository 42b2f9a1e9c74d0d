"""`connector show CODE`: what the catalogue holds for one product or SKU, read-only.

Opens the ledger read-only (SQLite `mode=ro`, `query_only`), so it is safe while `watch`
runs: it never writes, never takes the state lock, never migrates. Shows, for the configured
API url and source id: the product's record and each variant's item as last acknowledged,
with the file and mapping that set them and when; its images; rows of update files waiting
for it; and items journaled for it and not yet acknowledged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from connector.common import endpoint_parts, iso_utc
from connector.ledger import Ledger
from connector.wire import item_hash


def find(state_dir: Path, endpoint: str, code: str) -> dict[str, Any]:
    """Everything the ledger knows of `code` (a product code, else a variant code or SKU) at `endpoint`."""
    ledger = Ledger.read_only(state_dir)
    try:
        products = _products_for(ledger, endpoint, code)
        out: dict[str, Any] = {"code": code, "endpoint": endpoint_parts(endpoint)[0],
                               "source_id": endpoint_parts(endpoint)[1], "products": []}
        waiting = ledger.waiting_rows(endpoint)
        pending = ledger.known_items(endpoint, products) if products else {}
        acknowledged = {(v.product_code, v.variant_code) for v in ledger.catalogue_variants(endpoint, products)}
        for product in products:
            record = next(iter(ledger.catalogue_products(endpoint, [product])), None)
            variants = list(ledger.catalogue_variants(endpoint, [product]))
            out["products"].append({
                "product_code": product,
                "record": record.record if record else None,
                "set_by": _origin(record.file, record.mapping, record.at) if record else None,
                "variants": [{"variant_code": v.variant_code, "item": v.item,
                              "set_by": _origin(v.file, v.mapping, v.at)} for v in variants],
                "images": [{"image_id": i.image_id, "variant_code": i.variant_code, "sha256": i.sha256,
                            "set_by": _origin(i.file, None, i.at)}
                           for i in ledger.catalogue_images(endpoint, [product])],
                "unsent": sorted(v for (p, v), it in pending.items()
                                 if p == product and ((p, v) not in acknowledged or _unsent(ledger, endpoint, it))),
            })
        out["waiting"] = [{"file": w.file, "line": w.line, "mapping": w.mapping, "key": w.key, "value": w.value,
                           "since": iso_utc(w.since), "until": iso_utc(w.until), "fields": w.partial["item"]}
                          for w in waiting if w.product_code == code or w.value == code or w.product_code in products]
        return out
    finally:
        ledger.close()


def render(found: dict[str, Any]) -> str:
    """`find`'s answer for a person."""
    lines = [f"{found['code']} at {found['endpoint']} (source {found['source_id']})"]
    if not found["products"] and not found["waiting"]:
        lines.append("  not in the catalogue: no file has brought it to this API and source yet")
    for product in found["products"]:
        lines.append(f"product {product['product_code']}")
        if product["record"] is not None:
            fields = product["record"]["product"]
            active = product["record"]["source"].get("product_active")
            lines.append(f"  {'active' if active == 'true' else 'retired (product_active false)'}; "
                         f"set by {product['set_by']}")
            for name, value in fields.items():
                lines.append(f"  {name}: {_short(value)}")
        for variant in product["variants"]:
            fields = variant["item"]["product"]["variants"]
            lines.append(f"  variant {variant['variant_code']}: set by {variant['set_by']}")
            for name, value in fields.items():
                if name != "source_variant_code":
                    lines.append(f"    {name}: {_short(value)}")
        for image in product["images"]:
            lines.append(f"  image {image['image_id']} ({image['sha256'][:12]}...), sent from {image['set_by']}")
        if product["unsent"]:
            lines.append(f"  journaled, not yet acknowledged: {', '.join(product['unsent'])}")
    for row in found["waiting"]:
        lines.append(f"waiting for its product: line {row['line']} of {row['file']} ({row['key']} {row['value']}), "
                     f"since {row['since']}, until {row['until']}: {_short(row['fields']['product'])}")
    return "\n".join(lines)


def _products_for(ledger: Ledger, endpoint: str, code: str) -> list[str]:
    """Product codes `code` names: itself, else the products having a variant with this code or SKU."""
    row = ledger.db.execute("SELECT 1 FROM catalogue_variants WHERE endpoint = ? AND product_code = ? LIMIT 1",
                            (endpoint, code)).fetchone()
    if row is not None:
        return [code]
    return sorted({p for (p,) in ledger.db.execute(
        "SELECT DISTINCT product_code FROM catalogue_variants WHERE endpoint = ? AND (variant_code = ?"
        " OR json_extract(item, '$.product.variants.sku') = ?)", (endpoint, code, code))})


def _unsent(ledger: Ledger, endpoint: str, item: dict) -> bool:
    """True when `item` (from the catalogue or journaled work) differs from what was acknowledged."""
    code = item["source"]["source_product_code"]
    variant = item["product"]["variants"]["source_variant_code"]
    return ledger.catalogue_hashes(endpoint, [code]).get((code, variant)) != item_hash(item)


def _origin(file: str, mapping: str | None, at: float) -> str:
    return f"{file}" + (f" ({mapping})" if mapping else "") + f" at {iso_utc(at)}"


def _short(value: Any, most: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= most else text[: most - 3] + "..."

