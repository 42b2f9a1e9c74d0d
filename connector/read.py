"""Read one export file into rows of text: CSV (any common encoding and delimiter), XLSX, XLS, ODS.

    table = read_table(Path("inbox/products.csv"))
    table.header     -> ["sku", "price", ...]
    table.rows[0]    -> Row(line=2, cells={"sku": "00123", "price": "1 299,50"})
    table.problems   -> records refused while reading (bad bytes, extra values), with their lines

Every cell comes back as text: `00123`, `NA`, `1E5`, `TRUE` stay exactly as written, and typed
workbook cells are turned into text the way a person reads them (479.0 -> "479", dates -> ISO).
Types are the mapping's job, never the reader's (DESIGN.md invariant 5).

A problem with the whole file (unreadable, no header, duplicate names in source.columns, a hostile
workbook, mostly NUL bytes, a quote left open over the rows after it, more rows than
`max_rows`) raises ReadError with one line for a person; a problem with one record (bad bytes,
extra values, a last record cut short) refuses that record only and is listed in
`Table.problems`: the first MAX_LISTED_PER_KIND of each kind, then one Problem per kind whose
`count` says how many more. Time and memory follow the file's size, never its damage.
The rules, for a person: docs/read.md.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import re
import zipfile
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import chain, islice
from pathlib import Path
from typing import Any

from connector.columns import column_key, normalise_name, positional_names
from connector.encoding import Choice, choose_encoding, legacy_candidates
from connector.errors import ReadError
from connector.model import Cells, Columns, Problem, Row, Table

CSV_SUFFIXES = {".csv", ".txt", ".tsv", ".tab"}
WORKBOOK_SUFFIXES = {".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls", ".ods": "ods"}
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_SAMPLE_RECORDS = 30  # records looked at to choose the delimiter
DELIMITER_SAMPLE_CHARS = 256 * 1024
FIND_HEADER_WITHIN = 50  # rows searched for the header when `find_header` is given
# Rows of one file held in memory at once (the default of `limits.max_rows`): a row costs
# ~4 KB once read, mapped and checked (bench/bench_pipeline.py: 415 MiB for 100k rows), so
# a file stays within ~2 GB; a 1,000,000-row workbook used to peak at 4.9 GB.
MAX_ROWS = 500_000

# Pre-flight limits for zip workbooks (reference/reliability.md section 3a): calamine does not
# bound memory, and a 4.8 KB file declaring cell XFD1048576 aborts the whole process.
MAX_ZIP_ENTRIES = 10_000
MAX_UNCOMPRESSED = 500 * 1024 * 1024
MAX_RATIO = 200  # per entry, for entries over RATIO_MIN_SIZE
RATIO_MIN_SIZE = 1024 * 1024
MAX_SHEET_CELLS = 30_000_000  # rows x columns of one sheet's used range (calamine keeps it dense)
EXCEL_MAX_ROWS, EXCEL_MAX_COLS = 1_048_576, 16_384

_SEP_LINE = re.compile(r"sep=(.)[ \t]*(?:\r\n|\n|\r)")


# --------------------------------------------------------------------------- public API


def read_table(
    path: Path,
    *,
    header_row: int = 1,
    find_header: list[str] | None = None,
    columns: Sequence[str] = (),
    sheet: str | int | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    legacy_encoding: str | Sequence[str] | None = None,
    max_rows: int | None = MAX_ROWS,
) -> Table:
    """Read a CSV/XLSX/XLS/ODS file into a Table of text rows.

    header_row:  1-based row holding the column names (after a `sep=` line in a CSV);
                 0: the file has no header row, every row is data (`source.header: none`).
    find_header: instead of header_row, the first of the first 50 rows whose cells contain all
                 these names (for exports with banner rows above the table).
    columns:     with header_row 0: the names of the first columns; the others (all of them
                 when empty) are named by their 1-based position: "1", "2", ...
    sheet:       workbooks only: a name, a 0-based index, None for the first, "*" for all.
    delimiter, encoding: CSV only; detected when None.
    legacy_encoding: the code page, or the candidate code pages in order of preference, for CSV
                 files that are not UTF-8/UTF-16 (None: cp1252, mac_roman, cp1250, latin-1).
    max_rows:    refuse a file with more data rows than this (`limits.max_rows`); None: no limit.
    Raises ReadError for file-level problems; refused records are in Table.problems.
    """
    path = Path(path)
    if header_row < 0:
        raise ReadError(f"{path.name}: header_row must be 1 or more (0: no header row), not {header_row}")
    rule = _HeaderRule(header_row, list(find_header) if find_header and header_row else None, tuple(columns))
    try:
        return _read_file(path, rule, sheet, delimiter, encoding, legacy_candidates(legacy_encoding), max_rows)
    except OSError as exc:
        raise ReadError(f"{path.name}: cannot read the file ({exc.strerror or exc})") from exc


@dataclass(frozen=True)
class _HeaderRule:
    """Where the column names are: row `row` (0: no header row), or the row holding `find`."""

    row: int
    find: list[str] | None
    columns: tuple[str, ...] = ()


def _read_file(path, rule: _HeaderRule, sheet, delimiter, encoding, legacy_encoding, max_rows) -> Table:
    kind = _file_kind(path)
    if kind == "csv":
        return _read_csv(path.name, path.read_bytes(), rule, delimiter, encoding, legacy_encoding, max_rows)
    return _read_workbook_isolated(path, kind, rule, sheet, max_rows)


# A damaged or hostile workbook can make the spreadsheet library allocate without bound and
# abort the whole process, which no `except` catches (reference/reliability.md §3a, E3). So
# workbooks are read in a child process with its own memory and time limits: the worst a
# file can do is end the child, and it is refused with a reason. (Where processes cannot be
# forked, e.g. on Windows, workbooks are read in-process after the pre-flight checks alone.)
WORKBOOK_MEMORY_LIMIT = 4 * 1024**3  # bytes of address space; a 100k-row x 25-column XLSX needs ~0.5 GB
WORKBOOK_TIME_LIMIT = 600.0  # seconds


def _read_workbook_isolated(path: Path, kind: str, rule: _HeaderRule, sheet, max_rows=None) -> Table:
    if "fork" not in multiprocessing.get_all_start_methods():
        return _read_workbook(path, kind, rule, sheet, max_rows=max_rows)
    _preflight(path, kind)  # cheap refusals first, with their precise reasons
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_workbook_child, args=(send, path, kind, rule, sheet, max_rows),
                            name="connector-workbook-reader", daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(WORKBOOK_TIME_LIMIT):
            raise ReadError(f"{path.name}: reading the workbook took longer than {WORKBOOK_TIME_LIMIT:.0f} s")
        outcome, payload = receive.recv()
    except EOFError:
        child.join(5)
        raise ReadError(f"{path.name}: the workbook could not be read: the reader stopped (exit code "
                        f"{child.exitcode}); the file is damaged or needs more than "
                        f"{WORKBOOK_MEMORY_LIMIT // 1024**3} GB of memory") from None
    finally:
        receive.close()
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    if outcome == "refused":
        raise ReadError(payload)
    header, fmt, sheet_names, problems, header_row, twice, headers, rows = payload
    table = Table(header=header, rows=[], format=fmt, sheet=sheet_names, problems=problems, header_row=header_row,
                  twice=twice)
    columns = {row_sheet: Columns(names) for row_sheet, names in headers.items()}  # each sheet its own
    table.rows = [Row(line, Cells(columns[row_sheet], tuple(values)), row_sheet, line)
                  for line, row_sheet, values in rows]
    return table


def _workbook_child(send, path: Path, kind: str, rule: _HeaderRule, sheet, max_rows=None) -> None:
    """In the child: read the workbook under limits and send back plain data (or a refusal)."""
    import faulthandler

    faulthandler.disable()  # an abort here is expected and reported by the parent, not dumped to stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKBOOK_MEMORY_LIMIT, WORKBOOK_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass  # no limit to be had here: the pre-flight checks still apply
    try:
        table = _read_workbook(path, kind, rule, sheet, preflight=False,  # the parent did it
                               max_rows=max_rows)
        # Each sheet's rows have that sheet's columns (all sheets read: a column one sheet lacks is
        # missing there, and the mapping matches names on each sheet's own header).
        headers: dict[str | None, list[str]] = {}
        for row in table.rows:
            if row.sheet not in headers:
                headers[row.sheet] = list(row.cells)
        # Equal texts stay one object through pickling, so the parent keeps the sharing.
        rows = [(row.line, row.sheet, list(row.cells.values())) for row in table.rows]
        send.send(("read", (table.header, table.format, table.sheet, table.problems, table.header_row,
                            table.twice, headers, rows)))
    except ReadError as exc:
        send.send(("refused", str(exc)))
    except MemoryError:
        send.send(("refused", f"{path.name}: the workbook needs more than "
                              f"{WORKBOOK_MEMORY_LIMIT // 1024**3} GB of memory to read"))
    finally:
        send.close()


def _file_kind(path: Path) -> str:
    """csv, xlsx, xls or ods, from the suffix; an unknown suffix is judged by the first bytes."""
    suffix = path.suffix.lower()
    if suffix in WORKBOOK_SUFFIXES:
        return WORKBOOK_SUFFIXES[suffix]
    if suffix in CSV_SUFFIXES:
        return "csv"
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xls"
    return "csv"


# --------------------------------------------------------------------------- header names


def _name_columns(cells: list[str], where: str, first_col: int = 0) -> list[str]:
    """Column names from header cells; blanks become column_<N>; duplicates are a ReadError."""
    names = [normalise_name(c) or f"column_{first_col + i + 1}" for i, c in enumerate(cells)]
    counts = Counter(names)
    dupes = [n for n in counts if counts[n] > 1]
    if dupes:
        listed = ", ".join(repr(n) for n in dupes)
        raise ReadError(f"{where}: duplicate column names in the header: {listed}")
    return names


def _name_header(table: Table, cells: list[str], line: int, row: int, sheet: str | None = None,
                 first_col: int = 0) -> list[str]:
    """Column names from a header row's cells; blanks become column_<N>.

    A name the header holds twice (an ERP report's two `Notes` columns) keeps it for its first
    column; the later ones are read as `Notes (2)`, `Notes (3)`, so no value is lost. Which one
    a mapping naming `Notes` means is not clear: `table.twice` lists these names, and a mapping
    that reads one refuses the file (pipeline); otherwise the header gets a warning.
    """
    names = [normalise_name(c) or f"column_{first_col + i + 1}" for i, c in enumerate(cells)]
    counts = Counter(names)
    if len(counts) == len(names):
        return names
    taken, seen = set(names), Counter[str]()
    for i, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            k = seen[name]
            while f"{name} ({k})" in taken:
                k += 1
            names[i] = f"{name} ({k})"
            taken.add(names[i])
    for name in (n for n in counts if counts[n] > 1):
        positions = [first_col + i + 1 for i, c in enumerate(cells) if (normalise_name(c) or "") == name]
        table.twice.setdefault(name, positions)
        given = ", ".join(names[p - first_col - 1] for p in positions)
        on = f"sheet {sheet!r}, " if sheet else ""
        table.problems.append(Problem(
            kind="header", severity="warning", line=line, row_number=row, sheet=sheet,
            reason=f"{on}the header names the column {name!r} {len(positions)} times (columns "
                   f"{', '.join(map(str, positions))}); they are read as {given}, and a mapping that reads "
                   f"{name!r} is refused as ambiguous"))
    return names


# A cell no header holds: a code with leading zeros, a number with decimals, a long number
# (a barcode, an article number). Small whole numbers and years can be column names.
_DATA_NUMBER = re.compile(r"[+-]?(?:0\d+|\d[\d .']*[.,]\d+|\d{5,})")


def _warn_if_data(table: Table, header: list[str], row: int, line: int, sheet: str | None = None) -> None:
    """Warn when the header row holds values no header has (two or more codes, prices or
    barcodes): the file probably has no header row, and the row taken for it is a product
    that is not read (set `source.header: none`)."""
    numbers = [name for name in header if _DATA_NUMBER.fullmatch(name)]
    if len(numbers) >= 2:
        shown = ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")
        table.problems.append(Problem(
            kind="header", severity="warning", line=line, row_number=row, sheet=sheet,
            reason=f"the header row (row {row}) holds numbers ({shown}): if the file has no header row, "
                   f"that row is data and is not read; say so in the mapping with `source: {{header: none}}` "
                   f"and name the columns by position or with source.columns"))


def _is_header(cells: list[str], wanted: set[str]) -> bool:
    return wanted <= {column_key(c) for c in cells}


# --------------------------------------------------------------------------- CSV: bytes -> text

# Damaged bytes are reported with their place, but a hostile file can hold millions of them
# (20 MB of NULs after a power cut): the first few of each kind are listed one by one, the
# rest only counted, so the reader's time and memory follow the file's size, not the damage.
MAX_LISTED_PER_KIND = 1000
MOSTLY_NUL = 0.5  # a CSV more than half NUL bytes is refused as a whole
UTF16_SAMPLE = 64 * 1024  # bytes looked at to recognise UTF-16 without a byte-order mark

# One invalid UTF-8 sequence as the strict decoder reports it (its "maximal subpart": a lead
# byte and the continuation bytes that still fitted it, else one byte), written over the lone
# surrogates that the surrogateescape handler turns each invalid byte into (0x80-0xff ->
# U+DC80-U+DCFF). Valid UTF-8 never decodes to a lone surrogate, so only bad bytes match.
_UTF8_ERROR = re.compile(
    "\udce0[\udca0-\udcbf]?|\udced[\udc80-\udc9f]?|[\udce1-\udcec\udcee\udcef][\udc80-\udcbf]?"
    "|\udcf0(?:[\udc90-\udcbf][\udc80-\udcbf]?)?|[\udcf1-\udcf3](?:[\udc80-\udcbf][\udc80-\udcbf]?)?"
    "|\udcf4(?:[\udc80-\udc8f][\udc80-\udcbf]?)?|[\udc80-\udcff]"
)
_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass
class _Decoded:
    text: str
    encoding: str
    escaped: bool = False  # invalid UTF-8 bytes are in the text as surrogate escapes
    bom_bytes: int = 0  # bytes of a UTF-8 BOM before line 1 (byte columns count them)
    reason: str = ""  # why this encoding, for the report
    doubt: str | None = None  # the encoding is not certain: a warning saying how to name it

    def byte_length(self, text: str) -> int:
        """How many bytes of the file `text` came from (characters for UTF-16)."""
        if text.isascii() or _is_utf16(self.encoding):
            return len(text)
        utf8 = self.escaped or self.encoding.lower().replace("_", "-").startswith(("utf-8", "utf8"))
        return len(text.encode("utf-8" if utf8 else self.encoding, "surrogateescape"))


def _decode(name: str, data: bytes, encoding: str | None, legacy: tuple[str, ...]) -> _Decoded:
    """Bytes -> text, never replacing a character silently.

    Explicit encoding: strict. Else a UTF-16 BOM, UTF-16 without a BOM (recognised by its NUL
    bytes), a UTF-8 BOM, strict UTF-8; then, judged on the whole file (connector/encoding.py),
    either UTF-8 with a few bad records (their bytes kept as surrogate escapes, the records
    refused later) or the legacy code page among `legacy` that reads it (strict).
    A file mostly made of NUL bytes is refused here, whatever its encoding.
    """
    if encoding and _is_utf16(encoding):
        return _decode_utf16(name, data, encoding, reason="named by source.encoding in the mapping")
    if not encoding and data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode_utf16(name, data, "utf-16", reason="the file starts with a UTF-16 byte-order mark")
    utf16 = None if encoding else _utf16_without_bom(data)
    if utf16:
        label = f"UTF-16 without a byte-order mark ({utf16.upper()})"
        return _decode_utf16(name, data, utf16, label,
                             reason=f"{label}: a NUL byte in one half of most character pairs")
    if b"\x00" in data:  # a memchr; counting every file's bytes would cost more than this check
        _refuse_mostly_nul(name, data.count(0), len(data))
    if encoding:
        decoded = _decode_strict(name, data, encoding)
        decoded.reason = "named by source.encoding in the mapping"
        return decoded
    bom = data.startswith(b"\xef\xbb\xbf")
    utf8 = "utf-8-sig" if bom else "utf-8"
    try:
        return _Decoded(data.decode(utf8), utf8, bom_bytes=3 * bom, reason="the whole file is valid UTF-8")
    except UnicodeDecodeError:
        pass
    try:
        choice, text = choose_encoding(data, legacy, bom=bom)
    except LookupError as exc:  # the settings and the mapping refuse unknown names; a direct caller may not
        raise ReadError(f"{name}: unknown encoding in legacy_encoding ({exc})") from exc
    if text is None:
        try:
            _decode_strict(name, data, legacy[0])  # raises, naming the first byte the first candidate lacks
        except ReadError as exc:
            if len(legacy) == 1:
                raise
            raise ReadError(f"{exc}, and no other legacy_encoding candidate ({', '.join(legacy[1:])}) "
                            f"reads the file either") from exc
        raise ReadError(f"{name}: no legacy_encoding candidate ({', '.join(legacy)}) reads the file")
    decoded = _Decoded(text, choice.encoding, escaped=choice.damaged, bom_bytes=3 * bom, reason=choice.reason)
    if choice.uncertain:
        decoded.doubt = _doubt(choice, legacy)
    return decoded


def _doubt(choice: Choice, legacy: tuple[str, ...]) -> str:
    """The warning for an encoding chosen on thin or mixed evidence: how to name the right one."""
    other = next((e for e in (*choice.others, *legacy) if e != choice.encoding), "cp1252")
    return (f"the file was read as {choice.encoding}, but that is not certain ({choice.reason}); if accented "
            f"letters look wrong, name the file's encoding in the mapping, e.g. `source: {{encoding: {other}}}` "
            f"(or `source: {{encoding: {choice.encoding}}}` to confirm this one)")


def _is_utf16(encoding: str) -> bool:
    return encoding.lower().replace("_", "-").startswith(("utf-16", "utf16"))


def _decode_strict(name: str, data: bytes, encoding: str, label: str = "") -> _Decoded:
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise ReadError(f"{name}: unknown encoding {encoding!r}") from exc
    except UnicodeDecodeError as exc:
        line, col = _line_and_column(data, exc.start)
        byte = data[exc.start]
        what = f"the file looks like {label}, but line {line}" if label else f"line {line}"
        raise ReadError(
            f"{name}: {what}: byte 0x{byte:02x} at column {col} is not valid {encoding}"
        ) from exc
    return _Decoded(text, encoding)


def _utf16_without_bom(data: bytes) -> str | None:
    """"utf-16-le" or "utf-16-be" when the file is UTF-16 text that lacks its byte-order mark.

    Text in UTF-16 holds a NUL in one byte of most pairs (every ASCII character: "s" is
    73 00 in LE, 00 73 in BE) and almost never in the other; a file zero-filled by a power cut
    has NULs on both sides and is not mistaken for it. Without this, such a file was read as
    8-bit text with a "NUL byte" on every line.
    """
    sample = data[:UTF16_SAMPLE]
    pairs = len(sample) // 2
    if pairs < 4 or 0 not in sample:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.3 * pairs and even <= 0.02 * pairs:
        return "utf-16-le"
    if even >= 0.3 * pairs and odd <= 0.02 * pairs:
        return "utf-16-be"
    return None


def _decode_utf16(name: str, data: bytes, encoding: str, label: str = "", *, reason: str = "") -> _Decoded:
    decoded = _decode_strict(name, data, encoding, label)
    decoded.reason = reason
    _refuse_mostly_nul(name, 2 * decoded.text.count("\x00"), len(data))  # U+0000 is two NUL bytes
    return decoded


def _refuse_mostly_nul(name: str, nuls: int, size: int) -> None:
    """Refuse a file more than half NUL bytes: what a power cut or a full disk leaves."""
    if nuls and nuls > MOSTLY_NUL * size:
        raise ReadError(
            f"{name}: the file is mostly NUL bytes ({nuls:,} of {size:,} bytes): it was probably "
            f"cut by a power failure or a full disk; export it again"
        )


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based physical line and byte column of a byte offset (lines end at LF, CR or CRLF)."""
    head = data[:offset]
    lines = head.splitlines(keepends=True)
    if not lines or lines[-1].endswith((b"\n", b"\r")):
        return len(lines) + 1, 1
    return len(lines), len(lines[-1]) + 1


def _damage(decoded: _Decoded, line: str, number: int, room: int) -> tuple[int, list[tuple[int, str]]]:
    """The bad bytes of one physical line: (how many, the first `room` as (column, reason)).

    Invalid UTF-8 first, then NULs, each in column order; columns count the file's bytes
    (characters in UTF-16). Linear in the line: one regex scan and one count for the totals,
    and byte columns measured piece by piece from one listed byte to the next.
    """
    found: list[tuple[int, str]] = []  # (character index, reason without its column)
    total = 0
    if decoded.escaped:
        for match in _UTF8_ERROR.finditer(line):
            if len(found) >= room:
                total += 1 + sum(1 for _ in _UTF8_ERROR.finditer(line, match.end()))  # counted, never kept
                break
            total += 1
            found.append((match.start(), f"invalid UTF-8 byte 0x{ord(match.group()[0]) - 0xDC00:02x}"))
    total += line.count("\x00")
    index = line.find("\x00")
    while index >= 0 and len(found) < room:
        found.append((index, "NUL byte"))
        index = line.find("\x00", index + 1)
    columns: dict[int, int] = {}
    column, at = 1 + (decoded.bom_bytes if number == 1 else 0), 0
    for index in sorted({index for index, _ in found}):
        column += decoded.byte_length(line[at:index])
        columns[index], at = column, index
    return total, [(columns[index], f"{reason} at column {columns[index]}") for index, reason in found]


# --------------------------------------------------------------------------- CSV: text -> rows


def _split_sep_line(text: str) -> tuple[str | None, str]:
    """Excel's `sep=;` first line: the delimiter it names and the text after it."""
    match = _SEP_LINE.match(text.lstrip("\ufeff"))
    if not match:
        return None, text
    return match.group(1), text.lstrip("\ufeff")[match.end():]


def detect_delimiter(text: str) -> tuple[str, int]:
    """The delimiter among , ; TAB | whose field count is most consistent over the first records.

    Returns (delimiter, usual field count). Quotes are respected. One line alone can mislead
    (`1 234,50` looks comma-separated), so about 30 records are compared.
    """
    sample = text[:DELIMITER_SAMPLE_CHARS]
    if len(text) > len(sample):
        sample = sample[: max(sample.rfind("\n"), 0)]  # whole lines only
    best: tuple[tuple[bool, float, int], str, int] | None = None
    for delim in DELIMITERS:
        reader = csv.reader(io.StringIO(sample, newline=""), delimiter=delim)
        try:
            counts = [len(r) for r in islice(reader, DELIMITER_SAMPLE_RECORDS) if any(r)]
        except csv.Error:
            continue
        if not counts:
            continue
        usual, seen = Counter(counts).most_common(1)[0]
        score = (usual > 1, seen / len(counts), usual)
        if best is None or score > best[0]:
            best = (score, delim, usual)
    if best is None:
        return ",", 1
    return best[1], best[2]


def _read_csv(
    name: str,
    data: bytes,
    rule: _HeaderRule,
    delimiter: str | None,
    encoding: str | None,
    legacy: tuple[str, ...],
    max_rows: int | None = None,
) -> Table:
    if not data.strip():
        raise ReadError(f"{name}: the file is empty")
    decoded = _decode(name, data, encoding, legacy)
    del data  # the text is all we need from here on; a 100k-row file is ~30 MB of bytes
    sep, text = _split_sep_line(decoded.text)
    decoded.text = ""  # `text` is the one copy kept
    if not text.strip():
        raise ReadError(f"{name}: the file holds no rows")
    _allow_fields_up_to(len(text))
    line_offset = 1 if sep else 0
    if delimiter:
        usual = 0
    elif sep:
        delimiter, usual = sep, 0
    else:
        delimiter, usual = detect_delimiter(text)
    table = Table(header=[], rows=[], format="csv", encoding=decoded.encoding, delimiter=delimiter,
                  encoding_reason=decoded.reason)
    if decoded.doubt:
        table.problems.append(Problem(kind="encoding", severity="warning", reason=decoded.doubt))
    bare_cr = text.count("\r") != text.count("\r\n")
    lines = _physical_lines(text, bare_cr)
    problems = _Problems(table.problems, table.refused_rows)
    damage: dict[int, tuple[int, list[tuple[int, str]]]] = {}
    if decoded.escaped or "\x00" in text:
        lines = _screened(lines, line_offset + 1, decoded, damage, problems)
    reader = csv.reader(lines, delimiter=delimiter)
    csv_file = _CsvFile(name, text, bare_cr, delimiter, line_offset, max_rows, reader)
    try:
        _fill_csv_table(csv_file, table, reader, rule, usual, damage, problems)
    except csv.Error as exc:
        raise ReadError(f"{name}: line {line_offset + reader.line_num}: cannot parse the CSV ({exc})") from exc
    problems.close()
    table.rows_refused = len(problems.records)
    return table


def _allow_fields_up_to(size: int) -> None:
    """Let csv read a cell as long as the whole text (its default stops at 131,072 characters).

    The limit is process-wide, so it is only ever raised, and only as far as the largest
    file read needs: a 140,000-character description is a value, not a broken file.
    """
    if csv.field_size_limit() <= size:
        csv.field_size_limit(size + 1)


@dataclass
class _CsvFile:
    """What the CSV loop needs to know about the text beyond its records."""

    name: str
    text: str
    bare_cr: bool
    delimiter: str
    line_offset: int  # 1 after a `sep=` line
    max_rows: int | None
    reader: Any = None  # the csv.reader over the text (its line_num is the last physical line read)


def _physical_lines(text: str, bare_cr: bool = False):
    """The text's lines with their endings, as csv.reader wants them.

    Splitting on LF by hand is faster than io.StringIO and does not copy the whole text into
    a 4-bytes-per-character buffer (82 MiB for a 100k-row export). Text with bare CR line
    endings goes through StringIO, which splits on those too.
    """
    if bare_cr:
        yield from io.StringIO(text, newline="")
        return
    find, start, size = text.find, 0, len(text)
    while start < size:
        end = find("\n", start)
        if end < 0:
            yield text[start:]
            return
        yield text[start : end + 1]
        start = end + 1


def _screened(lines, number: int, decoded: _Decoded, damage: dict, problems: _Problems):
    """The lines, with the bad bytes of each noted in `damage` (line -> (count, listed)).

    Only files holding a NUL or an invalid UTF-8 byte go through here. csv.reader takes no
    line beyond the record it is parsing, so `damage` only ever holds the current record's
    lines: the loop takes them out as it refuses the record.
    """
    for line in lines:
        if "\x00" in line or (decoded.escaped and _ESCAPED.search(line)):
            damage[number] = _damage(decoded, line, number, problems.room("encoding"))
            line = line.replace("\x00", " ")  # the record is refused; keep csv off the NULs
        yield line
        number += 1


def _locate_csv_header(csv_file, reader, rule: _HeaderRule) -> tuple[list[str], int, int, int]:
    """Read up to the header record; return its cells, the physical lines it starts/ends on and its record number."""
    name, line_offset = csv_file.name, csv_file.line_offset
    wanted = {column_key(n) for n in rule.find} if rule.find else None
    limit = FIND_HEADER_WITHIN if wanted else rule.row
    previous_end = 0
    first: list[str] | None = None  # the first row with something in it, to show when no header is found
    for index, record in enumerate(reader, start=1):
        if index > limit:
            break
        start, previous_end = previous_end + 1, reader.line_num
        if previous_end - start >= MAX_CELL_LINES:
            _refuse_runaway_cell(csv_file, reader, record, line_offset + start)
        if first is None and "".join(record).strip():
            first = record
        if (wanted and _is_header(record, wanted)) or (not wanted and index == rule.row):
            return record, line_offset + start, line_offset + previous_end, index
    else:
        if previous_end:  # the whole file was read: did a quote left open swallow the header?
            _check_last_record(csv_file, line_offset + start, line_offset + previous_end, header=True)
    if wanted:
        raise ReadError(
            f"{name}: no header row with the columns {', '.join(rule.find or ())} "
            f"in the first {FIND_HEADER_WITHIN} rows{_first_row_shown(first)}"
        )
    raise ReadError(f"{name}: no header: the file has fewer than {rule.row} rows")


def _first_row_shown(cells: list[str] | None) -> str:
    """"; the first row reads: a, b, c" (cut short), to show a header that was not found."""
    if not cells:
        return ""
    shown = ", ".join(c.strip() for c in cells)
    return f"; the first row reads: {shown[:300]}{'...' if len(shown) > 300 else ''}"


def _fill_csv_table(csv_file, table, reader, rule: _HeaderRule, usual, damage, problems) -> None:
    """The CSV loop: header, then one Row per record; refused records become Problems.

    A Row's `line` is the physical line its record starts on; its `row_number` is the record's
    number counting the header and any rows above it (blank ones too), as a spreadsheet
    shows it: a description over 20 lines makes those differ by 19 from there on.
    """
    name, line_offset = csv_file.name, csv_file.line_offset
    if rule.row:
        cells, header_start, header_end, number = _locate_csv_header(csv_file, reader, rule)
        for line in sorted(damage):
            count, listed = damage.pop(line)
            if line >= header_start:
                reason = listed[0][1] if listed else f"{count:,} bad bytes"
                raise ReadError(f"{name}: line {line}: the header holds a bad byte: {reason}")
        header = _name_header(table, cells, header_start, number)
        if len(header) == 1 and usual > 1:
            raise ReadError(
                f"{name}: line {header_end}: the header has one column but the rows have {usual} "
                f"fields separated by {table.delimiter!r}; set the delimiter or fix the header"
            )
        table.header_row = number
        _warn_if_data(table, header, number, header_start)
    else:  # no header row: every record is data, its columns named by position (or `columns`)
        leading = list(_through_first_filled(reader))
        if not leading:
            raise ReadError(f"{name}: the file holds no rows")
        reader = chain(leading, reader)
        width = max(len(leading[-1]), usual, len(rule.columns))
        header = _name_columns(positional_names(width, rule.columns), f"{name}: source.columns")
        header_start = header_end = line_offset
        number = 0
    _fill_csv_rows(csv_file, table, reader, header, (header_start, header_end, number), damage, problems)


def _through_first_filled(reader):
    """The records up to and including the first that holds something (blank lines come first)."""
    for record in reader:
        yield record
        if "".join(record).strip():
            return


def _fill_csv_rows(csv_file, table, reader, header, after, damage, problems) -> None:
    """One Row per record after the header (lines header_start..header_end, record `number`)."""
    line_offset = csv_file.line_offset
    header_start, header_end, number = after
    table.header = header
    width = len(header)
    rows = table.rows
    columns = Columns(header)
    previous_end = header_end - line_offset
    start = header_start
    shared = _SharedText()
    records = reader if csv_file.max_rows is None else islice(reader, csv_file.max_rows)
    raw = csv_file.reader
    for record in records:
        number += 1
        start = line_offset + previous_end + 1
        previous_end = raw.line_num
        if previous_end + line_offset - start >= MAX_CELL_LINES:
            _refuse_runaway_cell(csv_file, raw, record, start)
        if damage:
            _refuse_bad_bytes(start, damage, problems, number)
            if problems.wants("encoding"):
                problems.keep(_as_read(record, header, start, number), "encoding")
            continue
        count = len(record)
        if count != width:
            if count > width:
                extra = record[width:]
                if any(v.strip() for v in extra):
                    problems.add(_shape_problem(record, width, start, number, headerless=not table.header_row))
                    if problems.wants("shape"):
                        problems.keep(_as_read(record, header, start, number), "shape")
                    continue
                record = record[:width]
            else:
                record = record + [""] * (width - count)
        first = record[0]
        if (not first or first.isspace()) and not "".join(record).strip():
            continue  # blank row
        rows.append(Row(start, Cells(columns, shared.cells(record)), None, number))
    if csv_file.max_rows is not None:
        _refuse_too_many_rows(csv_file, raw, damage)
    if start == header_start:
        _check_last_record(csv_file, header_start, header_end, header=bool(table.header_row))
    else:
        _check_last_record(csv_file, start, line_offset + previous_end, width=width, rows=rows, problems=problems)


# A cell may hold a few lines (a description with paragraphs: 14 at most in the corpus), but
# a quote left open by mistake makes one "cell" of every line after it: a stray quote on
# line 3 of a 200-line file once gave "read: 2 rows" and exit 0. A cell over this many lines
# is taken for such a quote and refuses the file, naming the line where the quote opened.
MAX_CELL_LINES = 100

_END = "\ue000end of the file\ue000"  # fed after the last line: it lands in a cell left open


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _refuse_runaway_cell(csv_file: _CsvFile, reader, record: list[str], start: int) -> None:
    """Refuse the file if a cell of this record (starting on line `start`) spans over MAX_CELL_LINES lines."""
    line = start
    for cell in record:
        breaks = _line_breaks(cell)
        if breaks >= MAX_CELL_LINES:
            break
        line += breaks
    else:
        return
    end = csv_file.line_offset + reader.line_num
    if next(reader, None) is None:  # the last record: is its quote still open at the end?
        _check_last_record(csv_file, start, end, header=True)
    raise ReadError(
        f"{csv_file.name}: line {line}: a quoted value opened on this line runs over {breaks + 1} lines "
        f"(to line {min(line + breaks, end)}), more than {MAX_CELL_LINES}: a quote is missing or "
        f"stray, and the rows after it would be read as one value; fix the quote"
    )


def _check_last_record(csv_file: _CsvFile, start: int, end: int, *, header: bool = False, width: int = 0,
                       rows: list[Row] | None = None, problems: _Problems | None = None) -> None:
    """The end of the file: a quote still open, or a last record (lines start..end) cut short.

    The rule, for a file whose end was not written (a copy still in progress, a full disk):
    - a quoted value still open at the end of the file that opened before the last line has
      swallowed the lines after it: the file is refused, naming the line where it opened;
    - one that opened on the last line, or a last line with no line end and fewer fields
      than the header, is a record cut short: that record is refused, the others are read;
    - a last line with no line end but every field is read as it is (many exports end so).
    A cut inside the last field cannot be seen: `12` may be a whole price.
    `header`: the last record is the header (or a line above it): only an open quote counts.
    """
    tail = _last_lines(csv_file.text, end - start + 1, csv_file.bare_cr)
    parsed = next(csv.reader(chain(_physical_lines(tail, csv_file.bare_cr), [_END]),
                             delimiter=csv_file.delimiter), [])
    still_open = bool(parsed) and parsed[-1].endswith(_END) and parsed != [_END]
    if still_open:
        opened = start + sum(_line_breaks(cell) for cell in parsed[:-1])
        if header or opened < end:
            raise ReadError(
                f"{csv_file.name}: line {opened}: a quoted value opened on this line is still open at the "
                f"end of the file (line {end}): a quote is missing or stray, and the lines after it would "
                f"be read as one value; fix the quote"
            )
        why = "a quoted value opened on it is never closed"
    elif header or tail.endswith(("\n", "\r")) or len(parsed) >= width:
        return
    else:
        why = f"it has {len(parsed)} of the header's {width} fields and no line end"
    if not rows or rows[-1].line != start or problems is None:
        return  # the last record was blank or already refused
    cut = rows.pop()
    problems.add(Problem(kind="cut", line=start, row_number=cut.row_number, reason=(
        f"the last record looks cut short ({why}): the file was probably still being written "
        f"or the disk was full; the record is not read")))
    problems.keep(cut, "cut")


def _last_lines(text: str, count: int, bare_cr: bool) -> str:
    """The last `count` physical lines of the text, with their endings."""
    if bare_cr:
        return "".join(deque(_physical_lines(text, True), maxlen=count))
    at = len(text) - 1 if text.endswith("\n") else len(text)
    for _ in range(count):
        at = text.rfind("\n", 0, at)
        if at < 0:
            break
    return text[at + 1:]


def _refuse_too_many_rows(csv_file: _CsvFile, reader, damage: dict) -> None:
    """Refuse the file if records are left after `max_rows` of them: counted, never kept."""
    more = 0
    for record in reader:
        damage.clear()
        more += any(record)
    if more:
        limit = csv_file.max_rows or 0
        raise ReadError(_too_large(csv_file.name, limit + more, limit))


def _too_large(where: str, rows: int, limit: int) -> str:
    return (f"{where}: the file is too large for this machine: {rows:,} rows, limit {limit:,}; "
            f"raise `limits.max_rows` in connector.yaml if the machine has the memory for it")


class _SharedText:
    """Makes equal cell texts of nearby rows one string object.

    Exports repeat most cells (vendor, type, option names, a product's title on each of its
    variants, "true"): sharing them saves about 80 MB on 100k rows x 25 columns. The table of
    texts seen is forgotten every few thousand rows, so it stays small however big the file.
    """

    ROWS_REMEMBERED = 4096

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}
        self._rows = 0

    def cells(self, texts: list[str]) -> tuple[str, ...]:
        self._rows += 1
        if self._rows % self.ROWS_REMEMBERED == 0:
            self._seen.clear()
        keep = self._seen.setdefault
        return tuple(map(keep, texts, texts))


