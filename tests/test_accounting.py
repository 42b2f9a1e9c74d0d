"""Every input row accounted for: rows read = items + folded + refused + skipped, on every plan.

The suite runs with CONNECTOR_STRICT_ROWS=1 (tests/conftest.py), so every plan any test makes
raises when a row is unaccounted for. tests/test_corpus.py checks every corpus file with
`assert_every_row_once`; these tests add the examples, pin a few reconciliations, and show that
the check itself catches a row counted twice or not at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.accounting import STRICT_ENV, RowAccount, UnaccountedRows, account_rows, settle
from connector.config import Settings
from connector.mapping import parse_mapping
from connector.model import Problem, Product, Rejected, Row, Table
from connector.pipeline import plan_file
from connector.report import Report, summarise
from tests.support import assert_every_row_once
from tests.test_corpus import CORPUS

ROOT = Path(__file__).resolve().parents[1]
MAPPING = parse_mapping({"group_by": "code", "product": {"title": "title"},
                         "variant": {"source_variant_code": "sku", "sku": "sku", "price": "price"}})


@pytest.mark.skipif(not (CORPUS / "facts.json").is_file(), reason="the corpus (../shared/corpus) is not here")
@pytest.mark.parametrize("path, preset, expected", [
    ("woocommerce/sample_products.csv", "woocommerce",
     RowAccount(25, 21, {"parent": 2}, 0, {'skip_rows[0]: column "Type" is "grouped" or "external"': 2})),
    ("akeneo/non_utf8.csv", "akeneo", RowAccount(112, 110, {}, 2, {})),
    ("openboxes/inventory.xls", "openboxes-count",
     RowAccount(577, 241, {"same_variant": 242}, 0, {'skip_rows[0]: column "CODE" is blank': 94})),
])
def test_corpus_reconciliations(path, preset, expected):
    assert plan_file(CORPUS / path, Settings(), mapping=preset).rows == expected


@pytest.mark.parametrize("name", ["products.csv", "products.xlsx"])
def test_every_row_of_the_examples_is_accounted_for(name):
    rows = assert_every_row_once(plan_file(ROOT / "examples" / name, Settings(), mapping="stock2shop"))
    assert rows.refused and rows.items  # the examples hold refused rows on purpose


def test_records_refused_while_reading_count_even_past_the_listed_ones(tmp_path):
    """Past the first 1,000 problems of a kind the reader stops listing them; the rows still count."""
    good = [f"P{i},S{i},Tee,10" for i in range(50)]
    bad = [f"Q{i},T{i},Mug,5,extra,values" for i in range(1100)]  # more fields than the header
    path = tmp_path / "wide.csv"
    path.write_text("code,sku,title,price\n" + "\n".join(good + bad) + "\n", encoding="utf-8")
    plan = plan_file(path, Settings(), mapping=MAPPING)
    assert plan.table.rows_refused == 1100 and len(plan.rejected) < 1100  # not all listed
    assert plan.rows == RowAccount(1150, 50, {}, 1100, {})
    report = plan.fill(Report(file="wide.csv"))
    assert report.counts.rows_refused == 1100
    assert report.to_json()["rows"] == {"read": 1150, "items": 50, "folded": {}, "refused": 1100, "skipped": {}}
    assert "  rows: 1150 read = 50 items + 0 folded + 1100 refused + 0 skipped" in summarise(report)


def table(*lines: int, refused: int = 0) -> Table:
    return Table(header=["code"], rows=[Row(n, {"code": str(n)}) for n in lines], format="csv", rows_refused=refused)


def test_the_check_catches_a_row_counted_twice_and_a_row_in_no_count():
    items = [Product("P", [{}, {}], [2, 3])]
    ok, wrong = account_rows(table(2, 3, 4), items, {}, {(None, 4): "rule"}, [])
    assert wrong == [] and ok == RowAccount(3, 2, {}, 0, {"rule": 1})
    _, twice = account_rows(table(2, 3, 4), items, {}, {(None, 4): "rule"}, [Rejected(Row(3, {}), "bad")])
    assert twice[0] == "line 3: item and refused"
    _, none = account_rows(table(2, 3, 4, 5), items, {}, {(None, 4): "rule"}, [])
    assert none[0] == "line 5: in no count" and "do not add up: 4 read = 2 items" in none[-1]


def test_an_unaccounted_row_raises_in_strict_mode_and_is_logged_and_reported_otherwise(monkeypatch, caplog):
    with pytest.raises(UnaccountedRows, match=r"x\.csv: rows not accounted for exactly .*line 5: in no count"):
        settle(RowAccount(), ["line 5: in no count"], "x.csv", [])
    monkeypatch.delenv(STRICT_ENV)
    problems: list[Problem] = []
    with caplog.at_level(logging.ERROR, logger="connector.accounting"):
        settle(RowAccount(), ["line 5: in no count"], "x.csv", problems)
    assert "a bug of the connector" in caplog.text
    assert [(p.kind, p.severity) for p in problems] == [("accounting", "warning")]


def test_a_sku_in_scientific_notation_gives_one_message_for_its_cell(tmp_path):
    path = tmp_path / "sci.csv"
    path.write_text("code,sku,title,price\nP1,7.67E+11,Tee,10\nP2,S2,Mug,5\n", encoding="utf-8")
    plan = plan_file(path, Settings(), mapping=MAPPING)
    errors = [p for p in plan.problems if p.severity == "error"]
    assert len(errors) == 1 and "scientific notation" in errors[0].reason, [p.reason for p in errors]
    assert plan.rows == RowAccount(2, 1, {}, 1, {})


def test_a_file_the_mapping_cannot_map_refuses_every_row(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("item,name\nA,Tee\nB,Mug\n", encoding="utf-8")
    plan = plan_file(path, Settings(), mapping=MAPPING)
    assert plan.refused and plan.rows == RowAccount(2, 0, {}, 2, {})
