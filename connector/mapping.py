"""YAML mappings: how the rows of an export become Stock2Shop items.

    mapping = load_mapping(find_mapping("stock2shop", [Path("mappings")]))
    mapping.source.decimal        # read and number options for the file
    built = build.build_products(rows, mapping, source_id=42)

A mapping is plain YAML (always `yaml.safe_load`) with a closed set of named types and
transforms; there are no expressions and nothing is evaluated. `load_mapping` checks the
whole file up front and raises `MappingError` listing every problem with its YAML path
(`variant.price.type: unknown type "decmal"; did you mean "decimal"? (valid choices: ...)`),
so a support person fixes a mapping in one pass. The reference is `docs/mapping.md`.

The language is defined once, as the pydantic models of the "definition" section below
(their keys, choices, flags and descriptions; the types and transforms come from the
registries in `cells`). From that definition come both the validation here and the published
JSON Schema (`python -m connector.mapping --schema` writes connector/schema/mapping.schema.json;
a test fails when the committed file differs). Validation walks the YAML with that definition
rather than calling pydantic's own validator, because pydantic stops at a failing union branch
and its messages have no YAML path, "did you mean" or valid choices; the walk also compiles
the document into the spec dataclasses `build` runs.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model
from pydantic.fields import FieldInfo

from . import cells
from .cells import (  # re-exported: the cell types were defined here before cells.py
    DEFAULT_FALSE,
    DEFAULT_TRUE,
    MAX_NUMBER_CHARS,
    TRANSFORMS,
    TYPES,
    CellError,
    CellOptions,
    PickStep,
    bool_parser,
    decimal_parser,
    int_parser,
    parse_code,
    parse_date,
    parse_gtin,
    parse_text,
    type_choices,
)
from .common import did_you_mean, published_schema, valid_choices
from .errors import MappingError

__all__ = [
    "DEFAULT_FALSE",
    "DEFAULT_TRUE",
    "FAMILIES",
    "MAX_NUMBER_CHARS",
    "PRODUCT_FIELDS",
    "TYPES",
    "VARIANT_FIELDS",
    "ActiveSpec",
    "CellError",
    "FamilySpec",
    "FieldSpec",
    "ImagesSpec",
    "Mapping",
    "MappingDoc",
    "MappingError",
    "OptionSpec",
    "ParentsSpec",
    "PickStep",
    "SkipRule",
    "SourceOptions",
    "Template",
    "UnitSpec",
    "bool_parser",
    "cell_parser",
    "convert",
    "decimal_parser",
    "find_mapping",
    "int_parser",
    "json_schema",
    "load_mapping",
    "number_failure",
    "parse_code",
    "parse_date",
    "parse_gtin",
    "parse_mapping",
    "parse_template",
    "parse_text",
    "scale",
]

# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SourceOptions:
    """How to read the file, for `read.read_table`, plus the number format of its cells."""

    header_row: int = 1  # 0: the file has no header row (`header: none`)
    find_header: tuple[str, ...] | None = None  # find the header row by these column names
    sheet: str | int | None = None
    delimiter: str | None = None  # None: detect
    encoding: str | None = None  # None: detect
    legacy_encoding: tuple[str, ...] | None = None  # None: the settings' candidates
    columns: tuple[str, ...] = ()  # names of a headerless file's columns, in order (the rest by position)
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
    # (name, compiled option) of the `cells.TRANSFORMS` the field uses, in the order they run
    transforms: tuple[tuple[str, Any], ...] = ()
    multiply: Decimal | None = None
    round: int | None = None
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE
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
class UpdateSpec:
    """How an update file's rows find the item they change (mode: update)."""

    key: str = "source_variant_code"  # source_variant_code | sku | product
    clear: str | None = None  # a cell holding exactly this clears its field
    wait_days: int = 7  # a row for an unknown variant waits this long for its product


@dataclass(frozen=True)
class JoinSpec:
    """Rows are variants of a product another file brings (PrestaShop combinations): `join:`."""

    add: tuple[str, ...] = ()  # variant fields that are differences to the product's own item's value
    model: str | None = None  # Akeneo: the column naming a row's product model; the row joins its root model


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
    # Variant number fields that are the sum of a family's values: ((field, family), ...),
    # e.g. (("qty", "qty_availability"),). Applied by build.apply_totals after the row (and any
    # continuation rows, and any merge onto the catalogue) gave the family its entries.
    totals: tuple[tuple[str, str], ...] = ()
    # continuation_rows: a row whose key columns are all blank adds its values to the record
    # above it. None: off; () : the key is the columns of group_by and source_variant_code.
    continuation_key: tuple[str, ...] | None = None
    mode: str = "full"  # full: rows are whole items | update: rows change some fields of known items
    update: UpdateSpec = UpdateSpec()
    complete: bool = False  # the file is the whole catalogue: what it lacks has vanished
    vanished: str = "keep"  # keep | delete (product_active false), guarded by max_vanished
    max_vanished: int | None = None  # products one file may delete (default: 10 % of the catalogue, at most 50)
    join: JoinSpec | None = None  # rows are variants of a product whose own item another file brings
    models: str | None = None  # the file holds product models (Akeneo): this column names a model's parent

    def with_names(self, names: dict[str, str]) -> Mapping:
        """This mapping with "{warehouse}" / "{tier}" in family entry names filled in (from connector.yaml rules).

        `qty_availability: {entries: [{name: "{warehouse}", value: Physical QOH}]}` with the rule
        `{pattern: "*WarehouseInventory.csv", mapping: ..., warehouse: "{stem}"}` names each
        file's entry after the file.

        The names are part of what the mapping does with a file, so they are part of its
        `sha256` (the mapping's identity for duplicate detection): denver's copy of boston's
        stock file is denver's stock, not a duplicate.
        """
        changed: dict[str, Any] = {}
        used: dict[str, str] = {}

        def named(text: str) -> str:
            for placeholder, value in names.items():
                if "{" + placeholder + "}" in text:
                    used[placeholder] = value
                    text = text.replace("{" + placeholder + "}", value)
            return text

        for key in ("qty_availability", "price_tiers", "meta"):
            fam = getattr(self, key)
            if fam is None or not any("{" in name for name, _ in fam.entries):
                continue
            entries = [(named(name), replace(spec, label=named(spec.label))) for name, spec in fam.entries]
            changed[key] = replace(fam, entries=tuple(entries))
        if not changed:
            return self
        identity = json.dumps([self.sha256, sorted(used.items())], ensure_ascii=False)
        return replace(self, sha256=hashlib.sha256(identity.encode("utf-8")).hexdigest(), **changed)

    @property
    def images_folder(self) -> str | None:
        return self.images.folder if self.images else None

    @property
    def allow_urls(self) -> bool:
        return bool(self.images and self.images.allow_urls)


