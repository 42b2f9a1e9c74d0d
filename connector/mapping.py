"""YAML mappings: how the rows of an export become Stock2Shop items.

    mapping = load_mapping(find_mapping("stock2shop", [Path("mappings")]))
    mapping.source.decimal        # read and number options for the file
    built = build.build_products(rows, mapping, source_id=42)

A mapping is plain YAML (always `yaml.safe_load`) with a closed set of named types and
transforms; there are no expressions and nothing is evaluated. `load_mapping` checks the
whole file up front and raises `MappingError` listing every problem with its YAML path
(`variant.price.type: unknown type "decmal"; did you mean "decimal"? (valid choices: ...)`),
so a support person fixes a mapping in one pass. The reference is `docs/mapping.md`.

This module owns the language: the spec dataclasses, validation, and the cell types
(`parse_*`), which `build` binds to a file's header and runs per row.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from connector.errors import CellError, MappingError

# --------------------------------------------------------------------------- cell types

TYPES = ("text", "code", "gtin", "decimal", "int", "bool", "date")
DEFAULT_TRUE = ("true", "yes", "y", "1", "t")
DEFAULT_FALSE = ("false", "no", "n", "0", "f")
DECIMAL_SEPARATORS = (".", ",")
THOUSANDS_SEPARATORS = ("", " ", ".", ",", "'")
# Excel turns long digit strings into `6.00988E+12`; the lost digits cannot be recovered.
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
# A number cell longer than this is not a price or a quantity but a pasted-in mistake; longer
# digit strings also make int() refuse (over 4,300 digits) and Decimal lose precision.
MAX_NUMBER_CHARS = 40
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " "})
# What the reader gives for a date cell (2016-06-24, or with a time), and ISO text dates.
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?$")


def parse_text(text: str) -> str:
    return text


def parse_code(text: str) -> str:
    """A code is kept exactly as written (`00123` stays `00123`), but never scientific notation."""
    if _SCIENTIFIC.match(text):
        raise CellError("is in scientific notation, so its digits were lost (export the column as text)")
    return text


def parse_gtin(text: str) -> str:
    """A GTIN barcode: digits only, 8, 12, 13 or 14 long, with a valid check digit."""
    if _SCIENTIFIC.match(text):
        raise CellError("is in scientific notation, so its digits were lost (export the column as text)")
    if not (text.isascii() and text.isdigit()):
        raise CellError("is not a barcode (digits only)")
    if len(text) not in (8, 12, 13, 14):
        raise CellError(f"is not a barcode ({len(text)} digits; a GTIN has 8, 12, 13 or 14)")
    digits = [ord(c) - 48 for c in text]
    body = digits[-2::-1]
    total = sum(d * 3 if i % 2 == 0 else d for i, d in enumerate(body))
    if (10 - total % 10) % 10 != digits[-1]:
        raise CellError("is not a barcode (the check digit is wrong)")
    return text


def parse_date(text: str) -> str:
    """An ISO date (`2016-06-24`, optionally with a time) that exists on the calendar; sent as written.

    Workbook date cells arrive from the reader in this form; `2016-06-31` is an error.
    """
    m = _ISO_DATE.match(text)
    if m is None:
        raise CellError("is not a date (write it as YYYY-MM-DD)")
    year, month, day = (int(g) for g in m.groups()[:3])
    try:
        date(year, month, day)
    except ValueError:
        raise CellError("is not a date on the calendar") from None
    hour, minute, second = (int(g or 0) for g in m.groups()[3:])
    if hour > 23 or minute > 59 or second > 59:
        raise CellError("is not a time of day")
    return text


def decimal_parser(decimal: str = ".", thousands: str = "") -> Callable[[str], Decimal]:
    """A parser for numbers written with these separators; ambiguous values are errors.

    decimal_parser(",", " ")("1 299,50") == Decimal("1299.50")
    decimal_parser(".", "")("1,299")  -> CellError (is "," a decimal or a thousands mark?)
    """
    d, t = re.escape(decimal), re.escape(thousands)
    plain = re.compile(rf"^([+-]?)(\d*)(?:{d}(\d+))?$")
    grouped = re.compile(rf"^([+-]?)(\d{{1,3}}(?:{t}\d{{3}})+)(?:{d}(\d+))?$") if thousands else None
    other = "," if decimal == "." else "."
    seps = f'decimal separator "{decimal}"' + (f', thousands "{thousands}"' if thousands else "")

    def parse(text: str) -> Decimal:
        _check_length(text)
        s = text.translate(_SPACES) if thousands == " " else text
        m = plain.match(s)
        if m is None and grouped is not None:
            m = grouped.match(s)
        if m is not None and (m.group(2) or m.group(3)):
            sign, whole, frac = m.groups()
            whole = whole.replace(thousands, "") if thousands else whole
            return Decimal(f"{sign}{whole or '0'}.{frac}" if frac else f"{sign}{whole}")
        if _SCIENTIFIC.match(s):
            raise CellError(f"is in scientific notation ({seps})")
        if other in s and thousands != other and (plain.match(s.replace(other, "")) or plain.match(s.replace(other, decimal))):
            raise CellError(
                f'is ambiguous: "{other}" is not the decimal separator ("{decimal}") '
                f"and not the thousands separator of this mapping"
            )
        raise CellError(f"is not a number ({seps})")

    return parse


def _check_length(text: str) -> None:
    if len(text) > MAX_NUMBER_CHARS:
        raise CellError(f"is too long for a number ({len(text)} characters; at most {MAX_NUMBER_CHARS})")


def int_parser(decimal: str = ".", thousands: str = "") -> Callable[[str], int]:
    """Whole numbers; `479.0` is 479, `4.5` is an error."""
    parse_decimal = decimal_parser(decimal, thousands)

    def parse(text: str) -> int:
        if text.isdigit() and text.isascii() and len(text) <= MAX_NUMBER_CHARS:
            return int(text)
        value = parse_decimal(text)
        if value != value.to_integral_value():
            raise CellError("is not a whole number")
        return int(value)

    return parse


def bool_parser(true_values: tuple[str, ...] = DEFAULT_TRUE, false_values: tuple[str, ...] = DEFAULT_FALSE):
    """Listed spellings only (case-insensitive); anything else is an error, never `false`."""
    table = {v.lower(): True for v in true_values} | {v.lower(): False for v in false_values}
    listed = ", ".join([*true_values, *false_values])

    def parse(text: str) -> bool:
        try:
            return table[text.lower()]
        except KeyError:
            raise CellError(f"is not a yes/no value (use one of: {listed})") from None

    return parse


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SourceOptions:
    """How to read the file, for `read.read_table`, plus the number format of its cells."""

    header_row: int = 1
    find_header: tuple[str, ...] | None = None  # find the header row by these column names
    sheet: str | int | None = None
    delimiter: str | None = None  # None: detect
    encoding: str | None = None  # None: detect
    legacy_encoding: str | None = None  # None: the settings' default (cp1252)
    decimal: str = "."
    thousands: str = ""


@dataclass(frozen=True)
class Template:
    """`"{Brand} {Name}"` split into literal text and column names."""

    text: str
    parts: tuple[tuple[bool, str], ...]  # (is_column, text or column name)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(p for is_col, p in self.parts if is_col)


@dataclass(frozen=True)
class PickStep:
    """Take one part of a packed cell: the value of `key` in `size=XS,color=Black`, or item `index`.

    PickStep(key="size")                     "size=XS,color=Black" -> "XS"
    PickStep(index=-1, separator="/")        "Default/Men/Tops"    -> "Tops"
    """

    key: str | None = None
    index: int | None = None  # 1-based; negative counts from the end
    separator: str = ","
    equals: str = "="

    def apply(self, text: str) -> str:
        parts = text.split(self.separator)
        if self.key is None:
            i = self.index - 1 if self.index > 0 else self.index  # type: ignore[operator]
            return parts[i].strip() if -len(parts) <= i < len(parts) else ""
        for part in parts:
            name, eq, value = part.partition(self.equals)
            if eq and name.strip() == self.key:
                return value.strip()
        return ""


@dataclass(frozen=True)
class UnitSpec:
    """A number whose unit is in another column: the value is multiplied by its unit's factor.

    UnitSpec("weight-unit", (("GRAM", 1), ("KILOGRAM", 1000)))   25 + "KILOGRAM" -> 25000
    A unit not listed (or blank, without `default`) is an error naming the unit's cell.
    """

    column: str
    factors: tuple[tuple[str, Decimal], ...]  # (unit as written, case-insensitive; factor)
    default: str | None = None  # the unit of a value whose unit cell is blank


@dataclass(frozen=True)
class FieldSpec:
    """One value per row: from a column, a constant, or a template, then transforms and a type."""

    where: str  # YAML path, for messages
    label: str  # what a person calls it in a message: "price", "option Size"
    column: str | None = None
    value: str | None = None
    template: Template | None = None
    type: str = "text"
    default: str | None = None
    strip: bool = True
    replace: tuple[tuple[re.Pattern, str], ...] = ()
    upper: bool = False
    lower: bool = False
    map: tuple[tuple[str, str], ...] = ()
    zero_pad: int | None = None
    prefix: str = ""
    suffix: str = ""
    split: str | None = None
    multiply: Decimal | None = None
    round: int | None = None
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE
    pick: tuple[PickStep, ...] = ()
    fallback: FieldSpec | None = None  # used when this field comes out blank
    unit: UnitSpec | None = None  # numbers whose unit is named in another column

    @property
    def columns(self) -> tuple[str, ...]:
        if self.column is not None:
            return (self.column,)
        return self.template.columns if self.template else ()


@dataclass(frozen=True)
class FamilySpec:
    """Columns matched by a pattern (`^price_(?P<tier>.+)$`) or listed by name, into a list."""

    where: str
    pattern: re.Pattern | None  # the named group (else group 1, else the column) names the entry
    entries: tuple[tuple[str, FieldSpec], ...]  # explicit (name, value) entries
    cell: FieldSpec  # type and transforms applied to each matched column


@dataclass(frozen=True)
class OptionSpec:
    name: FieldSpec
    value: FieldSpec


@dataclass(frozen=True)
class ActiveSpec:
    """`product_active` from a status column: active -> "true", delete -> "false", ignore -> not sent."""

    field: FieldSpec
    values: tuple[tuple[str, str], ...]  # (lower-case spelling, "active" | "delete" | "ignore")
    default: str = "active"


@dataclass(frozen=True)
class SkipRule:
    where: str
    column: str
    matches: re.Pattern | None = None
    equals: tuple[str, ...] | None = None
    blank: bool | None = None
    keep_images: bool = False  # the row is not a variant, but its images belong to its product

    def describe(self) -> str:
        if self.matches is not None:
            return f'matches "{self.matches.pattern}"'
        if self.equals is not None:
            return "is " + " or ".join(f'"{v}"' for v in self.equals)
        return "is blank" if self.blank else "is not blank"


@dataclass(frozen=True)
class ParentsSpec:
    """Parent and child rows: a parent row gives product fields; its children are the variants.

    `rows` says which rows are parents. Children name their parent in a column (`children_by`,
    WooCommerce `Parent`), or the parent lists its children in one cell (`children_in`, Magento
    `configurable_variations`); `key` is the column both sides use to name a row.
    """

    where: str
    rows: SkipRule
    key: str
    children_by: str | None = None
    children_in: str | None = None  # the parent's column listing its children
    separator: str = "|"  # between the children listed in `children_in`
    pick: tuple[PickStep, ...] = ()  # how to find a child's key in one listed entry


@dataclass(frozen=True)
class ImagesSpec:
    columns: tuple[str, ...] = ()
    columns_pattern: re.Pattern | None = None
    separator: str | None = None
    patterns: tuple[Template, ...] = ()
    max: int = 5
    folder: str | None = None
    allow_urls: bool = False
    strip_leading_slash: bool = False  # "/m/h/a.jpg" is "m/h/a.jpg" inside the folder (Magento media paths)


@dataclass(frozen=True)
class Mapping:
    """A validated mapping. `sha256` is of the file's bytes, for the report."""

    name: str
    sha256: str
    path: str
    source: SourceOptions
    group_by: FieldSpec
    active: ActiveSpec | None
    product: tuple[tuple[str, FieldSpec], ...]
    variant: tuple[tuple[str, FieldSpec], ...]
    options: tuple[OptionSpec, ...] = ()
    meta: FamilySpec | None = None
    price_tiers: FamilySpec | None = None
    qty_availability: FamilySpec | None = None
    images: ImagesSpec | None = None
    skip_rows: tuple[SkipRule, ...] = ()
    missing_columns: str = "warn"  # warn | ignore | error
    description: str = ""
    parents: ParentsSpec | None = None
    fill_down: tuple[str, ...] = ()  # columns a product's later rows take from its earlier rows
    same_variant: str = "error"  # error | sum: rows repeating a variant add up their quantities

    @property
    def images_folder(self) -> str | None:
        return self.images.folder if self.images else None

    @property
    def allow_urls(self) -> bool:
        return bool(self.images and self.images.allow_urls)


