"""Merge: partial records + the catalogue -> whole items; what cannot be completed waits. Pure.

An update file (`mode: update`) maps only some fields (stock, one warehouse's qty, a price
tier, ...). Each of its rows is a partial record; it is merged onto the item the catalogue
holds for its variant, and the merged whole item is what is sent (DESIGN.md "The catalogue":
the API's treatment of missing fields is undocumented and the sandbox replaces, so a queued
item is always whole).

    merged = merge_updates(partials, known, mapping)
    merged.products   # whole items, grouped by product, in file order
    merged.waiting    # partials whose variant the catalogue does not know yet

Merging rules:
  - a field the row maps replaces the known value; a blank cell keeps it (the build leaves
    blank fields out); a cleared cell (`update.clear`) removes the field;
  - a family (qty_availability, price_tiers, meta) merges by entry name: one warehouse's
    entry is replaced, the others are kept;
  - product-level fields apply to every known variant of the product;
  - fields that are a sum (`qty: {sum: qty_availability}`) are computed after merging.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .build import apply_totals
from .mapping import FAMILIES, PRODUCT_FIELDS, VARIANT_FIELDS, FieldSpec, Mapping
from .model import Place, Product

# A field path: ("product", name), ("variant", name) or (family key, entry name)
FieldPath = tuple[str, str]


@dataclass
class Partial:
    """One row of an update file: the fields it sets, which item it is for, and where it came from."""

    product_code: str  # the group_by value
    key: str  # source_variant_code | sku | product
    value: str  # the key's value in the row (the product code when key is product)
    item: dict[str, Any]  # the row's item as built: only the fields the row fills
    line: int
    cleared: tuple[FieldPath, ...] = ()
    file: str = ""
    mapping: str = ""
    sums: tuple[tuple[str, str], ...] = ()  # its mapping's sum fields, recomputed after merging
    id: int | None = None  # the ledger's id of a partial that waited
    images: tuple[dict[str, Any], ...] = ()  # image jobs (as dicts) that go with it when it goes
    sheet: str | None = None  # the row's sheet, when several sheets are read (with `line`, the row in its file)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"item": self.item, "cleared": [list(p) for p in self.cleared],
                               "sums": [list(s) for s in self.sums]}
        if self.images:
            out["images"] = list(self.images)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], **fields: Any) -> Partial:
        return cls(item=data["item"], cleared=tuple((a, b) for a, b in data.get("cleared", ())),
                   sums=tuple((a, b) for a, b in data.get("sums", ())), **fields)


@dataclass
class Known:
    """The whole items a merge may build on: the catalogue's, overlaid by work journaled and not yet sent.

    `items` maps (product, variant) to the item, or (for `unchanged`) to the few values read.
    """

    items: dict[tuple[str, str], Any] = field(default_factory=dict)
    _by_product: dict[str, list[tuple[str, str]]] | None = None

    def variants_of(self, product_code: str) -> list[tuple[str, str]]:
        if self._by_product is None:
            self._by_product = {}
            for key in self.items:
                self._by_product.setdefault(key[0], []).append(key)
        return self._by_product.get(product_code, [])


@dataclass
class Merged:
    products: list[Product]
    waiting: list[Partial]


def partials_of(products: list[Product], mapping: Mapping, cleared: dict[Place, frozenset[str]],
                file: str) -> list[Partial]:
    """The rows of a built update file as partial records, in file order (`cleared`: by (sheet, line))."""
    key = mapping.update.key
    paths = _column_paths(mapping)
    sums = mapping.totals
    out = []
    for product in products:
        for item, place in zip(product.items, product.places(), strict=True):
            variant = item["product"]["variants"]
            value = product.code if key == "product" else str(variant.get(key, ""))
            gone = tuple(sorted({p for column in cleared[place] for p in paths(column)})) if place in cleared else ()
            out.append(Partial(product.code, key, value, item, place[1], gone, file, mapping.name, sums,
                               sheet=place[0]))
    return out


def wanted_codes(partials: Iterable[Partial]) -> set[str]:
    """Product codes the partials name (their items are looked up under these first)."""
    return {p.product_code for p in partials}


def find_variants(partial: Partial, known: Known, by_sku: dict[str, list[tuple[str, str]]] | None = None,
                  by_variant: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple[str, str]]:
    """The known variants a partial changes: its variant (by code within its product, else by code or SKU
    across the catalogue), or every variant of its product (key: product)."""
    if partial.key == "product":
        return known.variants_of(partial.product_code)
    if partial.key == "source_variant_code":
        if (partial.product_code, partial.value) in known.items:
            return [(partial.product_code, partial.value)]
        return (by_variant or {}).get(partial.value, [])
    return (by_sku or {}).get(partial.value, [])


def index(known: Known) -> tuple[dict[str, list[tuple[str, str]]], dict[str, list[tuple[str, str]]]]:
    """(by SKU, by variant code) over every known item (whole items, or values read by `read_paths`)."""
    by_sku: dict[str, list[tuple[str, str]]] = {}
    by_variant: dict[str, list[tuple[str, str]]] = {}
    for key, item in known.items.items():
        sku = item["product"]["variants"].get("sku") if "product" in item else item.get(("variant", "sku"))
        by_variant.setdefault(key[1], []).append(key)
        if sku is not None:
            by_sku.setdefault(str(sku), []).append(key)
    return by_sku, by_variant


def read_paths(mapping: Mapping) -> list[FieldPath]:
    """The fields of an item an update with this mapping may change (and the SKU when it finds the items)."""
    paths = {("product", name) for name, _ in mapping.product}
    paths |= {("variant", name) for name, _ in mapping.variant}
    paths |= {(FAMILIES[key][0], key) for key in FAMILIES if getattr(mapping, key) is not None}
    paths.discard(("variant", "source_variant_code"))  # the catalogue's key: read as such, not from the item
    if mapping.update.key == "sku":
        paths.add(("variant", "sku"))
    return sorted(paths)


def json_path(path: FieldPath) -> str:
    section, name = path
    return f"$.product.{name}" if section == "product" else f"$.product.variants.{name}"


def unchanged(partials: list[Partial], known: Known, by_sku: dict | None, by_variant: dict | None,
              busy: set[str]) -> tuple[list[Partial], int]:
    """Leave out the partials that change nothing, by the catalogue's values of the fields they set.

    `known.items` holds, per variant, {(section, name): value} as read (`read_paths`); products in
    `busy` have work not yet acknowledged and always merge whole. Returns the partials left to
    merge (including those with no known variant: they wait) and the count of items unchanged.
    Decoding and re-hashing 100,000 whole items to find 1,000 changed quantities costs seconds;
    this costs a comparison per row.
    """
    left, same = [], 0
    items = known.items
    for partial in partials:
        targets = find_variants(partial, known, by_sku, by_variant)
        changes = not targets
        for target in targets:
            if target[0] in busy or _differs(partial, items[target]):
                changes = True
                break
        if changes:
            left.append(partial)
        else:
            same += len(targets)
    return left, same


def _differs(partial: Partial, base: dict[FieldPath, Any]) -> bool:
    """Would merging `partial` change an item whose values at its paths are `base`?"""
    given = partial.item["product"]
    summed = {name for name, _ in partial.sums}
    for section, fields in (("product", given), ("variant", given.get("variants") or {})):
        for name, value in fields.items():
            if name == "variants" or name in summed:
                continue
            known = base.get((section, name))
            if name in FAMILIES:
                old = _entries(known)
                if _merge_entries(old, value, FAMILIES[name][3], False) != old:
                    return True
            elif type(known) is not type(value) or known != value:
                return True
    for section, name in partial.cleared:
        if section in FAMILIES:
            if any(e.get(FAMILIES[section][3]) == name for e in _entries(base.get((FAMILIES[section][0], section)))):
                return True
        elif base.get((section, name)) is not None:
            return True
    if partial.sums:
        variant: dict[str, Any] = {family: _merge_entries(_entries(base.get(("variant", family))),
                                          (given.get("variants") or {}).get(family) or [], FAMILIES[family][3], False)
                   for _, family in partial.sums}
        _apply_sums(variant, partial.sums)
        for name, _ in partial.sums:
            was, now = base.get(("variant", name)), variant.get(name)
            if now is not None and (type(was) is not type(now) or was != now):
                return True
    return False


def _entries(text: Any) -> list[dict]:
    return json.loads(text) if isinstance(text, str) and text else []


def merge_updates(partials: list[Partial], known: Known,
                  by_sku: dict[str, list[tuple[str, str]]] | None = None,
                  by_variant: dict[str, list[tuple[str, str]]] | None = None) -> Merged:
    """Merge each partial onto its known item(s); partials with no known item wait.

    Returns the changed-or-not merged items grouped by product (unchanged ones are dropped
    later, by hash against the catalogue) and the partials that wait for their product.
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    lines: dict[tuple[str, str], Place] = {}
    waiting: list[Partial] = []
    for partial in partials:
        targets = find_variants(partial, known, by_sku, by_variant)
        if not targets:
            waiting.append(partial)
            continue
        product_part = _product_part(partial.item)
        for target in targets:
            merged[target] = merge_item(merged.get(target) or known.items[target], partial)
            lines[target] = (partial.sheet, partial.line)
        if product_part:  # product-level fields: every variant of the product takes them
            for other in known.variants_of(targets[0][0]):
                if other not in targets:
                    merged[other] = merge_item(merged.get(other) or known.items[other], partial,
                                               variant_fields=False)
                    lines.setdefault(other, (partial.sheet, partial.line))
    return Merged(_grouped(merged, lines), waiting)


