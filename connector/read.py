"""Read one export file into rows of text: CSV (any common encoding and delimiter), XLSX, XLS, ODS.

    table = read_table(Path("inbox/products.csv"))
    table.header     -> ["sku", "price", ...]
    table.rows[0]    -> Row(line=2, cells={"sku": "00123", "price": "1 299,50"})
    table.problems   -> records refused while reading (bad bytes, extra values), with their lines

Every cell comes back as text: `00123`, `NA`, `1E5`, `TRUE` stay exactly as written, and typed
workbook cells are turned into text the way a person reads them (479.0 -> "479", dates -> ISO).
Types are the mapping's job, never the reader's (DESIGN.md invariant 5).

A problem with the whole file (unreadable, no header, duplicate header names, a hostile
workbook) raises ReadError with one line for a person; a problem with one record refuses that
record only and is listed in `Table.problems`.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import islice
from pathlib import Path

from connector.errors import ReadError
from connector.model import Problem, Row, Table

CSV_SUFFIXES = {".csv", ".txt", ".tsv", ".tab"}
WORKBOOK_SUFFIXES = {".xlsx": "xlsx", ".xlsm": "xlsx", ".xls": "xls", ".ods": "ods"}
DELIMITERS = (",", ";", "\t", "|")
DELIMITER_SAMPLE_RECORDS = 30  # records looked at to choose the delimiter
DELIMITER_SAMPLE_CHARS = 256 * 1024
FIND_HEADER_WITHIN = 50  # rows searched for the header when `find_header` is given

# Pre-flight limits for zip workbooks (reference/reliability.md section 3a): calamine does not
# bound memory, and a 4.8 KB file declaring cell XFD1048576 aborts the whole process.
MAX_ZIP_ENTRIES = 10_000
MAX_UNCOMPRESSED = 500 * 1024 * 1024
MAX_RATIO = 200  # per entry, for entries over RATIO_MIN_SIZE
RATIO_MIN_SIZE = 1024 * 1024
MAX_SHEET_CELLS = 30_000_000  # rows x columns of one sheet's used range (calamine keeps it dense)
EXCEL_MAX_ROWS, EXCEL_MAX_COLS = 1_048_576, 16_384

_ZERO_WIDTH = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"), None)
_SPACES = {0xA0: " ", 0x202F: " ", 0x2007: " "}
_SEP_LINE = re.compile(r"sep=(.)[ \t]*(?:\r\n|\n|\r)")
# A well-formed UTF-8 multi-byte sequence: its presence means the file is UTF-8 text.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)


# --------------------------------------------------------------------------- public API


def read_table(
    path: Path,
    *,
    header_row: int = 1,
    find_header: list[str] | None = None,
    sheet: str | int | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    legacy_encoding: str = "cp1252",
) -> Table:
    """Read a CSV/XLSX/XLS/ODS file into a Table of text rows.

    header_row:  1-based row holding the column names (after a `sep=` line in a CSV).
    find_header: instead of header_row, the first of the first 50 rows whose cells contain all
                 these names (for exports with banner rows above the table).
    sheet:       workbooks only: a name, a 0-based index, None for the first, "*" for all.
    delimiter, encoding: CSV only; detected when None.
    legacy_encoding: the codepage for CSV files that are not UTF-8/UTF-16.
    Raises ReadError for file-level problems; refused records are in Table.problems.
    """
    path = Path(path)
    if header_row < 1:
        raise ReadError(f"{path.name}: header_row must be 1 or more, not {header_row}")
    try:
        return _read_file(path, header_row, find_header, sheet, delimiter, encoding, legacy_encoding)
    except OSError as exc:
        raise ReadError(f"{path.name}: cannot read the file ({exc.strerror or exc})") from exc


def _read_file(path, header_row, find_header, sheet, delimiter, encoding, legacy_encoding) -> Table:
    kind = _file_kind(path)
    if kind == "csv":
        return _read_csv(path.name, path.read_bytes(), header_row, find_header, delimiter, encoding, legacy_encoding)
    return _read_workbook_isolated(path, kind, header_row, find_header, sheet)


# A damaged or hostile workbook can make the spreadsheet library allocate without bound and
# abort the whole process, which no `except` catches (reference/reliability.md §3a, E3). So
# workbooks are read in a child process with its own memory and time limits: the worst a
# file can do is end the child, and it is refused with a reason. (Where processes cannot be
# forked, e.g. on Windows, workbooks are read in-process after the pre-flight checks alone.)
WORKBOOK_MEMORY_LIMIT = 4 * 1024**3  # bytes of address space; a 100k-row x 25-column XLSX needs ~0.5 GB
WORKBOOK_TIME_LIMIT = 600.0  # seconds


def _read_workbook_isolated(path: Path, kind: str, header_row, find_header, sheet) -> Table:
    if "fork" not in multiprocessing.get_all_start_methods():
        return _read_workbook(path, kind, header_row, find_header, sheet)
    _preflight(path, kind)  # cheap refusals first, with their precise reasons
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_workbook_child, args=(send, path, kind, header_row, find_header, sheet),
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
    header, fmt, sheet_names, problems, rows = payload
    table = Table(header=header, rows=[], format=fmt, sheet=sheet_names, problems=problems)
    table.rows = [Row(line, dict(zip(header, values)), row_sheet) for line, row_sheet, values in rows]
    return table


def _workbook_child(send, path: Path, kind: str, header_row, find_header, sheet) -> None:
    """In the child: read the workbook under limits and send back plain data (or a refusal)."""
    import faulthandler

    faulthandler.disable()  # an abort here is expected and reported by the parent, not dumped to stderr
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKBOOK_MEMORY_LIMIT, WORKBOOK_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass  # no limit to be had here: the pre-flight checks still apply
    try:
        table = _read_workbook(path, kind, header_row, find_header, sheet, preflight=False)  # the parent did it
        header = table.header
        # Equal texts stay one object through pickling, so the parent keeps the sharing.
        rows = [(row.line, row.sheet, [row.cells.get(name, "") for name in header]) for row in table.rows]
        send.send(("read", (header, table.format, table.sheet, table.problems, rows)))
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


def normalise_name(name: str) -> str:
    """A header cell as a column name: no BOM or zero-width characters, NBSP as space, trimmed.

    normalise_name("\\ufeffSKU\\u00a0 ") -> "SKU"
    """
    return name.translate(_ZERO_WIDTH).translate(_SPACES).strip()


def _match_key(name: str) -> str:
    return normalise_name(name).casefold()


def _name_columns(cells: list[str], where: str, first_col: int = 0) -> list[str]:
    """Column names from header cells; blanks become column_<N>; duplicates are a ReadError."""
    names = [normalise_name(c) or f"column_{first_col + i + 1}" for i, c in enumerate(cells)]
    counts = Counter(names)
    dupes = [n for n in counts if counts[n] > 1]
    if dupes:
        listed = ", ".join(repr(n) for n in dupes)
        raise ReadError(f"{where}: duplicate column names in the header: {listed}")
    return names


def _is_header(cells: list[str], wanted: set[str]) -> bool:
    return wanted <= {_match_key(c) for c in cells}


# --------------------------------------------------------------------------- CSV: bytes -> text


@dataclass
class _Decoded:
    text: str
    encoding: str
    # physical line -> [(1-based column, reason)] for lines holding bytes that are refused
    bad: dict[int, list[tuple[int, str]]] = field(default_factory=dict)


def _decode(name: str, data: bytes, encoding: str | None, legacy: str) -> _Decoded:
    """Bytes -> text, never replacing a character silently.

    Explicit encoding: strict. Else a UTF-16 BOM, a UTF-8 BOM, strict UTF-8; then either UTF-8
    with a few bad records (refused, listed in `bad`) or the legacy codepage (strict).
    """
    if encoding:
        return _decode_strict(name, data, encoding)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode_strict(name, data, "utf-16")
    utf8 = "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    try:
        return _with_nul_problems(_Decoded(data.decode(utf8), utf8), data)
    except UnicodeDecodeError:
        pass
    if _looks_like_broken_utf8(data):
        return _with_nul_problems(_decode_utf8_refusing_lines(data, utf8), data)
    return _decode_strict(name, data, legacy)


def _decode_strict(name: str, data: bytes, encoding: str) -> _Decoded:
    try:
        text = data.decode(encoding)
    except LookupError as exc:
        raise ReadError(f"{name}: unknown encoding {encoding!r}") from exc
    except UnicodeDecodeError as exc:
        line, col = _line_and_column(data, exc.start)
        byte = data[exc.start]
        raise ReadError(
            f"{name}: line {line}: byte 0x{byte:02x} at column {col} is not valid {encoding}"
        ) from exc
    if encoding.lower().replace("_", "-").startswith(("utf-16", "utf16")):
        return _with_nul_problems(_Decoded(text, encoding), None)  # NUL columns count characters
    return _with_nul_problems(_Decoded(text, encoding), data)


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based physical line and byte column of a byte offset (lines end at LF, CR or CRLF)."""
    head = data[:offset]
    lines = head.splitlines(keepends=True)
    if not lines or lines[-1].endswith((b"\n", b"\r")):
        return len(lines) + 1, 1
    return len(lines), len(lines[-1]) + 1


