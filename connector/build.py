"""Rows of text + a mapping -> Stock2Shop items grouped into products, and row problems. Pure.

    built = build_products(table.rows, mapping, source_id=42)
    built.products   # products whose every row mapped cleanly, items in file order
    built.problems   # cell errors (severity "error", product=<code>), skipped rows, warnings
    built.held       # {product code: all its (sheet, line)} for products held back by a bad row

The mapping is bound once per header (column names resolved, parsers and transforms
chosen) into small per-field functions; each row then only runs those functions.
A product is sent whole or not at all: one bad row holds back every row of its product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as Cellmap
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, NamedTuple

from .cells import MAX_WHOLE_DIGITS, CellError, parse_code, text_steps
from .columns import Header as _Header  # column names are resolved in one place, with the reader's find_header
from .mapping import (
    FAMILIES,
    PRODUCT_FIELDS,
    VARIANT_FIELDS,
    FamilySpec,
    FieldSpec,
    Mapping,
    SkipRule,
    SourceOptions,
    cell_parser,
    convert,
    number_failure,
)
from .model import Built, Cells, ImageRef, Problem, Product, Row, place_order, places

# A row's texts in the order of the header its mapping was bound to (see _Bound.values):
# getters read a cell by its position, worked out once per header, not by its name per row.
Texts = tuple[str, ...]
Getter = Callable[[Texts], Any]  # texts -> value for the API, or None when blank


# --------------------------------------------------------------------------- binding to a header


def _raw_getter(spec: FieldSpec, header: _Header) -> tuple[Getter, str | None]:
    """How to get the field's raw text from a row's cells, and the column to name in problems."""
    if spec.value is not None:
        const = spec.value
        return (lambda texts: const), None
    if spec.template is not None:
        parts: list[tuple[bool, Any]] = [
            (True, header.position(header.find(p, spec.where))) if is_col else (False, p)
            for is_col, p in spec.template.parts
        ]

        def from_template(texts: Texts) -> str:
            out, any_value = [], False
            for is_col, p in parts:
                if is_col:
                    v = texts[p].strip() if p is not None else ""
                    any_value = any_value or bool(v)
                    out.append(v)
                else:
                    out.append(p)
            # every named column blank: the field is blank, not the template's literal text
            return " ".join("".join(out).split()) if any_value else ""

        return from_template, spec.template.columns[0]
    key = header.find(spec.column or "", spec.where)
    if key is None:
        return (lambda texts: ""), spec.column
    at = header.position(key)
    return (lambda texts: texts[at]), key


def _converter(spec: FieldSpec, kind: str, source: SourceOptions) -> Callable[[str], Any] | None:
    """Cell text -> API value for this field (None: the text itself), raising CellError.

    The common cases get a shortcut that skips Decimal; the general path is
    `convert(parse(text))`, which the shortcuts fall back to for anything unusual.
    """
    parse = cell_parser(spec, source)
    scaled = spec.multiply is not None or spec.round is not None
    if kind == "str" and spec.type == "text":
        return None
    if kind == "str" and spec.type == "code":
        return parse_code
    if scaled:
        return lambda text: convert(parse(text), kind, spec)
    if kind == "float":
        decimal = source.decimal

        def to_float(text: str) -> float:
            # digits, one decimal separator and digits after it, maybe a minus: float() reads it as it
            # is (a regex match to see that costs twice the float() itself, on every price cell); a
            # text this short is never too large to send (MAX_WHOLE_DIGITS), a longer one is checked
            whole, point, fraction = text.removeprefix("-").partition(decimal)
            if whole.isdecimal() and (fraction.isdecimal() or not point) and len(text) <= MAX_WHOLE_DIGITS:
                return float(text if point in ("", ".") else text.replace(point, "."))
            return convert(parse(text), kind, spec)

        return to_float
    if kind == "int":

        def to_int(text: str) -> int:
            if text.isdigit() and text.isascii() and len(text) <= MAX_WHOLE_DIGITS:
                return int(text)
            return convert(parse(text), kind, spec)

        return to_int
    if kind == "flag":
        return lambda text: "true" if parse(text) else "false"
    return lambda text: convert(parse(text), kind, spec)


# What Python raises on a number it cannot hold (int() of 4,300+ digits, Decimal.quantize
# beyond its precision, float overflow); each becomes a CellError naming the cell.
_NUMBER_FAILURES = (ValueError, ArithmeticError)


class Read(NamedTuple):
    """One field bound to a header. `get(texts)` gives its value (None when blank) or raises CellError.

    A plain read (a column's text, stripped, converted: most fields of most mappings) also has
    `at`, the column's position, with `conv` and `default`, so the loops over a row's fields
    (_fill, _family_values) do it inline instead of calling `get`, and call `get` only to word a
    failure. `at` is -1 for every other field.
    """

    at: int
    conv: Callable[[str], Any] | None
    default: Any
    get: Getter


def bind_field(spec: FieldSpec, kind: str, source: SourceOptions, header: _Header) -> Getter:
    """One field's function for this header: texts -> API value or None; raises CellError."""
    return bind_read(spec, kind, source, header).get


def bind_read(spec: FieldSpec, kind: str, source: SourceOptions, header: _Header) -> Read:
    """The field bound to this header (see Read)."""
    if spec.fallback is not None:
        return Read(-1, None, None, _bind_fallback(spec, kind, source, header))
    if spec.unit is not None:
        return Read(-1, None, None, _bind_unit(spec, kind, source, header))
    raw, column = _raw_getter(spec, header)
    conv = _converter(spec, kind, source)
    steps = text_steps(spec.transforms)
    strip = spec.strip
    label = spec.label

    def finish(text: str, shown: str) -> Any:
        try:
            return conv(text) if conv is not None else text
        except CellError as exc:
            raise CellError(f'{label} "{_short(shown)}" {exc.reason}', column, shown) from None
        except _NUMBER_FAILURES as exc:
            raise CellError(f'{label} "{_short(shown)}" {number_failure(exc)}', column, shown) from None

    default = finish(spec.default, spec.default) if spec.default else None
    if spec.value is not None:  # a constant: worked out once
        const = steps(spec.value) if steps else spec.value
        value = finish(const, const) if const else default
        return Read(-1, None, None, lambda texts: value)

    if steps is None and spec.column is not None and strip:
        at = header.at.get(column or "")
        if at is None:  # a missing column reads as blank
            return Read(-1, None, None, lambda texts: default)

        def get_column(texts: Texts) -> Any:
            shown = texts[at]
            text = shown.strip()
            return finish(text, shown) if text else default

        return Read(at, conv, default, get_column)

    def get(texts: Texts) -> Any:
        shown = raw(texts)
        text = shown.strip() if strip else shown
        if text and steps is not None:
            text = steps(text)
        if not text:
            return default
        return finish(text, shown)

    return Read(-1, None, None, get)


def _short(text: str, most: int = 60) -> str:
    """A cell as quoted in a reason: a pasted-in page of digits is cut, the cell itself keeps it all."""
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"


def _bind_fallback(spec: FieldSpec, kind: str, source: SourceOptions, header: _Header) -> Getter:
    """The field, else (when it comes out blank) its fallback, else the `default`.

    The default ends the chain: given on the field, it is used only once every fallback came out
    blank (a fallback's own default comes first). A column the chain names is reported missing
    only when no column of the chain is in the file: `Weight (g)` falling back to `Weight (kg)` is
    a choice between two spellings.
    """
    assert spec.fallback is not None
    first = bind_field(replace(spec, fallback=None, default=None), kind, source, header)
    last = spec.fallback if spec.fallback.default else replace(spec.fallback, default=spec.default)
    second = bind_field(last, kind, source, header)
    chain = chain_columns(spec)
    if any(header.has(c) for c in chain):
        for c in chain:  # only where this field named it: the same column named elsewhere stays missing
            named_at = header.missing.get(c, "")
            if named_at == spec.where or named_at.startswith(spec.where + "."):
                del header.missing[c]

    def get_or_fallback(texts: Texts) -> Any:
        value = first(texts)
        return second(texts) if value is None else value

    return get_or_fallback


def _bind_unit(spec: FieldSpec, kind: str, source: SourceOptions, header: _Header) -> Getter:
    """A number times the factor of the unit named in another column (`unit:`).

    One getter per listed unit (the field with `multiply` times that unit's factor), chosen
    per row by the unit cell. A value with an unlisted or blank unit (and no `default`) is a
    CellError naming the unit's cell: sending 25 kg as 25 g is worse than not sending it.
    """
    unit = spec.unit
    assert unit is not None
    plain = replace(spec, unit=None)
    by_unit = {
        name.casefold(): bind_field(
            replace(plain, multiply=(spec.multiply or Decimal(1)) * factor), kind, source, header
        )
        for name, factor in unit.factors
    }
    default = by_unit[unit.default.casefold()] if unit.default else None
    raw, _ = _raw_getter(plain, header)
    key = header.find(unit.column, f"{spec.where}.unit.column")
    at = header.position(key)
    shown_column = key or unit.column
    listed = ", ".join(name for name, _ in unit.factors)
    strip = spec.strip

    def get(texts: Texts) -> Any:
        word = texts[at].strip() if at is not None else ""
        get_value = by_unit.get(word.casefold()) if word else default
        if get_value is not None:
            return get_value(texts)
        text = raw(texts)
        if not (text.strip() if strip else text):
            return None  # no value: its unit does not matter
        if not word:
            why = f'has no unit (column "{shown_column}" is blank; valid units: {listed})'
        else:
            why = (
                f'has the unit "{word}" (column "{shown_column}"), '
                f"which the mapping does not list (valid units: {listed})"
            )
        raise CellError(f'{spec.label} "{_short(text)}" {why}', shown_column, word)

    return get


def _bind_family(fam: FamilySpec, kind: str, source: SourceOptions, header: _Header) -> list[tuple[str, Read]]:
    """The (entry name, read) pairs of a column family for this header, in header order."""
    out: list[tuple[str, Read]] = []
    if fam.pattern is not None:
        for column in header.columns:
            m = fam.pattern.search(column)
            if m is None:
                continue
            named = [g for g in m.groupdict().values() if g]
            name = named[0] if named else (m.group(1) if m.re.groups else column)
            spec = replace(fam.cell, column=column, label=f"{fam.cell.label} {name}")
            out.append((name, bind_read(spec, kind, source, header)))
    for name, spec in fam.entries:
        out.append((name, bind_read(spec, kind, source, header)))
    return out


@dataclass
class _Bound:
    """A mapping bound to one header: every function a row needs."""

    names: tuple[str, ...]  # the header's columns: what `values` lines each row's texts up with
    skips: list[tuple[SkipRule, str | None, str]]  # (rule, column key or None when missing, column shown)
    group: Getter
    group_column: str | None
    status: Getter | None
    status_column: str | None
    product: Fields
    variant: Fields
    options: list[tuple[Getter, Getter, str | None, str | None]]
    families: list[tuple[str, str, str, str, _Entries]]  # section, key, name key, value key, entries
    image_columns: list[str]
    columns_of: dict[str, str | None]  # API field -> column, for required-field problems
    missing: dict[str, str]
    fill_columns: list[str]  # fill_down columns found in this header
    parent_rule: tuple[Any, str | None] | None  # (rule, column) that marks parent rows
    parent_key: str | None  # the column naming a row for its parent or children
    parent_link: str | None  # the column holding a child's parent (children_by) or a parent's children
    continuation_keys: list[str]  # continuation_rows: the key columns found (all blank: a continuation row)
    product_keys: list[str]  # the group_by columns of those (blank with a variant code: a variant of the product above)
    product_columns: list[str]  # what such a variant row takes from its product's row when blank

    def values(self, cells: Cellmap[str, str]) -> Texts:
        """A row's texts in this header's order: the reader's rows hold theirs so already."""
        if type(cells) is Cells and cells.names is self.names:
            return cells.texts
        return tuple([cells.get(name, "") for name in self.names])


# The fields of one part of an item (product or variant) bound to a header: (name, read), in the mapping's order.
Fields = list[tuple[str, Read]]


def _bind(mapping: Mapping, cells: Cellmap[str, str]) -> _Bound:
    names = cells.names if type(cells) is Cells else tuple(cells)
    header = _Header(names)
    src = mapping.source
    columns_of: dict[str, str | None] = {}

    def field(name: str, spec: FieldSpec, kind: str) -> Read:
        _, column = _raw_getter(spec, header)
        columns_of[name] = column
        return bind_read(spec, kind, src, header)

    skips = []
    for rule in mapping.skip_rows:
        skips.append((rule, header.find(rule.column, rule.where), rule.column))
    group = field("source_product_code", mapping.group_by, "str").get
    status = status_column = None
    if mapping.active is not None:
        status = field("product_active", mapping.active.field, "str").get
        status_column = columns_of["product_active"]
    product = [(n, field(n, s, PRODUCT_FIELDS[n][1])) for n, s in mapping.product]
    variant = [(n, field(n, s, VARIANT_FIELDS[n][1])) for n, s in mapping.variant]
    options = []
    for opt in mapping.options:
        name_col = _raw_getter(opt.name, header)[1]
        value_col = _raw_getter(opt.value, header)[1]
        options.append(
            (bind_field(opt.name, "str", src, header), bind_field(opt.value, "str", src, header), name_col, value_col)
        )
    families = []
    for key, (section, _, kind, name_key, value_key) in FAMILIES.items():
        fam = getattr(mapping, key)
        if fam is not None:
            families.append((section, key, name_key, value_key, _Entries(_bind_family(fam, kind, src, header))))
    image_columns: list[str] = []
    if mapping.images is not None:
        images = mapping.images
        if images.columns_pattern is not None:
            image_columns = [c for c in header.columns if images.columns_pattern.search(c)]
        for c in images.columns:
            found = header.find(c, "images.columns")
            if found is not None:
                image_columns.append(found)
    fill_columns = [c for c in (header.find(name, "fill_down") for name in mapping.fill_down) if c is not None]
    parent_rule = parent_key = parent_link = None
    if mapping.parents is not None:
        parents = mapping.parents
        parent_rule = (parents.rows, header.find(parents.rows.column, f"{parents.where}.rows"))
        parent_key = header.find(parents.key, f"{parents.where}.key")
        link = parents.children_by or parents.children_in or ""
        parent_link = header.find(link, f"{parents.where}.{'children_by' if parents.children_by else 'children_in'}")
    continuation_keys: list[str] = []
    product_keys: list[str] = []
    product_columns: list[str] = []
    if mapping.continuation_key is not None:
        group_columns = chain_columns(mapping.group_by)
        named = mapping.continuation_key or (
            *group_columns,
            *chain_columns(dict(mapping.variant).get("source_variant_code")),
        )
        for name in dict.fromkeys(named):
            key_column = header.find(name, "continuation_rows.key")
            if key_column is not None:
                continuation_keys.append(key_column)
        if not mapping.continuation_key:  # the default key has two levels: the product's and the variant's
            product_keys = [c for c in (header.find(n, "group_by") for n in group_columns) if c is not None]
            product_columns = _product_columns(mapping, header)
    return _Bound(
        names=names,
        skips=skips,
        group=group,
        group_column=columns_of["source_product_code"],
        status=status,
        status_column=status_column,
        product=product,
        variant=variant,
        options=options,
        families=families,
        image_columns=image_columns,
        columns_of=columns_of,
        missing=header.missing,
        fill_columns=fill_columns,
        parent_rule=parent_rule,
        parent_key=parent_key,
        parent_link=parent_link,
        continuation_keys=continuation_keys,
        product_keys=product_keys,
        product_columns=product_columns,
    )


def _product_columns(mapping: Mapping, header: _Header) -> list[str]:
    """The columns group_by, active, the product fields and product meta read, as found in the header."""
    names: list[str] = [*chain_columns(mapping.group_by)]
    if mapping.active is not None:
        names += chain_columns(mapping.active.field)
    for _, spec in mapping.product:
        names += chain_columns(spec)
    if mapping.meta is not None:
        if mapping.meta.pattern is not None:
            names += [c for c in header.columns if mapping.meta.pattern.search(c)]
        for _, spec in mapping.meta.entries:
            names += chain_columns(spec)
    return [header.find(n, "product") or n for n in dict.fromkeys(names) if header.has(n)]


# --------------------------------------------------------------------------- rows -> products


class _Run:
    """The state of one build: products in first-seen order, problems, failed product codes."""

    def __init__(self, mapping: Mapping, source_id: int):
        self.mapping = mapping
        self.source_id = source_id
        self.products: dict[str, Product] = {}
        self.lines: dict[str, list[int]] = {}  # every line of a product, sent or not
        self.sheets: dict[str, list[str | None]] = {}  # ... their sheets, when several sheets are read
        self.seen_images: dict[str, set[str]] = {}
        self.failed: set[str] = set()
        self.problems: list[Problem] = []
        self.skipped = 0
        self.folded: dict[tuple[str | None, int], str] = {}  # rows folded into another row's item: why
        self.skipped_by: dict[tuple[str | None, int], str] = {}  # rows skipped: the rule that skipped each
        self.statuses = dict(mapping.active.values) if mapping.active else {}
        self.family: _Family | None = None  # parent rows and their children (mapping.parents)
        self.image_rows: dict[str, list[tuple[Row, _Bound]]] = {}  # skipped rows whose images are kept
        self.variant_at: dict[tuple[str, str], int] = {}  # (product, variant code) -> item index, for same_variant: sum
        # Equal parts of items are one shared object (never mutated after build): the
        # `source` of a product's items, option lists, product-level lists such as meta.
        # A 100k-row export holds ~100 MB less this way (bench/bench_pipeline.py).
        self.shared: dict[Any, Any] = {}
        self.required_of = {active: self.required(active) for active in (True, False)}

    def share(self, key: Any, make: Callable[[], Any]) -> Any:
        found = self.shared.get(key)
        if found is None:
            found = self.shared[key] = make()
        return found

    def record(self, row: Row, b: _Bound, extras: list[Row]) -> None:
        """One record: its row and the continuation rows under it, which share the row's fate."""
        fate = self.row(row, b, extras)
        if not extras or fate in ("item", "folded"):
            return
        if fate == "skipped":
            rule = self.skipped_by[(row.sheet, row.line)]
            for extra in extras:
                self.skip(extra, "continuation", f"skipped with line {row.line}, the row it continues", None,
                          None, rule=rule)
        elif fate == "refused":  # refused without a product (its product's rows are held back whole)
            for extra in extras:
                self.fail(extra, None, [CellError(f"continues line {row.line}, which was refused", None, None,
                                                  "continuation")])

    def row(self, row: Row, b: _Bound, extras: list[Row] | tuple[()] = ()) -> str:
        """Map one row (with its continuation rows); returns its fate: item, folded, skipped, refused, held."""
        if self.skipped_by_rule(row, b):
            return "skipped"
        texts = b.values(row.cells)
        errors: list[CellError] = []
        parent = None
        if self.family is not None:
            role, parent = self.family.role(row, b)
            if role == "parent":
                return self.parent_row(row, parent)
            if role == "orphan":
                self.fail(row, None, [parent])
                return "refused"
        if parent is not None:
            code = parent.code
            if code is None:  # the parent row itself was refused for having no code
                self.fail(
                    row,
                    None,
                    [
                        CellError(
                            f"its parent row on line {parent.row.line} has no product code", None, None, "required"
                        )
                    ],
                )
                return "refused"
            parent.used = True
        else:
            code = self.value(b.group, texts, errors)
        if not code:
            if not errors:
                errors.append(
                    CellError(
                        f'the row has no product code (column "{b.group_column}" is blank)',
                        b.group_column,
                        "",
                        "required",
                    )
                )
            self.fail(row, None, errors)
            return "refused"
        state = self.status(b, texts, errors)
        if state == "ignore":
            self.skip(
                row,
                "ignored",
                f'not sent: column "{b.status_column}" says ignore',
                b.status_column,
                row.cells.get(b.status_column or "", ""),
                code,
                rule=f'active: column "{b.status_column}" says ignore',
            )
            return "skipped"
        lines = self.lines.setdefault(code, [])
        lines.append(row.line)
        if extras:
            lines.extend(extra.line for extra in extras)
        if row.sheet is not None:
            sheets = self.sheets.setdefault(code, [])
            sheets.append(row.sheet)
            sheets.extend(extra.sheet for extra in extras)
        extra_errors: list[tuple[Row, list[CellError]]] = []
        item, variant_code = self.item(row, texts, b, code, state, errors, parent.product if parent else None,
                                       extras, extra_errors)
        if errors or extra_errors:
            self.fail(row, code, errors)
            for extra, its_errors in extra_errors:
                self.fail(extra, code, its_errors)
            return "held"
        product = self.products.get(code)
        if product is None:
            product = self.products[code] = Product(code=code, items=[], lines=[])
            self.seen_images[code] = set()
            if parent is not None and state == "active" and self.mapping.images is not None:
                self.images(
                    parent.row, parent.bound, product, None, None
                )  # the parent's pictures first: its main image
        for extra in extras:
            self.folded[(extra.sheet, extra.line)] = "continuation"
        if self.mapping.same_variant == "sum" and variant_code is not None:
            at = self.variant_at.setdefault((code, variant_code), len(product.items))
            if at < len(product.items):
                _add_quantities(product.items[at]["product"]["variants"], item["product"]["variants"])
                if self.mapping.totals:
                    apply_totals(product.items[at]["product"]["variants"], self.mapping.totals)
                if state == "active" and self.mapping.images is not None:
                    for one in (row, *extras):
                        self.images(one, b, product, item, variant_code)
                self.folded[(row.sheet, row.line)] = "same_variant"
                return "folded"
        product.items.append(item)
        product.lines.append(row.line)
        if row.sheet is not None:  # several sheets are read: every row has one
            if product.sheets is None:
                product.sheets = []
            product.sheets.append(row.sheet)
        if state == "active" and self.mapping.images is not None:
            for one in (row, *extras):
                self.images(one, b, product, item, variant_code)
        return "item"

    def skipped_by_rule(self, row: Row, b: _Bound) -> bool:
        for rule, key, shown in b.skips:
            value = row.cells.get(key, "").strip() if key else ""
            if _skips(rule, value):
                reason = f'skipped: column "{shown}" {rule.describe()}'
                code = self.keep_images_of(row, b) if rule.keep_images else None
                if code is not None:
                    reason = (
                        f'not a variant: column "{shown}" {rule.describe()}; its images are kept for product {code}'
                    )
                self.skip(row, "filter", reason, shown, value, code, rule=f"{rule.where}: column \"{shown}\" "
                                                                         f"{rule.describe()}")
                return True
        return False

    def keep_images_of(self, row: Row, b: _Bound) -> str | None:
        """Remember a skipped row's images for its product (Shopify image-only rows); its code or None."""
        if self.mapping.images is None:
            return None
        try:
            code = b.group(b.values(row.cells))
        except CellError:
            return None
        if not code:
            return None
        self.image_rows.setdefault(code, []).append((row, b))
        return code

    def attach_kept_images(self) -> None:
        """Images of skipped rows go to their products, after the products' own.

        A product sent as a delete gets none.
        """
        for code, rows in self.image_rows.items():
            product = self.products.get(code)
            if product is None or code in self.failed or not product.items:
                continue
            if product.items[0]["source"]["product_active"] != "true":
                continue
            for row, b in rows:
                self.images(row, b, product, None, None)

    def parent_row(self, row: Row, parent: _Parent) -> str:
        """A parent row is not a variant: its lines belong to its product; its errors hold it back."""
        if parent.code is not None:
            self.lines.setdefault(parent.code, []).append(row.line)
            if row.sheet is not None:
                self.sheets.setdefault(parent.code, []).append(row.sheet)
        if parent.errors:
            self.fail(row, parent.code, parent.errors)
            return "refused"
        self.folded[(row.sheet, row.line)] = "parent"  # unless no child comes (unused_parents)
        return "folded"

    def product_fields(self, b: _Bound, texts: Texts, errors: list[CellError]) -> dict[str, Any]:
        """The product fields (and product-level families such as meta) of one row."""
        product = _fill(b.product, texts, errors)
        for section, key, name_key, value_key, entries in b.families:
            if section == "product":
                listed = _family_values(entries, texts, errors, name_key, value_key)
                if listed:
                    product[key] = listed
        return product

    def unused_parents(self) -> None:
        """Parent rows no child row pointed at: nothing to sell, so nothing is sent for them."""
        for parent in self.family.parents if self.family else ():
            if not parent.used and not parent.errors:
                self.folded.pop((parent.row.sheet, parent.row.line), None)
                self.skip(
                    parent.row,
                    "parent",
                    "not sent: a parent row with no variant rows in the file",
                    None,
                    None,
                    parent.code,
                    rule="parents: a parent row with no variant rows in the file",
                )

    def value(self, get: Getter, texts: Texts, errors: list[CellError]) -> Any:
        try:
            return get(texts)
        except CellError as exc:
            errors.append(exc)
            return None

    def status(self, b: _Bound, texts: Texts, errors: list[CellError]) -> str:
        if b.status is None:
            return "active"
        active = self.mapping.active
        assert active is not None  # b.status is bound only from mapping.active
        word = self.value(b.status, texts, errors)
        if not word:
            return active.default
        state = self.statuses.get(word.lower())
        if state is None:
            listed = ", ".join(w for w, _ in active.values)
            why = f'status "{word}" is not listed in the mapping (valid choices: {listed})'
            errors.append(CellError(why, b.status_column, word, "status"))
            return "active"
        return state

    def item(
        self,
        row: Row,
        texts: Texts,
        b: _Bound,
        code: str,
        state: str,
        errors: list[CellError],
        parent_product: dict[str, Any] | None = None,
        extras: list[Row] | tuple[()] = (),
        extra_errors: list[tuple[Row, list[CellError]]] | None = None,
    ) -> tuple[dict, str | None]:
        """The row's API item; continuation rows (`extras`) add their values, their errors to `extra_errors`."""
        product = _fill(b.product, texts, errors)
        variant = _fill(b.variant, texts, errors)
        present = self.option_values(b, texts, errors) if b.options else []
        lists: dict[str, list[dict[str, Any]]] = {}
        for _, key, name_key, value_key, entries in b.families:
            listed = _family_values(entries, texts, errors, name_key, value_key)
            if listed:
                lists[key] = listed
        for extra in extras:
            its_errors: list[CellError] = []
            more = b.values(extra.cells)
            _continue_fields(product, _fill(b.product, more, its_errors), row, its_errors, b)
            _continue_fields(variant, _fill(b.variant, more, its_errors), row, its_errors, b)
            if b.options:
                present.extend(self.option_values(b, more, its_errors))
            for _, key, name_key, value_key, entries in b.families:
                listed = _family_values(entries, more, its_errors, name_key, value_key)
                if listed:
                    lists.setdefault(key, []).extend(listed)
            if its_errors and extra_errors is not None:
                extra_errors.append((extra, its_errors))
        if present:
            self.set_options(product, variant, present)
        for section, key, name_key, value_key, _ in b.families:
            if lists.get(key):
                listed = lists[key]
                if section == "product":
                    shape = (key, tuple((d[name_key], d[value_key]) for d in listed))
                    listed = self.shared.setdefault(shape, listed)  # one list for every variant of the product
                (product if section == "product" else variant)[key] = listed
        if parent_product:
            product.update(parent_product)  # the parent row's product fields win over the child's
        if self.mapping.totals:
            apply_totals(variant, self.mapping.totals)
        active = state != "delete"
        for name in self.required_of[active]:
            if name not in (product if name == "title" else variant):
                column = b.columns_of.get(name)
                why = f'column "{column}" is blank' if column else "the mapping does not say where it comes from"
                errors.append(CellError(f"{name} is required ({why})", column, "", "required"))
        product["variants"] = variant
        source = self.share(
            ("source", code, active),
            lambda: {
                "source_id": self.source_id,
                "product_active": "true" if active else "false",
                "source_product_code": code,
                "sync_token": "0",
                "fetch_token": "0",
            },
        )
        item = {"source": source, "product": product}
        return item, variant.get("source_variant_code")

    def required(self, active: bool) -> tuple[str, ...]:
        """The fields a row must fill: an update file's row needs only what finds its item."""
        if self.mapping.mode == "update":
            key = self.mapping.update.key
            return () if key == "product" else (key,)
        if self.mapping.models is not None:  # a product model: product fields only
            return ()
        if self.mapping.join is not None:  # the title comes from the product's own item (another file)
            return _REQUIRED_TO_DELETE
        return _REQUIRED if active else _REQUIRED_TO_DELETE

    def option_values(self, b: _Bound, texts: Texts, errors: list[CellError]) -> list[tuple[str, str]]:
        """The (name, value) of each option the row has, in the mapping's order; a blank value: not there."""
        present = []
        for get_name, get_value, name_col, _ in b.options:
            try:
                value = get_value(texts)
                if value is None:
                    continue  # blank value: this row does not have the option
                name = get_name(texts)
            except CellError as exc:
                errors.append(exc)
                continue
            if name is None:
                errors.append(
                    CellError(
                        f'option value "{value}" has no option name (column "{name_col}" is blank)',
                        name_col,
                        "",
                        "options",
                    )
                )
                continue
            present.append((name, value))
        return present

    def set_options(self, product: dict, variant: dict, present: list[tuple[str, str]]) -> None:
        """The product's option list and the variant's option1..N, numbered in the order present."""
        names = next(zip(*present, strict=True))  # the names, as one tuple (no generator frame per row)
        product["options"] = self.share(
            ("options", names), lambda: [{"name": n, "position": i} for i, n in enumerate(names, 1)]
        )
        for i, (_, v) in enumerate(present, 1):
            variant[_SLOTS[i]] = v

    def images(self, row: Row, b: _Bound, product: Product, item: dict | None, variant_code: str | None) -> None:
        seen = self.seen_images[product.code]
        spec = self.mapping.images
        assert spec is not None  # called only when the mapping has images
        for column in b.image_columns:
            cell = row.cells.get(column, "").strip()
            if not cell:
                continue
            names = cell.split(spec.separator) if spec.separator else [cell]
            for name in names:
                name = name.strip()
                if spec.strip_leading_slash:
                    name = name.lstrip("/")  # a media path such as /m/h/a.jpg names m/h/a.jpg in the folder
                if name and name not in seen:
                    seen.add(name)
                    product.images.append(ImageRef(name, row.line, column, variant_code))
        if item is None:  # a row kept only for its images has no mapped values to fill a pattern
            return
        for template in spec.patterns:
            for name in _pattern_names(template, row.cells, item, spec.max):
                if name not in seen:
                    seen.add(name)
                    product.images.append(ImageRef(name, row.line, None, variant_code))

    def skip(
        self,
        row: Row,
        kind: str,
        reason: str,
        column: str | None,
        value: str | None,
        code: str | None = None,
        *,
        rule: str,
    ) -> None:
        """Leave a row out on purpose; `rule` names what skipped it (the report counts rows per rule)."""
        self.skipped += 1
        self.skipped_by[(row.sheet, row.line)] = rule
        self.problems.append(Problem(kind, reason, "skipped", row.line, column, value, code, row.sheet))

    def fail(self, row: Row, code: str | None, errors: list[CellError]) -> None:
        """Refuse a row: one problem per cell (the first thing wrong with it), the row's product held."""
        if code is not None:
            self.failed.add(code)
        told: set[str] = set()
        for exc in errors:
            if exc.column is not None:
                if exc.column in told:
                    continue  # one true message per cell: `sku "7.67E+11"` is not also blank or required
                told.add(exc.column)
            self.problems.append(
                Problem(exc.kind, exc.reason, "error", row.line, exc.column, exc.value, code, row.sheet)
            )


_REQUIRED = ("source_variant_code", "sku", "title")
_REQUIRED_TO_DELETE = ("source_variant_code", "sku")  # a delete needs only its keys
_SLOTS = {i: f"option{i}" for i in range(1, 100)}


# A converter's own failures; the field's getter words them with the cell (see _fill).
_CONVERT_FAILURES = (CellError, *_NUMBER_FAILURES)


def _fill(fields: Sequence[tuple[str, Read]], texts: Texts, errors: list[CellError]) -> dict[str, Any]:
    """{name: value} of the fields that are not blank in one row; cell errors go to `errors`.

    The loop every row of a file runs for every field: a plain read is done here inline,
    a call less per field (a third of the time of mapping 100,000 rows), straight into the
    dict; the rest, and a plain read whose text does not convert, go through the field's getter.
    """
    out: dict[str, Any] = {}
    for name, (at, conv, default, get) in fields:
        if at >= 0:
            text = texts[at].strip()
            if not text:
                if default is not None:
                    out[name] = default
                continue
            if conv is None:
                out[name] = text
                continue
            try:
                out[name] = conv(text)
                continue
            except _CONVERT_FAILURES:
                pass  # worded by the getter, below
        try:
            value = get(texts)
        except CellError as exc:
            errors.append(exc)
            continue
        if value is not None:
            out[name] = value
    return out


# Product and variant fields that take several values from continuation rows (joined as `split` sends them).
_LIST_FIELDS = ("tags",)


def _continue_fields(
    into: dict[str, Any], more: dict[str, Any], record: Row, errors: list[CellError], b: _Bound
) -> None:
    """A continuation row's field values added to its record's: lists grow, a single value must agree.

    A field the record left blank takes the continuation's value; a different value for a field
    that holds one (a price, a title) is an error on the continuation row, since which is right
    cannot be known.
    """
    for name, value in more.items():
        have = into.get(name)
        if have is None:
            into[name] = value
        elif name in _LIST_FIELDS:
            into[name] = ",".join(dict.fromkeys([*str(have).split(","), *str(value).split(",")]))
        elif have != value:
            column = b.columns_of.get(name)
            errors.append(CellError(
                f'{name} "{value}" differs from "{have}" on line {record.line}, the row it continues '
                f"(a continuation row adds options, tags, images and column families, and cannot change "
                f"a value)",
                column, str(value), "continuation"))


def _family_values(
    entries: _Entries, texts: Texts, errors: list[CellError], name_key: str, value_key: str
) -> list[dict[str, Any]]:
    """A column family's non-blank values of one row, as [{name_key: name, value_key: value}].

    Equal entries are one dict (see _Entries), never mutated after build: a merge makes new ones.
    A plain read's entry is found by its cell's text, so a text seen before is not converted again.
    """
    out = []
    for name, at, read, memo in entries.each:
        key: Any = texts[at].strip() if at >= 0 else None
        entry = memo.get(key) if key is not None else None
        if entry is None:
            v = _fill(((name, read),), texts, errors).get(name)
            if v is None:
                continue
            if key is None:  # keyed by value: 1, 1.0 and True are one key but not one JSON value, nor 0.0 and -0.0
                key = v
                entry = memo.get(v)
            if entry is None or entry[value_key].__class__ is not v.__class__ or (v == 0 and v.__class__ is float):
                if len(memo) >= _MEMO_MOST:
                    memo.clear()
                entry = memo[key] = {name_key: name, value_key: v}
        out.append(entry)
    if not entries.unique:  # two entries of one name: the last value, at the first one's place
        return list({e[name_key]: e for e in out}.values())
    return out


class _Entries:
    """A family's entries bound to one header (name and read), each with the entries it made so far.

    A stock level or a price repeats over a file's variants: ~4 entries a row are ~90 MB of a
    100k-row file when each is its own dict. Each entry's memo (value -> entry) is bounded.
    """

    __slots__ = ("each", "unique")

    def __init__(self, fields: Fields) -> None:
        # (name, position, read, memo) per entry: what _family_values unpacks, for each row
        self.each: list[tuple[str, int, Read, dict[Any, dict[str, Any]]]] = [
            (name, read.at, read, {}) for name, read in fields
        ]
        self.unique = len({name for name, _ in fields}) == len(fields)


_MEMO_MOST = 50_000  # entries a memo keeps at most: a few MB


def _add_quantities(into: dict[str, Any], other: dict[str, Any]) -> None:
    """same_variant: sum - add a repeated row's qty and per-warehouse qty into the first row's variant."""
    if "qty" in other:
        into["qty"] = into.get("qty", 0) + other["qty"]
    if other.get("qty_availability"):
        entries = [dict(s) for s in into.get("qty_availability") or ()]  # copies: equal entries are shared
        stock = {s["description"]: s for s in entries}
        for s in other["qty_availability"]:
            if s["description"] in stock:
                stock[s["description"]]["qty"] += s["qty"]
            else:
                entries.append(dict(s))
        into["qty_availability"] = entries


def apply_totals(variant: dict[str, Any], totals: tuple[tuple[str, str], ...]) -> None:
    """Set each total field of a variant to the sum of its family's values (`qty: {sum: qty_availability}`).

    A family with no value leaves the field out (blank, as a blank cell would), never 0. Run
    again whenever the family changes (continuation rows, same_variant: sum, a merge).

    >>> v = {"qty_availability": [{"description": "JHB", "qty": 3}, {"description": "CPT", "qty": 4}]}
    >>> apply_totals(v, (("qty", "qty_availability"),)); v["qty"]
    7
    """
    for name, family in totals:
        value_key = FAMILIES[family][4]
        entries = variant.get(family) or ()
        if entries:
            total = sum(entry[value_key] for entry in entries)
            variant[name] = round(total, 10) if isinstance(total, float) else total  # 0.1 + 0.2 is 0.3
        else:
            variant.pop(name, None)


def _skips(rule: Any, value: str) -> bool:
    if rule.matches is not None:
        return rule.matches.search(value) is not None
    if rule.equals is not None:
        return value in rule.equals
    return (value == "") == rule.blank


_MAPPED_NAMES = ("source_variant_code", "sku", "barcode")


def _pattern_names(template: Any, cells: Cellmap[str, str], item: dict, most: int) -> list[str]:
    """File names a pattern gives for one row; `{sku}` etc. are the mapped values, else columns."""
    variant = item["product"]["variants"]
    values: dict[str, str] = {}
    for is_col, part in template.parts:
        if not is_col or part == "n":
            continue
        if part in _MAPPED_NAMES:
            v = str(variant.get(part, ""))
        elif part == "source_product_code":
            v = item["source"]["source_product_code"]
        else:
            v = cells.get(part, "").strip()
        if not v:
            return []  # a placeholder is blank: no file name
        values[part] = v
    counted = any(is_col and part == "n" for is_col, part in template.parts)
    out = []
    for n in range(1, most + 1 if counted else 2):
        out.append(
            "".join((str(n) if part == "n" else values[part]) if is_col else part for is_col, part in template.parts)
        )
    return out


def build_products(rows: Iterable[Row], mapping: Mapping, *, source_id: int) -> Built:
    """Map rows to products (items in file order; rows of a product need not be adjacent).

    Products with any failed row are left out of `products`; their problems carry
    `product=<code>` and `held` lists all their lines. Skipped rows (filters, "ignore"
    status) are problems with severity "skipped". Missing columns are warnings (or errors,
    or nothing, as `missing_columns` says).
    """
    return _build(rows, mapping, source_id)


def _build(rows: Iterable[Row], mapping: Mapping, source_id: int) -> Built:
    run = _Run(mapping, source_id)
    bound: dict[str | None, _Bound] = {}
    rows_read = 0
    if mapping.parents is not None or mapping.fill_down:
        return _build_in_passes(list(rows), run, bound)
    rows = iter(rows)
    records = _Records(run)
    for row in rows:
        rows_read += 1
        b = bound.get(row.sheet)
        if b is None:
            b = bound[row.sheet] = _bind(mapping, row.cells)
            if _missing(run, b, mapping, row.sheet):
                return _refused(run, rows_read, rows)
        done = records.add(row, b)
        if done is not None:
            run.record(*done)
    if records.open is not None:
        run.record(*records.open)
    return _result(run, rows_read)


class _Records:
    """continuation_rows: rows grouped into records, each a row and the continuation rows under it.

    A row whose key columns are all blank continues the record above. With the default key
    (group_by's columns and source_variant_code's), a row whose group_by columns are blank but
    that has a variant code is a new variant of the product above (Odoo's product template
    export writes its variants so): its blank product cells are taken from the product's row.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.open: tuple[Row, _Bound, list[Row]] | None = None
        self.product_row: dict[str | None, Row] = {}  # per sheet: the last row that named its product

    def add(self, row: Row, b: _Bound) -> tuple[Row, _Bound, list[Row]] | None:
        """Take the next row; returns the record it closed, if any."""
        if b.continuation_keys:
            cells = row.cells
            if not any(cells.get(key, "").strip() for key in b.continuation_keys):
                if self.open is not None and self.open[0].sheet == row.sheet:
                    self.open[2].append(row)
                else:
                    self.run.fail(row, None, [_nothing_to_continue(b, "continue")])
                return None
            if b.product_keys and not any(cells.get(key, "").strip() for key in b.product_keys):
                above = self.product_row.get(row.sheet)
                if above is None:
                    self.run.fail(row, None, [_nothing_to_continue(b, "take its product from")])
                    return None
                row = Row(row.line, {**cells, **{c: above.cells.get(c, "") for c in b.product_columns
                                                 if not cells.get(c, "").strip()}}, row.sheet)
            else:
                self.product_row[row.sheet] = row
        done, self.open = self.open, (row, b, [])
        return done


def _nothing_to_continue(b: _Bound, what: str) -> CellError:
    keys = ", ".join(f'"{k}"' for k in (b.product_keys or b.continuation_keys))
    return CellError(
        f"the row has no product code (its key columns {keys} are blank) and no row above it to {what}",
        b.continuation_keys[0],
        "",
        "required",
    )


def _records(rows: list[Row], run: _Run, bound: dict[str | None, _Bound]) -> list[tuple[Row, list[Row]]]:
    """Rows with the continuation rows under each (see _Records)."""
    records = _Records(run)
    out = []
    for row in rows:
        done = records.add(row, bound[row.sheet])
        if done is not None:
            out.append((done[0], done[2]))
    if records.open is not None:
        out.append((records.open[0], records.open[2]))
    return out


def _build_in_passes(rows: list[Row], run: _Run, bound: dict[str | None, _Bound]) -> Built:
    """Builds that look at other rows: fill-down, then parents (whose children may come first)."""
    mapping = run.mapping
    for row in rows:
        if row.sheet not in bound:
            b = bound[row.sheet] = _bind(mapping, row.cells)
            if _missing(run, b, mapping, row.sheet):
                return _refused(run, len(rows), iter(()))
    records = _records(rows, run, bound)
    if mapping.fill_down:
        filled = _filled_down([row for row, _ in records], bound)
        records = [(row, extras) for row, (_, extras) in zip(filled, records, strict=True)]
    if mapping.parents is not None:
        run.family = _Family.scan([row for row, _ in records], bound, run)
    for row, extras in records:
        run.record(row, bound[row.sheet], extras)
    run.unused_parents()
    return _result(run, len(rows))


def _result(run: _Run, rows_read: int) -> Built:
    run.attach_kept_images()
    if run.mapping.continuation_key is not None:
        for product in run.products.values():
            _one_product_list(product)
    products = [p for code, p in run.products.items() if code not in run.failed]
    held = {code: sorted(places(run.lines.get(code, []), run.sheets.get(code, [])), key=place_order)
            for code in sorted(run.failed)}
    return Built(products=products, problems=run.problems, rows_read=rows_read, rows_skipped=run.skipped, held=held,
                 folded=run.folded, skipped=run.skipped_by, lines=run.lines, sheets=run.sheets)


def _one_product_list(product: Product) -> None:
    """Tags and meta the rows of one product spread among them (continuation_rows), on every item alike."""
    if len(product.items) < 2:
        return
    tags = [t for it in product.items for t in str(it["product"].get("tags", "")).split(",") if t]
    meta = [m for it in product.items for m in it["product"].get("meta", ())]
    joined_tags = ",".join(dict.fromkeys(tags))
    joined_meta = list({(m["key"], m["value"]): m for m in meta}.values())
    for item in product.items:
        if joined_tags:
            item["product"]["tags"] = joined_tags
        if joined_meta:
            item["product"]["meta"] = joined_meta


def _filled_down(rows: list[Row], bound: dict[str | None, _Bound]) -> list[Row]:
    """Blank `fill_down` cells take the value of the same product's previous row (Shopify style)."""
    last: dict[tuple[str | None, str], dict[str, str]] = {}
    out = []
    for row in rows:
        b = bound[row.sheet]
        try:
            code = b.group(b.values(row.cells))
        except CellError:
            code = None
        if not code or not b.fill_columns:
            out.append(row)
            continue
        seen = last.setdefault((row.sheet, code), {})
        filled = None
        for column in b.fill_columns:
            value = row.cells.get(column, "")
            if value.strip():
                seen[column] = value
            elif column in seen:
                filled = filled if filled is not None else dict(row.cells)
                filled[column] = seen[column]
        out.append(row if filled is None else replace(row, cells=filled))
    return out


@dataclass
class _Parent:
    """A parent row: its product code and product fields, for its children."""

    row: Row
    bound: _Bound
    code: str | None
    product: dict[str, Any]
    errors: list[CellError]
    used: bool = False


class _Family:
    """Which rows are parents, and which parent each child row belongs to (see mapping.parents)."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.parents: list[_Parent] = []
        self.by_row: dict[tuple[str | None, int], _Parent] = {}
        self.by_key: dict[str, _Parent] = {}  # parent's key -> parent (children_by)
        self.of_child: dict[str, _Parent] = {}  # child's key -> parent (children_in)

    @classmethod
    def scan(cls, rows: list[Row], bound: dict[str | None, _Bound], run: _Run) -> _Family:
        family = cls(run.mapping.parents)
        for row in rows:
            b = bound[row.sheet]
            if not family.is_parent(row, b):
                continue
            errors: list[CellError] = []
            texts = b.values(row.cells)
            code = run.value(b.group, texts, errors) or None
            if code is None and not errors:
                errors.append(
                    CellError(
                        f'the parent row has no product code (column "{b.group_column}" is blank)',
                        b.group_column,
                        "",
                        "required",
                    )
                )
            parent = _Parent(row, b, code, run.product_fields(b, texts, errors), errors)
            family.parents.append(parent)
            family.by_row[(row.sheet, row.line)] = parent
            key = row.cells.get(b.parent_key or "\0", "").strip()
            if key:
                family.by_key.setdefault(key, parent)
            if family.spec.children_in is not None:
                for entry in row.cells.get(b.parent_link or "\0", "").split(family.spec.separator):
                    child = entry.strip()
                    for step in family.spec.pick:
                        child = step.apply(child)
                    if child:
                        family.of_child.setdefault(child, parent)
        return family

    @staticmethod
    def is_parent(row: Row, b: _Bound) -> bool:
        rule, column = b.parent_rule  # type: ignore[misc]
        return _skips(rule, row.cells.get(column, "").strip() if column else "")

    def role(self, row: Row, b: _Bound) -> tuple[str | None, Any]:
        """("parent", _Parent), ("child", _Parent), ("orphan", CellError) or (None, None)."""
        parent = self.by_row.get((row.sheet, row.line))
        if parent is not None:
            return "parent", parent
        if self.spec.children_in is not None:
            key = row.cells.get(b.parent_key or "\0", "").strip()
            parent = self.of_child.get(key) if key else None
            return ("child", parent) if parent is not None else (None, None)
        link = row.cells.get(b.parent_link or "\0", "").strip()
        if not link:
            return None, None
        parent = self.by_key.get(link)
        if parent is None:
            reason = f'its parent "{link}" (column "{b.parent_link}") is not a parent row in the file'
            return "orphan", CellError(reason, b.parent_link, link, "required")
        return "child", parent


def _missing(run: _Run, b: _Bound, mapping: Mapping, sheet: str | None) -> bool:
    """Report columns the mapping names but the file lacks. True: the file cannot be mapped."""
    # group_by with a fallback is missing only when every column it may come from is missing
    group_columns = chain_columns(mapping.group_by)
    group_missing = bool(group_columns) and all(c in b.missing for c in group_columns)
    severity = "error" if mapping.missing_columns == "error" or group_missing else "warning"
    for column, where in b.missing.items():
        fatal = severity == "error" or (group_missing and column in group_columns)
        if mapping.missing_columns == "ignore" and not fatal:
            continue
        run.problems.append(
            Problem(
                "column",
                f'column "{column}" (named at {where} in the mapping) is not in the file',
                "error" if fatal else "warning",
                column=column,
                sheet=sheet,
            )
        )
    return any(p.kind == "column" and p.severity == "error" for p in run.problems)


def chain_columns(spec: FieldSpec | None) -> list[str]:
    """The columns a field and its fallbacks read."""
    out: list[str] = []
    while spec is not None:
        out.extend(spec.columns)
        spec = spec.fallback
    return out


def _refused(run: _Run, rows_read: int, rows: Iterable[Row]) -> Built:
    count = rows_read + sum(1 for _ in rows)
    return Built(products=[], problems=run.problems, rows_read=count, rows_skipped=0, file_refused=True)