# --------------------------------------------------------------------------- the definition

# The fields a mapping fills. Each: (default type, output kind, description). Output kinds:
# str, float (JSON number), int, flag ("true"/"false"); `cells.type_choices(kind)` says which
# types fit.
_PRODUCT_TARGETS = {
    "title": ("text", "str", "The product's title."),
    "body_html": ("text", "str", "The product's description (HTML)."),
    "vendor": ("text", "str", "The brand or supplier."),
    "product_type": ("text", "str", "The product type."),
    "collection": ("text", "str", "The collection."),
    "tags": ("text", "str", "Tags, sent comma-separated (see split)."),
}
_VARIANT_TARGETS = {
    "source_variant_code": ("code", "str", "Required. The variant's code in the ERP; unique in the file."),
    "sku": ("code", "str", "Required. The variant's SKU."),
    "barcode": ("code", "str", "The barcode (type gtin checks EAN/UPC check digits)."),
    "price": ("decimal", "float", "The price, a number (type decimal or int)."),
    "qty": ("int", "int", "The quantity on hand, a whole number."),
    "grams": ("int", "int", "The weight in grams, a whole number (see multiply, round, unit)."),
    "inventory_management": ("bool", "flag", 'Whether stock is tracked: "true" or "false".'),
}
PRODUCT_FIELDS = {k: (t, kind) for k, (t, kind, _) in _PRODUCT_TARGETS.items()}
VARIANT_FIELDS = {k: (t, kind) for k, (t, kind, _) in _VARIANT_TARGETS.items()}
FAMILIES = {  # key: (section, default type, output kind, API name key, API value key)
    "meta": ("product", "text", "str", "key", "value"),
    "price_tiers": ("variant", "decimal", "float", "tier", "price"),
    "qty_availability": ("variant", "int", "int", "description", "qty"),
}
_FAMILY_DOCS = {
    "meta": "Columns matched by a pattern (or listed) become product meta, key: value.",
    "price_tiers": "Columns matched by a pattern (or listed) become price tiers, tier: price.",
    "qty_availability": "Columns matched by a pattern (or listed) become quantities per warehouse.",
}
OUTPUT_TYPES = {kind: type_choices(kind) for kind in ("str", "float", "int", "flag")}
ActiveState = Literal["active", "delete", "ignore"]
SameVariant = Literal["error", "sum"]
Mode = Literal["full", "update"]
Vanished = Literal["keep", "delete"]
UpdateKey = Literal["source_variant_code", "sku", "product"]
MissingColumns = Literal["warn", "ignore", "error"]
Delimiter = Literal[",", ";", "\t", "|"]
DecimalSeparator = Literal[".", ","]
ThousandsSeparator = Literal["", " ", ".", ",", "'"]
ACTIVE_STATES: tuple[str, ...] = typing.get_args(ActiveState)
SAME_VARIANT: tuple[str, ...] = typing.get_args(SameVariant)
MODES: tuple[str, ...] = typing.get_args(Mode)
VANISHED: tuple[str, ...] = typing.get_args(Vanished)
UPDATE_KEYS: tuple[str, ...] = typing.get_args(UpdateKey)
MISSING_COLUMNS: tuple[str, ...] = typing.get_args(MissingColumns)
DELIMITERS: tuple[str, ...] = typing.get_args(Delimiter)
DECIMAL_SEPARATORS: tuple[str, ...] = typing.get_args(DecimalSeparator)
THOUSANDS_SEPARATORS: tuple[str, ...] = typing.get_args(ThousandsSeparator)
# The types that take multiply, round and unit.
NUMBER_TYPES = tuple(t.name for t in cells.CELL_TYPES.values() if "multiply" in t.options)


# The default of a key a mapping may leave out. Typed Any so that a model says what the key
# holds when it is there (`key: str`), not `str | None`, which would publish `null` as valid.
ABSENT: Any = None


def _is_column_name(value: Any) -> bool:
    """A column name: text, or a whole number (a position in a file without a header row)."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, str) and bool(value.strip())) or (isinstance(value, int) and value >= 1)


def _literal(values: tuple[Any, ...]) -> Any:
    return Literal[values]  # Literal[("a", "b")] is Literal["a", "b"]


Scalar = Annotated[str | float | bool, WithJsonSchema({"type": ["string", "number", "boolean"]})]
Column = Annotated[
    str,
    Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer", "minimum": 1}],
                    "description": "A column name, as in the file's header; in a file without a header row "
                    "(source.header: none), its position: 1 is the first column."}),
]
Regex = Annotated[str, Field(description="A regular expression (in quotes).")]
Spellings = Annotated[
    str | list[str | float],
    WithJsonSchema(
        {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": ["string", "number"]}, "minItems": 1}]}
    ),
]


def _one_of_required(*keys: str, any_: bool = False) -> dict[str, Any]:
    return {"anyOf" if any_ else "oneOf": [{"required": [k]} for k in keys]}


class _Block(BaseModel):
    """A YAML block: its keys are the model's fields (aliases where a key is a Python keyword)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _FieldBase(_Block):
    model_config = ConfigDict(json_schema_extra=_one_of_required("column", "value", "template"))


class _FamilyBase(_Block):
    model_config = ConfigDict(json_schema_extra=_one_of_required("columns", "entries", any_=True))


class ReplaceDoc(_Block):
    pattern: Regex
    with_: Scalar = Field("", alias="with", description="The new text; \\1 or \\g<name> names a group.")


