"""The per-file report JSON and the formula-safe rejected-rows CSV."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from connector.common import write_json_atomic
from connector.model import Problem, Rejected, Row
from connector.report import (
    MAX_PROBLEMS,
    Report,
    neutralise,
    summarise,
    write_rejected_csv,
    write_report_files,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("=1+2", "'=1+2"),
        ('=HYPERLINK("http://evil","click")', '\'=HYPERLINK("http://evil","click")'),
        ("+27 11 555 0100", "'+27 11 555 0100"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("\x00x", "'\x00x"),
        ("-", "'-"),
        ("-2.50", "-2.50"),
        ("+5", "+5"),
        ("-1,299.50", "-1,299.50"),
        ("-1.5E3", "-1.5E3"),
        ("00123", "00123"),
        ("Blue shirt", "Blue shirt"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_neutralise_prefixes_formula_text_but_not_plain_numbers(text: str, expected: str):
    assert neutralise(text) == expected


def test_rejected_csv_has_the_original_columns_then_row_line_and_reason(tmp_path: Path):
    path = tmp_path / "export.csv.rejected.csv"
    header = ["sku", "title", "price"]
    rejected = [
        (Row(line=3, cells={"sku": "00123", "title": "=cmd|' /C calc'!A0", "price": "-2.50"}), "price: not a number"),
        (Row(line=9, cells={"sku": "A,9", "title": "Café \"quoted\"\nsecond line", "price": "abc"}), "=bad reason"),
        (Row(line=11, cells={"sku": "X"}), "title is required"),
    ]
    write_rejected_csv(path, header, rejected)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM so Excel reads UTF-8
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["sku", "title", "price", "row", "line", "reason"],
        ["00123", "'=cmd|' /C calc'!A0", "-2.50", "3", "3", "price: not a number"],
        ["A,9", 'Café "quoted"\nsecond line', "abc", "9", "9", "'=bad reason"],
        ["X", "", "", "11", "11", "title is required"],
    ]


def test_rejected_csv_keeps_a_file_column_named_line(tmp_path: Path):
    path = tmp_path / "r.csv"
    write_rejected_csv(path, ["line", "sku"], [(Row(line=5, cells={"line": "L1", "sku": "S"}), "bad")])
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"line": "L1", "sku": "S", "row": "5", "rejected_line": "5", "reason": "bad"}]


def test_json_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path):
    path = tmp_path / "export.csv.report.json"
    path.write_text("old")
    write_json_atomic(path, {"file": "export.csv", "title": "Café", "when": tmp_path})
    assert json.loads(path.read_text(encoding="utf-8")) == {"file": "export.csv", "title": "Café", "when": str(tmp_path)}
    assert os.listdir(tmp_path) == ["export.csv.report.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_json_write_keeps_the_old_file_and_no_temporary(tmp_path: Path):
    path = tmp_path / "r.json"
    path.write_text('{"old": true}')

    class Boom:
        def __str__(self):
            raise RuntimeError("cannot serialise")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"x": Boom()})
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["r.json"]


def test_problems_are_capped_but_counted_in_full():
    typed = Report("export.csv")
    problems = [Problem(kind="type", reason="bad", line=i) for i in range(MAX_PROBLEMS + 5)]
    problems += [Problem(kind="image", reason="missing", severity="warning")] * 3
    typed.problems.add(problems)
    report = typed.to_json()
    assert len(report["problems"]) == MAX_PROBLEMS
    assert report["problems"][0] == {"kind": "type", "reason": "bad", "severity": "error", "line": 0}
    assert report["problems_truncated"] == 8
    assert report["problems_by_kind"] == {"type": MAX_PROBLEMS + 5, "image": 3}
    assert report["problems_by_severity"] == {"error": MAX_PROBLEMS + 5, "warning": 3}


def test_a_new_report_has_every_section_and_serialises():
    report = Report("export.csv").to_json()
    for key in ("file", "sha256", "size", "status", "mapping", "read", "counts", "timings_s", "requests",
                "problems", "problems_by_kind", "started_at", "finished_at", "connector_version"):
        assert key in report
    assert set(report["counts"]) >= {"products", "variants", "items_sent", "images_sent", "rows_refused"}
    json.dumps(report)


def test_summary_names_the_file_status_counts_problems_and_time():
    report = Report("export.csv", status="done")
    report.read.format, report.read.encoding, report.read.delimiter, report.read.rows = "csv", "cp1252", ";", 120
    c = report.counts
    c.products, c.variants, c.images_found, c.items_sent, c.images_sent = 30, 118, 40, 110, 38
    c.products_held_back, c.rows_refused = 1, 2
    report.timings["total"] = 9.84
    report.problems.add([Problem(kind="type", reason="x")] * 2 + [Problem(kind="image", reason="y", severity="warning")])
    text = summarise(report)
    assert text.splitlines()[0] == "export.csv: done in 9.8 s"
    assert "120 rows (csv, cp1252, semicolon-separated)" in text
    assert "30 products, 118 variants, 40 images; held back: 1 products" in text
    assert "sent: 110 items, 38 images" in text
    assert "problems: 2 type, 1 image" in text
    assert len(text.splitlines()) <= 8


def test_summary_of_a_check_without_sending_says_nothing_was_sent():
    report = Report("x.xlsx", status="checked")
    text = summarise(report)
    assert "sent:" not in text
    assert "problems: none" in text


def test_a_report_kept_in_the_ledger_comes_back_the_same():
    report = Report("export.csv", status="done", sha256="ab" * 32, size=10, mapping_name="m", started_at=100.0)
    report.counts.items_sent = 7
    report.requests.update({"200": 3, "429": 1})
    report.problems.add([Problem(kind="api", reason="refused", product="P1")])
    report.header = ["sku", "price"]
    report.rejected = [Rejected(Row(3, {"sku": "A", "price": "x"}, "Sheet1"), "price: not a number")]
    data, rejected = report.to_ledger()
    back = Report.from_ledger(json.loads(json.dumps(data)), json.loads(json.dumps(rejected)), started_at=100.0)
    assert back.to_json() == report.to_json()
    assert back.rejected == report.rejected and back.header == report.header
    assert [p.product for p in back.problems.stored] == ["P1"]


def test_one_writer_makes_the_report_and_the_rejected_rows_beside_a_stem(tmp_path: Path):
    report = Report("export.csv", status="refused").fail("refused", "data", "no row of the file could be sent")
    report.header = ["sku"]
    report.rejected = [Rejected(Row(2, {"sku": "=1+1"}), "title is required")]
    path = write_report_files(report, tmp_path / "export.csv", sidecar=".error.json")
    assert path == tmp_path / "export.csv.error.json"
    assert json.loads(path.read_text())["error"] == {"kind": "data", "message": "no row of the file could be sent"}
    assert "'=1+1" in (tmp_path / "export.csv.rejected.csv").read_text(encoding="utf-8-sig")
    clean = Report("ok.csv", status="done")
    write_report_files(clean, tmp_path / "ok.csv")
    assert not (tmp_path / "ok.csv.rejected.csv").exists()
