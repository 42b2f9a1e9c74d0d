"""The rules the sandbox enforces on queued items, as pure functions of the request data.

    normal, errors = normalize_product(item, index=0, source_id=1)
    errors += check_product_groups(normals, stored_variants)
    image, errors = normalize_image(item, index=0, source_id=1)

An error is `{"index": i, "field": "product.variants.price", "message": "..."}`, `index` being
the item's position in the request's list. Coercion follows Stock2Shop's DTOs
(reference/stock2shop.md §1.3): numeric strings are numbers, any string is a bool.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

MAX_OPTIONS = 3
MAX_IMAGE_BYTES = 2 * 1024 * 1024
_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}
_PRODUCT_TEXT = ("body_html", "collection", "product_type", "tags", "vendor")
_VARIANT_TEXT = ("barcode",)

Error = dict[str, Any]
# source_variant_code -> (filled option positions, option values) for one stored product
StoredVariants = Callable[[str], Mapping[str, tuple[frozenset[int], tuple]]]


class Refused(ValueError):
    """A value that the API's coercion would throw on; the message names the field."""


def error(index: int | None, field: str, message: str) -> Error:
    return {"index": index, "field": field, "message": message}


# ---- coercion (reference/stock2shop.md §1.3) -------------------------------------------


def to_bool(name: str, value: Any) -> bool | None:
    """DTO boolFrom: "false"/"0"/"" (any case) false, other strings true; 0 false; null null."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "")
    raise Refused(f"{name} is not a boolean: {_show(value)}")


def to_text(name: str, value: Any) -> str | None:
    """DTO stringFrom: numbers stringified, booleans "true"/"false", null stays null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise Refused(f"{name} is not text: {_show(value)}")