# What each target field takes and gives. Output kinds: str, float (JSON number), int, flag ("true"/"false").
PRODUCT_FIELDS = dict.fromkeys(("title", "body_html", "vendor", "product_type", "collection", "tags"), ("text", "str"))
VARIANT_FIELDS = {
    "source_variant_code": ("code", "str"),
    "sku": ("code", "str"),
    "barcode": ("code", "str"),
    "price": ("decimal", "float"),
    "qty": ("int", "int"),
    "grams": ("int", "int"),
    "inventory_management": ("bool", "flag"),
}
FAMILIES = {  # key: (section, default type, output kind, API name key, API value key)
    "meta": ("product", "text", "str", "key", "value"),
    "price_tiers": ("variant", "decimal", "float", "tier", "price"),
    "qty_availability": ("variant", "int", "int", "description", "qty"),
}
OUTPUT_TYPES = {"str": TYPES, "float": ("decimal", "int"), "int": ("int", "decimal"), "flag": ("bool",)}
ACTIVE_STATES = ("active", "delete", "ignore")

TOP_KEYS = (
    "name", "description", "source", "skip_rows", "group_by", "active", "product", "variant",
    "options", "images", "missing_columns", "parents", "fill_down", "same_variant",
)
SOURCE_KEYS = ("header_row", "find_header", "sheet", "delimiter", "encoding", "legacy_encoding", "decimal", "thousands")
FIELD_KEYS = (
    "column", "value", "template", "type", "default", "strip", "replace", "upper", "lower", "map",
    "zero_pad", "prefix", "suffix", "split", "multiply", "round", "true_values", "false_values",
    "pick", "fallback", "unit",
)
FAMILY_KEYS = ("columns", "entries", *[k for k in FIELD_KEYS if k not in ("column", "value", "template", "fallback", "unit")])
UNIT_KEYS = ("column", "factors", "default")
IMAGE_KEYS = ("columns", "separator", "pattern", "max", "folder", "allow_urls", "strip_leading_slash")
PARENT_KEYS = ("rows", "key", "children_by", "children_in")
CHILDREN_IN_KEYS = ("column", "separator", "pick")
PICK_KEYS = ("key", "index", "separator", "equals")
SAME_VARIANT = ("error", "sum")
SKIP_KEYS = ("column", "matches", "equals", "blank", "keep_images")
ACTIVE_KEYS = ("column", "template", "value", "active", "delete", "ignore", "default", "strip")
DELIMITERS = (",", ";", "\t", "|")
MISSING_COLUMNS = ("warn", "ignore", "error")