class _Problems:
    """The reader's problems: the first MAX_LISTED_PER_KIND of each kind listed, all counted.

    A damaged file can hold millions (a NUL byte each); past the first ones of a kind, one
    Problem per kind says how many more there were, with `count` holding the exact number,
    so the report's totals stay exact while its size and the reader's memory stay bounded.
    """

    def __init__(self, out: list[Problem], refused: list[Row] | None = None) -> None:
        self.out = out
        self.listed: Counter[str] = Counter()
        self.unlisted: Counter[str] = Counter()
        self.records: set[int] = set()  # lines of the records refused, listed or not
        self.refused = refused if refused is not None else []  # what was read of the first refused records
        self.kept: Counter[str] = Counter()

    def wants(self, kind: str) -> bool:
        """Whether a refused record of `kind` is still kept (see `keep`)."""
        return self.kept[kind] < MAX_LISTED_PER_KIND

    def keep(self, row: Row, kind: str) -> None:
        """Keep what was read of a refused record, for the rejected-rows files: the first few of each kind."""
        if self.wants(kind):
            self.kept[kind] += 1
            self.refused.append(row)

    def room(self, kind: str) -> int:
        return max(MAX_LISTED_PER_KIND - self.listed[kind], 0)

    def add(self, problem: Problem) -> None:
        if problem.line is not None and problem.severity == "error":
            self.records.add(problem.line)
        if self.listed[problem.kind] < MAX_LISTED_PER_KIND:
            self.listed[problem.kind] += 1
            self.out.append(problem)
        else:
            self.unlisted[problem.kind] += 1

    def count(self, kind: str, number: int) -> None:
        """`number` more problems of `kind` that are not listed one by one."""
        self.unlisted[kind] += number

    def close(self) -> None:
        for kind, number in self.unlisted.items():
            if number:
                self.out.append(Problem(kind=kind, count=number, reason=(
                    f"{number:,} more {kind} problems are not listed here (only the first "
                    f"{MAX_LISTED_PER_KIND:,} of each kind are)")))


