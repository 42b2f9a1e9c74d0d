"""How a run ends: one table from outcome to exit code, and the exception tree behind it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from connector import cli
from connector.cli import EXIT_CODES, error_outcome, main
from connector.errors import (
    AlreadyRunning,
    ApiUnavailable,
    AuthFailed,
    CellError,
    ConfigError,
    ConnectorError,
    DataRejected,
    FatalError,
    ImageError,
    MappingError,
    OversizedItem,
    ReadError,
    RefusedData,
    RetriableError,
    SetupError,
)
from connector.model import Rejected, Row
from connector.report import Report

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def in_workdir(sandbox, tmp_path: Path, monkeypatch, *, source_id: str) -> None:
    """The example export in tmp_path as the current folder, the credentials pointing at `sandbox`."""
    shutil.copytree(EXAMPLES, tmp_path / "examples", ignore=shutil.ignore_patterns("*.py"))
    monkeypatch.chdir(tmp_path)
    for key, value in {"S2S_API_URL": sandbox.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo",
                       "S2S_SOURCE_ID": source_id}.items():
        monkeypatch.setenv(key, value)


def report(status, *, kind=None, to_send=0, sent=0, refused_by_api=0, rejected=0):
    r = Report("f.csv", status=status, error_kind=kind)
    r.counts.items_to_send, r.counts.items_sent, r.counts.products_refused_by_api = to_send, sent, refused_by_api
    r.rejected = [Rejected(Row(n + 2, {}), "bad") for n in range(rejected)]
    return r


@pytest.mark.parametrize("made, strict, expected_outcome, code", [
    (report("done", to_send=9, sent=9), False, "done", 0),
    (report("duplicate"), False, "duplicate", 0),
    (report("checked"), False, "checked", 0),
    (report("done", to_send=9, sent=9, rejected=2), False, "done", 0),
    (report("done", to_send=9, sent=9, rejected=2), True, "rows_refused", 1),
    (report("done", to_send=9, sent=7, refused_by_api=1), True, "rows_refused", 1),
    (report("done", to_send=9, sent=0, refused_by_api=4), False, "refused_by_api", 1),
    (report("done", to_send=0, sent=0), False, "done", 0),  # everything unchanged: nothing to send is fine
    (report("refused", kind="data"), False, "refused", 1),
    (report("refused", kind="read"), False, "refused", 1),
    (report("refused", kind="mapping"), False, "mapping", 2),
    (report("waiting", kind="io"), False, "waiting", 3),
    (report("waiting"), False, "waiting", 3),
])
def test_every_outcome_has_one_exit_code(made, strict, expected_outcome, code):
    assert made.outcome(strict=strict) == expected_outcome
    assert EXIT_CODES[expected_outcome] == code


@pytest.mark.parametrize("exc, branch, code", [
    (ConfigError(["api.rate: not a number"]), FatalError, 2),
    (MappingError(["fields.price.type: unknown"]), FatalError, 2),
    (AuthFailed("login refused", 401), FatalError, 2),
    (SetupError("HTTP 404; check api.url", 404), FatalError, 2),
    (AlreadyRunning("held by pid 7"), FatalError, 2),
    (ApiUnavailable("gave up after 300 s"), RetriableError, 3),
    (ReadError("x.csv: not a table"), RefusedData, 1),
    (DataRejected("HTTP 400", 400, []), RefusedData, 1),
    (CellError("is not a number"), RefusedData, 1),
    (ImageError("not a JPEG or PNG"), RefusedData, 1),
    (OversizedItem("P", 10, 5), RefusedData, 1),
    (RuntimeError("a bug"), None, 4),
])
def test_every_error_is_in_one_tree_and_its_branch_gives_the_exit_code(exc, branch, code):
    if branch is not None:
        assert isinstance(exc, ConnectorError) and isinstance(exc, branch)
    assert EXIT_CODES[error_outcome(exc)] == code


def test_an_unexpected_error_exits_4_not_like_a_usage_error(capsys):
    assert cli._fail_with(RuntimeError("boom at https://x/v1?token=" + "a" * 40)) == 4
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: boom" in err and "a" * 40 not in err


def test_an_api_error_message_is_redacted_when_it_is_made():
    exc = ApiUnavailable("POST /v1/products/queue?token=" + "f" * 40 + " timed out")
    assert "f" * 40 not in str(exc) and "token=***" in str(exc)


def test_a_data_refusal_says_whether_it_named_the_bad_items():
    named = DataRejected("HTTP 400", 400, [{"index": 3, "field": "sku", "message": "required"}])
    unnamed = DataRejected("HTTP 400", 400, [{"message": "bad request"}])
    assert named.indexes == {3} and unnamed.indexes is None


def test_a_push_the_api_refuses_whole_exits_1_so_a_cron_job_notices(sandbox, tmp_path, monkeypatch, capsys):
    in_workdir(sandbox, tmp_path, monkeypatch, source_id="99")  # another account's source: every item is refused
    code = main(["push", "examples/products.csv"])
    written = json.loads((tmp_path / "reports" / "products.csv.report.json").read_text())
    assert written["counts"]["items_to_send"] > 0 and written["counts"]["items_sent"] == 0, written["counts"]
    assert written["counts"]["products_refused_by_api"] > 0
    assert code == 1, capsys.readouterr()


def test_a_damaged_ledger_stops_a_push_with_its_path_and_what_to_do(sandbox, tmp_path, monkeypatch, capsys):
    in_workdir(sandbox, tmp_path, monkeypatch, source_id="1")
    assert main(["push", "examples/products.csv"]) == 0
    capsys.readouterr()
    ledger = tmp_path / "state" / "ledger.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{ledger}{extra}").unlink(missing_ok=True)
    ledger.write_bytes(b"")  # emptied: a power cut on a full disk
    assert main(["push", "examples/products.csv"]) == 2
    err = capsys.readouterr().err
    assert str(ledger) in err and "backup" in err and "journaled work stays in the ledger" not in err


def test_a_report_folder_that_cannot_be_written_names_it_and_the_reason(sandbox, tmp_path, monkeypatch, capsys):
    in_workdir(sandbox, tmp_path, monkeypatch, source_id="1")
    (tmp_path / "reports").write_text("a file where the report folder should be")
    assert main(["push", "examples/products.csv"]) == 2
    err = capsys.readouterr().err
    assert "reports" in err and "unexpected" not in err
