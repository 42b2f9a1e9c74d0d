"""Relationship rules and required fields, checked before anything is sent. Pure.

    kept, problems, held = check_products(built.products)

Stock2Shop drops products that break its product/variant rules without saying so
(reference/stock2shop.md §6), so every rule is checked here with a message per line:
required fields, at most 3 options of distinct names, every variant fills the same options
under the same names, unique option combinations, one title per product, a source_variant_code
used once in a file, numbers in range. A product with an error is held back whole.
"""

from __future__ import annotations

from typing import Any

from .model import Place, Problem, Product, Severity, describe_line, place_order

MAX_OPTIONS = 3
# Product fields other than the title that should agree across a product's rows; the
# last item sent wins, so a difference is worth a warning but not holding the product back.
SHARED_FIELDS = ("body_html", "vendor", "product_type", "collection", "tags")


def check_products(products: list[Product]) -> tuple[list[Product], list[Problem], dict[str, list[Place]]]:
    """Check every product; return (products that pass, problems, held back {code: [(sheet, line)]}).

    Items of a product are in `product.items`, their places in `product.places()` (same order);
    each problem names its line and, when several sheets are read, its sheet.
    Warnings (a negative qty, differing descriptions) do not hold a product back.
    """
    problems: list[Problem] = []
    for product in products:
        _check_product(product, problems)
    _check_duplicate_variants(products, problems)
    bad = {p.product for p in problems if p.severity == "error" and p.product is not None}
    kept = [p for p in products if p.code not in bad]
    held = {p.code: sorted(p.places(), key=place_order) for p in products if p.code in bad}
    return kept, problems, held


def _check_product(product: Product, problems: list[Problem]) -> None:
    code = product.code
    sheet: str | None = None  # of the item being checked (several sheets read)

    def add(
        kind: str,
        reason: str,
        line: int | None,
        column: str | None = None,
        value: Any = None,
        severity: Severity = "error",
    ) -> None:
        shown = None if value is None else str(value)
        problems.append(Problem(kind, reason, severity, line, column, shown, code, sheet))

    # What the first rows set, with their places ("line 7" is made only for a message)
    first_title: tuple[str, Place] | None = None
    shared = _NOTHING_SHARED
    first_names: tuple[tuple[str, ...], Place] | None = None
    combos: dict[tuple, Place] = {}
    options: Any = _UNSEEN
    names: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    # build.py appends to items and lines together, so they are the same length
    for item, at in zip(product.items, product.places(), strict=True):
        sheet, line = at
        source, body = item["source"], item["product"]
        variant = body.get("variants") or {}
        active = source.get("product_active") != "false"
        for name in ("source_variant_code", "sku"):
            if not variant.get(name):
                add("required", f"{name} is required and missing", line, name)
        title = body.get("title")
        if active and not title:
            add("required", "title is required for an active product and missing", line, "title")
        if title:
            if first_title is None:
                first_title = (title, at)
            elif title != first_title[0]:
                shown = describe_line(*first_title[1])
                reason = f'title "{title}" differs from "{first_title[0]}" on {shown} (one title per product)'
                add("conflict", reason, line, "title", title)
        values = tuple(map(body.get, SHARED_FIELDS))
        if values != shared[0]:  # a product's rows mostly agree: then no field by field comparison
            shared = _check_shared(values, shared, at, add)
        if not active:
            continue  # a delete needs only its keys: its options and numbers are not stored
        if body.get("options") is not options:  # build.py shares one options list among a product's items
            options = body.get("options")
            names = tuple([o.get("name", "") for o in options or ()])
            keys = tuple([f"option{i}" for i in range(1, len(names) + 1)])
        if len(names) > MAX_OPTIONS:
            reason = f"has {len(names)} options ({', '.join(names)}); Stock2Shop allows at most {MAX_OPTIONS}"
            add("options", reason, line, "options")
        if first_names is None:
            first_names = (names, at)
            if len(names) > 1:  # the next variants with the same names are not checked again: one problem
                _check_repeated_names(names, line, add)
        elif names != first_names[0]:
            if len(names) > 1:
                _check_repeated_names(names, line, add)
            reason = (
                f"fills options ({_names(names)}) but {describe_line(*first_names[1])} fills "
                f"({_names(first_names[0])}); every variant of a product needs the same options"
            )
            add("options", reason, line, "options")
        combo = (names, tuple(map(variant.get, keys)))
        if combo in combos:
            if names:
                shown = ", ".join(f"{n} {v}" for n, v in zip(*combo, strict=True))  # one value per name
                first = describe_line(*combos[combo])
                reason = f"repeats the options of {first} ({shown}); each variant needs its own combination"
                add("options", reason, line, "options", shown)
            else:
                reason = (
                    f"is a second variant without options ({describe_line(*combos[combo])} is the first); "
                    "give the variants options or their own product codes"
                )
                add("options", reason, line, "options")
        else:
            combos[combo] = at
        _check_numbers(variant, line, add)