def _looks_like_broken_utf8(data: bytes) -> bool:
    """True when a file that failed strict UTF-8 is UTF-8 with damaged bytes, not legacy text.

    Legacy-codepage text never holds well-formed UTF-8 sequences, NUL bytes, or the remains of
    a UTF-8 BOM (EF BB) in mid-file; a file that does is UTF-8 whose bad records must be refused
    rather than the whole file being re-read in another codepage (which would garble it quietly).
    The akeneo fixture `non_utf8.csv` is such a file: ASCII but for a lone 0xFF, a NUL and EF BB.
    """
    return bool(_UTF8_MULTIBYTE.search(data) or b"\x00" in data or b"\xef\xbb" in data[3:])


def _decode_utf8_refusing_lines(data: bytes, utf8: str) -> _Decoded:
    """Decode line by line; a line with invalid bytes keeps them as escapes and is marked bad."""
    out: list[str] = []
    bad: dict[int, list[tuple[int, str]]] = {}
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        try:
            out.append(line.decode(utf8 if number == 1 else "utf-8"))
            continue
        except UnicodeDecodeError:
            pass
        bad[number] = _utf8_errors(line)
        # The record is refused, so its text is never used; surrogate escapes keep the line's
        # length and its delimiters where they are, so the records after it parse as written.
        out.append(line.decode("utf-8", errors="surrogateescape"))
    return _Decoded("".join(out), utf8, bad)


