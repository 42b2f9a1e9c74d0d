"""Column names, in one place: how a header cell becomes a column name, how a file without a
header row names its columns, and how the names a mapping uses find the file's columns.

    normalise_name("\\ufeffSKU\\u00a0 ")          -> "SKU"       (the reader, for header cells)
    column_key(" Unit  Price ")                 -> "unit price" (matching, for both)
    positional_names(4, ["sku", "name"])        -> ["sku", "name", "3", "4"]
    Header(["SKU", "Unit Price"]).find("unit price", "variant.price") -> "Unit Price"

The reader (`find_header`) and the mapping's binding (`build`) both match with `column_key`,
so a name that finds the header row also finds its column, and the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_ZERO_WIDTH = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_SPACES = {0xA0: " ", 0x202F: " ", 0x2007: " "}


def normalise_name(name: str) -> str:
    """A header cell as a column name: no BOM or zero-width characters, NBSP as space, trimmed.

    normalise_name("\\ufeffSKU\\u00a0 ") -> "SKU"
    """
    return name.translate(_ZERO_WIDTH).translate(_SPACES).strip()


def column_key(name: str) -> str:
    """The form two column names are compared in: normalised, runs of spaces as one, any case."""
    return " ".join(normalise_name(name).split()).casefold()


def positional_names(width: int, columns: Sequence[str] = (), first_col: int = 0) -> list[str]:
    """Column names for a file without a header row: `columns` first, then 1-based positions.

    A workbook whose used range starts at column C (`first_col` 2) numbers from 3, as Excel does.
    positional_names(4, ["sku", "name"]) -> ["sku", "name", "3", "4"]
    """
    names = list(columns)
    return names + [str(first_col + i + 1) for i in range(len(names), max(width, len(names)))]


class Header:
    """Finds a mapping's column names in a file's header: exact first, then by `column_key`.

    `missing` collects the names not found, with where the mapping names them.
    """

    def __init__(self, columns: Iterable[str]):
        self.columns = list(columns)
        self.exact = set(self.columns)
        self.loose: dict[str, str] = {}
        for c in self.columns:
            self.loose.setdefault(column_key(c), c)
        self.missing: dict[str, str] = {}  # column -> where in the mapping it is named
        self.at = {c: i for i, c in enumerate(self.columns)}  # a name twice: the last, as a row's dict keeps it

    def find(self, name: str, where: str) -> str | None:
        if name in self.exact:
            return name
        found = self.loose.get(column_key(name))
        if found is None:
            self.missing.setdefault(name, where)
        return found

    def position(self, column: str | None) -> int | None:
        """Where a column found by `find` is in each row's texts (None for a missing column)."""
        return None if column is None else self.at[column]

    def has(self, name: str) -> bool:
        return name in self.exact or column_key(name) in self.loose