# --------------------------------------------------------------------------- finding and loading


def find_mapping(name_or_path: str, search_dirs: list[Path]) -> Path:
    """The mapping file for a name (`stock2shop` -> `<dir>/stock2shop.yaml`) or a path as given."""
    candidate = Path(name_or_path).expanduser()
    looks_like_path = candidate.suffix in (".yaml", ".yml") or len(candidate.parts) > 1
    if looks_like_path:
        if candidate.is_file():
            return candidate
        raise MappingError([f"{name_or_path}: no such mapping file"])
    for folder in search_dirs:
        for ext in (".yaml", ".yml"):
            path = Path(folder) / f"{name_or_path}{ext}"
            if path.is_file():
                return path
    known = sorted({p.stem for d in search_dirs if Path(d).is_dir() for p in Path(d).glob("*.y*ml")})
    where = ", ".join(str(d) for d in search_dirs) or "no folders"
    raise MappingError([f"{name_or_path}: no such mapping in {where} (valid choices: {', '.join(known) or 'none'})"])


def load_mapping(path: Path) -> Mapping:
    """Read, validate and compile a mapping file. Raises MappingError with every problem at once."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError([f"{path}: cannot be read ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise MappingError([f"{path.name}: is not UTF-8 text"], str(path)) from None
    except yaml.YAMLError as exc:
        raise MappingError([_yaml_problem(exc)], str(path)) from None
    return parse_mapping(raw, name=path.stem, sha256=hashlib.sha256(data).hexdigest(), path=str(path))


def parse_mapping(raw: Any, *, name: str = "mapping", sha256: str = "", path: str = "") -> Mapping:
    """Validate and compile an already-loaded YAML document (see `load_mapping`)."""
    v = _Validator()
    mapping = v.mapping(raw, name, sha256, path)
    if v.problems or mapping is None:
        raise MappingError(v.problems or ["the mapping is empty"], path or None)
    return mapping


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
    if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in str(exc):
        return f"{where}: YAML tags such as !!python/... are not allowed in a mapping"
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: not valid YAML ({problem})"


# --------------------------------------------------------------------------- validation


def _choices(valid: tuple[str, ...] | list[str]) -> str:
    return f"(valid choices: {', '.join(valid)})"


def _unknown(where: str, key: Any, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f"{_join(where, str(key))}: unknown key{hint} {_choices(valid)}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Validator:
    """Walks the YAML document, building the spec and recording every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.source = SourceOptions()

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def keys(self, raw: dict, where: str, valid: tuple[str, ...]) -> None:
        for key in raw:
            if key not in valid:
                self.problems.append(_unknown(where, key, valid))

    # -- the document

    def mapping(self, raw: Any, name: str, sha256: str, path: str) -> Mapping | None:
        if raw is None:
            self.bad("(top level)", "the mapping is empty")
            return None
        if not isinstance(raw, dict):
            self.bad("(top level)", "must be a set of keys such as group_by, product, variant")
            return None
        self.keys(raw, "", TOP_KEYS)
        self.source = self.source_options(raw.get("source"))
        if "group_by" not in raw:
            self.bad("group_by", "is required: the column (or template) that gives the product code")
            group_by = FieldSpec(where="group_by", label="product code", column="?")
        else:
            group_by = self.field(raw["group_by"], "group_by", "product code", "code", "str")
        product = self.fields(raw.get("product"), "product", PRODUCT_FIELDS)
        variant = self.fields(raw.get("variant"), "variant", VARIANT_FIELDS)
        families = {}
        for key, (section, type_, out, _, _) in FAMILIES.items():
            block = raw.get(section)
            if isinstance(block, dict) and key in block:
                families[key] = self.family(block[key], f"{section}.{key}", type_, out)
        named = {key for key, _ in variant}
        for key in ("source_variant_code", "sku"):
            if key not in named:
                self.bad(f"variant.{key}", "is required: every variant needs it")
        if raw.get("missing_columns", "warn") not in MISSING_COLUMNS:
            self.bad("missing_columns", f'"{raw["missing_columns"]}" is not allowed {_choices(MISSING_COLUMNS)}')
        desc = raw.get("description", "")
        return Mapping(
            name=str(raw.get("name") or name),
            sha256=sha256,
            path=path,
            source=self.source,
            group_by=group_by,
            active=self.active(raw["active"], "active") if raw.get("active") is not None else None,
            product=product,
            variant=variant,
            options=self.options(raw.get("options"), "options"),
            meta=families.get("meta"),
            price_tiers=families.get("price_tiers"),
            qty_availability=families.get("qty_availability"),
            images=self.images(raw["images"], "images") if raw.get("images") is not None else None,
            skip_rows=self.skip_rows(raw.get("skip_rows"), "skip_rows"),
            missing_columns=str(raw.get("missing_columns", "warn")),
            description=desc if isinstance(desc, str) else "",
            parents=self.parents(raw["parents"], "parents") if raw.get("parents") is not None else None,
            fill_down=self.column_list(raw.get("fill_down"), "fill_down"),
            same_variant=self.choice(raw.get("same_variant", "error"), "same_variant", SAME_VARIANT),
        )

    def source_options(self, raw: Any) -> SourceOptions:
        if raw is None:
            return SourceOptions()
        if not isinstance(raw, dict):
            self.bad("source", "must be a set of read options " + _choices(SOURCE_KEYS))
            return SourceOptions()
        self.keys(raw, "source", SOURCE_KEYS)
        opts: dict[str, Any] = {}
        header_row = raw.get("header_row", 1)
        if not isinstance(header_row, int) or isinstance(header_row, bool) or header_row < 1:
            self.bad("source.header_row", f"{header_row!r} must be a row number from 1")
        else:
            opts["header_row"] = header_row
        find = raw.get("find_header")
        if find is not None:
            if isinstance(find, str):
                find = [find]
            if not isinstance(find, list) or not find or not all(isinstance(c, str) for c in find):
                self.bad("source.find_header", "must be a list of column names found in the header row")
            else:
                opts["find_header"] = tuple(find)
        sheet = raw.get("sheet")
        if sheet is not None and (isinstance(sheet, bool) or not isinstance(sheet, (str, int))):
            self.bad("source.sheet", "must be a sheet name or a sheet number")
        else:
            opts["sheet"] = sheet
        delimiter = raw.get("delimiter")
        if delimiter is not None and delimiter not in DELIMITERS:
            self.bad("source.delimiter", f"{delimiter!r} is not allowed (valid choices: , ; \\t |, or leave it out to detect)")
        else:
            opts["delimiter"] = delimiter
        for key in ("encoding", "legacy_encoding"):
            enc = raw.get(key)
            if enc is None:
                continue
            try:
                codecs.lookup(str(enc))
                opts[key] = str(enc)
            except LookupError:
                self.bad(f"source.{key}", f'"{enc}" is not a known text encoding (for example utf-8, cp1252, utf-16)')
        decimal = raw.get("decimal", ".")
        thousands = raw.get("thousands", "")
        thousands = "" if thousands is None else thousands
        if decimal not in DECIMAL_SEPARATORS:
            self.bad("source.decimal", f'"{decimal}" is not allowed {_choices(["." , ","])}')
            decimal = "."
        if thousands not in THOUSANDS_SEPARATORS:
            self.bad("source.thousands", f'"{thousands}" is not allowed (valid choices: "", " ", ".", ",", "\'")')
            thousands = ""
        if thousands == decimal:
            self.bad("source.thousands", f'"{thousands}" cannot also be the decimal separator')
            thousands = ""
        opts["decimal"], opts["thousands"] = decimal, thousands
        return SourceOptions(**opts)

    def fields(self, raw: Any, where: str, table: dict) -> tuple[tuple[str, FieldSpec], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.bad(where, f"must be a set of fields {_choices(tuple(table))}")
            return ()
        families = tuple(k for k, f in FAMILIES.items() if f[0] == where)
        self.keys(raw, where, (*table, *families))
        out = []
        for key, spec in raw.items():
            if key in table:
                type_, kind = table[key]
                out.append((key, self.field(spec, f"{where}.{key}", key, type_, kind)))
        return tuple(out)

    # -- one field

    def field(self, raw: Any, where: str, label: str, type_: str, kind: str, bare: str = "column") -> FieldSpec:
        """A field spec: a bare string (a column, or a constant when bare="value") or a dict."""
        if isinstance(raw, str):
            raw = {bare: raw}
        elif isinstance(raw, (bool, int, float)) and bare == "value":
            raw = {"value": raw}
        if not isinstance(raw, dict):
            self.bad(where, "must be a column name or a set of keys " + _choices(FIELD_KEYS))
            return FieldSpec(where=where, label=label, value="")
        self.keys(raw, where, FIELD_KEYS)
        sources = [k for k in ("column", "value", "template") if k in raw]
        if len(sources) != 1:
            self.bad(where, "needs exactly one of column, value, template" + (f" (found {', '.join(sources)})" if sources else ""))
        spec: dict[str, Any] = {"where": where, "label": label}
        if "column" in raw:
            spec["column"] = self.text(raw["column"], f"{where}.column", nonempty=True)
        if "value" in raw:
            spec["value"] = self.scalar(raw["value"], f"{where}.value")
        if "template" in raw:
            spec["template"] = self.template(raw["template"], f"{where}.template")
        spec.update(self.transforms(raw, where, type_, kind))
        if "fallback" in raw:
            spec["fallback"] = self.field(raw["fallback"], f"{where}.fallback", label, spec["type"], kind)
        if "unit" in raw:
            spec["unit"] = self.unit(raw["unit"], f"{where}.unit", spec["type"])
        field_spec = FieldSpec(**spec)
        self.check_constant(field_spec, "value", field_spec.value, kind)
        self.check_constant(field_spec, "default", field_spec.default, kind)
        return field_spec

    def transforms(self, raw: dict, where: str, type_: str, kind: str) -> dict[str, Any]:
        """Type, default and the named transforms shared by fields, families and options."""
        out: dict[str, Any] = {}
        type_ = raw.get("type", type_)
        if type_ not in TYPES:
            close = difflib.get_close_matches(str(type_), TYPES, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            self.bad(f"{where}.type", f'unknown type "{type_}"{hint} {_choices(TYPES)}')
            type_ = "text"
        elif type_ not in OUTPUT_TYPES[kind]:
            self.bad(f"{where}.type", f'"{type_}" does not fit this field {_choices(OUTPUT_TYPES[kind])}')
        out["type"] = type_
        if "default" in raw and raw["default"] is not None:
            out["default"] = self.scalar(raw["default"], f"{where}.default")
        for key in ("strip", "upper", "lower"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    self.bad(f"{where}.{key}", "must be true or false")
                else:
                    out[key] = raw[key]
        if "pick" in raw:
            out["pick"] = self.pick(raw["pick"], f"{where}.pick")
        if "replace" in raw:
            out["replace"] = self.replace(raw["replace"], f"{where}.replace")
        if "map" in raw:
            table = raw["map"]
            if not isinstance(table, dict):
                self.bad(f"{where}.map", "must be a table of cell value: new value")
            else:
                out["map"] = tuple(
                    (self.scalar(k, f"{where}.map") or "", self.scalar(v, f"{where}.map.{k}") or "") for k, v in table.items()
                )
        if "zero_pad" in raw:
            n = raw["zero_pad"]
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
                self.bad(f"{where}.zero_pad", f"{n!r} must be a length from 1 to 64")
            else:
                out["zero_pad"] = n
        for key in ("prefix", "suffix"):
            if key in raw:
                out[key] = self.scalar(raw[key], f"{where}.{key}") or ""
        if "split" in raw:
            sep = raw["split"]
            if not isinstance(sep, str) or not sep:
                self.bad(f"{where}.split", "must be the separator text, for example \"|\" or \";\"")
            elif kind != "str":
                self.bad(f"{where}.split", "only text fields can be split into a list")
            else:
                out["split"] = sep
        if "multiply" in raw:
            m = raw["multiply"]
            if isinstance(m, bool) or not isinstance(m, (int, float, str)):
                self.bad(f"{where}.multiply", "must be a number, for example 1000")
            else:
                try:
                    factor = Decimal(str(m))
                except InvalidOperation:
                    self.bad(f"{where}.multiply", f"{m!r} is not a number")
                else:
                    if factor.is_finite():
                        out["multiply"] = factor
                    else:
                        self.bad(f"{where}.multiply", f"{m!r} is not a finite number")
        if "round" in raw:
            r = raw["round"]
            if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= 10:
                self.bad(f"{where}.round", f"{r!r} must be a number of decimal places from 0 to 10")
            else:
                out["round"] = r
        if ("multiply" in raw or "round" in raw) and type_ not in ("decimal", "int"):
            self.bad(where, f'multiply and round need type decimal or int (this field is "{type_}")')
        for key, default in (("true_values", DEFAULT_TRUE), ("false_values", DEFAULT_FALSE)):
            if key in raw:
                if type_ != "bool":
                    self.bad(f"{where}.{key}", f'only applies to type bool (this field is "{type_}")')
                out[key] = self.spellings(raw[key], f"{where}.{key}") or default
        return out

    def check_constant(self, spec: FieldSpec, key: str, text: str | None, kind: str) -> None:
        """A constant or default must itself be a valid value of the field's type."""
        if text is None or text == "":
            return
        try:
            value = cell_parser(spec, self.source)(text)
            convert(value, kind, spec)
        except CellError as exc:
            self.bad(f"{spec.where}.{key}", f'"{text}" {exc.reason}')
        except (ValueError, ArithmeticError) as exc:
            self.bad(f"{spec.where}.{key}", f'"{text}" {number_failure(exc)}')

    def unit(self, raw: Any, where: str, type_: str) -> UnitSpec | None:
        """`{column: weight-unit, factors: {GRAM: 1, KILOGRAM: 1000}, default: GRAM}`."""
        if not isinstance(raw, dict) or "column" not in raw or "factors" not in raw:
            self.bad(where, "must be {column: <the unit's column>, factors: {UNIT: number, ...}}")
            return None
        self.keys(raw, where, UNIT_KEYS)
        if type_ not in ("decimal", "int"):
            self.bad(where, f'needs type decimal or int (this field is "{type_}")')
        column = self.text(raw["column"], f"{where}.column", nonempty=True)
        table = raw["factors"]
        if not isinstance(table, dict) or not table:
            self.bad(f"{where}.factors", "must be a table of unit: factor, for example {GRAM: 1, KILOGRAM: 1000}")
            return None
        factors: list[tuple[str, Decimal]] = []
        for name, value in table.items():
            at = f"{where}.factors.{name}"
            unit_name = self.scalar(name, f"{where}.factors")
            if not unit_name or not unit_name.strip():
                self.bad(f"{where}.factors", "a unit name must not be blank")
                continue
            try:
                factor = Decimal(str(value)) if not isinstance(value, bool) and isinstance(value, (int, float, str)) else None
            except InvalidOperation:
                factor = None
            if factor is None or not factor.is_finite() or factor <= 0:
                self.bad(at, f"{value!r} must be a number above 0 (the unit's size in the field's unit)")
                continue
            if any(n.casefold() == unit_name.strip().casefold() for n, _ in factors):
                self.bad(at, f'"{unit_name}" is listed twice (units are matched ignoring upper/lower case)')
                continue
            factors.append((unit_name.strip(), factor))
        default = self.scalar(raw.get("default"), f"{where}.default")
        if default is not None and not any(n.casefold() == default.casefold() for n, _ in factors):
            self.bad(f"{where}.default", f'"{default}" is not one of the units {_choices([n for n, _ in factors])}')
            default = None
        return UnitSpec(column=column, factors=tuple(factors), default=default) if factors else None

    # -- small values

    def text(self, raw: Any, where: str, nonempty: bool = False) -> str:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            self.bad(where, "must be text")
            return "?"
        text = str(raw)
        if nonempty and not text.strip():
            self.bad(where, "must not be blank")
        return text

    def scalar(self, raw: Any, where: str) -> str | None:
        """A constant as the text a cell would hold; YAML's true/false become "true"/"false"."""
        if raw is None:
            return None
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, (str, int, float)):
            return str(raw)
        self.bad(where, "must be a single value (text or a number)")
        return None

    def spellings(self, raw: Any, where: str) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            self.bad(where, "must be a list of spellings")
            return ()
        out = []
        for item in raw:
            if isinstance(item, bool):
                # YAML reads a bare yes/no/on/off as true/false, losing the spelling
                self.bad(where, f'write {str(item).lower()}-like words in quotes ("yes", "no", "on", "off"): YAML reads them as true/false')
            elif isinstance(item, (str, int, float)):
                out.append(str(item))
            else:
                self.bad(where, "must be a list of spellings")
        return tuple(out)

    def regex(self, raw: Any, where: str) -> re.Pattern | None:
        if not isinstance(raw, str) or not raw:
            self.bad(where, "must be a regular expression in quotes")
            return None
        try:
            return re.compile(raw)
        except re.error as exc:
            self.bad(where, f'"{raw}" is not a valid pattern ({exc})')
            return None

    def replace(self, raw: Any, where: str) -> tuple[tuple[re.Pattern, str], ...]:
        items = raw if isinstance(raw, list) else [raw]
        out = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if isinstance(raw, list) else where
            if not isinstance(item, dict) or "pattern" not in item:
                self.bad(at, 'must be {pattern: "regular expression", with: "new text"}')
                continue
            self.keys(item, at, ("pattern", "with"))
            pattern = self.regex(item["pattern"], f"{at}.pattern")
            if pattern is not None:
                out.append((pattern, self.scalar(item.get("with", ""), f"{at}.with") or ""))
        return tuple(out)

    def template(self, raw: Any, where: str) -> Template | None:
        if not isinstance(raw, str) or not raw:
            self.bad(where, 'must be text with column names in braces, for example "{Brand} {Name}"')
            return None
        try:
            return parse_template(raw)
        except ValueError as exc:
            self.bad(where, str(exc))
            return None

    # -- blocks

    def family(self, raw: Any, where: str, type_: str, kind: str) -> FamilySpec | None:
        if isinstance(raw, str):
            raw = {"columns": raw}
        if isinstance(raw, list):
            raw = {"entries": raw}
        if not isinstance(raw, dict):
            self.bad(where, 'must be {columns: "^pattern_(?P<name>.+)$"} or entries: [{name, value}]')
            return None
        self.keys(raw, where, FAMILY_KEYS)
        pattern = self.regex(raw["columns"], f"{where}.columns") if "columns" in raw else None
        if "columns" not in raw and "entries" not in raw:
            self.bad(where, "needs columns (a pattern) or entries (a list of {name, value})")
        cell_raw = {k: v for k, v in raw.items() if k not in ("columns", "entries")}
        cell = FieldSpec(where=where, label=where.rsplit(".", 1)[-1], column="", **self.transforms(cell_raw, where, type_, kind))
        self.check_constant(cell, "default", cell.default, kind)
        entries = []
        listed = raw.get("entries", [])
        if not isinstance(listed, list):
            self.bad(f"{where}.entries", "must be a list of {name, value}")
            listed = []
        for i, item in enumerate(listed):
            at = f"{where}.entries[{i}]"
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                self.bad(at, "must be {name: ..., value: <column or field>}")
                continue
            self.keys(item, at, ("name", "value"))
            name = self.scalar(item["name"], f"{at}.name") or ""
            entries.append((name, self.field(item["value"], f"{at}.value", name, cell.type, kind)))
        return FamilySpec(where=where, pattern=pattern, entries=tuple(entries), cell=cell)

    def options(self, raw: Any, where: str) -> tuple[OptionSpec, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.bad(where, "must be a list of {name, value}")
            return ()
        out = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(item, dict) or "name" not in item or "value" not in item:
                self.bad(at, "must be {name: <constant or {column: ...}>, value: <column>}")
                continue
            self.keys(item, at, ("name", "value"))
            name = self.field(item["name"], f"{at}.name", "option name", "text", "str", bare="value")
            label = f"option {name.value}" if name.value is not None else "option value"
            out.append(OptionSpec(name=name, value=self.field(item["value"], f"{at}.value", label, "text", "str")))
        return tuple(out)

    def active(self, raw: Any, where: str) -> ActiveSpec | None:
        if isinstance(raw, str):
            raw = {"column": raw}
        if not isinstance(raw, dict):
            self.bad(where, "must be {column: Status, active: [...], delete: [...], ignore: [...]}")
            return None
        self.keys(raw, where, ACTIVE_KEYS)
        field_raw = {k: raw[k] for k in ("column", "template", "value", "strip") if k in raw}
        spec = self.field(field_raw, where, "status", "text", "str")
        listed = {"active": ["true", "active"], "delete": ["false", "delete"], "ignore": ["ignore"]}
        given = [s for s in ACTIVE_STATES if s in raw]
        values: dict[str, str] = {}
        for state in ACTIVE_STATES:
            spellings = self.spellings(raw[state], f"{where}.{state}") if state in raw else ()
            if not given:  # nothing listed: the words themselves
                spellings = tuple(listed[state])
            for word in spellings:
                if word.lower() in values and values[word.lower()] != state:
                    self.bad(f"{where}.{state}", f'"{word}" is already listed under {values[word.lower()]}')
                values[word.lower()] = state
        default = raw.get("default", "active")
        if default not in ACTIVE_STATES:
            self.bad(f"{where}.default", f'"{default}" is not allowed {_choices(ACTIVE_STATES)}')
            default = "active"
        return ActiveSpec(field=spec, values=tuple(values.items()), default=default)

    def skip_rows(self, raw: Any, where: str) -> tuple[SkipRule, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.bad(where, "must be a list of {column, matches | equals | blank}")
            return ()
        out = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(item, dict) or "column" not in item:
                self.bad(at, "must be {column: ..., matches: pattern} (or equals: value, or blank: true)")
                continue
            self.keys(item, at, SKIP_KEYS)
            keep = item.get("keep_images", False)
            if not isinstance(keep, bool):
                self.bad(f"{at}.keep_images", "must be true or false")
                keep = False
            tests = [k for k in ("matches", "equals", "blank") if k in item]
            if len(tests) != 1:
                self.bad(at, "needs exactly one of matches, equals, blank")
                continue
            rule: dict[str, Any] = {"where": at, "column": self.text(item["column"], f"{at}.column", nonempty=True),
                                    "keep_images": keep}
            if "matches" in item:
                rule["matches"] = self.regex(item["matches"], f"{at}.matches")
                if rule["matches"] is None:
                    continue
            elif "equals" in item:
                eq = item["equals"] if isinstance(item["equals"], list) else [item["equals"]]
                rule["equals"] = tuple(self.scalar(e, f"{at}.equals") or "" for e in eq)
            else:
                if not isinstance(item["blank"], bool):
                    self.bad(f"{at}.blank", "must be true or false")
                    continue
                rule["blank"] = item["blank"]
            out.append(SkipRule(**rule))
        return tuple(out)

    def images(self, raw: Any, where: str) -> ImagesSpec | None:
        if not isinstance(raw, dict):
            self.bad(where, "must be {columns: [...]} or {pattern: \"{sku}.jpg\"}")
            return None
        self.keys(raw, where, IMAGE_KEYS)
        spec: dict[str, Any] = {}
        columns = raw.get("columns")
        if isinstance(columns, str):
            spec["columns_pattern"] = self.regex(columns, f"{where}.columns")
        elif isinstance(columns, list) and all(isinstance(c, str) and c for c in columns):
            spec["columns"] = tuple(columns)
        elif columns is not None:
            self.bad(f"{where}.columns", "must be a list of column names or a pattern in quotes")
        patterns = raw.get("pattern")
        if patterns is not None:
            patterns = [patterns] if isinstance(patterns, str) else patterns
            if not isinstance(patterns, list):
                self.bad(f"{where}.pattern", 'must be a file name pattern such as "{sku}.jpg", or a list of them')
            else:
                parsed = [self.template(p, f"{where}.pattern") for p in patterns]
                spec["patterns"] = tuple(p for p in parsed if p is not None)
        if columns is None and patterns is None:
            self.bad(where, "needs columns or pattern")
        if "separator" in raw:
            sep = raw["separator"]
            if not isinstance(sep, str) or not sep:
                self.bad(f"{where}.separator", "must be the separator text, for example \",\" or \"|\"")
            else:
                spec["separator"] = sep
        n = raw.get("max", 5)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 50:
            self.bad(f"{where}.max", f"{n!r} must be a number from 1 to 50")
        else:
            spec["max"] = n
        folder = raw.get("folder")
        if folder is not None:
            if not isinstance(folder, str) or not folder.strip():
                self.bad(f"{where}.folder", "must be a folder name")
            elif Path(folder).is_absolute() or ".." in Path(folder).parts:
                self.bad(f"{where}.folder", f'"{folder}" must be relative to the export\'s folder, without ".."')
            else:
                spec["folder"] = folder
        for key in ("allow_urls", "strip_leading_slash"):
            flag = raw.get(key, False)
            if not isinstance(flag, bool):
                self.bad(f"{where}.{key}", "must be true or false")
            else:
                spec[key] = flag
        return ImagesSpec(**spec)

    def pick(self, raw: Any, where: str) -> tuple[PickStep, ...]:
        """`{key: size}` or `{index: -1, separator: "/"}`, or a list of them applied in turn."""
        items = raw if isinstance(raw, list) else [raw]
        out = []
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if isinstance(raw, list) else where
            if not isinstance(item, dict) or ("key" in item) == ("index" in item):
                self.bad(at, 'must be {key: name} (a key=value list) or {index: N, separator: ","} (a list)')
                continue
            self.keys(item, at, PICK_KEYS)
            step: dict[str, Any] = {}
            if "key" in item:
                step["key"] = self.text(item["key"], f"{at}.key", nonempty=True)
            else:
                n = item["index"]
                if not isinstance(n, int) or isinstance(n, bool) or n == 0:
                    self.bad(f"{at}.index", f"{n!r} must be a position: 1 is the first, -1 the last")
                    continue
                step["index"] = n
            for key in ("separator", "equals"):
                if key in item:
                    sep = item[key]
                    if not isinstance(sep, str) or not sep:
                        self.bad(f"{at}.{key}", 'must be the separator text, for example "," or "="')
                    else:
                        step[key] = sep
            out.append(PickStep(**step))
        return tuple(out)

    def column_list(self, raw: Any, where: str) -> tuple[str, ...]:
        if raw is None:
            return ()
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not all(isinstance(c, str) and c.strip() for c in raw):
            self.bad(where, "must be a list of column names")
            return ()
        return tuple(raw)

    def choice(self, raw: Any, where: str, valid: tuple[str, ...]) -> str:
        if raw not in valid:
            self.bad(where, f'"{raw}" is not allowed {_choices(valid)}')
            return valid[0]
        return str(raw)

    def parents(self, raw: Any, where: str) -> ParentsSpec | None:
        if not isinstance(raw, dict):
            self.bad(where, "must be {rows: {column, equals}, key: column, children_by: column} (or children_in)")
            return None
        self.keys(raw, where, PARENT_KEYS)
        rules = self.skip_rows([raw["rows"]], f"{where}.rows") if "rows" in raw else ()
        if isinstance(raw.get("rows"), dict) and "keep_images" in raw["rows"]:
            self.bad(f"{where}.rows[0].keep_images", "only applies to skip_rows (a parent row's images are always kept)")
        if "rows" not in raw:
            self.bad(f"{where}.rows", "is required: which rows are parents, e.g. {column: Type, equals: variable}")
        # skip_rows names its one rule "<where>[0]"; a parents block has a single rule
        self.problems = [p.replace(f"{where}.rows[0]", f"{where}.rows") for p in self.problems]
        if "key" not in raw:
            self.bad(f"{where}.key", "is required: the column that names a row (e.g. SKU)")
        key = self.text(raw.get("key", "?"), f"{where}.key", nonempty=True)
        if ("children_by" in raw) == ("children_in" in raw):
            self.bad(where, "needs exactly one of children_by (the child's column naming its parent) "
                            "and children_in (the parent's column listing its children)")
            return None
        if not rules:
            return None
        rule = rules[0]
        spec: dict[str, Any] = {"where": where, "rows": SkipRule(**{**rule.__dict__, "where": f"{where}.rows"}), "key": key}
        if "children_by" in raw:
            spec["children_by"] = self.text(raw["children_by"], f"{where}.children_by", nonempty=True)
            return ParentsSpec(**spec)
        listing = raw["children_in"]
        at = f"{where}.children_in"
        if isinstance(listing, str):
            listing = {"column": listing}
        if not isinstance(listing, dict) or "column" not in listing:
            self.bad(at, 'must be {column: name, separator: "|", pick: {key: sku}}')
            return None
        self.keys(listing, at, CHILDREN_IN_KEYS)
        spec["children_in"] = self.text(listing["column"], f"{at}.column", nonempty=True)
        sep = listing.get("separator", "|")
        if not isinstance(sep, str) or not sep:
            self.bad(f"{at}.separator", 'must be the separator text, for example "|"')
        else:
            spec["separator"] = sep
        if "pick" in listing:
            spec["pick"] = self.pick(listing["pick"], f"{at}.pick")
        return ParentsSpec(**spec)


# --------------------------------------------------------------------------- helpers used by build

_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def parse_template(text: str) -> Template:
    """`"{Brand} {Name}"` -> Template; `{{` and `}}` are literal braces."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _BRACES.finditer(text):
        if m.start() > pos:
            parts.append((False, text[pos : m.start()]))
        token = m.group(0)
        if token in ("{{", "}}"):
            parts.append((False, token[0]))
        elif token in ("{", "}"):
            raise ValueError(f'"{text}" has an unmatched "{token}" (write {token}{token} for a literal brace)')
        else:
            name = m.group(1).strip()
            if not name:
                raise ValueError(f'"{text}" has empty braces {{}}: put a column name inside')
            parts.append((True, name))
        pos = m.end()
    if pos < len(text):
        parts.append((False, text[pos:]))
    if not any(is_col for is_col, _ in parts):
        raise ValueError(f'"{text}" names no column (put column names in braces, or use value: for a constant)')
    return Template(text=text, parts=tuple(parts))


def cell_parser(spec: FieldSpec, source: SourceOptions) -> Callable[[str], Any]:
    """The function that turns a cell's text into a value of the field's type."""
    if spec.type == "code":
        return parse_code
    if spec.type == "gtin":
        return parse_gtin
    if spec.type == "decimal":
        return decimal_parser(source.decimal, source.thousands)
    if spec.type == "int":
        return int_parser(source.decimal, source.thousands)
    if spec.type == "bool":
        return bool_parser(spec.true_values, spec.false_values)
    if spec.type == "date":
        return parse_date
    return parse_text


def scale(value: Any, spec: FieldSpec) -> Any:
    """Apply `multiply` then `round` (half up) to a number."""
    if spec.multiply is None and spec.round is None:
        return value
    number = Decimal(value) if not isinstance(value, Decimal) else value
    try:
        if spec.multiply is not None:
            number = number * spec.multiply
        if spec.round is not None:
            number = number.quantize(Decimal(1).scaleb(-spec.round), rounding=ROUND_HALF_UP)
    except ArithmeticError as exc:  # quantize: more digits than Decimal holds (28)
        raise CellError(number_failure(exc)) from None
    return number


def number_failure(exc: BaseException) -> str:
    """The end of a sentence for a number Python could not work with (too long, too large)."""
    return "is not a number that can be sent (too many digits, or too large)"


def convert(value: Any, kind: str, spec: FieldSpec) -> Any:
    """A typed value as the API wants it: str, float (JSON number), int, or "true"/"false"."""
    value = scale(value, spec)
    if kind == "float":
        number = float(value)
        if not math.isfinite(number):  # JSON has no Infinity
            raise CellError("is too large a number to send")
        return number
    if kind == "int":
        if isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise CellError(f"gives {value.normalize():f}, not a whole number (add round: 0 to the mapping)")
            return int(value)
        return value
    if kind == "flag":
        return "true" if value else "false"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return f"{value:f}"
    return str(value)
