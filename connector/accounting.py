"""Every input row accounted for: the report's row counts reconcile exactly.

    rows read = rows that became items + rows folded into another row's item
              + rows refused + rows skipped

Rows read are the table's rows plus the records the reader refused (they never became rows;
blank rows are not rows). Folded rows are parent rows, rows added up by `same_variant: sum`
and continuation rows; skipped rows are counted per rule. `account_rows` checks that every
row of the table, known by its (sheet, line), is in exactly one of the four and that the
counts add up. A row in none or in two is a bug of the connector, never of the
file: `settle` logs it loudly and notes it in the report, and raises `UnaccountedRows` when
the environment sets CONNECTOR_STRICT_ROWS=1, as the test suite does for every plan it makes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from .model import Place, Problem, Product, Rejected, Table, describe_line, place_order

STRICT_ENV = "CONNECTOR_STRICT_ROWS"
log = logging.getLogger("connector.accounting")


class UnaccountedRows(AssertionError):
    """A row is in none or in two of items, folded, refused and skipped: a bug of the connector."""


@dataclass
class RowAccount:
    """Where every row of a file went; `folded` and `skipped` say why, `skipped` per rule."""

    read: int = 0
    items: int = 0
    folded: dict[str, int] = field(default_factory=dict)  # parent | same_variant | continuation -> rows
    refused: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # the rule that skipped them -> rows

    @property
    def balanced(self) -> bool:
        return self.read == self.items + sum(self.folded.values()) + self.refused + sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "items": self.items, "folded": dict(self.folded), "refused": self.refused,
                "skipped": dict(self.skipped)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RowAccount:
        return cls(read=data.get("read", 0), items=data.get("items", 0), folded=dict(data.get("folded") or {}),
                   refused=data.get("refused", 0), skipped=dict(data.get("skipped") or {}))

    def line(self) -> str:
        """`120 read = 110 items + 5 folded + 3 refused + 2 skipped`."""
        return (f"{self.read} read = {self.items} items + {sum(self.folded.values())} folded + {self.refused} "
                f"refused + {sum(self.skipped.values())} skipped")


def account_rows(table: Table, products: list[Product], folded: dict[Place, str],
                 skipped: dict[Place, str], rejected: list[Rejected], *,
                 file_refused: bool = False) -> tuple[RowAccount, list[str]]:
    """Where each row went, and what does not add up (empty when every row is in exactly one place).

    Rows are known by (sheet, line): several sheets read each have their own line 2. `products`
    are those going on to be sent (their `places()` one per item), `folded` and `skipped` come
    from the build, `rejected` are the refused rows. `file_refused`: the mapping could not map
    the file at all (a column it needs is missing), so every row is refused with it.
    """
    if file_refused:
        read = len(table.rows) + table.rows_refused
        account = RowAccount(read=read, refused=read)
        return account, [] if not products and not folded and not skipped else ["a file refused whole has items"]
    # Rows are keyed by their line when one sheet (or a CSV) is read: a 100k-row file then
    # makes no (sheet, line) tuple per row while it is checked
    key = _by_place if any(row.sheet is not None for row in table.rows[:1]) else _by_line
    refused_at = {key(r.row.sheet, r.row.line) for r in rejected}
    if key is _by_line:
        item_at: Counter[Any] = Counter(chain.from_iterable(p.lines for p in products))
        rows_at: list[Any] = [row.line for row in table.rows]
    else:
        item_at = Counter(key(*place) for p in products for place in p.places())
        rows_at = [(row.sheet, row.line) for row in table.rows]
    folded_kept = {place: why for place, why in folded.items() if key(*place) not in refused_at}
    account = RowAccount(
        read=len(table.rows) + table.rows_refused,
        items=sum(item_at.values()),
        folded=dict(Counter(folded_kept.values())),
        skipped=dict(Counter(skipped.values())),
    )
    row_at = Counter(rows_at)
    refused_rows = sum(1 for place in refused_at if place in row_at)
    account.refused = refused_rows + table.rows_refused
    wrong: list[str] = []
    if len(row_at) == len(rows_at):  # rows are told apart: each row in exactly one place
        folded_at = {key(*place) for place in folded_kept}
        skipped_at = {key(*place) for place in skipped}
        for at in rows_at:
            if item_at[at] + (at in folded_at) + (at in refused_at) + (at in skipped_at) == 1:
                continue  # the row is in exactly one place: its places are listed only when not
            places = [name for name, there in (
                ("item", item_at[at]), ("folded", at in folded_at),
                ("refused", at in refused_at), ("skipped", at in skipped_at)) for _ in range(int(there))]
            if len(places) != 1:
                wrong.append(f"{_shown(at)}: " + (" and ".join(places) if places else "in no count"))
                if len(wrong) >= 10:
                    break
        strays = sorted(set(item_at) - set(row_at), key=lambda at: place_order(at if isinstance(at, tuple)
                                                                                else (None, at)))
        if strays:
            wrong.append(f"items from rows that are not rows of the file: {[_shown(at) for at in strays[:10]]}")
    if not account.balanced:
        wrong.append(f"the counts do not add up: {account.line()}")
    return account, wrong


def _by_line(sheet: str | None, line: int) -> int | Place:
    return line


def _by_place(sheet: str | None, line: int) -> int | Place:
    return sheet, line


def _shown(at: int | Place) -> str:
    sheet, line = at if isinstance(at, tuple) else (None, at)
    return describe_line(sheet, line)


def settle(account: RowAccount, wrong: list[str], file: str, problems: list[Problem]) -> None:
    """Make a failed reconciliation loud: raise in strict mode, else log an error and note it in `problems`."""
    if not wrong:
        return
    text = f"{file}: rows not accounted for exactly (a bug of the connector; please report it): " + "; ".join(wrong)
    if os.environ.get(STRICT_ENV) == "1":
        raise UnaccountedRows(text)
    log.error("%s", text)
    problems.append(Problem(kind="accounting", severity="warning", reason=text))