class PickStepDoc(_Block):
    """Take one part of a packed cell: the value of `key` in a key=value list, or item `index` of a list."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("key", "index"))
    key: str = Field(ABSENT, min_length=1, description="The key whose value is taken: size in size=XS,color=Black.")
    index: int = Field(
        ABSENT, json_schema_extra={"not": {"const": 0}}, description="The item taken: 1 the first, -1 the last."
    )
    separator: str = Field(",", min_length=1, description='Between the items or pairs (default ",").')
    equals: str = Field("=", min_length=1, description='Between a key and its value (default "=").')


Pick = PickStepDoc | Annotated[list[PickStepDoc], Field(min_length=1)]


class UnitDoc(_Block):
    """The number's unit is named in another column: the value is multiplied by the factor of the row's unit
    (e.g. weight in GRAM or KILOGRAM into grams). A unit not listed, or a blank unit without default, refuses
    the row naming the unit's cell. Needs type decimal or int."""

    column: Column = Field(description="The column naming each row's unit, e.g. weight-unit.")
    factors: dict[str, Annotated[float, Field(gt=0)]] = Field(
        min_length=1,
        description="Unit as written (matched ignoring upper/lower case): its size in the field's unit, "
        "e.g. {GRAM: 1, KILOGRAM: 1000}.",
    )
    default: str | float = Field(ABSENT, description="The unit of a value whose unit cell is blank; one of factors.")


# What a transform's YAML value looks like, by the `shape` its registry entry names.
SHAPES: dict[str, Any] = {
    "flag": bool,
    "scalar": Scalar,
    "length": Annotated[int, Field(ge=1, le=64)],
    "separator": Annotated[str, Field(min_length=1)],
    "table": dict[str, Scalar],
    "replace": ReplaceDoc | list[ReplaceDoc],
    "pick": Pick,
}
_TYPE_DOC = "How the cell is read. " + "; ".join(f"{t.name}: {t.description}" for t in cells.CELL_TYPES.values()) + "."


def _cell_keys() -> dict[str, Any]:
    """The keys a field and a column family share: type, default, strip, the transforms, type options."""
    keys: dict[str, Any] = {
        "type": (_literal(TYPES), Field(ABSENT, description=_TYPE_DOC)),
        "default": (Scalar, Field(ABSENT, description="Used when the cell (after transforms) is blank.")),
        "strip": (bool, Field(True, description="Trim spaces around the value (default true).")),
    }
    for name, t in TRANSFORMS.items():
        keys[name] = (SHAPES[t.shape], Field(ABSENT, description=t.description))
    keys |= {
        "multiply": (
            float | str,
            Field(ABSENT, description="Multiply a number (kg -> grams). Needs type decimal or int."),
        ),
        "round": (int, Field(ABSENT, ge=0, le=10, description="Round to this many decimals, halves up.")),
        "true_values": (Spellings, Field(ABSENT, description="Spellings read as yes (type bool).")),
        "false_values": (Spellings, Field(ABSENT, description="Spellings read as no (type bool).")),
    }
    return keys


if TYPE_CHECKING:  # the models below are built from the registries; for mypy they are models
    FieldDoc: TypeAlias = BaseModel
    FamilyDoc: TypeAlias = BaseModel
else:
    FieldDoc = create_model(
        "FieldDoc",
        __base__=_FieldBase,
        __module__=__name__,
        __doc__="One value per row: from a column, a constant or a template, then transforms and a type.",
        column=(Column, Field(ABSENT, description="The column the value comes from.")),
        value=(Scalar, Field(ABSENT, description="A constant.")),
        template=(str, Field(ABSENT, description='Column names in braces, e.g. "{Brand} {Name}".')),
        **_cell_keys(),
        fallback=("FieldRef", Field(ABSENT, description="Where the value comes from when this field is blank.")),
        unit=(UnitDoc, Field(ABSENT)),
    )

FieldRef = Annotated[
    Column | FieldDoc,
    Field(description="A column name (or position, without a header row), or {column | value | template, ...}."),
]


class EntryDoc(_Block):
    name: Scalar
    value: FieldRef


if not TYPE_CHECKING:
    FamilyDoc = create_model(
        "FamilyDoc",
        __base__=_FamilyBase,
        __module__=__name__,
        __doc__="Columns matched by a pattern, or listed, into a list of (name, value).",
        columns=(Regex, Field(ABSENT, description="A regular expression; its named group names each entry.")),
        entries=(list[EntryDoc], Field(ABSENT, description="Listed entries: {name, value}.")),
        **_cell_keys(),
    )

FamilyRef = Annotated[
    str | list[EntryDoc] | FamilyDoc,
    Field(
        description='A pattern matching the columns (e.g. "^price_(?P<tier>.+)$"), a list of entries, '
        "or both with a type."
    ),
]


class SourceDoc(_Block):
    """How to read the file."""

    header_row: int = Field(1, ge=1, description="The row that holds the column names (rows above it are ignored).")
    find_header: str | Annotated[list[str], Field(min_length=1)] = Field(
        ABSENT, description="Instead of a number: the header is the first row containing these column names."
    )
    sheet: str | int | None = Field(ABSENT, description="Workbook sheet, by name or number (default: the first).")
    delimiter: Delimiter | None = Field(ABSENT, description="CSV separator (default: detect).")
    encoding: str | None = Field(ABSENT, description="CSV text encoding, e.g. utf-8, cp1252, utf-16 (default: detect).")
    legacy_encoding: str | Annotated[list[str], Field(min_length=1)] | None = Field(
        ABSENT,
        description="The code page of a file that is not UTF-8 or UTF-16, or the candidates in order of "
        "preference (default: connector.yaml's legacy_encoding).",
    )
    header: Literal["none"] = Field(
        ABSENT,
        description='"none": the file has no header row; every row is data, and its columns are named by '
        'position ("1" is the first) or by `columns`.',
    )
    columns: Annotated[list[Column], Field(min_length=1)] = Field(
        ABSENT,
        description="With header: none, the names of the file's columns in order; columns beyond the list "
        "keep their position as their name.",
    )
    decimal: DecimalSeparator = Field(".", description="Decimal separator of numbers.")
    thousands: ThousandsSeparator | None = Field("", description="Thousands separator (default: none).")