def _utf8_errors(line: bytes) -> list[tuple[int, str]]:
    """Each decoding error of one line as (1-based column, reason), as the decoder meets them."""
    errors = []
    pos = 0
    while pos < len(line):
        try:
            line[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            start = pos + exc.start
            errors.append((start + 1, f"invalid UTF-8 byte 0x{line[start]:02x} at column {start + 1}"))
            pos = pos + exc.end
    return errors


def _with_nul_problems(decoded: _Decoded, data: bytes | None) -> _Decoded:
    """Mark every line holding a NUL (a sign of a damaged file); columns count bytes if known."""
    if data is not None:
        if b"\x00" not in data:
            return decoded
        lines: list = data.splitlines(keepends=True)
        nul: object = b"\x00"
    else:
        if "\x00" not in decoded.text:
            return decoded
        lines = io.StringIO(decoded.text, newline="").readlines()
        nul = "\x00"
    for number, line in enumerate(lines, start=1):
        col = line.find(nul)
        while col >= 0:
            decoded.bad.setdefault(number, []).append((col + 1, f"NUL byte at column {col + 1}"))
            col = line.find(nul, col + 1)
    if "\x00" in decoded.text:
        # csv can choke on NUL; the records holding one are refused, so blank them out.
        decoded.text = decoded.text.replace("\x00", " ")
    return decoded


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
    header_row: int,
    find_header: list[str] | None,
    delimiter: str | None,
    encoding: str | None,
    legacy: str,
) -> Table:
    if not data.strip():
        raise ReadError(f"{name}: the file is empty")
    decoded = _decode(name, data, encoding, legacy)
    del data  # the text is all we need from here on; a 100k-row file is ~30 MB of bytes
    sep, text = _split_sep_line(decoded.text)
    if not text.strip():
        raise ReadError(f"{name}: the file holds no rows")
    line_offset = 1 if sep else 0
    if delimiter:
        usual = 0
    elif sep:
        delimiter, usual = sep, 0
    else:
        delimiter, usual = detect_delimiter(text)
    table = Table(header=[], rows=[], format="csv", encoding=decoded.encoding, delimiter=delimiter)
    reader = csv.reader(_physical_lines(text), delimiter=delimiter)
    try:
        _fill_csv_table(name, table, reader, line_offset, header_row, find_header, usual, decoded.bad)
    except csv.Error as exc:
        raise ReadError(f"{name}: line {line_offset + reader.line_num}: cannot parse the CSV ({exc})") from exc
    return table