def _refuse_bad_bytes(start: int, damage: dict, problems: _Problems, number: int | None = None) -> None:
    """Refuse the record starting at `start` (record `number`): a Problem per listed bad byte, the rest counted."""
    problems.records.add(start)
    for line in sorted(damage):
        count, listed = damage.pop(line)
        where = "" if line == start else f" (line {line})"
        for _, reason in listed:
            problems.add(Problem(kind="encoding", reason=reason + where, line=start, row_number=number))
        problems.count("encoding", count - len(listed))


def _shape_problem(record: list[str], width: int, line: int, number: int | None = None, *,
                   headerless: bool = False) -> Problem:
    extra = [v for v in record[width:] if v.strip()]
    than = f"the file's rows have {width} (columns beyond them need names in source.columns)" if headerless \
        else f"the header has {width}"
    shown = ", ".join(extra)
    shown = _ESCAPED.sub("\ufffd", shown if len(shown) <= 200 else shown[:200] + "...")
    return Problem(
        kind="shape",
        reason=f"the row has {len(record)} fields but {than}; extra values are not read: {shown}",
        line=line,
        value=shown,
        row_number=number,
    )


def _as_read(record: list[str], header: list[str], line: int, number: int) -> Row:
    """A refused record as far as it could be read: its first fields under the header's names
    (the extra ones are named in the reason), a byte that is not text shown as U+FFFD."""
    values = [_ESCAPED.sub("\ufffd", v) for v in record[:len(header)]]
    return Row(line, dict(zip(header, values + [""] * (len(header) - len(values)), strict=True)), None, number)