class SkipRuleDoc(_Block):
    """A test on one column: the cell matches a pattern, equals a value (or one of several), or is blank."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("matches", "equals", "blank"))
    column: str
    matches: Regex = Field(ABSENT, description="A regular expression found in the cell.")
    equals: Scalar | list[Scalar] = Field(ABSENT, description="The cell is this value, or one of these.")
    blank: bool = Field(ABSENT, description="true: the cell is blank; false: it is not.")


class SkipRowDoc(SkipRuleDoc):
    keep_images: bool = Field(
        False,
        description="The skipped row is not a variant, but its images belong to its product (group_by), "
        "e.g. Shopify's image-only rows.",
    )


class ActiveDoc(_Block):
    """`product_active` from a status column: listed spellings mean active, delete or ignore."""

    column: Column = Field(ABSENT)
    template: str = Field(ABSENT)
    value: Scalar = Field(ABSENT)
    strip: bool = Field(True)
    active: Spellings = Field(ABSENT, description='Spellings that mean active (default: "true", "active").')
    delete: Spellings = Field(ABSENT, description='Spellings that mean delete (default: "false", "delete").')
    ignore: Spellings = Field(ABSENT, description='Spellings that mean the row is not sent (default: "ignore").')
    default: ActiveState = Field("active", description="The state of a blank cell.")


class OptionDoc(_Block):
    name: Scalar | FieldDoc = Field(description="A constant name, or {column: ...}.")
    value: FieldRef


class ImagesDoc(_Block):
    """Which image files belong to each row."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("columns", "pattern", any_=True))
    columns: str | list[Column] = Field(
        ABSENT, description="Columns holding image names or URLs, or a pattern matching them."
    )
    separator: str = Field(ABSENT, min_length=1, description="Between several names in one cell.")
    pattern: str | list[str] = Field(
        ABSENT, description='File names from columns, e.g. "{sku}.jpg", or a list of them.'
    )
    max: int = Field(5, ge=1, le=50, description="At most this many images per product.")
    folder: str = Field(ABSENT, description="The image folder, relative to the export's folder.")
    allow_urls: bool = Field(
        False, description="Image URLs are not fetched (yet); true reports them as not fetched rather than as bad "
        "file names."
    )
    strip_leading_slash: bool = Field(
        False, description="Names starting with / (Magento media paths) are read inside the image folder."
    )


class ChildrenInDoc(_Block):
    column: Column
    separator: str = Field("|", min_length=1, description='Between the children (default "|").')
    pick: Pick = Field(ABSENT, description="How to find the child's key in one entry, e.g. {key: sku}.")


class ParentsDoc(_Block):
    """Parent and child rows: a parent row gives the product's fields and is not sent; its children are the variants."""

    model_config = ConfigDict(json_schema_extra=_one_of_required("children_by", "children_in"))
    rows: SkipRuleDoc = Field(description="Which rows are parents, e.g. {column: Type, equals: variable}.")
    key: Column = Field(description="The column that names a row for its parent or children (e.g. SKU).")
    children_by: Column = Field(ABSENT, description="A child's column holding its parent's key (WooCommerce Parent).")
    children_in: Column | ChildrenInDoc = Field(
        ABSENT, description="The parent's column listing its children (Magento configurable_variations)."
    )


# Variant families of numbers: what `{sum: ...}` may name.
SUMMABLE = tuple(k for k, (section, _, kind, _, _) in FAMILIES.items() if section == "variant" and kind != "str")
NUMBER_KINDS = ("int", "float")


class SumDoc(_Block):
    """This number is the sum of a family's values on the row, e.g. qty as the sum of qty_availability."""

    sum: _literal(SUMMABLE) = Field(  # type: ignore[valid-type]
        description="The variant family whose values are added up (blank when the family has no value)."
    )


def _section(name: str, targets: dict[str, tuple[str, str, str]], required: tuple[str, ...]) -> Any:
    keys: dict[str, Any] = {
        k: (FieldRef | SumDoc if name == "Variant" and kind in NUMBER_KINDS else FieldRef,
            Field(... if k in required else None, description=d))
        for k, (_, kind, d) in targets.items()
    }
    keys |= {
        k: (FamilyRef, Field(ABSENT, description=_FAMILY_DOCS[k])) for k, f in FAMILIES.items() if f[0] == name.lower()
    }
    return create_model(name, __base__=_Block, __module__=__name__, **keys)


if TYPE_CHECKING:
    ProductDoc: TypeAlias = BaseModel
    VariantDoc: TypeAlias = BaseModel
else:
    ProductDoc = _section("Product", _PRODUCT_TARGETS, ())
    VariantDoc = _section("Variant", _VARIANT_TARGETS, ())  # required unless mode: update (checked by hand)


class UpdateDoc(_Block):
    """How the rows of an update file (mode: update) find the items they change."""

    key: UpdateKey = Field(
        "source_variant_code",
        description="What a row names: source_variant_code (default; with group_by as its product), sku, or "
        "product (the row changes every variant of its product).",
    )
    clear: str = Field(ABSENT, min_length=1, description='A cell holding exactly this clears its field, e.g. "-" '
                       "(a blank cell keeps the known value).")
    wait_days: int = Field(7, ge=0, le=365, description="A row for a variant not sent yet waits this many days for "
                           "its product (default 7), then is reported abandoned.")


class ModelsDoc(_Block):
    """The rows are product models (Akeneo): the product fields of the products that name them, keyed by
    group_by; a model may name its parent model (two levels: root model, sub-model)."""

    parent: Column = Field(description="The column naming a model's parent model (blank: a root model).")


class JoinDoc(_Block):
    """The rows are variants of the product their group_by names, whose own item another file brings (in any
    order): they take its product fields; its own item is retired once it has variants here."""

    add: list[Literal["price", "grams", "qty"]] = Field(
        ABSENT, description="Variant fields that are differences to the product's own value, e.g. [price, grams] "
        "for PrestaShop's Impact on price and Impact on weight."
    )
    model: Column = Field(
        ABSENT, description="Akeneo: the column naming a row's product model. A row naming one is a variant of "
        "its root model (from a models file, codes matched ignoring case); other rows are whole products."
    )


class ContinuationDoc(_Block):
    """Rows whose key columns are all blank continue the record above them (Odoo exports)."""

    key: str | Annotated[list[Column], Field(min_length=1)] = Field(
        ABSENT,
        description="The columns that are blank on a continuation row "
        "(default: the columns of group_by and variant.source_variant_code).",
    )