def _physical_lines(text: str):
    """The text's lines with their endings, as csv.reader wants them.

    Splitting on LF by hand is faster than io.StringIO and does not copy the whole text into
    a 4-bytes-per-character buffer (82 MiB for a 100k-row export). Text with bare CR line
    endings goes through StringIO, which splits on those too.
    """
    if text.count("\r") != text.count("\r\n"):
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


def _locate_csv_header(name, reader, line_offset, header_row, find_header) -> tuple[list[str], int, int]:
    """Read up to the header record; return its cells and the physical lines it starts/ends on."""
    wanted = {_match_key(n) for n in find_header} if find_header else None
    limit = FIND_HEADER_WITHIN if wanted else header_row
    previous_end = 0
    for index, record in enumerate(reader, start=1):
        if index > limit:
            break
        start, previous_end = previous_end + 1, reader.line_num
        if (wanted and _is_header(record, wanted)) or (not wanted and index == header_row):
            return record, line_offset + start, line_offset + previous_end
    if wanted:
        raise ReadError(
            f"{name}: no header row with the columns {', '.join(find_header)} "
            f"in the first {FIND_HEADER_WITHIN} rows"
        )
    raise ReadError(f"{name}: no header: the file has fewer than {header_row} rows")


def _fill_csv_table(name, table, reader, line_offset, header_row, find_header, usual, bad) -> None:
    """The CSV loop: header, then one Row per record; refused records become Problems."""
    cells, header_start, header_end = _locate_csv_header(name, reader, line_offset, header_row, find_header)
    for line in range(header_start, header_end + 1):
        if line in bad:
            raise ReadError(f"{name}: line {line}: the header holds a bad byte: {bad[line][0][1]}")
    header = _name_columns(cells, f"{name}: line {header_end}")
    if len(header) == 1 and usual > 1:
        raise ReadError(
            f"{name}: line {header_end}: the header has one column but the rows have {usual} "
            f"fields separated by {table.delimiter!r}; set the delimiter or fix the header"
        )
    table.header = header
    width = len(header)
    rows, problems = table.rows, table.problems
    previous_end = header_end - line_offset
    shared = _SharedText()
    for record in reader:
        start = line_offset + previous_end + 1
        previous_end = reader.line_num
        if bad and _refuse_bad_bytes(start, line_offset + previous_end, bad, problems):
            continue
        count = len(record)
        if count != width:
            if count > width:
                extra = record[width:]
                if any(v.strip() for v in extra):
                    problems.append(_shape_problem(record, width, start))
                    continue
                record = record[:width]
            else:
                record = record + [""] * (width - count)
        first = record[0]
        if (not first or first.isspace()) and not "".join(record).strip():
            continue  # blank row
        rows.append(Row(start, dict(zip(header, shared.cells(record)))))


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

    def cells(self, texts: list[str]) -> list[str]:
        self._rows += 1
        if self._rows % self.ROWS_REMEMBERED == 0:
            self._seen.clear()
        keep = self._seen.setdefault
        return list(map(keep, texts, texts))