# --------------------------------------------------------------------------- workbooks


def _read_workbook(path: Path, kind: str, rule: _HeaderRule, sheet, *, preflight: bool = True,
                   max_rows: int | None = None) -> Table:
    if preflight:
        _preflight(path, kind)
    from python_calamine import CalamineWorkbook  # imported here: CSV-only runs never load it

    try:
        workbook = CalamineWorkbook.from_path(str(path))
        try:
            names = _choose_sheets(path.name, list(workbook.sheet_names), sheet)
            table = Table(header=[], rows=[], format=kind, sheet=", ".join(names))
            for name in names:
                raw = workbook.get_sheet_by_name(name)
                _add_sheet(path.name, table, name, raw, rule, all_sheets=sheet == "*",
                           max_rows=max_rows)
        finally:
            workbook.close()
    except ReadError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # calamine's Rust panics arrive as BaseException (PyO3)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReadError(f"{path.name}: cannot read the {kind.upper()} workbook ({reason[:200]})") from exc
    if not table.header:
        raise ReadError(f"{path.name}: no sheet has a header row")
    return table


def _choose_sheets(file: str, names: list[str], sheet: str | int | None) -> list[str]:
    if not names:
        raise ReadError(f"{file}: the workbook has no sheets")
    if sheet is None:
        return names[:1]
    if sheet == "*":
        return names
    if isinstance(sheet, int):
        if 0 <= sheet < len(names):
            return [names[sheet]]
        raise ReadError(f"{file}: no sheet number {sheet} (sheets 0-{len(names) - 1}: {', '.join(names)})")
    if sheet in names:
        return [sheet]
    raise ReadError(f"{file}: no sheet named {sheet!r} (sheets: {', '.join(names)})")