class MappingDoc(_Block):
    """How the rows of an ERP export become Stock2Shop products. Reference: docs/mapping.md."""

    name: str = Field(ABSENT, description="The mapping's name in reports (default: the file name).")
    description: str = Field(ABSENT, description="Free text for people.")
    source: SourceDoc = Field(ABSENT)
    skip_rows: list[SkipRowDoc] = Field(ABSENT, description="Rows to leave out on purpose, reported as skipped.")
    group_by: FieldRef = Field(description="Required. Rows with the same value are one product (source_product_code).")
    active: Column | ActiveDoc = Field(
        ABSENT, description="Where product_active comes from (default: every row is active)."
    )
    product: ProductDoc = Field(ABSENT, description="Product fields.")
    variant: VariantDoc = Field(description="Required. Variant fields.")
    options: list[OptionDoc] = Field(ABSENT, description="Up to three options per product, each a name and a value.")
    images: ImagesDoc = Field(ABSENT)
    missing_columns: MissingColumns = Field(
        "warn", description="What to do when a column the mapping names is not in the file."
    )
    parents: ParentsDoc = Field(ABSENT)
    fill_down: str | list[Column] = Field(
        ABSENT, description="Columns whose blank cells take the value of the same product's previous row (Shopify)."
    )
    same_variant: SameVariant = Field(
        "error",
        description="Rows repeating a variant code: error (default), or sum their qty and qty_availability "
        "(a row per lot or bin).",
    )
    continuation_rows: bool | ContinuationDoc = Field(
        False,
        description="true: a row whose key columns are blank is not a record of its own; its values are more "
        "values of the record above (options, tags, images, meta, price tiers, warehouses), as Odoo "
        "writes a record's several values on the rows under it.",
    )
    mode: Mode = Field(
        "full",
        description="full (default): each row is a whole item. update: rows change only the fields they map "
        "(stock, a warehouse's qty, prices) of items already sent; see docs/mapping.md.",
    )
    update: UpdateDoc = Field(ABSENT, description="How an update file's rows find their items (mode: update).")
    join: JoinDoc = Field(ABSENT, description="The rows are variants of a product another file brings "
                          "(PrestaShop combinations, Akeneo models); see docs/mapping.md.")
    models: ModelsDoc = Field(ABSENT, description="The file holds product models (Akeneo product_models.csv): "
                              "product-level records for the rows of a join: {model: ...} file; never sent alone.")
    complete: bool = Field(
        False, description="The file is the whole catalogue: products and variants sent before and missing from "
        "it have vanished (see vanished)."
    )
    vanished: Vanished = Field(
        "keep", description="With complete: true, what happens to vanished products: keep (default; reported) or "
        "delete (queued with product_active false)."
    )
    max_vanished: int = Field(
        ABSENT, ge=0, description="Products one file may delete; more and nothing is deleted unless pushed with "
        "--allow-deletions (default: 10 % of the catalogue, at most 50)."
    )


if not TYPE_CHECKING:
    FieldDoc.model_rebuild()


@cache
def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """A block's YAML keys (aliases where set), in the definition's order."""
    return {info.alias or name: info for name, info in model.model_fields.items()}


def _choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The values a Literal annotation (or Literal | None) allows; None when it is not a Literal."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _choices_of(arg)
            if found is not None:
                return found
    return None


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _bounds(model: type[BaseModel], key: str) -> tuple[int | None, int | None]:
    """The ge/le bounds the definition sets on a whole-number key."""
    low = high = None
    info = _keys(model)[key]
    for meta in info.metadata:
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return low, high


# --------------------------------------------------------------------------- the published JSON Schema

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "mapping.schema.json"
SCHEMA_ID = "https://stock2shop-connector.local/schema/mapping.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a mapping, generated from the definition (what editors complete and check)."""
    return published_schema(MappingDoc.model_json_schema(ref_template="#/$defs/{model}"), schema_id=SCHEMA_ID,
                            title="Connector mapping", drop_null_defaults=True)



