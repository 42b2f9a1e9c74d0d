"""The per-file report a person reads, and the rejected-rows CSV they open in Excel.

`<name>.report.json` has this shape (the pipeline fills it; `new_report` gives the skeleton):

    {
      "file": "export.csv",                 # the file's name, never a secret-bearing URL
      "sha256": "…", "size": 12345,         # of the file's bytes as claimed
      "status": "done",                     # done | refused | waiting | duplicate (model.FileStatus)
      "mapping": {"name": "stock2shop", "sha256": "…"},
      "read": {"format": "csv", "encoding": "utf-8-sig", "delimiter": ";", "sheet": null, "rows": 120},
      "counts": {
        "products": 30, "variants": 118,    # built from the file
        "products_held_back": 1,            # a row of theirs failed, so none of them was sent
        "rows_refused": 2, "rows_skipped": 1,
        "images_found": 40, "images_refused": 2,
        "items_sent": 110, "items_unchanged": 6, "images_sent": 38
      },
      "timings_s": {"read": 0.1, "map": 0.2, "check": 0.0, "plan": 0.0, "send": 9.5, "total": 9.8},
      "requests": {"total": 42, "by_status": {"200": 40, "429": 2}},
      "problems": [Problem.as_dict(), …],   # at most MAX_PROBLEMS, in the order found
      "problems_truncated": 0,              # how many were left out of `problems`
      "problems_by_kind": {"type": 2, "image": 2},        # uncapped counts
      "problems_by_severity": {"error": 2, "warning": 2}, # uncapped counts
      "started_at": "2025-01-31T10:00:00+00:00", "finished_at": "…",
      "connector_version": "0.1.0"
    }

The report never holds a token or password: it is built only from file content, counts and
problems, and written with mode 0644 so support staff can read it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .model import Problem, Row

MAX_PROBLEMS = 10_000  # keeps a report of a badly mapped 100k-row file readable and small
COUNT_KEYS = (
    "products",
    "variants",
    "products_held_back",
    "rows_refused",
    "rows_skipped",
    "images_found",
    "images_refused",
    "items_sent",
    "items_unchanged",
    "images_sent",
)
TIMING_KEYS = ("read", "map", "check", "plan", "send", "total")

# Spreadsheet programs run a cell starting with one of these as a formula (OWASP ASVS 5.0 §1.2.10).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")
# A plain number (-2.50, +5, -1,299.50, 1.5E3) is data, not a formula, and stays as it is.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d+)*|[.,]\d+)(?:[eE][+-]?\d+)?")


def new_report(file: str, *, connector_version: str) -> dict[str, Any]:
    """An empty report for `file` with every section present and every count at zero."""
    return {
        "file": file,
        "sha256": None,
        "size": None,
        "status": None,
        "mapping": {"name": None, "sha256": None},
        "read": {"format": None, "encoding": None, "delimiter": None, "sheet": None, "rows": 0},
        "counts": dict.fromkeys(COUNT_KEYS, 0),
        "timings_s": dict.fromkeys(TIMING_KEYS, 0.0),
        "requests": {"total": 0, "by_status": {}},
        "problems": [],
        "problems_truncated": 0,
        "problems_by_kind": {},
        "problems_by_severity": {},
        "started_at": None,
        "finished_at": None,
        "connector_version": connector_version,
    }


def set_problems(report: dict[str, Any], problems: Iterable[Problem]) -> None:
    """Store `problems` in `report`: the first MAX_PROBLEMS in full, every one in the counts."""
    stored: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    severities: Counter[str] = Counter()
    summaries = 0  # stored problems that stand for `count` problems not listed one by one
    for problem in problems:
        number = problem.count or 1
        kinds[problem.kind] += number
        severities[problem.severity] += number
        if len(stored) < MAX_PROBLEMS:
            stored.append(problem.as_dict())
            summaries += problem.count is not None
    report["problems"] = stored
    report["problems_truncated"] = sum(kinds.values()) - (len(stored) - summaries)
    report["problems_by_kind"] = dict(kinds.most_common())
    report["problems_by_severity"] = dict(severities.most_common())


def add_problems(report: dict[str, Any], problems: Iterable[dict[str, Any]]) -> None:
    """Add problems found later (while sending) to a report made by `set_problems`."""
    kinds = Counter(report.get("problems_by_kind", {}))
    severities = Counter(report.get("problems_by_severity", {}))
    stored = report.setdefault("problems", [])
    for problem in problems:
        kinds[problem["kind"]] += 1
        severities[problem.get("severity", "error")] += 1
        if len(stored) < MAX_PROBLEMS:
            stored.append(problem)
        else:
            report["problems_truncated"] = report.get("problems_truncated", 0) + 1
    report["problems_by_kind"] = dict(kinds.most_common())
    report["problems_by_severity"] = dict(severities.most_common())


def write_json_atomic(path: Path, data: dict[str, Any], *, mode: int = 0o644) -> None:
    """Write `data` as indented UTF-8 JSON to `path`, all or nothing, durably.

    A reader sees the old file or the new one, never half of one, and no temporary file is
    left behind, even when serialising fails.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    _write_atomic(path, text.encode("utf-8"), mode=mode)


