"""The ledger on a real SQLite file: durable settings, owner-only files, order, atomic journaling."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from connector.errors import LedgerError
from connector.ledger import Ledger
from connector.model import ImageJob
from connector.report import Report
from connector.wire import item_hash

ENDPOINT = "http://api#source=1"


def item(code: str, variant: str) -> dict:
    return {"source": {"source_product_code": code}, "product": {"variants": {"source_variant_code": variant}}}


def image_job(code: str, image_id: str, sha256: str) -> ImageJob:
    return ImageJob(path="/x", sha256=sha256, size=1, format="JPEG", source_product_code=code,
                    source_variant_code=None, image_id=image_id, main=False, line=2)


def journal(ledger: Ledger, name: str, batches, images=(), endpoint=ENDPOINT) -> int:
    report = Report(name, sha256=name * 8, size=1, mapping_sha256="m", started_at=1.0)
    return ledger.journal(report, mtime_ns=1, endpoint=endpoint, batches=batches, images=images)


def test_the_ledger_is_durable_and_readable_only_by_its_owner(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    journal(ledger, "a", [[item("P", "P-1")]])
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / "state" / f"ledger.sqlite{suffix}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, suffix
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700


def test_jobs_drain_in_the_order_written_and_images_after_their_batch(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    journal(ledger, "a", [[item("P", "P-1")], [item("Q", "Q-1")]], images=[(0, {"image_id": "p.jpg"})])
    journal(ledger, "b", [[item("R", "R-1")]])
    order = []
    while (job := ledger.next_job(ENDPOINT)) is not None:
        order.append((job.kind, job.after_job))
        if job.kind == "products":
            ledger.products_acknowledged(job.id, [])
        else:
            ledger.images_acknowledged([(job.id, image_job("P", "p.jpg", "sha"))])
    first_batch = ledger.db.execute("SELECT MIN(id) FROM jobs").fetchone()[0]
    assert order == [("products", None), ("products", None), ("image", first_batch), ("products", None)]


def test_a_failed_journal_leaves_nothing_behind(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    with pytest.raises(TypeError):
        journal(ledger, "a", [[item("P", "P-1")], [object()]])  # the second batch can't be stored
    assert ledger.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    assert ledger.db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_an_acknowledgement_and_what_it_acknowledged_are_one_transaction(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    journal(ledger, "a", [[item("P", "P-1"), item("P", "P-2")]])
    job = ledger.next_job(ENDPOINT)
    ledger.products_acknowledged(job.id, [item("P", "P-1")], remaining=[item("P", "P-2")])
    job = ledger.next_job(ENDPOINT)
    assert job.payload == [item("P", "P-2")]  # half acknowledged: only the rest is left to send
    assert [v.variant_code for v in ledger.catalogue_variants(ENDPOINT)] == ["P-1"]
    ledger.products_acknowledged(job.id, [item("P", "P-2")])
    assert ledger.next_job(ENDPOINT) is None
    assert ledger.catalogue_hashes(ENDPOINT, ["P"]) == {("P", "P-1"): item_hash(item("P", "P-1")),
                                                        ("P", "P-2"): item_hash(item("P", "P-2"))}
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite") as db:  # a second process sees it all
        assert db.execute("SELECT state FROM jobs").fetchall() == [("done",)]


def test_work_for_another_endpoint_is_kept_but_never_offered(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    journal(ledger, "a", [[item("P", "P-1")]], endpoint="http://other#source=9")
    assert ledger.next_job(ENDPOINT) is None
    assert ledger.other_endpoints(ENDPOINT) == ["http://other#source=9"]
    assert ledger.backlog()["batches"] == 1


def test_a_ledger_from_before_the_started_at_column_is_brought_up_to_date(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "ledger.sqlite") as db:  # the files table as an earlier version made it
        db.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL,"
                   " size INTEGER NOT NULL, mtime_ns INTEGER, mapping_sha256 TEXT, endpoint TEXT NOT NULL DEFAULT '',"
                   " status TEXT NOT NULL, report TEXT NOT NULL, rejected TEXT NOT NULL DEFAULT '{}',"
                   " created_at REAL NOT NULL, finished_at REAL)")
        db.execute("INSERT INTO files (sha256, name, size, status, report, created_at)"
                   " VALUES ('x', 'old.csv', 1, 'done', '{\"file\": \"old.csv\"}', 5)")
    ledger = Ledger.open(state)
    file_id = journal(ledger, "a", [[item("P", "P-1")]])
    assert ledger.file_report(file_id).started_at == 1.0
    assert ledger.file_report(1).file == "old.csv" and ledger.file_report(1).started_at is None


def test_a_ledger_that_existed_and_is_now_empty_or_gone_is_never_silently_replaced(tmp_path):
    state = tmp_path / "state"
    ledger = Ledger.open(state)
    journal(ledger, "a", [[item("P", "P-1")]])
    ledger.close()
    for extra in ("-wal", "-shm"):
        (state / f"ledger.sqlite{extra}").unlink(missing_ok=True)
    (state / "ledger.sqlite").write_bytes(b"")  # a power cut while the disk was full
    with pytest.raises(LedgerError) as empty:
        Ledger.open(state)
    assert str(state / "ledger.sqlite") in str(empty.value) and "empty" in str(empty.value)
    assert "backup" in str(empty.value) and "ledger.marker" in str(empty.value)
    (state / "ledger.sqlite").unlink()
    with pytest.raises(LedgerError, match="missing"):
        Ledger.open(state)
    (state / "ledger.marker").unlink()  # a person chose to start afresh
    assert Ledger.open(state).next_job(ENDPOINT) is None


def test_a_damaged_ledger_is_refused_with_its_path_and_what_to_do(tmp_path):
    state = tmp_path / "state"
    Ledger.open(state).close()
    (state / "ledger.sqlite").write_bytes(b"this is not SQLite, a disk error overwrote it" * 100)
    with pytest.raises(LedgerError) as damaged:
        Ledger.open(state)
    text = str(damaged.value)
    assert str(state / "ledger.sqlite") in text and "damaged" in text and "backup" in text


def test_a_ledger_path_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "state" / "ledger.sqlite").mkdir(parents=True)
    with pytest.raises(LedgerError, match="is a folder, not a file"):
        Ledger.open(tmp_path / "state")


def test_a_full_disk_while_journaling_says_disk_full_not_cannot_rollback(tmp_path):
    """A real full filesystem: a small tmpfs is not available to every user, so SQLite's own page limit
    stands in for it (SQLITE_FULL is the error a full disk gives), and nothing is half-journaled."""
    ledger = Ledger.open(tmp_path / "state")
    pages = ledger.db.execute("PRAGMA page_count").fetchone()[0]
    ledger.db.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = [[item(f"P{n}", f"P{n}-1") | {"pad": "x" * 5000} for n in range(200)]]
    with pytest.raises(LedgerError) as full:
        journal(ledger, "a", big)
    text = str(full.value)
    assert "disk is full" in text and "rollback" not in text and str(tmp_path / "state" / "ledger.sqlite") in text
    assert ledger.db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0


def _waiting_row(ledger: Ledger) -> int:
    from connector.ledger import WaitingRow

    row = WaitingRow("P-1", "source_variant_code", "P-1", {"item": {}, "cleared": []}, "s.csv", "stock", 2,
                     until=1e12)
    report = Report("s.csv", sha256="s" * 8, size=1, mapping_sha256="m", started_at=1.0)
    ledger.journal(report, mtime_ns=1, endpoint=ENDPOINT, batches=[], images=[], waiting=[row])
    (kept,) = ledger.waiting_rows(ENDPOINT)
    assert kept.id is not None
    return kept.id


def _journal_taking(ledger: Ledger, name: str, row_id: int, batches) -> int:
    report = Report(name, sha256=name * 8, size=1, mapping_sha256="m", started_at=1.0)
    with ledger.journaling(report, mtime_ns=1, endpoint=ENDPOINT) as journal:
        for batch in batches:
            journal.batch(batch)
        journal.release([(row_id, "P")])
    return journal.file_id


def rows_in(ledger: Ledger, table: str) -> int:
    return ledger.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_row_that_waited_leaves_only_once_all_of_its_product_is_acknowledged(tmp_path):
    """P went over two batches (too big for one): the row merged into it stays until the second is acknowledged,
    and no other file takes it meanwhile (it is not waiting), even after the ledger is opened again."""
    ledger = Ledger.open(tmp_path / "state")
    _journal_taking(ledger, "p", _waiting_row(ledger), [[item("P", "P-1")], [item("P", "P-2")]])
    ledger.close()
    ledger = Ledger.open(tmp_path / "state")  # a new process, as after a crash
    assert ledger.waiting_rows(ENDPOINT) == [] and rows_in(ledger, "waiting") == 1
    first = ledger.next_job(ENDPOINT)
    assert first is not None
    ledger.products_acknowledged(first.id, first.payload)
    assert rows_in(ledger, "waiting") == 1  # half of P is not P
    second = ledger.next_job(ENDPOINT)
    assert second is not None and second.id != first.id
    ledger.products_acknowledged(second.id, second.payload)
    assert rows_in(ledger, "waiting") == 0 and rows_in(ledger, "released") == 0


def test_a_row_that_waited_waits_again_when_the_api_refuses_its_product(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    row_id = _waiting_row(ledger)
    file_id = _journal_taking(ledger, "p", row_id, [[item("P", "P-1"), item("Q", "Q-1")]])
    assert [(code, row.id) for code, row in ledger.released_rows(file_id, ["P", "Q"])] == [("P", row_id)]
    job = ledger.next_job(ENDPOINT)
    assert job is not None
    ledger.refuse_items(job.id, file_id, [], [item("Q", "Q-1")], refused={"P"})
    assert [row.id for row in ledger.waiting_rows(ENDPOINT)] == [row_id]
    ledger.products_acknowledged(job.id, [item("Q", "Q-1")])
    assert [row.id for row in ledger.waiting_rows(ENDPOINT)] == [row_id]  # Q's acknowledgement is not P's


def test_a_ledger_of_an_earlier_version_shows_its_waiting_rows_read_only(tmp_path):
    ledger = Ledger.open(tmp_path / "state")
    _waiting_row(ledger)
    ledger.db.execute("DROP TABLE released")  # as an earlier version wrote it
    ledger.close()
    old = Ledger.read_only(tmp_path / "state")
    assert [row.file for row in old.waiting_rows(ENDPOINT)] == ["s.csv"]
    old.close()