def schema_text(schema: dict[str, Any]) -> str:
    """The schema as committed: indented, keys in the definition's order, a newline at the end."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


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


def _unknown(where: str, key: Any, valid: tuple[str, ...]) -> str:
    return f"{_join(where, str(key))}: unknown key{did_you_mean(key, valid)} {valid_choices(valid)}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


class _Validator:
    """Walks the YAML document with the definition, building the spec and recording every problem with its path.

    `block` checks a block against its model (unknown keys, choices, true/false); the methods
    named after the blocks check what a model cannot say (patterns compile, a constant fits
    its field's type, a unit is listed once) and build the spec dataclasses.
    """

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.source = SourceOptions()

    def bad(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    def block(self, raw: dict, where: str, model: type[BaseModel], own: tuple[str, ...] = ()) -> None:
        """Check a block's keys, and the values of its choice and true/false keys, against `model`.

        Keys in `own` are left to the caller (a choice whose valid values depend on the field).
        """
        known = _keys(model)
        valid = tuple(known)
        for key, value in raw.items():
            info = known.get(key) if isinstance(key, str) else None
            if info is None:
                self.problems.append(_unknown(where, key, valid))
            elif key not in own:
                self.value(value, _join(where, key), info.annotation)

    def value(self, value: Any, where: str, annotation: Any) -> None:
        if value is None and _allows_none(annotation):
            return
        choices = _choices_of(annotation)
        if choices is not None:
            if isinstance(value, bool) or value not in choices:
                self.bad(where, f'"{value}" is not allowed{did_you_mean(value, choices)} {valid_choices(choices)}')
        elif annotation is bool and not isinstance(value, bool):
            self.bad(where, "must be true or false")

    def whole(self, raw: Any, where: str, model: type[BaseModel], key: str, what: str) -> int | None:
        """A whole number within the definition's bounds, else a problem: `0 must be <what> from 1 to 64`."""
        low, high = _bounds(model, key)
        if (
            isinstance(raw, int)
            and not isinstance(raw, bool)
            and (low is None or raw >= low)
            and (high is None or raw <= high)
        ):
            return raw
        span = f" from {low}" + (f" to {high}" if high is not None else "") if low is not None else ""
        self.bad(where, f"{raw!r} must be {what}{span}")
        return None

    # -- the document

    def mapping(self, raw: Any, name: str, sha256: str, path: str) -> Mapping | None:
        if raw is None:
            self.bad("(top level)", "the mapping is empty")
            return None
        if not isinstance(raw, dict):
            self.bad("(top level)", "must be a set of keys such as group_by, product, variant")
            return None
        self.block(raw, "", MappingDoc)
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
        totals = self.totals(raw.get("variant"), families)
        named = {key for key, _ in variant}
        mode = self.known(raw.get("mode"), MODES)
        update = self.update(raw.get("update"), mode)
        if raw.get("models") is not None:
            pass  # a models file has no variants
        elif mode == "full":
            for key in ("source_variant_code", "sku"):
                if key not in named:
                    self.bad(f"variant.{key}", "is required: every variant needs it")
        elif update.key != "product" and update.key not in named:
            self.bad(f"variant.{update.key}", f"is required: update.key says rows are found by their {update.key}")
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
            missing_columns=self.known(raw.get("missing_columns"), MISSING_COLUMNS),
            description=desc if isinstance(desc, str) else "",
            parents=self.parents(raw["parents"], "parents") if raw.get("parents") is not None else None,
            fill_down=self.column_list(raw.get("fill_down"), "fill_down"),
            same_variant=self.known(raw.get("same_variant"), SAME_VARIANT),
            totals=totals,
            continuation_key=self.continuation(raw.get("continuation_rows"), raw),
            mode=mode,
            update=update,
            **self.vanishing(raw, mode),
            join=self.join(raw.get("join"), mode, named),
            models=self.models(raw.get("models"), mode),
        )

    def models(self, raw: Any, mode: str) -> str | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("parent"), str) or not raw["parent"].strip():
            self.bad("models", "must be {parent: <the column naming a model's parent>}")
            return None
        self.block(raw, "models", ModelsDoc)
        if mode == "update":
            self.bad("models", "a models file is not an update file: remove mode: update")
        return raw["parent"]

    def join(self, raw: Any, mode: str, named: set[str]) -> JoinSpec | None:
        if raw is None:
            return None
        if mode == "update":
            self.bad("join", "an update file changes known items; join is for files of new variants")
            return None
        if not isinstance(raw, dict):
            self.bad("join", "must be {} or {add: [price, grams]}")
            return None
        self.block(raw, "join", JoinDoc)
        add = raw.get("add") or []
        if not isinstance(add, list):
            self.bad("join.add", "must be a list of variant fields, e.g. [price, grams]")
            add = []
        for name in add:
            if name in ("price", "grams", "qty") and name not in named:
                self.bad("join.add", f"names {name}, which the mapping's variant does not fill")
        model = raw.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            self.bad("join.model", "must be the column naming a row's product model, e.g. parent")
            model = None
        return JoinSpec(add=tuple(n for n in add if n in ("price", "grams", "qty")), model=model)

    def vanishing(self, raw: dict, mode: str) -> dict[str, Any]:
        complete = raw.get("complete", False)
        if not isinstance(complete, bool):
            complete = False  # `block` reported it
        if complete and mode == "update":
            self.bad("complete", "an update file is never the whole catalogue: remove complete or mode: update")
        for key in ("vanished", "max_vanished"):
            if key in raw and not complete:
                self.bad(key, "needs complete: true (only a file holding the whole catalogue can tell what vanished)")
        limit = None
        if raw.get("max_vanished") is not None:
            limit = self.whole(raw["max_vanished"], "max_vanished", MappingDoc, "max_vanished", "a number of products")
        return {"complete": complete, "vanished": self.known(raw.get("vanished"), VANISHED), "max_vanished": limit}

    def update(self, raw: Any, mode: str) -> UpdateSpec:
        if raw is None:
            return UpdateSpec()
        if mode != "update":
            self.bad("update", "is only for update files: add mode: update")
        if not isinstance(raw, dict):
            self.bad("update", "must be a set of keys " + valid_choices(tuple(_keys(UpdateDoc))))
            return UpdateSpec()
        self.block(raw, "update", UpdateDoc)
        clear = raw.get("clear")
        if clear is not None and (not isinstance(clear, str) or not clear.strip()):
            self.bad("update.clear", "must be a text such as \"-\" (a blank cell already keeps the known value)")
            clear = None
        days = self.whole(raw.get("wait_days", 7), "update.wait_days", UpdateDoc, "wait_days", "a number of days")
        return UpdateSpec(key=self.known(raw.get("key"), UPDATE_KEYS), clear=clear,
                          wait_days=7 if days is None else days)

    def source_options(self, raw: Any) -> SourceOptions:
        if raw is None:
            return SourceOptions()
        if not isinstance(raw, dict):
            self.bad("source", "must be a set of read options " + valid_choices(tuple(_keys(SourceDoc))))
            return SourceOptions()
        self.block(raw, "source", SourceDoc)
        opts: dict[str, Any] = {}
        header_row = self.whole(raw.get("header_row", 1), "source.header_row", SourceDoc, "header_row", "a row number")
        if header_row is not None:
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
        opts["delimiter"] = self.known(raw.get("delimiter"), DELIMITERS, None)
        for key in ("encoding", "legacy_encoding"):
            enc = raw.get(key)
            if enc is None:
                continue
            names = enc if key == "legacy_encoding" and isinstance(enc, list) and enc else [enc]
            known = []
            for name in names:
                try:
                    codecs.lookup(str(name))
                    known.append(str(name))
                except LookupError:
                    self.bad(f"source.{key}",
                             f'"{name}" is not a known text encoding (for example utf-8, cp1252, mac_roman, utf-16)')
            if len(known) == len(names):
                opts[key] = tuple(known) if key == "legacy_encoding" else known[0]
        self.header_options(raw, opts)
        decimal = self.known(raw.get("decimal"), DECIMAL_SEPARATORS)
        thousands = self.known(raw.get("thousands"), THOUSANDS_SEPARATORS)
        if thousands == decimal:
            self.bad("source.thousands", f'"{thousands}" cannot also be the decimal separator')
            thousands = ""
        opts["decimal"], opts["thousands"] = decimal, thousands
        return SourceOptions(**opts)

    def header_options(self, raw: dict, opts: dict[str, Any]) -> None:
        """`header: none` (no header row) and `columns:` (names for a headerless file's columns)."""
        header = raw.get("header")
        if header == "none":
            for key in ("header_row", "find_header"):
                if raw.get(key) is not None:
                    self.bad(f"source.{key}", "cannot be used with header: none (the file has no header row)")
            opts["header_row"] = 0
            opts.pop("find_header", None)
        columns = raw.get("columns")
        if columns is None:
            return
        names = self.column_list(columns, "source.columns")
        if len(set(names)) < len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            self.bad("source.columns", f"names a column twice: {', '.join(twice)}")
        elif header != "none":
            self.bad("source.columns", "names the columns of a file without a header row: add `header: none`")
        else:
            opts["columns"] = names

    def fields(self, raw: Any, where: str, table: dict) -> tuple[tuple[str, FieldSpec], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.bad(where, f"must be a set of fields {valid_choices(tuple(table))}")
            return ()
        self.block(raw, where, ProductDoc if where == "product" else VariantDoc, own=tuple(raw))
        out = []
        for key, spec in raw.items():
            if key in table and not (isinstance(spec, dict) and "sum" in spec):  # a total: see `totals`
                type_, kind = table[key]
                out.append((key, self.field(spec, f"{where}.{key}", key, type_, kind)))
            elif key in table and where == "product":
                self.bad(f"{where}.{key}.sum", "only variant number fields (price, qty, grams) can be a sum")
        return tuple(out)

    def continuation(self, raw: Any, doc: dict) -> tuple[str, ...] | None:
        """`continuation_rows: true` or `{key: [columns]}`: the key columns (() = the default), or None."""
        if raw is None or raw is False:
            return None
        where = "continuation_rows"
        if raw is True:
            key: tuple[str, ...] = ()
        elif isinstance(raw, dict):
            self.block(raw, where, ContinuationDoc)
            key = self.column_list(raw.get("key"), f"{where}.key")
            if "key" in raw and not key:
                return None
        else:
            self.bad(where, "must be true, or {key: [the columns that are blank on a continuation row]}")
            return None
        if doc.get("parents") is not None:
            self.bad(where, "cannot be used with parents (a row continues the record above it, or belongs to "
                            "a parent, not both)")
            return None
        return key

    def totals(self, raw: Any, families: dict[str, FamilySpec | None]) -> tuple[tuple[str, str], ...]:
        """`variant: {qty: {sum: qty_availability}}`: number fields that add up a family's values."""
        if not isinstance(raw, dict):
            return ()
        out = []
        for key, spec in raw.items():
            if key not in VARIANT_FIELDS or not isinstance(spec, dict) or "sum" not in spec:
                continue
            where = f"variant.{key}"
            kind = VARIANT_FIELDS[key][1]
            if kind not in NUMBER_KINDS:
                self.bad(f"{where}.sum", "only number fields (price, qty, grams) can be a sum")
                continue
            extra = [k for k in spec if k != "sum"]
            if extra:
                self.bad(where, f"a sum takes no other keys (found {', '.join(map(str, extra))})")
            name = spec["sum"]
            if name not in SUMMABLE:
                self.bad(f"{where}.sum", f'"{name}" is not a family of numbers{did_you_mean(name, SUMMABLE)} '
                                         f"{valid_choices(SUMMABLE)}")
                continue
            if families.get(name) is None:
                self.bad(f"{where}.sum", f"the mapping has no variant.{name} to add up")
                continue
            if kind == "int" and FAMILIES[name][2] != "int":
                self.bad(f"{where}.sum", f"{key} is a whole number; {name} holds decimal numbers")
                continue
            out.append((key, name))
        return tuple(out)

    # -- one field

    def field(self, raw: Any, where: str, label: str, type_: str, kind: str, bare: str = "column") -> FieldSpec:
        """A field spec: a bare string (a column, or a constant when bare="value") or a dict."""
        if isinstance(raw, str):
            raw = {bare: raw}
        elif isinstance(raw, (bool, int, float)) and bare == "value":
            raw = {"value": raw}
        elif isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
            raw = {"column": str(raw)}  # a column's position, in a file without a header row
        if not isinstance(raw, dict):
            self.bad(where, "must be a column name or a set of keys " + valid_choices(tuple(_keys(FieldDoc))))
            return FieldSpec(where=where, label=label, value="")
        self.block(raw, where, FieldDoc, own=("type",))
        sources = [k for k in ("column", "value", "template") if k in raw]
        if len(sources) != 1:
            self.bad(
                where,
                "needs exactly one of column, value, template"
                + (f" (found {', '.join(sources)})" if sources else ""),
            )
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
        """Type, default, the transforms (`cells.TRANSFORMS`) and the type's options, shared by fields and families."""
        out: dict[str, Any] = {}
        type_ = raw.get("type", type_)
        if type_ not in TYPES:
            self.bad(f"{where}.type", f'unknown type "{type_}"{did_you_mean(type_, TYPES)} {valid_choices(TYPES)}')
            type_ = "text"
        elif type_ not in OUTPUT_TYPES[kind]:
            self.bad(f"{where}.type", f'"{type_}" does not fit this field {valid_choices(OUTPUT_TYPES[kind])}')
        out["type"] = type_
        if "default" in raw and raw["default"] is not None:
            out["default"] = self.scalar(raw["default"], f"{where}.default")
        if isinstance(raw.get("strip"), bool):
            out["strip"] = raw["strip"]
        chain = []
        for name, transform in TRANSFORMS.items():
            if name in raw:
                option = self.transform(transform, raw[name], f"{where}.{name}", kind)
                if option is not None:
                    chain.append((name, option))
        out["transforms"] = tuple(chain)
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
            out["round"] = self.whole(raw["round"], f"{where}.round", FieldDoc, "round", "a number of decimal places")
        if ("multiply" in raw or "round" in raw) and type_ not in NUMBER_TYPES:
            self.bad(where, f'multiply and round need type {" or ".join(NUMBER_TYPES)} (this field is "{type_}")')
        for key, default in (("true_values", DEFAULT_TRUE), ("false_values", DEFAULT_FALSE)):
            if key in raw:
                if key not in cells.CELL_TYPES[type_].options:
                    takes = [t.name for t in cells.CELL_TYPES.values() if key in t.options]
                    self.bad(f"{where}.{key}", f'only applies to type {" or ".join(takes)} (this field is "{type_}")')
                out[key] = self.spellings(raw[key], f"{where}.{key}") or default
        return out

    def transform(self, transform: cells.Transform, raw: Any, where: str, kind: str) -> Any:
        """A transform's option as `cells` runs it, checked by the shape of YAML value it takes (None: none)."""
        if transform.text_only and kind != "str":
            self.bad(where, f"only text fields can use {transform.name}")
            return None
        shape = transform.shape
        if shape == "flag":
            return raw if isinstance(raw, bool) else None  # `block` reported anything else
        if shape == "scalar":
            return self.scalar(raw, where) or None
        if shape == "length":
            return self.whole(raw, where, FieldDoc, transform.name, "a length")
        if shape == "separator":
            if not isinstance(raw, str) or not raw:
                self.bad(where, 'must be the separator text, for example "|" or ";"')
                return None
            return raw
        if shape == "table":
            if not isinstance(raw, dict):
                self.bad(where, "must be a table of cell value: new value")
                return None
            return (
                tuple((self.scalar(k, where) or "", self.scalar(v, f"{where}.{k}") or "") for k, v in raw.items())
                or None
            )
        if shape == "replace":
            return self.replace(raw, where) or None
        if shape == "pick":
            return self.pick(raw, where) or None
        raise ValueError(f"transform {transform.name}: no shape {shape!r} in mapping.SHAPES")

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
        self.block(raw, where, UnitDoc)
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
                factor = (
                    Decimal(str(value))
                    if not isinstance(value, bool) and isinstance(value, (int, float, str))
                    else None
                )
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
            units = valid_choices([n for n, _ in factors])
            self.bad(f"{where}.default", f'"{default}" is not one of the units {units}')
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
                self.bad(
                    where,
                    f'write {str(item).lower()}-like words in quotes ("yes", "no", "on", "off"): '
                    "YAML reads them as true/false",
                )
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
            self.block(item, at, ReplaceDoc)
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
        self.block(raw, where, FamilyDoc, own=("type",))
        pattern = self.regex(raw["columns"], f"{where}.columns") if "columns" in raw else None
        if "columns" not in raw and "entries" not in raw:
            self.bad(where, "needs columns (a pattern) or entries (a list of {name, value})")
        cell_raw = {k: v for k, v in raw.items() if k not in ("columns", "entries")}
        cell = FieldSpec(
            where=where, label=where.rsplit(".", 1)[-1], column="", **self.transforms(cell_raw, where, type_, kind)
        )
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
            self.block(item, at, EntryDoc)
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
            self.block(item, at, OptionDoc)
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
        self.block(raw, where, ActiveDoc, own=("strip",))
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
        default = self.known(raw.get("default"), ACTIVE_STATES)
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
            self.block(item, at, SkipRowDoc)
            keep = item.get("keep_images") is True
            tests = [k for k in ("matches", "equals", "blank") if k in item]
            if len(tests) != 1:
                self.bad(at, "needs exactly one of matches, equals, blank")
                continue
            rule: dict[str, Any] = {
                "where": at,
                "column": self.text(item["column"], f"{at}.column", nonempty=True),
                "keep_images": keep,
            }
            if "matches" in item:
                rule["matches"] = self.regex(item["matches"], f"{at}.matches")
                if rule["matches"] is None:
                    continue
            elif "equals" in item:
                eq = item["equals"] if isinstance(item["equals"], list) else [item["equals"]]
                rule["equals"] = tuple(self.scalar(e, f"{at}.equals") or "" for e in eq)
            elif isinstance(item["blank"], bool):  # `block` reported anything else
                rule["blank"] = item["blank"]
            else:
                continue
            out.append(SkipRule(**rule))
        return tuple(out)

    def images(self, raw: Any, where: str) -> ImagesSpec | None:
        if not isinstance(raw, dict):
            self.bad(where, 'must be {columns: [...]} or {pattern: "{sku}.jpg"}')
            return None
        self.block(raw, where, ImagesDoc)
        spec: dict[str, Any] = {}
        columns = raw.get("columns")
        if isinstance(columns, str):
            spec["columns_pattern"] = self.regex(columns, f"{where}.columns")
        elif isinstance(columns, list) and all(_is_column_name(c) for c in columns):
            spec["columns"] = tuple(str(c) for c in columns)
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
                self.bad(f"{where}.separator", 'must be the separator text, for example "," or "|"')
            else:
                spec["separator"] = sep
        n = self.whole(raw.get("max", 5), f"{where}.max", ImagesDoc, "max", "a number")
        if n is not None:
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
            spec[key] = raw.get(key) is True  # `block` reported anything but true or false
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
            self.block(item, at, PickStepDoc)
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
        if isinstance(raw, (str, int)) and not isinstance(raw, bool):
            raw = [raw]
        if not isinstance(raw, list) or not all(_is_column_name(c) for c in raw):
            self.bad(where, "must be a list of column names")
            return ()
        return tuple(str(c) for c in raw)

    @staticmethod
    def known(raw: Any, valid: tuple[Any, ...], absent: Any = ...) -> Any:
        """A choice `block` has checked: the value, else the first valid one (or `absent`)."""
        if raw in valid and not isinstance(raw, bool):
            return raw
        return valid[0] if absent is ... else absent

    def parents(self, raw: Any, where: str) -> ParentsSpec | None:
        if not isinstance(raw, dict):
            self.bad(where, "must be {rows: {column, equals}, key: column, children_by: column} (or children_in)")
            return None
        self.block(raw, where, ParentsDoc)
        rules = self.skip_rows([raw["rows"]], f"{where}.rows") if "rows" in raw else ()
        if isinstance(raw.get("rows"), dict) and "keep_images" in raw["rows"]:
            self.bad(
                f"{where}.rows[0].keep_images", "only applies to skip_rows (a parent row's images are always kept)"
            )
        if "rows" not in raw:
            self.bad(f"{where}.rows", "is required: which rows are parents, e.g. {column: Type, equals: variable}")
        # skip_rows names its one rule "<where>[0]"; a parents block has a single rule
        self.problems = [p.replace(f"{where}.rows[0]", f"{where}.rows") for p in self.problems]
        if "key" not in raw:
            self.bad(f"{where}.key", "is required: the column that names a row (e.g. SKU)")
        key = self.text(raw.get("key", "?"), f"{where}.key", nonempty=True)
        if ("children_by" in raw) == ("children_in" in raw):
            self.bad(
                where,
                "needs exactly one of children_by (the child's column naming its parent) "
                "and children_in (the parent's column listing its children)",
            )
            return None
        if not rules:
            return None
        rule = rules[0]
        spec: dict[str, Any] = {
            "where": where,
            "rows": SkipRule(**{**rule.__dict__, "where": f"{where}.rows"}),
            "key": key,
        }
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
        self.block(listing, at, ChildrenInDoc)
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
    """The function that turns a cell's text into a value of the field's type (`cells.CELL_TYPES`)."""
    options = CellOptions(source.decimal, source.thousands, spec.true_values, spec.false_values)
    return cells.cell_parser(spec.type, options)


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
    if kind in ("float", "int") and isinstance(value, (int, Decimal)) and abs(value) >= cells.TOO_LARGE_TO_SEND:
        raise CellError(number_failure(OverflowError()))
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


# --------------------------------------------------------------------------- python -m connector.mapping --schema


def main(argv: list[str] | None = None) -> int:
    """`--schema`: write the JSON Schema generated from the definition; `--check`: fail when the file differs."""
    from connector.common import schema_command

    return schema_command(argv, prog="python -m connector.mapping", text=schema_text(json_schema()), path=SCHEMA_PATH)


if __name__ == "__main__":
    sys.exit(main())