def _refuse_bad_bytes(start: int, end: int, bad: dict, problems: list[Problem]) -> bool:
    """If the record spans a line with bad bytes, add a Problem per bad byte and return True."""
    found = [(n, hit) for n in range(start, end + 1) for hit in bad.get(n, ())]
    for line, (col, reason) in found:
        where = "" if line == start else f" (line {line})"
        problems.append(Problem(kind="encoding", reason=reason + where, line=start))
    return bool(found)


def _shape_problem(record: list[str], width: int, line: int) -> Problem:
    extra = [v for v in record[width:] if v.strip()]
    return Problem(
        kind="shape",
        reason=f"the row has {len(record)} fields but the header has {width}; "
        f"extra values are not read",
        line=line,
        value=", ".join(extra)[:200],
    )


# --------------------------------------------------------------------------- workbooks


def _read_workbook(path: Path, kind: str, header_row, find_header, sheet, *, preflight: bool = True) -> Table:
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
                _add_sheet(path.name, table, name, raw, header_row, find_header, all_sheets=sheet == "*")
            if len(names) > 1:
                _fill_missing_columns(table)  # sheets whose headers differ
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


def _add_sheet(file, table, name, raw, header_row, find_header, all_sheets) -> None:
    """Append one sheet's rows to the table; row numbers are the sheet's own (1-based)."""
    first_col = raw.start[1] if raw.start else 0  # iter_rows pads rows from row 1, not columns
    rows = raw.iter_rows()
    where = f"{file}, sheet {name!r}"
    found = _locate_sheet_header(rows, header_row, find_header)
    if found is None:
        if all_sheets:
            table.problems.append(Problem(kind="header", severity="warning", sheet=name,
                                          reason=f"sheet {name!r} skipped: no header row found"))
            return
        what = f"the columns {', '.join(find_header)}" if find_header else f"row {header_row}"
        raise ReadError(f"{where}: no header row ({what} not found)")
    cells, header_line = found
    header = _name_columns([_cell_text(v) for v in cells], f"{where}, row {header_line}", first_col)
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
        append(Row(number, dict(zip(header, shared.cells(texts))), sheet_name))


def _locate_sheet_header(rows, header_row, find_header):
    """Consume rows up to the header; return (cells, 1-based row number) or None."""
    wanted = {_match_key(n) for n in find_header} if find_header else None
    limit = FIND_HEADER_WITHIN if wanted else header_row
    for number, values in enumerate(islice(rows, limit), start=1):
        if wanted:
            if _is_header([_cell_text(v) for v in values], wanted):
                return values, number
        elif number == header_row:
            return values, number
    return None


def _fill_missing_columns(table: Table) -> None:
    """Give every row of every sheet all the table's columns, so rows look alike to the mapping."""
    for row in table.rows:
        if len(row.cells) < len(table.header):
            for column in table.header:
                row.cells.setdefault(column, "")


_MIDNIGHT = time(0, 0)


def _cell_text(value: object) -> str:
    """A calamine cell as the text a person sees: 479.0 -> "479", 0.87 -> "0.87", dates ISO."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[return-value]
    if kind is float:
        return str(int(value)) if value.is_integer() else repr(value)  # type: ignore[union-attr]
    if kind is bool:
        return "TRUE" if value else "FALSE"
    if kind is int:
        return str(value)
    if kind is datetime:
        if value.time() == _MIDNIGHT and value.tzinfo is None:  # type: ignore[union-attr]
            return value.date().isoformat()  # type: ignore[union-attr]
        return value.isoformat(timespec="seconds")  # type: ignore[union-attr]
    if kind is date:
        return value.isoformat()  # type: ignore[union-attr]
    if kind is time:
        return value.strftime("%H:%M:%S")  # type: ignore[union-attr]
    if kind is timedelta:
        seconds = int(value.total_seconds())  # type: ignore[union-attr]
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
        raise ReadError(f"{file}: refused: the workbook unpacks to {total // 2**20} MB (limit {MAX_UNCOMPRESSED // 2**20} MB)")
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
            max_row = max(max_row, max(map(int, rows)))
        wide = _WIDE_CELL_REF.findall(block)
        if wide:
            far = max({col for col, _ in wide}, key=lambda c: (len(c), c))
            max_col = max(max_col, _column_number(far))
            max_row = max(max_row, max(int(r) for _, r in wide))
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