def _add_sheet(file, table, name, raw, rule: _HeaderRule, all_sheets, max_rows=None) -> None:
    """Append one sheet's rows to the table; row numbers are the sheet's own (1-based, as Excel shows them)."""
    first_col = raw.start[1] if raw.start else 0  # iter_rows pads rows from row 1, not columns
    rows = raw.iter_rows()
    where = f"{file}, sheet {name!r}"
    if rule.row:
        found = _locate_sheet_header(rows, rule)
        if isinstance(found, list):  # not found: the first row with something in it
            if all_sheets:
                table.problems.append(Problem(kind="header", severity="warning", sheet=name,
                                              reason=f"sheet {name!r} skipped: no header row found"
                                                     f"{_first_row_shown(found)}"))
                return
            what = f"the columns {', '.join(rule.find)}" if rule.find else f"row {rule.row}"
            raise ReadError(f"{where}: no header row ({what} not found){_first_row_shown(found)}")
        cells, header_line = found
        header = _name_header(table, [_cell_text(v) for v in cells], header_line, header_line,
                              name if all_sheets else None, first_col)
        _warn_if_data(table, header, header_line, header_line, name if all_sheets else None)
    else:  # no header row: columns named by `columns`, then by their Excel column number
        header_line = 0
        width = (raw.end[1] + 1 - first_col) if raw.end else 0
        header = _name_columns(positional_names(width, rule.columns, first_col), f"{where}: source.columns")
    if max_rows is not None:  # before any row is made: the sheet's extent is known up front
        last_row = raw.end[0] + 1 if raw.end else 0  # 1-based, as iter_rows counts from row 1
        rows_after = len(table.rows) + max(last_row - header_line, 0)
        if rows_after > max_rows:
            raise ReadError(_too_large(f"{file}, sheet {name!r}", rows_after, max_rows))
    if table.header_row is None and header_line:
        table.header_row = header_line
    for column in header:
        if column not in table.header:
            table.header.append(column)
    append = table.rows.append
    sheet_name = name if all_sheets else None
    width = len(header)
    shared = _SharedText()
    for number, values in enumerate(rows, start=header_line + 1):
        texts = [v if type(v) is str else _cell_text(v) for v in values]
        if not "".join(texts).strip():
            continue
        if len(texts) < width:
            texts += [""] * (width - len(texts))
        append(Row(number, dict(zip(header, shared.cells(texts))), sheet_name, number))  # noqa: B905 (strict= costs 15% of zip here)