def to_float(name: str, value: Any) -> float | None:
    """DTO floatFrom: numbers and numeric strings; blank string null; anything else refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Refused(f"{name} is not numeric: {_show(value)}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        if _NUMERIC.match(value):
            return float(value)
    raise Refused(f"{name} is not numeric: {_show(value)}")


def to_int(name: str, value: Any) -> int | None:
    """DTO intFrom: as to_float, then truncated ("123.45" -> 123)."""
    number = to_float(name, value)
    return None if number is None else int(number)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def item_hash(item: Any) -> str:
    """A stable hash of an item as sent, so an unchanged resend is recognised."""
    return hashlib.sha256(json.dumps(item, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---- products -------------------------------------------------------------------------


class _Collector:
    """Gathers errors of one item; `take` runs a coercion and records its refusal."""

    def __init__(self, index: int):
        self.index = index
        self.errors: list[Error] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(error(self.index, field, message))

    def take(self, field: str, convert: Callable[[str, Any], Any], value: Any) -> Any:
        try:
            return convert(field.rsplit(".", 1)[-1], value)
        except Refused as refused:
            self.add(field, str(refused))
            return None

    def required(self, field: str, convert: Callable[[str, Any], Any], container: Mapping, key: str,
                 allow_empty: bool = False) -> Any:
        if container.get(key) is None:
            self.add(field, f"{key} is required")
            return None
        value = self.take(field, convert, container[key])
        if value is None or (not allow_empty and value == ""):
            if not any(e["field"] == field for e in self.errors):
                self.add(field, f"{key} must not be empty")
            return None
        return value


def _object(c: _Collector, field: str, container: Mapping, key: str, required: bool = True) -> dict | None:
    value = container.get(key)
    if value is None:
        if required:
            c.add(field, f"{key} is required")
        return None
    if isinstance(value, list) and field == "product.variants":
        c.add(field, "variants must be one object (one variant per item), not a list")
        return None
    if not isinstance(value, dict):
        c.add(field, f"{key} must be an object, got {_show(value)}")
        return None
    return value


def _list(c: _Collector, field: str, container: Mapping, key: str) -> list:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        c.add(field, f"{key} must be a list, got {_show(value)}")
        return []
    return value


def normalize_product(item: Any, index: int, source_id: int) -> tuple[dict | None, list[Error]]:
    """Check one `system_products` item; return its stored form (None when refused) and errors.

    The stored form: {"source_id", "source_product_code", "source_variant_code", "active",
    "product": {...product fields, "options", "meta"}, "variant": {...}, "filled", "combo", "hash"}.
    A delete (product_active false) needs only the source fields and source_variant_code.
    """
    c = _Collector(index)
    if not isinstance(item, dict):
        return None, [error(index, "item", f"item must be an object, got {_show(item)}")]
    source = _object(c, "source", item, "source") or {}
    product = _object(c, "product", item, "product") or {}
    variant = _object(c, "product.variants", product, "variants") if "product" in item else None
    variant = variant or {}

    sid = c.required("source.source_id", to_int, source, "source_id")
    if sid is not None and sid != source_id:
        c.add("source.source_id", f"source_id {sid} is not this user's source ({source_id})")
    active = c.required("source.product_active", to_bool, source, "product_active", allow_empty=True)
    code = c.required("source.source_product_code", to_text, source, "source_product_code")
    for key in ("sync_token", "fetch_token"):
        c.required(f"source.{key}", to_text, source, key, allow_empty=True)
    variant_code = c.required("product.variants.source_variant_code", to_text, variant, "source_variant_code")

    normal: dict[str, Any] = {"source_id": source_id, "source_product_code": code,
                              "source_variant_code": variant_code, "active": bool(active),
                              "hash": item_hash(item)}
    if active:
        normal["product"] = _product_fields(c, product)
        normal["variant"] = _variant_fields(c, variant)
        _check_options(c, normal["product"]["options"], normal["variant"])
        filled = frozenset(n for n in (1, 2, 3) if normal["variant"][f"option{n}"] not in (None, ""))
        normal["filled"] = filled
        normal["combo"] = tuple(normal["variant"][f"option{n}"] for n in sorted(filled))
    return (None if c.errors else normal), c.errors


def _product_fields(c: _Collector, product: Mapping) -> dict:
    fields = {"title": c.required("product.title", to_text, product, "title")}
    for key in _PRODUCT_TEXT:
        fields[key] = c.take(f"product.{key}", to_text, product.get(key)) or ""
    fields["options"] = _options(c, product)
    fields["meta"] = _meta(c, product)
    return fields


def _variant_fields(c: _Collector, variant: Mapping) -> dict:
    p = "product.variants"
    fields = {
        "source_variant_code": to_text("source_variant_code", variant.get("source_variant_code")),
        "sku": c.required(f"{p}.sku", to_text, variant, "sku"),
        "price": c.take(f"{p}.price", to_float, variant.get("price")),
        "qty": c.take(f"{p}.qty", to_int, variant.get("qty")),
        "grams": c.take(f"{p}.grams", to_int, variant.get("grams")),
        "inventory_management": c.take(f"{p}.inventory_management", to_bool,
                                       variant.get("inventory_management")),
    }
    for key in _VARIANT_TEXT:
        fields[key] = c.take(f"{p}.{key}", to_text, variant.get(key)) or ""
    for n in (1, 2, 3):
        fields[f"option{n}"] = c.take(f"{p}.option{n}", to_text, variant.get(f"option{n}"))
    if fields["qty"] is not None and fields["qty"] < 0:
        fields["qty"] = 0  # the API stores qty unsigned and clamps negatives (§1.3)
    fields["price_tiers"] = _price_tiers(c, variant)
    fields["qty_availability"] = _qty_availability(c, variant)
    return fields


def _entries(c: _Collector, container: Mapping, where: str, key: str, what: str, name: str,
             value: tuple[str, Callable[[str, Any], Any]]) -> list[dict]:
    """A list of {name, value} objects (price tiers, warehouse quantities): each checked, sorted by name."""
    value_key, convert = value
    out = []
    for i, entry in enumerate(_list(c, f"{where}.{key}", container, key)):
        field = f"{where}.{key}[{i}]"
        if not isinstance(entry, dict):
            c.add(field, f"{what} must be an object, got {_show(entry)}")
            continue
        out.append({name: c.required(f"{field}.{name}", to_text, entry, name),
                    value_key: c.take(f"{field}.{value_key}", convert, entry.get(value_key))})
    return sorted(out, key=lambda e: str(e[name]))


def _price_tiers(c: _Collector, variant: Mapping) -> list[dict]:
    return _entries(c, variant, "product.variants", "price_tiers", "a price tier", "tier", ("price", to_float))


def _qty_availability(c: _Collector, variant: Mapping) -> list[dict]:
    return _entries(c, variant, "product.variants", "qty_availability", "a qty_availability entry", "description",
                    ("qty", to_int))


def _meta(c: _Collector, product: Mapping) -> list[dict]:
    entries = []
    for i, entry in enumerate(_list(c, "product.meta", product, "meta")):
        field = f"product.meta[{i}]"
        if not isinstance(entry, dict):
            c.add(field, f"a meta entry must be an object, got {_show(entry)}")
            continue
        entries.append({"key": c.required(f"{field}.key", to_text, entry, "key"),
                        "value": c.take(f"{field}.value", to_text, entry.get("value")) or "",
                        "template_name": c.take(f"{field}.template_name", to_text,
                                                entry.get("template_name"))})
    return entries


def _options(c: _Collector, product: Mapping) -> list[dict]:
    raw = _list(c, "product.options", product, "options")
    if len(raw) > MAX_OPTIONS:
        c.add("product.options", f"at most {MAX_OPTIONS} options are allowed, got {len(raw)}")
        return []
    options, seen = [], set()
    for i, option in enumerate(raw):
        field = f"product.options[{i}]"
        if not isinstance(option, dict):
            c.add(field, f"an option must be an object, got {_show(option)}")
            continue
        name = c.required(f"{field}.name", to_text, option, "name")
        position = c.required(f"{field}.position", to_int, option, "position")
        if position is None:
            continue
        if position not in (1, 2, 3):
            c.add(f"{field}.position", f"position must be 1, 2 or 3, got {position}")
        elif position in seen:
            c.add(f"{field}.position", f"two options have position {position}")
        else:
            seen.add(position)
            options.append({"name": name, "position": position})
    return sorted(options, key=lambda o: o["position"])


def _check_options(c: _Collector, options: list[dict], variant: Mapping) -> None:
    """options[].position N names variants.optionN (§1.4): each needs the other."""
    positions = {o["position"]: o["name"] for o in options}
    for n in (1, 2, 3):
        filled = variant.get(f"option{n}") not in (None, "")
        if n in positions and not filled:
            c.add(f"product.variants.option{n}",
                  f"option{n} is empty but option {positions[n]!r} has position {n}")
        elif filled and n not in positions:
            c.add(f"product.variants.option{n}",
                  f"option{n} is {variant[f'option{n}']!r} but no option has position {n}")


def check_product_groups(normals: list[tuple[int, dict]], stored: StoredVariants) -> list[Error]:
    """Rules across the variants of one product (same source_product_code), counting both the
    request (in order) and what is stored: every variant fills the same options, and no two
    variants share an option combination (reference/stock2shop.md §6 rules 3 and 4)."""
    errors: list[Error] = []
    groups: dict[str, dict[str, tuple[frozenset[int], tuple]]] = {}
    for index, normal in normals:
        code = normal["source_product_code"]
        variants = groups.setdefault(code, dict(stored(code)))
        own = normal["source_variant_code"]
        if not normal["active"]:
            variants.pop(own, None)
            continue
        problem = _group_problem(normal, {k: v for k, v in variants.items() if k != own})
        if problem:
            errors.append(error(index, *problem))
        else:
            variants[own] = (normal["filled"], normal["combo"])
    return errors


def _group_problem(normal: dict, others: Mapping[str, tuple[frozenset[int], tuple]]) -> tuple[str, str] | None:
    code = normal["source_product_code"]
    for other_code, (filled, combo) in others.items():
        if filled != normal["filled"]:
            return ("product.variants.options",
                    f"variants of product {code!r} must fill the same options: this one fills "
                    f"{_positions(normal['filled'])}, variant {other_code!r} fills {_positions(filled)}")
        if combo == normal["combo"]:
            what = "no options" if not combo else "options " + ", ".join(map(repr, combo))
            return ("product.variants.options",
                    f"variant {other_code!r} of product {code!r} already has {what}; "
                    "each variant needs a unique option combination")
    return None


def _positions(filled: frozenset[int]) -> str:
    return "no options" if not filled else " ".join(f"option{n}" for n in sorted(filled))


# ---- images ---------------------------------------------------------------------------


def normalize_image(item: Any, index: int, source_id: int) -> tuple[dict | None, list[Error]]:
    """Check one `system_images` item; return {"source_product_code", "source_variant_code",
    "image_id", "data" (decoded bytes), "format", "main"} (None when refused) and errors."""
    c = _Collector(index)
    if not isinstance(item, dict):
        return None, [error(index, "item", f"item must be an object, got {_show(item)}")]
    source = _object(c, "source", item, "source") or {}
    image = _object(c, "image", item, "image") or {}
    sid = c.required("source.source_id", to_int, source, "source_id")
    if sid is not None and sid != source_id:
        c.add("source.source_id", f"source_id {sid} is not this user's source ({source_id})")
    code = c.required("source.source_product_code", to_text, source, "source_product_code")
    variant_code = c.take("source.source_variant_code", to_text, source.get("source_variant_code")) or None
    image_id = c.required("image.image_id", to_text, image, "image_id")
    action = image.get("action")
    if action != "I":
        c.add("image.action", f"action must be \"I\", got {_show(action)}")
    data, fmt = _decode_image(c, image.get("image"))
    meta = _object(c, "image.meta", image, "meta", required=False) or {}
    main = c.take("image.meta.main_image", to_bool, meta.get("main_image"))
    if c.errors:
        return None, c.errors
    return {"source_product_code": code, "source_variant_code": variant_code, "image_id": image_id,
            "data": data, "format": fmt, "main": bool(main), "hash": item_hash(item)}, []


def _decode_image(c: _Collector, encoded: Any) -> tuple[bytes, str | None]:
    if not isinstance(encoded, str) or not encoded:
        c.add("image.image", "image is required: the picture's bytes in base64")
        return b"", None
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        c.add("image.image", "image is not valid base64")
        return b"", None
    if len(data) > MAX_IMAGE_BYTES:
        c.add("image.image", f"image is {len(data)} bytes, more than the {MAX_IMAGE_BYTES} bytes (2 MB) allowed")
        return b"", None
    for magic, fmt in _MAGIC.items():
        if data.startswith(magic):
            return data, fmt
    c.add("image.image", "image is neither a JPEG nor a PNG (checked by its first bytes)")
    return b"", None