_UNSEEN = object()
# The first value of each of SHARED_FIELDS a product's rows set (None: not yet), and its place
_NOTHING_SHARED: tuple[tuple[Any, ...], tuple[Place | None, ...]] = ((None,) * len(SHARED_FIELDS),) * 2


def _check_shared(values: tuple[Any, ...], shared: tuple[tuple[Any, ...], tuple[Any, ...]], at: Place,
                  add: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Warn of each of SHARED_FIELDS whose value (in `values`) differs from the first row's that set it.

    Returns `shared` (the first values and their places) with the fields this row sets first.
    """
    firsts, places = list(shared[0]), list(shared[1])
    for i, value in enumerate(values):
        if value is None:
            continue
        if firsts[i] is None:
            firsts[i], places[i] = value, at
        elif firsts[i] != value:
            reason = f"{SHARED_FIELDS[i]} differs from {describe_line(*places[i])}; the last row sent wins"
            add("conflict", reason, at[1], SHARED_FIELDS[i], _short(value), "warning")
    return tuple(firsts), tuple(places)


def _check_repeated_names(names: tuple[str, ...], line: int, add: Any) -> None:
    """Two options of one name (Size S and Size M) on a variant: a channel cannot show both."""
    seen: set[str] = set()
    for name in names:
        key = str(name).strip().casefold()
        if key in seen:
            reason = f'fills option "{name}" twice ({", ".join(names)}); each option of a variant needs its own name'
            add("options", reason, line, "options", name)
            return
        seen.add(key)


def _check_numbers(variant: dict[str, Any], line: int, add: Any) -> None:
    price = variant.get("price")
    if price is not None and price < 0:
        add("range", f"price {price} is below 0", line, "price", price)
    grams = variant.get("grams")
    if grams is not None and grams < 0:
        add("range", f"grams {grams} is below 0", line, "grams", grams)
    qty = variant.get("qty")
    if qty is not None and qty < 0:
        add("range", f"qty {qty} is below 0; Stock2Shop stores it as 0", line, "qty", qty, "warning")
    for tier in variant.get("price_tiers") or ():
        if tier["price"] < 0:
            add("range", f'price tier "{tier["tier"]}" {tier["price"]} is below 0', line, "price_tiers", tier["price"])
    for stock in variant.get("qty_availability") or ():
        if stock["qty"] < 0:
            reason = f'qty at "{stock["description"]}" {stock["qty"]} is below 0; Stock2Shop stores it as 0'
            add("range", reason, line, "qty_availability", stock["qty"], "warning")


def _check_duplicate_variants(products: list[Product], problems: list[Problem]) -> None:
    """A source_variant_code may appear once in a file; every product using it twice is held."""
    codes = {(item["product"].get("variants") or {}).get("source_variant_code") for p in products for item in p.items}
    if len(codes) == sum(len(p.items) for p in products):
        return  # no two items share a code (the usual file): a set says so in a third of the time of the loop
    first: dict[str, tuple[str, Place]] = {}
    for product in products:
        for item, place in zip(product.items, product.places(), strict=True):  # appended together in build.py
            svc = (item["product"].get("variants") or {}).get("source_variant_code")
            if not svc:
                continue
            seen = first.get(svc)
            if seen is None:
                first[svc] = (product.code, place)
                continue
            where = describe_line(*seen[1]) + (f" (product {seen[0]})" if seen[0] != product.code else "")
            reason = f'source_variant_code "{svc}" is also on {where}; each variant code may appear once in a file'
            problems.append(Problem("duplicate", reason, "error", place[1], "source_variant_code", svc, product.code,
                                    place[0]))
            if seen[0] != product.code:
                reason = (f'source_variant_code "{svc}" is also used by product {product.code} on '
                          f"{describe_line(*place)}")
                problems.append(Problem("duplicate", reason, "error", seen[1][1], "source_variant_code", svc, seen[0],
                                        seen[1][0]))




def _names(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."