def merge_item(base: dict[str, Any], partial: Partial, *, under: bool = False,
               variant_fields: bool = True) -> dict[str, Any]:
    """`partial`'s fields on a copy of `base` (never changed): families by entry name, then sums.

    `under`: the partial only fills what `base` lacks (a row that waited, merged under the
    newer file that brought its product); cleared fields are then left alone.
    """
    product = dict(base["product"])
    variant = dict(product.get("variants") or {})
    given = partial.item["product"]
    for name, value in given.items():
        if name != "variants":
            _put(product, name, value, under)
    if variant_fields:
        for name, value in (given.get("variants") or {}).items():
            _put(variant, name, value, under)
    if not under:
        for section, name in partial.cleared:
            if section == "product":
                product.pop(name, None)
            elif section == "variant":
                variant.pop(name, None)
            else:
                holder = product if FAMILIES[section][0] == "product" else variant
                name_key = FAMILIES[section][3]
                kept = [e for e in holder.get(section) or () if e.get(name_key) != name]
                if kept:
                    holder[section] = kept
                else:
                    holder.pop(section, None)
    _apply_sums(variant, partial.sums)
    product["variants"] = variant
    return {"source": base["source"], "product": product}


def _put(into: dict[str, Any], name: str, value: Any, under: bool) -> None:
    if name in FAMILIES and isinstance(value, list):
        into[name] = _merge_entries(into.get(name) or [], value, FAMILIES[name][3], under)
    elif not under or name not in into:
        into[name] = value


