"""Cell types and text transforms: the closed vocabulary a mapping may name, one registry entry each.

    CELL_TYPES["decimal"].parser(CellOptions(decimal=",", thousands=" "))("1 299,50") == Decimal("1299.50")
    TRANSFORMS["zero_pad"].step(6)("123") == "000123"

A cell type turns a cell's text into a value or raises `CellError`; a transform rewrites a
cell's text before its type reads it. Each entry carries what the mapping language needs to
validate it, run it and document it (the description goes into the published JSON Schema), so
adding a type or a transform is one entry here: `mapping` builds its definition and its
validation from these tables, and `build` runs them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from connector.errors import CellError

# --------------------------------------------------------------------------- the parsers

DEFAULT_TRUE = ("true", "yes", "y", "1", "t")
DEFAULT_FALSE = ("false", "no", "n", "0", "f")
# Excel turns long digit strings into `6.00988E+12`; the lost digits cannot be recovered.
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
# A number cell longer than this is not a price or a quantity but a pasted-in mistake; longer
# digit strings also make int() refuse (over 4,300 digits) and Decimal lose precision.
MAX_NUMBER_CHARS = 40
# A number sent as a number (a price, a quantity) has at most this many digits before its point:
# Decimal's precision, beyond which `round:` cannot work either. A longer one is not a price but a
# mistake (a barcode in the price column), and is refused; a text this short never has more.
MAX_WHOLE_DIGITS = 28
TOO_LARGE_TO_SEND = 10**MAX_WHOLE_DIGITS
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " "})
# What the reader gives for a date cell (2016-06-24, or with a time), and ISO text dates.
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?$")


def parse_text(text: str) -> str:
    return text


def _scientific(text: str) -> bool:
    """`7.67E+11`: a number the spreadsheet wrote in scientific notation (every code cell is asked)."""
    # the `in` tests first: a regex match costs ~10x more, and on long digit strings ~30x
    return ("e" in text or "E" in text) and _SCIENTIFIC.match(text) is not None


def parse_code(text: str) -> str:
    """A code is kept exactly as written (`00123` stays `00123`), but never scientific notation."""
    if _scientific(text):
        raise CellError("is in scientific notation, so its digits were lost (export the column as text)")
    return text


def parse_gtin(text: str) -> str:
    """A GTIN barcode: digits only, 8, 12, 13 or 14 long, with a valid check digit."""
    if _scientific(text):
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
        if (
            other in s
            and thousands != other
            and (plain.match(s.replace(other, "")) or plain.match(s.replace(other, decimal)))
        ):
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


def bool_parser(
    true_values: tuple[str, ...] = DEFAULT_TRUE, false_values: tuple[str, ...] = DEFAULT_FALSE
) -> Callable[[str], bool]:
    """Listed spellings only (case-insensitive); anything else is an error, never `false`."""
    table = {v.lower(): True for v in true_values} | {v.lower(): False for v in false_values}
    listed = ", ".join([*true_values, *false_values])

    def parse(text: str) -> bool:
        try:
            return table[text.lower()]
        except KeyError:
            raise CellError(f"is not a yes/no value (use one of: {listed})") from None

    return parse


# --------------------------------------------------------------------------- the type registry


@dataclass(frozen=True)
class CellOptions:
    """What a type's parser may depend on: the file's number format and a field's yes/no spellings."""

    decimal: str = "."
    thousands: str = ""
    true_values: tuple[str, ...] = DEFAULT_TRUE
    false_values: tuple[str, ...] = DEFAULT_FALSE


@dataclass(frozen=True)
class CellType:
    """One named type: how a cell's text becomes a value, and what a field of this type may say.

    `gives` lists the output kinds a value of this type can be sent as (str: text, float: a
    JSON number, int: a whole JSON number, flag: "true"/"false"); `options` the field keys that
    only this type takes.
    """

    name: str
    description: str
    parser: Callable[[CellOptions], Callable[[str], Any]]
    gives: tuple[str, ...] = ("str",)
    options: tuple[str, ...] = ()


_NUMBER_OPTIONS = ("multiply", "round", "unit")

