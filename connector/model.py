"""Plain data passed between the pipeline's stages.

read   -> Table (rows of text, each with its line number)
build  -> Built (products, each a list of API items plus image references; problems)
checks -> problems (and the products they hold back)
images -> ImageJob (a located, validated image file ready to be encoded at send time)

Nothing here holds a connection or a file handle.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, NamedTuple

# What the caller should do with a problem (STYLE.md "Errors"):
#   error   - the row (and so its whole product) is held back
#   skipped - the row was left out on purpose (a filter, an "ignore" status, a blank row)
#   warning - reported, nothing held back (e.g. a missing image: the product still goes)
Severity = Literal["error", "skipped", "warning"]

# Where a row is: (sheet, line). The sheet is None unless several sheets are read (`sheet: "*"`),
# where the same line is a row on each sheet; a row is known by both everywhere rows are counted.
Place = tuple[str | None, int]


def place_order(place: Place) -> tuple[str, int]:
    """A sort key for places that never compares None with a sheet's name."""
    return place[0] or "", place[1]


# Row and ImageRef are not frozen: a frozen dataclass's __init__ costs four times a plain one's
# (object.__setattr__ per field), 0.1 s per 100,000 rows read, and as much again for their images.
# Nothing changes them after they are made; `dataclasses.replace` makes a changed copy.
@dataclass(slots=True)
class Row:
    """One data row of an export, every cell as text.

    `line` is the 1-based physical line in a CSV (the line the record starts on) or the
    1-based row number in a sheet; `cells` maps the header name to the cell text ("" for
    a blank cell). Example: Row(line=7, cells={"sku": "00123", "price": "1 299,50"}).
    `row_number` is the row a person finds it on when the file is opened in a spreadsheet:
    in a CSV the record's number counting the header and any rows above it (a quoted cell
    over several lines makes it differ from `line`), in a workbook the Excel row (= `line`);
    None when unknown (rows made by hand). `sheet` is set when several sheets are read.
    """

    line: int
    cells: Mapping[str, str]  # a dict, or the reader's compact Cells
    sheet: str | None = None
    row_number: int | None = None

    @property
    def where(self) -> str:
        """Where a person finds the row: "row 12 (line 30)", "row 12", or "sheet 'S', row 12"."""
        return describe_place(self.line, self.row_number, self.sheet)


class Columns:
    """A header's column names and where each is, made once per header and shared by its rows' Cells."""

    __slots__ = ("at", "names")

    def __init__(self, names: list[str]) -> None:
        self.names = tuple(names)
        self.at = {name: i for i, name in enumerate(self.names)}


class Cells(Mapping[str, str]):
    """A row's cells as a read-only mapping: the texts in header order over the header's Columns.

    What the reader gives every row of a file: a dict of 25 cells costs ~830 bytes a row, this
    ~300 (the texts themselves are shared, see read._SharedText); 100,000 rows hold ~55 MB
    less. It reads as a dict does (`cells["sku"]`, `.get`, `in`, `.items()`, `==` a dict);
    `as_dict()` is a plain dict of it, for a loop that reads many cells of one row.
    """

    __slots__ = ("_columns", "_values")

    def __init__(self, columns: Columns, values: tuple[str, ...]) -> None:
        self._columns = columns  # as many names as values (the reader pads or cuts each record)
        self._values = values

    def __getitem__(self, key: str) -> str:
        return self._values[self._columns.at[key]]

    def get(self, key: str, default: Any = None) -> Any:
        at = self._columns.at.get(key)
        return default if at is None else self._values[at]

    def __contains__(self, key: object) -> bool:
        return key in self._columns.at

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns.names)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def names(self) -> tuple[str, ...]:
        """The header's column names, one tuple shared by every row read under it."""
        return self._columns.names

    @property
    def texts(self) -> tuple[str, ...]:
        """The cells' texts in the order of `names`."""
        return self._values

    def as_dict(self) -> dict[str, str]:
        return dict(zip(self._columns.names, self._values))  # noqa: B905 (as many names as values)

    def __repr__(self) -> str:
        return repr(self.as_dict())


def describe_line(sheet: str | None, line: int) -> str:
    """"line 7", or "sheet 'B', line 7" when several sheets are read (each has a line 7)."""
    return f"sheet {sheet!r}, line {line}" if sheet else f"line {line}"


def describe_place(line: int | None, row_number: int | None, sheet: str | None = None) -> str:
    """"row 1107 (line 21133)" for a CSV record whose lines differ from its row, else "row N";
    a sheet's name first when given. "" when nothing is known."""
    if line is None and row_number is None:
        return ""
    row = row_number if row_number is not None else line
    text = f"row {row}" + (f" (line {line})" if line is not None and line != row else "")
    return f"sheet {sheet!r}, {text}" if sheet else text