def _merge_entries(old: list[dict], new: list[dict], name_key: str, under: bool) -> list[dict]:
    """Entries by name: a new entry replaces the old one of its name (unless `under`), the others stay, in order."""
    out = {e.get(name_key): e for e in old}
    for entry in new:
        if not under or entry.get(name_key) not in out:
            out[entry.get(name_key)] = entry
    return list(out.values())


def _product_part(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item["product"].items() if k != "variants"}


def _grouped(merged: dict[tuple[str, str], dict[str, Any]], lines: dict[tuple[str, str], Place]) -> list[Product]:
    products: dict[str, Product] = {}
    for (code, _), item in merged.items():
        product = products.get(code)
        if product is None:
            product = products[code] = Product(code, [], [])
        product.items.append(item)
    for product in products.values():
        places = [lines[(product.code, it["product"]["variants"]["source_variant_code"])] for it in product.items]
        product.lines = [line for _, line in places]
        if any(sheet is not None for sheet, _ in places):  # several sheets read: the rows' sheets too
            product.sheets = [sheet for sheet, _ in places]
    return list(products.values())


def release(products: list[Product], waiting: list[Partial],
            into: dict[str, list[Partial]] | None = None) -> tuple[list[Product], list[Partial]]:
    """Rows that waited for their product, merged under the items of a file that brings it.

    The newer file wins where both set a field: the file that brings the product is newer than
    every row that waited for it, and of the waiting rows (oldest first in `waiting`) the newest
    wins, so they are merged newest first, each filling only what is still missing. A waiting row
    adds what the file lacks (a warehouse's qty, a stock figure). Returns the products and the
    partials released, in the order given; `into`, when given, gets each product's partials.
    """
    if not waiting:
        return products, []
    at: dict[tuple[str, str], tuple[int, int]] = {}
    by_sku: dict[str, list[tuple[int, int]]] = {}
    by_variant: dict[str, list[tuple[int, int]]] = {}
    by_product: dict[str, list[tuple[int, int]]] = {}
    for i, product in enumerate(products):
        for j, item in enumerate(product.items):
            variant = item["product"]["variants"]
            place = (i, j)
            at[(product.code, variant["source_variant_code"])] = place
            by_variant.setdefault(variant["source_variant_code"], []).append(place)
            by_sku.setdefault(str(variant.get("sku")), []).append(place)
            by_product.setdefault(product.code, []).append(place)
    released = []
    for partial in reversed(waiting):
        if partial.key == "product":
            places = by_product.get(partial.value, [])
        elif partial.key == "sku":
            places = by_sku.get(partial.value, [])
        else:
            exact = at.get((partial.product_code, partial.value))
            places = [exact] if exact else by_variant.get(partial.value, [])
        if not places:
            continue
        for i, j in places:
            items = products[i].items
            if items[j]["source"].get("product_active") == "true":
                items[j] = merge_item(items[j], partial, under=True)
        if into is not None:
            for code in dict.fromkeys(products[i].code for i, _ in places):
                into.setdefault(code, []).append(partial)
        released.append(partial)
    released.reverse()
    return products, released