def iso_utc(at: float) -> str:
    """A Unix time as the ISO 8601 UTC text every report, status and health file uses."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def write_rejected_csv(path: Path, header: list[str], rejected: list[tuple[Row, str]]) -> None:
    """Write the refused rows to `path`: the original columns, then `line` and `reason`.

    Text that a spreadsheet would run as a formula is neutralised (see `neutralise`). The file
    is UTF-8 with a BOM so Excel shows accents right, and is written atomically.
    """
    extra = _unique(["line", "reason"], header)
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow([neutralise(name) for name in header + extra])
    for row, reason in rejected:
        writer.writerow([neutralise(row.cells.get(name, "")) for name in header] + [str(row.line), neutralise(reason)])
    _write_atomic(path, out.getvalue().encode("utf-8-sig"))


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


def summarise(report: dict[str, Any]) -> str:
    """A few lines for a terminal: file, status, what was sent, problems by kind, time."""
    counts = report.get("counts", {})
    c = lambda key: counts.get(key, 0)
    read = report.get("read", {})
    source = ", ".join(
        str(v) for v in (read.get("format"), read.get("encoding"), _delimiter_name(read.get("delimiter")), read.get("sheet")) if v
    )
    lines = [
        f"{report.get('file', '?')}: {report.get('status') or 'checked'}"
        + (f" in {report['timings_s']['total']:.1f} s" if report.get("timings_s", {}).get("total") else ""),
        f"  read: {read.get('rows', 0)} rows" + (f" ({source})" if source else ""),
        f"  built: {c('products')} products, {c('variants')} variants, {c('images_found')} images"
        f"; held back: {c('products_held_back')} products",
        f"  rows refused: {c('rows_refused')}, skipped: {c('rows_skipped')}; images refused: {c('images_refused')}",
    ]
    if c("items_sent") or c("images_sent") or c("items_unchanged"):
        lines.append(
            f"  sent: {c('items_sent')} items, {c('images_sent')} images; unchanged: {c('items_unchanged')} items"
        )
    by_kind = report.get("problems_by_kind") or {}
    if by_kind:
        lines.append("  problems: " + ", ".join(f"{n} {kind}" for kind, n in by_kind.items()))
    else:
        lines.append("  problems: none")
    return "\n".join(lines)


def _write_atomic(path: Path, payload: bytes, *, mode: int = 0o644) -> None:
    """Temp file in the same folder, fsync, os.replace, fsync the folder."""
    folder = path.parent
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; reports are for support staff to read
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable. Not every filesystem can fsync a folder (SMB, Windows): best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