def _locate_sheet_header(rows, rule: _HeaderRule):
    """Consume rows up to the header; return (cells, 1-based row number), or when it is not
    found the first row with something in it (a list, [] when none), to show to a person."""
    wanted = {column_key(n) for n in rule.find} if rule.find else None
    limit = FIND_HEADER_WITHIN if wanted else rule.row
    first: list[str] = []
    for number, values in enumerate(islice(rows, limit), start=1):
        texts = [_cell_text(v) for v in values]
        if not first and "".join(texts).strip():
            first = texts
        if wanted:
            if _is_header(texts, wanted):
                return values, number
        elif number == rule.row:
            return values, number
    return first


_MIDNIGHT = time(0, 0)


def _cell_text(value: object) -> str:
    """A calamine cell as the text a person sees: 479.0 -> "479", 0.87 -> "0.87", dates ISO."""
    if isinstance(value, float):  # first: the most common cell after text (callers pass text by)
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is an int
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):  # before date: a datetime is a date
        if value.time() == _MIDNIGHT and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    if value is None:
        return ""
    return str(value)


# --------------------------------------------------------------------------- workbook pre-flight


def _preflight(path: Path, kind: str) -> None:
    """Refuse, before calamine sees it, a workbook that is mislabelled or could exhaust memory."""
    with path.open("rb") as f:
        head = f.read(512)
    if not head:
        raise ReadError(f"{path.name}: the file is empty")
    if kind == "xls":
        if not head.startswith(b"\xd0\xcf\x11\xe0"):
            raise ReadError(f"{path.name}: not an XLS workbook (it looks like {_looks_like(head)})")
        return
    if not head.startswith(b"PK\x03\x04"):
        raise ReadError(f"{path.name}: not an {kind.upper()} workbook (it looks like {_looks_like(head)})")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_zip(path.name, archive)
            if kind == "xlsx":
                for info in archive.infolist():
                    if re.fullmatch(r"xl/worksheets/[^/]+\.xml", info.filename):
                        _check_sheet_extent(path.name, archive, info)
    except zipfile.BadZipFile as exc:
        raise ReadError(f"{path.name}: the {kind.upper()} workbook is damaged ({exc})") from exc