@dataclass(slots=True)
class Problem:
    """Something wrong with the input, tied to where a person can find it."""

    kind: str  # short machine name: encoding, header, type, required, options, duplicate, image, filter, api ...
    reason: str  # one sentence for a person
    severity: Severity = "error"
    line: int | None = None
    column: str | None = None
    value: str | None = None
    product: str | None = None  # source_product_code, when known
    sheet: str | None = None
    # A summary standing for this many problems of its kind that are not listed one by one
    # (the reader lists the first few of a kind in a damaged file); None: just this one.
    count: int | None = None
    # The spreadsheet row of `line` (see Row.row_number); filled in for every problem with a line.
    row_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """The inverse of `as_dict` (for problems the ledger kept as JSON)."""
        return cls(**{k: v for k, v in data.items() if k in _PROBLEM_FIELDS})


_PROBLEM_FIELDS = {"kind", "reason", "severity", "line", "column", "value", "product", "sheet", "count", "row_number"}


class _Refusal(NamedTuple):
    row: Row
    reason: str


class Rejected(_Refusal):
    """A refused row and why: the one shape of a line of the rejected-rows CSV and workbook.

    Unpacks as `row, reason`; `column` names the cell that caused the refusal, when one did
    (the workbook highlights it). Example: Rejected(Row(7, cells), 'price "12,5O" ...', "price").
    """

    column: str | None

    def __new__(cls, row: Row, reason: str, column: str | None = None) -> Rejected:
        self = super().__new__(cls, row, reason)
        self.column = column
        return self


@dataclass
class Table:
    """What `read.read_table` returns: the rows of one sheet or CSV file."""

    header: list[str]
    rows: list[Row]
    format: str  # csv, xlsx, xls, ods
    encoding: str | None = None  # csv only: utf-8, utf-8-sig, utf-16, cp1252 ...
    delimiter: str | None = None  # csv only
    sheet: str | None = None  # workbooks only
    problems: list[Problem] = field(default_factory=list)  # rows refused while reading
    rows_refused: int = 0  # records refused while reading (never rows): each may have several problems
    # ... what the reader could read of them (their fields, bad bytes shown as U+FFFD), for the
    # rejected-rows files: the first MAX_LISTED_PER_KIND of each kind, like their problems
    refused_rows: list[Row] = field(default_factory=list)
    encoding_reason: str | None = None  # csv only: why this encoding (a sentence for the report)
    # The row the column names came from, as a spreadsheet numbers it (the first sheet's when
    # several are read); None when the file has no header row (source.header: none).
    header_row: int | None = None
    # Names the header holds more than once -> their 1-based columns (the later ones are read as
    # "Notes (2)", ...); a mapping that reads such a name is ambiguous and refused.
    twice: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class ImageRef:
    """An image a row asks for, before it is located on disk.

    `name` is the cell text (or the file name a pattern produced), untrusted.
    """

    name: str
    line: int
    column: str | None = None
    source_variant_code: str | None = None


@dataclass
class Product:
    """One product: its API items (one per variant, `variants` a single object) in file order.

    `lines` holds each item's line; `sheets` each item's sheet when several sheets are read
    (None otherwise, and for products made elsewhere than from rows).
    """

    code: str  # source_product_code
    items: list[dict[str, Any]]
    lines: list[int]
    images: list[ImageRef] = field(default_factory=list)
    sheets: list[str | None] | None = None  # None, not [], when one sheet is read: 8 MiB per 150k products

    def places(self) -> list[Place]:
        """(sheet, line) of each item, in order."""
        return places(self.lines, self.sheets)


def places(lines: list[int], sheets: list[str | None] | None) -> list[Place]:
    """(sheet, line) of each line; `sheets` is parallel to `lines`, or empty (None) when one sheet is read."""
    if sheets:
        return list(zip(sheets, lines, strict=True))
    return [(None, line) for line in lines]


@dataclass
class Built:
    """What `build.build_products` returns."""

    products: list[Product]
    problems: list[Problem]
    rows_read: int = 0
    rows_skipped: int = 0
    # products held back because one of their rows failed: code -> every (sheet, line) of the product
    held: dict[str, list[Place]] = field(default_factory=dict)
    # Rows that are not an item of their own, by (sheet, line), so every row is accounted for:
    # folded into another row's item ("parent", "same_variant", "continuation") ...
    folded: dict[tuple[str | None, int], str] = field(default_factory=dict)
    # ... or skipped, with the rule that skipped it ('skip_rows[0]: column "Type" is "grouped"').
    skipped: dict[tuple[str | None, int], str] = field(default_factory=dict)
    # every line of every product (its items, parent row, folded rows), sent or not, and their
    # sheets when several sheets are read (kept apart: one sheet costs no (sheet, line) per row)
    lines: dict[str, list[int]] = field(default_factory=dict)
    sheets: dict[str, list[str | None]] = field(default_factory=dict)
    # the mapping cannot map this file (a column it needs is missing): every row is refused with it
    file_refused: bool = False


@dataclass(frozen=True, slots=True)
class ImageJob:
    """A located and validated image: everything needed to encode and queue it later."""

    path: str  # absolute, resolved, inside the image folder
    sha256: str
    size: int
    format: Literal["JPEG", "PNG"]
    source_product_code: str
    source_variant_code: str | None
    image_id: str
    main: bool
    line: int
    column: str | None = None