def _column_paths(mapping: Mapping):
    """column -> the field paths it fills, for cells holding the clear token."""
    table: dict[str, list[FieldPath]] = {}

    def add(spec: FieldSpec, path: FieldPath) -> None:
        for column in spec.columns:
            table.setdefault(column.casefold(), []).append(path)

    for name, spec in mapping.product:
        add(spec, ("product", name))
    for name, spec in mapping.variant:
        add(spec, ("variant", name))
    patterns: list[tuple[str, re.Pattern]] = []
    for key in FAMILIES:
        fam = getattr(mapping, key)
        if fam is None:
            continue
        for entry, spec in fam.entries:
            add(spec, (key, entry))
        if fam.pattern is not None:
            patterns.append((key, fam.pattern))

    def paths(column: str) -> list[FieldPath]:
        found = list(table.get(column.casefold(), ()))
        for key, pattern in patterns:
            m = pattern.search(column)
            if m is not None:
                named = [g for g in m.groupdict().values() if g]
                found.append((key, named[0] if named else (m.group(1) if m.re.groups else column)))
        return found

    return paths


def join_item(own: dict[str, Any], row: dict[str, Any], add: Iterable[str]) -> dict[str, Any]:
    """A join file's row as a whole item: its product's fields from `own` (the item the product's file
    brought), the row's options and variant; `add` fields are the product's value plus the row's difference.

    own price 100 + a row's price 40 (PrestaShop "Impact on price") -> 140. When the own item has
    no value, the row's difference is no value either: the field is left out (a difference that
    is not 0 then refuses the row, see `join_gaps`), never sent as if it were the price.
    """
    product = {k: v for k, v in own["product"].items() if k != "variants"}
    product.update((k, v) for k, v in row["product"].items() if k != "variants")
    variant = dict(row["product"]["variants"])
    base = own["product"].get("variants") or {}
    for name in add:
        if isinstance(base.get(name), (int, float)):
            total = base[name] + (variant.get(name) or 0)
            variant[name] = total if isinstance(total, int) else round(total, 6)
        else:
            variant.pop(name, None)
    product["variants"] = variant
    return {"source": {**own["source"], "product_active": "true"}, "product": product}


def join_gaps(own: dict[str, Any], row: dict[str, Any], add: Iterable[str]) -> list[tuple[str, Any]]:
    """The `add` fields a join row changes by a difference that is not 0 while the own item has no value
    for them: (field, difference). Such a row cannot be priced (or weighed) and is refused."""
    base = own["product"].get("variants") or {}
    variant = row["product"]["variants"]
    return [(name, variant[name]) for name in add
            if variant.get(name) not in (None, 0) and not isinstance(base.get(name), (int, float))]


def retire(item: dict[str, Any]) -> dict[str, Any]:
    """The item that retires a variant: as it was, with product_active "false"."""
    return {"source": {**item["source"], "product_active": "false"}, "product": item["product"]}