def _looks_like(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "an old XLS workbook; rename it to .xls"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive; rename it to .xlsx"
    if text.startswith((b"<!doctype html", b"<html", b"<table")):
        return "an HTML page"
    if text.startswith(b"<?xml") or text.startswith(b"<"):
        return "XML"
    if head.startswith(b"%PDF"):
        return "a PDF"
    if b"\x00" not in head and any(d in head for d in (b",", b";", b"\t", b"|")):
        return "CSV text; rename it to .csv"
    return "something else"


def _check_zip(file: str, archive: zipfile.ZipFile) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ReadError(f"{file}: refused: the workbook holds {len(infos)} parts (limit {MAX_ZIP_ENTRIES})")
    total = sum(i.file_size for i in infos)
    if total > MAX_UNCOMPRESSED:
        raise ReadError(f"{file}: refused: the workbook unpacks to {total // 2**20} MB "
                        f"(limit {MAX_UNCOMPRESSED // 2**20} MB)")
    for info in infos:
        if info.file_size > RATIO_MIN_SIZE and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ReadError(
                f"{file}: refused: part {info.filename} unpacks {info.file_size // max(info.compress_size, 1)}x "
                f"(limit {MAX_RATIO}x), a zip bomb"
            )


_DIMENSION = re.compile(rb'<(?:\w+:)?dimension\s+ref="([A-Z]{1,4})(\d{1,8})(?::([A-Z]{1,4})(\d{1,8}))?"')
# Literal-prefixed patterns, so the scan runs at C speed over the streamed XML. ` r="` is the
# reference attribute of a row (digits) or a cell (letters and digits), whatever its prefix.
_ROW_REF = re.compile(rb'row r="(\d{1,9})"')
_WIDE_CELL_REF = re.compile(rb' r="([A-Z]{2,4})(\d{1,9})"')  # column AA or beyond, with its row
_DEEP_CELL_REF = re.compile(rb' r="[A-Z](\d{6,9})"')  # columns A-Z at row 100,000 or beyond
_SCAN_CHUNK = 1024 * 1024


def _column_number(letters: bytes) -> int:
    number = 0
    for ch in letters:
        number = number * 26 + ch - 64
    return number


def _check_sheet_extent(file: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a sheet whose declared or real used range is too big to hold in memory.

    calamine reserves room for the <dimension> range and then allocates the whole rectangle
    from the first to the last cell, so one far cell (XFD1048576) in a tiny file asks for
    512 GiB and aborts the process (reliability.md E3). The <dimension> near the top is checked
    first; then the row and cell references of the streamed XML are scanned.
    """
    label = f"{file}: refused: sheet part {info.filename.rsplit('/', 1)[-1]}"
    with archive.open(info) as stream:
        head = stream.read(64 * 1024)
        dim = _DIMENSION.search(head)
        if dim:
            last_col, last_row = (dim.group(3), dim.group(4)) if dim.group(3) else (dim.group(1), dim.group(2))
            _check_extent(label, "declares", int(last_row), _column_number(last_col))
        max_row, max_col = _scan_references(stream, head)
    _check_extent(label, "uses", max_row, max_col)


def _scan_references(stream, head: bytes) -> tuple[int, int]:
    """The largest row and column referenced in a sheet's XML (columns A-Z counted as 26)."""
    max_row, max_col, tail, chunk = 0, 26, b"", head
    while chunk:
        block = tail + chunk  # the tail keeps a reference cut by the chunk boundary whole
        rows = _ROW_REF.findall(block) + _DEEP_CELL_REF.findall(block)
        if rows:
            max_row = max(max_row, *map(int, rows))
        wide = _WIDE_CELL_REF.findall(block)
        if wide:
            far = max({col for col, _ in wide}, key=lambda c: (len(c), c))
            max_col = max(max_col, _column_number(far))
            max_row = max(max_row, *(int(r) for _, r in wide))
        tail = block[-32:]
        chunk = stream.read(_SCAN_CHUNK)
    return max_row, max_col


def _check_extent(label: str, verb: str, rows: int, cols: int) -> None:
    if rows > EXCEL_MAX_ROWS or cols > EXCEL_MAX_COLS:
        raise ReadError(f"{label} {verb} {rows} rows x {cols} columns, beyond Excel's limits")
    if rows * cols > MAX_SHEET_CELLS:
        raise ReadError(
            f"{label} {verb} {rows:,} rows x {cols:,} columns ({rows * cols:,} cells, "
            f"limit {MAX_SHEET_CELLS:,}); re-save the export with only its data range"
        )
