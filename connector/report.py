"""The per-file report: one typed `Report`, made when a file is taken and passed along to the end.

`pipeline` fills it step by step (read, map, check, plan, send); `write_report_files` writes
it for `push`, `check` and `watch` alike: `<name>.report.json` (this shape) and, when rows
were refused, `<name>.rejected.csv` a person opens in Excel and `<name>.rejected.xlsx`, the
same rows as text cells with the refusing cell highlighted, to fix in Excel and drop back.

    {
      "file": "export.csv",                 # the file's name, never a secret-bearing URL
      "sha256": "…", "size": 12345,         # of the file's bytes as claimed
      "status": "done",                     # done | refused | waiting | duplicate | checked
      "mapping": {"name": "stock2shop", "sha256": "…"},
      "read": {"format": "csv", "encoding": "utf-8-sig", "delimiter": ";", "sheet": null, "rows": 120,
               "encoding_reason": "the whole file is valid UTF-8", "header_row": 1, "columns": ["sku", …]},
      "counts": {
        "products": 30, "variants": 118,    # built from the file
        "products_held_back": 1,            # a row of theirs failed, so none of them was sent
        "rows_refused": 2, "rows_skipped": 1,
        "images_found": 40,                 # found in the image folder and sendable
        "images_refused": 2,                # broken, not JPEG/PNG, too big, or refused when sent
        "images_missing": 1,                # named by the file, not in the image folder
        "items_to_send": 112, "items_sent": 110, "items_unchanged": 6,
        "images_to_send": 40, "images_sent": 38, "products_refused_by_api": 0
      },
      "rows": {                             # every row read, in exactly one place (connector.accounting)
        "read": 120, "items": 110, "folded": {"parent": 4, "continuation": 2}, "refused": 2,
        "skipped": {"skip_rows[0]: column \"Type\" is \"grouped\"": 2}
      },
      "timings_s": {"read": 0.1, "map": 0.2, "check": 0.0, "plan": 0.0, "send": 9.5, "total": 9.8},
      "requests": {"total": 42, "by_status": {"200": 40, "429": 2}},
      "problems": [Problem.as_dict(), …],   # at most MAX_PROBLEMS, in the order found
      "problems_truncated": 0,              # how many were left out of `problems`
      "problems_by_kind": {"type": 2, "image": 2},        # uncapped counts
      "problems_by_severity": {"error": 2, "warning": 2}, # uncapped counts
      "error": {"kind": "read", "message": "…"},          # only when the file was not pushed
      "started_at": "2025-01-31T10:00:00Z", "finished_at": "…",
      "connector_version": "0.1.0"
    }

The report never holds a token or password: it is built only from file content, counts and
problems, and written with mode 0644 so support staff can read it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from . import __version__
from .accounting import RowAccount
from .common import fsync_dir, iso_utc, write_atomic, write_json_atomic
from .model import Problem, Rejected, Row

MAX_PROBLEMS = 10_000  # keeps a report of a badly mapped 100k-row file readable and small
TIMING_KEYS = ("read", "map", "check", "plan", "send", "total")

# Spreadsheet programs run a cell starting with one of these as a formula (OWASP ASVS 5.0 §1.2.10).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")
# A plain number (-2.50, +5, -1,299.50, 1.5E3) is data, not a formula, and stays as it is.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)*|[.,]\d+)(?:[eE][+-]?\d+)?")


# How far a file got: planned (built, not yet journaled), checked (`check`: nothing sent),
# done (every item acknowledged), refused (for data reasons), waiting (API trouble: the work
# waits in the ledger), duplicate (the same content was pushed before).
Status = Literal["planned", "checked", "done", "refused", "waiting", "duplicate"]


@dataclass
class Counts:
    """What was read, built, held back and sent: every count present, zero by default."""

    products: int = 0
    variants: int = 0
    products_held_back: int = 0
    rows_refused: int = 0
    rows_skipped: int = 0
    images_found: int = 0
    images_refused: int = 0  # left out for a reason of their own (bad bytes, too big, refused when sent)
    images_missing: int = 0  # named by the file but not in the image folder (`images_folder`)
    items_to_send: int = 0
    items_sent: int = 0
    items_unchanged: int = 0
    images_to_send: int = 0
    images_sent: int = 0
    products_refused_by_api: int = 0
    rows_waiting: int = 0  # update rows for variants not sent yet: kept in the ledger until a file brings them
    rows_abandoned: int = 0  # rows that waited longer than update.wait_days, dropped
    products_vanished: int = 0  # complete files: products sent before that the file lacks
    products_deleted: int = 0  # ... queued for deletion (vanished: delete, within max_vanished)
    product_models: int = 0  # models files: product models kept for the products naming them, never sent alone


@dataclass
class ReadInfo:
    """How the file was read (recorded so a person can see what the reader decided).

    `encoding_reason`: why the reader chose that encoding; `header_row`: the row the column
    names came from (as a spreadsheet numbers it; None when the file has no header row);
    `columns`: the columns found there (or named by position).
    """

    format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    rows: int = 0
    encoding_reason: str | None = None
    header_row: int | None = None
    columns: list[str] = field(default_factory=list)


@dataclass
class Problems:
    """Problems in the order found: the first MAX_PROBLEMS in full, every one in the counts."""

    stored: list[Problem] = field(default_factory=list)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)

    def add(self, problems: Iterable[Problem]) -> None:
        """Count every problem; keep the first MAX_PROBLEMS. A problem with `count` stands for that many."""
        for problem in problems:
            number = problem.count or 1
            self.by_kind[problem.kind] += number
            self.by_severity[problem.severity] += number
            if len(self.stored) < MAX_PROBLEMS:
                self.stored.append(problem)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def truncated(self) -> int:
        """Problems not listed one by one (a stored summary lists none of the ones it stands for)."""
        listed = sum(1 for p in self.stored if p.count is None)
        return self.total - listed


@dataclass
class Report:
    """Everything a person (and `watch`, `status`) learns about one file, from claim to filing.

    `header` and `rejected` are the file's columns and its refused rows with their reasons:
    they go to the rejected-rows CSV, not into the JSON.
    """

    file: str
    status: Status = "planned"
    sha256: str | None = None
    size: int | None = None
    mapping_name: str | None = None
    mapping_sha256: str | None = None
    read: ReadInfo = field(default_factory=ReadInfo)
    counts: Counts = field(default_factory=Counts)
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))
    requests: Counter[str] = field(default_factory=Counter)  # HTTP status -> requests made for this file
    problems: Problems = field(default_factory=Problems)
    error_kind: str | None = None  # errors.ErrorKind, when the file was not pushed
    error_message: str | list[str] | None = None
    attempts: int | None = None  # how often the file was tried before it was given up on
    message: str = ""  # one line for a person: what happened to the file
    started_at: float | None = None
    finished_at: float | None = None
    duplicate_of: dict[str, Any] | None = None
    backlog: dict[str, Any] | None = None
    placed_as: str | None = None
    images_folder: str | None = None  # where the file's images were looked for
    # When the very file was pushed before (same content, name, date, mapping): when that push
    # finished. The counts, timings and problems are then that push's; nothing was sent now.
    already_pushed: str | None = None
    rows: RowAccount | None = None  # where every row read went (connector.accounting)
    connector_version: str = __version__
    header: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    header_row: int = 1  # where the mapping finds the header: the rejected workbook puts its header there too
    # the delimiter and encoding the mapping names (source.delimiter, source.encoding; None:
    # detected): the rejected CSV is written with them, so the same mapping reads it back
    csv_delimiter: str | None = None
    csv_encoding: str | None = None
    # the mapping's `source.sheet` when it is a number: the rejected workbook's rows go on that sheet
    sheet_position: int | None = None

    def outcome(self, *, strict: bool = False) -> str:
        """How the file's run ended, as one word: the key of cli.EXIT_CODES.

        Its status, or its error kind where that says more (a broken mapping is the setup's
        fault), "refused_by_api" when the API refused every item it was sent, and with
        `strict` "rows_refused" when any row or item was refused.
        """
        if self.error_kind in ("mapping", "setup"):
            return self.error_kind
        c = self.counts
        if self.status == "done" and c.items_to_send and not c.items_sent and c.products_refused_by_api:
            return "refused_by_api"
        if self.status == "done" and strict and (self.rejected or c.products_refused_by_api):
            return "rows_refused"
        return self.status

    def fail(self, status: Status, kind: str, message: str | list[str]) -> Report:
        """Mark the file as not pushed (refused or waiting) and say why; returns self."""
        self.status, self.error_kind, self.error_message = status, kind, message
        return self

    def to_json(self) -> dict[str, Any]:
        """The report as written to `<name>.report.json` (the shape in this module's docstring)."""
        out: dict[str, Any] = {
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            "status": self.status,
            "mapping": {"name": self.mapping_name, "sha256": self.mapping_sha256},
            "read": asdict(self.read),
            "counts": asdict(self.counts),
            "rows": self.rows.as_dict() if self.rows else None,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "requests": {"total": sum(self.requests.values()), "by_status": dict(self.requests)},
            "problems": [p.as_dict() for p in self.problems.stored],
            "problems_truncated": self.problems.truncated,
            "problems_by_kind": dict(self.problems.by_kind.most_common()),
            "problems_by_severity": dict(self.problems.by_severity.most_common()),
            "started_at": iso_utc(self.started_at) if self.started_at else None,
            "finished_at": iso_utc(self.finished_at) if self.finished_at else None,
            "connector_version": self.connector_version,
        }
        if self.error_kind:
            out["error"] = {"kind": self.error_kind, "message": self.error_message}
            if self.attempts:
                out["error"]["attempts"] = self.attempts
        for key in ("message", "duplicate_of", "backlog", "placed_as", "images_folder"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.already_pushed:
            out["already_pushed"] = {"finished_at": self.already_pushed, "note": "nothing was sent now; the "
                                     "counts, timings and problems are those of that push"}
        return out

    def to_ledger(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What the ledger keeps of a journaled file: the report's JSON and its rejected rows."""
        rows = [[r.row.line, r.row.sheet, dict(r.row.cells), r.reason, r.column, r.row.row_number]
                for r in self.rejected]
        return self.to_json(), {"header": self.header, "rows": rows, "header_row": self.header_row,
                                 "csv_delimiter": self.csv_delimiter, "csv_encoding": self.csv_encoding,
                                 "sheet_position": self.sheet_position}

    @classmethod
    def from_ledger(cls, data: dict[str, Any], rejected: dict[str, Any], *, started_at: float | None = None,
                    finished_at: float | None = None) -> Report:
        """A report the ledger kept (see `to_ledger`); times come from the ledger's columns."""
        report = cls(file=data.get("file", "file"), status=data.get("status") or "planned",
                     sha256=data.get("sha256"), size=data.get("size"),
                     mapping_name=(data.get("mapping") or {}).get("name"),
                     mapping_sha256=(data.get("mapping") or {}).get("sha256"),
                     connector_version=data.get("connector_version", __version__),
                     started_at=started_at, finished_at=finished_at)
        known = {f.name for f in fields(ReadInfo)}
        report.read = ReadInfo(**{k: v for k, v in (data.get("read") or {}).items() if k in known})
        known = {f.name for f in fields(Counts)}
        report.counts = Counts(**{k: v for k, v in (data.get("counts") or {}).items() if k in known})
        report.timings.update(data.get("timings_s") or {})
        report.rows = RowAccount.from_dict(data["rows"]) if data.get("rows") else None
        report.requests.update((data.get("requests") or {}).get("by_status") or {})
        report.problems.stored = [Problem.from_dict(p) for p in data.get("problems") or []]
        report.problems.by_kind.update(data.get("problems_by_kind") or {})
        report.problems.by_severity.update(data.get("problems_by_severity") or {})
        error = data.get("error") or {}
        report.error_kind, report.error_message = error.get("kind"), error.get("message")
        report.attempts = error.get("attempts")
        report.message = data.get("message") or ""
        report.duplicate_of, report.backlog = data.get("duplicate_of"), data.get("backlog")
        report.placed_as = data.get("placed_as")
        report.images_folder = data.get("images_folder")
        report.already_pushed = (data.get("already_pushed") or {}).get("finished_at")
        report.header = list(rejected.get("header") or [])
        header_row = rejected.get("header_row")
        report.header_row = 1 if header_row is None else header_row  # 0: a file without a header row
        report.csv_delimiter, report.csv_encoding = rejected.get("csv_delimiter"), rejected.get("csv_encoding")
        report.sheet_position = rejected.get("sheet_position")
        # [line, sheet, cells, reason] then, in later ledgers, the refusing column and the row number
        report.rejected = [Rejected(Row(line, cells, sheet, *rest[1:2]), reason, *rest[:1])
                           for line, sheet, cells, reason, *rest in rejected.get("rows") or []]
        return report


def write_report_files(report: Report, stem: Path, *, sidecar: str = ".report.json") -> Path:
    """Write `<stem><sidecar>` (the JSON) and, when rows were refused, `<stem>.rejected.csv` and
    `<stem>.rejected.xlsx`.

    The one writer of report files: `push` and `check` write beside the report folder's file
    name, `watch` beside the file it archives or fails. Returns the JSON's path.
    """
    path = Path(f"{stem}{sidecar}")
    write_json_atomic(path, report.to_json())
    if report.rejected:
        write_rejected_csv(Path(f"{stem}.rejected.csv"), report.header, report.rejected,
                           header_row=report.header_row, delimiter=report.csv_delimiter or ",",
                           encoding=report.csv_encoding, file=report.file)
        write_rejected_xlsx(Path(f"{stem}.rejected.xlsx"), report.header, report.rejected, sheet=report.read.sheet,
                            header_row=report.header_row, file=report.file, sheet_position=report.sheet_position)
    return path


def write_rejected_csv(path: Path, header: list[str], rejected: list[Rejected], *, header_row: int = 1,
                       delimiter: str = ",", encoding: str | None = None, file: str = "") -> None:
    """Write the refused rows to `path`: the original columns, then `sheet` (when several sheets
    were read), `row`, `line` and `reason`.

    `row` is where a person finds the row in a spreadsheet (the Excel row; for a CSV the record
    number counting the header), `line` the physical line of a CSV where the record starts.
    The layout is the export's, so the same mapping reads the file back: the header on
    `header_row` (under a line saying what the file is), and for a file without a header row
    (`header_row` 0) no header at all, the added columns after the data where positions do not
    reach them; the `delimiter` and `encoding` the mapping names, if it does. Text that a
    spreadsheet would run as a formula is neutralised (see `neutralise`). Otherwise
    comma-separated UTF-8 with a BOM, so Excel shows accents right. Written atomically.
    """
    sheets = any(row.sheet for row, _ in rejected)
    extra = _unique(["sheet", "row", "line", "reason"] if sheets else ["row", "line", "reason"], header)
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter)
    if header_row > 1:
        writer.writerow([f"Rows of {file or 'the export'} that were refused: fix them and drop this file in the inbox"])
        writer.writerows([] for _ in range(header_row - 2))
    if header_row:
        writer.writerow([neutralise(name) for name in header + extra])
    for row, reason in rejected:
        number = row.row_number if row.row_number is not None else row.line
        writer.writerow([neutralise(row.cells.get(name, "")) for name in header]
                        + ([row.sheet or ""] if sheets else []) + [str(number), str(row.line), neutralise(reason)])
    # a character the named code page lacks (only ever in a reason) becomes "?"
    write_atomic(path, out.getvalue().encode(encoding or "utf-8-sig", errors="replace"))


# Refusals beyond this many are highlighted without a comment: each comment is a drawn shape
# that costs ~2 ms to write and memory until the file is saved (10,000 comments: +20 s, +50 MiB).
MAX_COMMENTS = 1_000
# Refused rows beyond this many are left to rejected.csv (which holds them all): openpyxl writes
# some 2,000 rows of 14 cells a second here (100,000 rows: 58 s), and a file refused by the ten
# thousand is a mapping to fix, not rows to retype. With both bounds, 100,000 refused rows
# take 10 s and 15 MiB over the rows themselves (bench/bench_rejected.py).
MAX_WORKBOOK_ROWS = 20_000
_CELL_MAX = 32_767  # Excel's limit on the text of one cell
_NOT_IN_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # control characters a worksheet cannot hold
_SHEET_NAME_BAD = re.compile(r"[\[\]:*?/\\]")


def write_rejected_xlsx(path: Path, header: list[str], rejected: list[Rejected], *, sheet: str | None = None,
                        header_row: int = 1, file: str = "", max_comments: int = MAX_COMMENTS,
                        max_rows: int = MAX_WORKBOOK_ROWS, sheet_position: int | None = None) -> None:
    """Write the refused rows as a workbook a person fixes in Excel and drops back into the inbox.

    The same columns as the export (so the same mapping reads the fixed file), then `line` and
    `reason`. Every cell is text, formatted as text (`00123` keeps its zeros, a barcode stays
    digits, `=1+1` stays those characters, never a formula); the cell that caused each
    refusal is highlighted with the reason as its comment (the reason cell when no cell did;
    comments for the first `max_comments` refusals, highlights for all). The header is on row
    `header_row`, where the mapping looks for it, under a line saying what the file is; with
    `header_row` 0 (a file without a header row) there is none, and each value stays in the
    Excel column whose number named it. Rows read from several sheets go to sheets of those
    names. A mapping that reads a sheet by its position (`sheet_position`, `sheet: 1`) finds the
    rows at that position: the sheets before it only say where the rows are. Written row by row
    (openpyxl's write-only mode) to a temporary file, then renamed into place. Past `max_rows`
    refused rows the rest are left to rejected.csv, and a last sheet says so.
    """
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    groups: dict[str | None, list[Rejected]] = {}
    for refused in rejected[:max_rows]:
        groups.setdefault(refused.row.sheet, []).append(refused)
    titles: set[str] = set()
    comments = max_comments
    first = _sheet_title(next(iter(groups), None) or sheet)
    for i in range(sheet_position or 0):
        title = "read me" if i == 0 else f"read me ({i + 1})"
        titles.add(title)
        workbook.create_sheet(title).append([
            f"The refused rows of {file or 'the export'} are on sheet {first!r}: sheet {sheet_position} counted "
            f"from 0, where the mapping (sheet: {sheet_position}) reads them. Fix them there and drop this file "
            "in the inbox."])
    for name, rows in groups.items():
        title = _sheet_title(name or sheet)
        while title.casefold() in titles:  # two names that differ only in characters Excel refuses
            title = f"{title[:27]} ({len(titles) + 1})"
        titles.add(title.casefold())
        comments -= _fill_sheet(workbook.create_sheet(title), _sheet_header(header, rows) if name else header,
                                rows, header_row=header_row, file=file, comments=comments)
    if len(rejected) > max_rows:  # a sheet of its own, last: a mapping reads the first sheet only
        note = workbook.create_sheet("more rows")
        note.append([f"{len(rejected):,} rows were refused; the first {max_rows:,} are on the "
                     f"{'first sheet' if len(groups) == 1 else 'sheets before this one'}, and "
                     f"all of them are in {file or 'the export'}.rejected.csv"])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            workbook.save(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # like the other report files: for support staff to read
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _sheet_header(header: list[str], rows: list[Rejected]) -> list[str]:
    """The columns of one sheet of several read: those its rows have (each sheet has its own
    header, so its fixed rows read back under it), in the order of the file's columns."""
    return [c for c in header if any(c in r.row.cells for r in rows)] or header


def _fill_sheet(ws: Any, header: list[str], rejected: list[Rejected], *, header_row: int, file: str,
                comments: int) -> int:
    """Write one sheet of refused rows (see write_rejected_xlsx); returns how many comments it used."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import Cell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    extra = _unique(["line", "reason"], header)
    lead = _first_column(header) if not header_row else 0
    if header_row:
        ws.freeze_panes = f"A{header_row + 1}"
    for i in range(lead + 1, lead + len(header) + len(extra) + 1):  # typed-in values stay text too
        ws.column_dimensions[get_column_letter(i)].number_format = "@"
    flagged = PatternFill("solid", fgColor="FFC7CE")  # Excel's "bad" red
    bold = Font(bold=True)

    def text(value: str) -> Cell:
        """A cell holding `value` as text, formatted as text so what a person types there stays text."""
        if _NOT_IN_XML.search(value) or len(value) > _CELL_MAX:
            value = _NOT_IN_XML.sub("", value)[:_CELL_MAX]
        cell = WriteOnlyCell(ws, value=value or None)
        if value:
            cell.data_type = "s"  # text even where openpyxl would guess a formula (=...) or an error (#N/A)
        cell.number_format = "@"
        return cell

    if header_row > 1:
        ws.append([text(f"Rows of {file or 'the export'} that were refused: fix the highlighted cells (the "
                        "reason is in each cell's comment and in the reason column) and drop this file in the inbox")])
        for _ in range(header_row - 2):
            ws.append([])
    if header_row:
        heading = []
        for name in header + extra:
            cell = text(name)
            cell.font = bold
            heading.append(cell)
        ws.append(heading)
    position = {name: i for i, name in enumerate(header)}
    used = 0
    for refused in rejected:
        row, reason = refused
        values: list[Cell | None] = [None] * lead
        values += [text(row.cells.get(name, "")) for name in header]
        if not header_row and header and values[lead].value is None:  # type: ignore[union-attr]
            # a file without a header row names its columns from the first one holding a value:
            # a blank there in every row would shift every name by one (a space reads as blank)
            values[lead] = text(" ")
        values += [text(str(row.line)), text(reason)]
        cell = values[lead + position.get(getattr(refused, "column", None) or "", len(header) + 1)]
        assert cell is not None
        cell.fill = flagged
        if used < comments:
            cell.comment = Comment(reason, "connector", width=300, height=80)
            used += 1
        ws.append(values)
    return used


def _first_column(header: list[str]) -> int:
    """Columns left of a headerless file's first one: its positional names are Excel column numbers
    (a sheet starting at column C names it "3"), so the values go back to the same columns."""
    for i, name in enumerate(header):
        if name.isdigit():
            return max(int(name) - 1 - i, 0)
    return 0


def _sheet_title(sheet: str | None) -> str:
    """The sheet the rows came from (a mapping's `sheet:` finds it again), as Excel allows a title."""
    title = _SHEET_NAME_BAD.sub("_", sheet or "").strip("'")[:31]
    return title or "rejected"


def neutralise(text: str) -> str:
    """`text` made safe to open in a spreadsheet: a leading `'` when it could run as a formula.

    >>> neutralise("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> neutralise("-2.50")
    '-2.50'
    """
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def summarise(report: Report) -> str:
    """A few lines for a terminal: file, status, what was sent, problems by kind, time.

    A file pushed before says so first; that push's figures follow, marked as that push's.
    """
    if report.already_pushed:
        earlier = _summary_lines(report)
        earlier[0] = f"  that push ({report.already_pushed}): {earlier[0].split(': ', 1)[1]}"
        return "\n".join([f"{report.file}: already pushed on {report.already_pushed}: nothing to send "
                          "(push --full sends every item again)",
                          *earlier[:1], *("  " + line for line in earlier[1:])])
    return "\n".join(_summary_lines(report))


def _summary_lines(report: Report) -> list[str]:
    c, read = report.counts, report.read
    source = ", ".join(str(v) for v in (read.format, read.encoding, _delimiter_name(read.delimiter), read.sheet) if v)
    total = report.timings.get("total")
    lines = [
        f"{report.file}: {report.status}" + (f" in {total:.1f} s" if total else ""),
        f"  read: {read.rows} rows" + (f" ({source})" if source else ""),
        f"  built: {c.products} products, {c.variants} variants, {c.images_found} images"
        f"; held back: {c.products_held_back} products",
        f"  rows refused: {c.rows_refused}, skipped: {c.rows_skipped}; images refused: {c.images_refused}, "
        f"missing: {c.images_missing}" + (f" (not in {report.images_folder})" if c.images_missing else ""),
    ]
    if c.rows_waiting:
        lines.append(_waiting_line(report))
    if c.product_models:
        lines.append(f"  product models: {c.product_models}, kept for the products that name them "
                     "(sent as those products, never alone)")
    if report.rows:
        lines[2:2] = [f"  rows: {report.rows.line()}",
                      *(f"    skipped {n} by {rule}" for rule, n in report.rows.skipped.items())]
    # an encoding chosen on thin evidence: the one problem that says how to fix the whole file
    lines.extend(f"  note: {p.reason}" for p in report.problems.stored
                 if p.kind == "encoding" and p.severity == "warning")
    if c.items_sent or c.images_sent or c.items_unchanged:
        lines.append(f"  sent: {c.items_sent} items, {c.images_sent} images; unchanged: {c.items_unchanged} items")
    if c.products_vanished or c.products_deleted:  # a push that deleted products says so, problems or not
        lines.append(f"  products vanished (not in this complete file): {c.products_vanished}; "
                     f"deleted: {c.products_deleted}")
    by_kind = report.problems.by_kind.most_common()
    lines.append("  problems: " + (", ".join(f"{n} {kind}" for kind, n in by_kind) if by_kind else "none"))
    return lines


def _waiting_line(report: Report) -> str:
    """Rows that wait for a product another file brings, which products, and what becomes of them."""
    codes = list(dict.fromkeys(p.product for p in report.problems.stored if p.kind == "waiting" and p.product))
    named = f" (for products {', '.join(codes[:5])}{', ...' if len(codes) > 5 else ''})" if codes else ""
    then = ("a push sends them joined with those a file brought before, and keeps the others until a file "
            "brings them" if report.status == "checked" else "kept, and sent when a file brings their product")
    return f"  rows waiting for their product: {report.counts.rows_waiting}{named}: {then}"


def _unique(names: list[str], taken: list[str]) -> list[str]:
    """`names`, each prefixed with `rejected_` until it clashes with none of `taken`."""
    result = []
    for name in names:
        while name in taken:
            name = "rejected_" + name
        result.append(name)
    return result


def _delimiter_name(delimiter: str | None) -> str | None:
    if delimiter is None:
        return None
    names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
    return f"{names.get(delimiter, repr(delimiter))}-separated"