def _apply_sums(variant: dict[str, Any], sums: tuple[tuple[str, str], ...]) -> None:
    """The mapping's totals (`qty: {sum: qty_availability}`) of a merged variant; a variant with no
    entries of a family keeps the value it had (the catalogue's), unlike a row of a full file."""
    apply_totals(variant, tuple((name, family) for name, family in sums if variant.get(family)))


# Fields of an item no mapping's field list names: its identity and its options.
_STRUCTURAL = frozenset({"variants", "options", "source_variant_code", "option1", "option2", "option3"})


def mapped_by(mapping: Mapping, header: Iterable[str]) -> tuple[set[str], set[str], dict[str, set[str] | None]]:
    """What a full file with this mapping and header maps: (product fields, variant fields, family ->
    the entry names it maps, or None for a family it maps not at all).

    A field or entry the mapping names is mapped even when its cell is blank (the file then says
    "no value"); a pattern family maps the entries its header's columns name.
    """
    product = {name for name, _ in mapping.product}
    variant = {name for name, _ in mapping.variant} | {name for name, _ in mapping.totals}
    families: dict[str, set[str] | None] = {}
    paths = _column_paths(mapping)
    for key in FAMILIES:
        fam = getattr(mapping, key)
        families[key] = None if fam is None else {name for name, _ in fam.entries}
    for column in header:
        for section, name in paths(column):
            found = families.get(section)
            if found is not None:
                found.add(name)
    return product, variant, families


def unmapped(mapping: Mapping, header: Iterable[str]
             ) -> tuple[list[FieldPath], list[tuple[FieldPath, list[str] | None]]]:
    """What of the catalogue a full file with this mapping and header may keep: the fields it does not
    map, and per family the entry names it maps (None: it maps the family not at all)."""
    product, variant, families = mapped_by(mapping, header)
    paths = [("product", name) for name in PRODUCT_FIELDS if name not in product]
    paths += [("variant", name) for name in VARIANT_FIELDS if name not in variant and name not in _STRUCTURAL]
    return paths, [((FAMILIES[key][0], key), None if names is None else sorted(names))
                   for key, names in families.items()]


def keep_unmapped(products: list[Product], known: dict[tuple[str, str], dict[str, Any]], mapping: Mapping,
                  header: Iterable[str]) -> int:
    """A full file's items completed with what the catalogue holds for fields its mapping does not map.

    A full file is the truth for the fields it maps (a blank one is left out, as always); a field
    or family entry it does not map at all (a warehouse's qty an update file set) keeps the
    catalogue's value, so a product file after the stock files does not wipe the stock. Sums are
    computed again afterwards. Items change in place; returns how many took something.
    """
    product_fields, variant_fields, families = mapped_by(mapping, header)
    taken = 0
    for product in products:
        for i, item in enumerate(product.items):
            variant = item["product"]["variants"]
            base = known.get((product.code, variant["source_variant_code"]))
            if base is None:
                continue
            old_product = base["product"]
            new_product = _kept(item["product"], old_product, product_fields, families)
            new_variant = _kept(variant, old_product.get("variants") or {}, variant_fields, families)
            if new_product is item["product"] and new_variant is variant:
                continue
            apply_totals(new_variant, mapping.totals)
            product.items[i] = {"source": item["source"], "product": {**new_product, "variants": new_variant}}
            taken += 1
    return taken


def _kept(fields: dict[str, Any], old: dict[str, Any], mapped: set[str],
          families: dict[str, set[str] | None]) -> dict[str, Any]:
    """`fields` with the unmapped fields and family entries of `old` added (the same dict when none)."""
    out = fields
    for name, value in old.items():
        if name in _STRUCTURAL:
            continue
        if name in FAMILIES:
            if not isinstance(value, list):
                continue
            names = families.get(name)
            name_key = FAMILIES[name][3]
            extra = [e for e in value if names is None or e.get(name_key) not in names]
            have = {e.get(name_key) for e in fields.get(name) or ()}
            extra = [e for e in extra if e.get(name_key) not in have]
            if extra:
                out = dict(out) if out is fields else out
                out[name] = [*(fields.get(name) or ()), *extra]
        elif name not in mapped and name not in fields:
            out = dict(out) if out is fields else out
            out[name] = value
    return out