CELL_TYPES: dict[str, CellType] = {
    t.name: t
    for t in (
        CellType("text", "the text as written", lambda o: parse_text),
        CellType("code", "kept verbatim (00123 stays 00123); scientific notation is an error", lambda o: parse_code),
        CellType("gtin", "a barcode: 8, 12, 13 or 14 digits with a valid check digit", lambda o: parse_gtin),
        CellType(
            "decimal",
            "a number in the file's decimal and thousands separators",
            lambda o: decimal_parser(o.decimal, o.thousands),
            ("str", "float", "int"),
            _NUMBER_OPTIONS,
        ),
        CellType(
            "int",
            "a whole number (479.0 is 479, 4.5 is an error)",
            lambda o: int_parser(o.decimal, o.thousands),
            ("str", "int", "float"),
            _NUMBER_OPTIONS,
        ),
        CellType(
            "bool",
            "yes/no from listed spellings (true_values, false_values); anything else is an error",
            lambda o: bool_parser(o.true_values, o.false_values),
            ("str", "flag"),
            ("true_values", "false_values"),
        ),
        CellType("date", "YYYY-MM-DD (optionally with a time) that exists on the calendar", lambda o: parse_date),
    )
}
TYPES = tuple(CELL_TYPES)


def type_choices(kind: str) -> tuple[str, ...]:
    """The types whose values can be sent as `kind`, the field's own kind first.

    type_choices("float") == ("decimal", "int"); type_choices("int") == ("int", "decimal")
    """
    fitting = [t.name for t in CELL_TYPES.values() if kind in t.gives]
    if kind in CELL_TYPES:  # an int field lists int before decimal
        fitting.sort(key=lambda name: name != kind)
    return tuple(fitting)


def cell_parser(type_name: str, options: CellOptions) -> Callable[[str], Any]:
    """The function that turns a cell's text into a value of the named type."""
    return CELL_TYPES[type_name].parser(options)


# --------------------------------------------------------------------------- the transform registry


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
            assert self.index is not None
            i = self.index - 1 if self.index > 0 else self.index
            return parts[i].strip() if -len(parts) <= i < len(parts) else ""
        for part in parts:
            name, eq, value = part.partition(self.equals)
            if eq and name.strip() == self.key:
                return value.strip()
        return ""


Step = Callable[[str], str]


def _replace(rules: tuple[tuple[re.Pattern, str], ...]) -> list[Step]:
    return [functools.partial(pattern.sub, repl) for pattern, repl in rules]


def _map(table: tuple[tuple[str, str], ...]) -> list[Step]:
    folded = {k.casefold(): v for k, v in table}
    return [lambda s: folded.get(s.casefold(), s)]


def _zero_pad(n: int) -> list[Step]:
    return [lambda s: s.zfill(n) if s.isdigit() else s]


def _split(sep: str) -> list[Step]:
    return [lambda s: ",".join(dict.fromkeys(p.strip() for p in s.split(sep) if p.strip()))]


@dataclass(frozen=True)
class Transform:
    """One named text transform. `steps(option)` gives the functions it adds for a field's compiled option.

    `shape` names the kind of YAML value it takes (the mapping module turns the shape into the
    definition, the validation and the schema): flag (true/false), scalar (a constant), length
    (1..64), separator (non-empty text), table (value: new value), replace, pick.
    `text_only`: only fields sent as text may use it.
    """

    name: str
    description: str
    shape: str
    steps: Callable[[Any], list[Step]]
    text_only: bool = False


# In the order they run on a cell (docs/mapping.md, "Transforms").
TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("replace", "Regular-expression replacements, {pattern, with}, applied in turn.", "replace", _replace),
        Transform(
            "pick",
            "Take one part of a packed cell (applied after replace).",
            "pick",
            lambda steps: [s.apply for s in steps],
        ),
        Transform("upper", "Upper-case the text.", "flag", lambda on: [str.upper] if on else []),
        Transform("lower", "Lower-case the text.", "flag", lambda on: [str.lower] if on else []),
        Transform("map", "Cell value -> new value (case-insensitive).", "table", _map),
        Transform("zero_pad", "Left-pad a number-only code with zeros to this length.", "length", _zero_pad),
        Transform("prefix", "Text put before the value.", "scalar", lambda a: [lambda s: f"{a}{s}"] if a else []),
        Transform("suffix", "Text put after the value.", "scalar", lambda b: [lambda s: f"{s}{b}"] if b else []),
        Transform(
            "split", "Separator of a list cell; the list is sent comma-separated.", "separator", _split, text_only=True
        ),
    )
}


def text_steps(transforms: tuple[tuple[str, Any], ...]) -> Step | None:
    """A field's compiled transforms as one function (None: none); a blank result stops the chain."""
    steps = [step for name, option in transforms for step in TRANSFORMS[name].steps(option)]
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def run(s: str) -> str:
        for step in steps:
            if not s:
                break
            s = step(s)
        return s

    return run
