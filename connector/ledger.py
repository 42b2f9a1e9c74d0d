"""The ledger: everything to send is written here before the first request.

One SQLite file in the state folder (WAL, synchronous=FULL, owner-only). The sender drains
`jobs` in id order; a job is marked done only after a 2xx, in the same transaction that
records what was acknowledged. A re-run after a crash finds the file's jobs by its sha256
and only drains what is left (DESIGN.md invariants 1-3).

The catalogue (`catalogue_*`) is the connector's memory of what Stock2Shop holds from one
source: keyed by endpoint (API url + source id, `Pipeline.endpoint`), so nothing of it is
shared between two sources or two API urls. Each record says which file and mapping last set
it and when. It changes only with an acknowledgement, in the same transaction. Read it with
`catalogue_variants`, `catalogue_products` and `catalogue_images`.

Tables:
  files    one row per journaled file (by content sha256), with its plan-time report
  jobs     products batches and image jobs, in send order
  problems problems found while sending (API refusals, images changed), per file
  catalogue_variants  per endpoint: the last acknowledged whole item of every variant
  catalogue_products  per endpoint: the product-level record of every product
  catalogue_images    per endpoint: the acknowledged images of every product, by content hash
  waiting  rows of update files whose variant is not in the catalogue yet ("waiting for its product")
  released rows of `waiting` merged into a product journaled for sending: they leave `waiting` when that
           product is acknowledged, and wait again when the API refuses it
  models   product models (Akeneo product_models.csv): the product fields of the products naming them
  joined   the last rows of join files (`join:` mappings, e.g. PrestaShop combinations), per product:
           joined with the product's own item whichever file comes first, and again when it changes
  events   the last API errors and successes, for `connector status` and the health file
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from connector.batches import Batch
from connector.common import iso_utc, write_json_atomic
from connector.errors import LedgerError
from connector.model import ImageJob, Problem
from connector.report import Report
from connector.wire import encode_text, item_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER,                  -- tells a file resumed after a crash from the same content dropped again
    mapping_sha256 TEXT,               -- the same content under another mapping is new work
    mapping_name TEXT,                 -- named in the catalogue as what set an item
    endpoint TEXT NOT NULL DEFAULT '', -- API url and source id the work is for; never drained elsewhere
    status TEXT NOT NULL,              -- journaled | done | refused
    report TEXT NOT NULL,              -- JSON: the report as planned, completed when the file finishes
    rejected TEXT NOT NULL DEFAULT '{}', -- JSON: {"header": [...], "rows": [[line, sheet, cells, reason], ...]}
    started_at REAL,                   -- when the file was taken (its report's timings start here)
    created_at REAL NOT NULL,          -- when its work was journaled
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha256);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_id INTEGER NOT NULL REFERENCES files(id),
    kind TEXT NOT NULL,                -- products | image
    payload TEXT NOT NULL,             -- products: JSON list of items; image: JSON of the ImageJob
    after_job INTEGER,                 -- image: the products job that must be acknowledged first
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed | skipped
    attempts INTEGER NOT NULL DEFAULT 0,
    acked INTEGER,                     -- products: items acknowledged so far (a batch may go in parts)
    hashes TEXT,                       -- products: JSON [[product, variant, sha256 of the item's bytes], ...]
    last_error TEXT,
    created_at REAL NOT NULL,
    done_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(state, id);
CREATE INDEX IF NOT EXISTS jobs_file ON jobs(file_id);
CREATE TABLE IF NOT EXISTS problems (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id),
    problem TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS catalogue_variants (
    endpoint TEXT NOT NULL,            -- API url and source id (Pipeline.endpoint)
    product_code TEXT NOT NULL,
    variant_code TEXT NOT NULL,
    item TEXT NOT NULL,                -- JSON: the whole item as last acknowledged
    hash TEXT NOT NULL,                -- sha256 of the item as sent: unchanged items are not sent again
    file TEXT NOT NULL,                -- the file and mapping that last set it
    mapping TEXT NOT NULL,
    at REAL NOT NULL,                  -- when it was acknowledged
    PRIMARY KEY (endpoint, product_code, variant_code)
);
CREATE TABLE IF NOT EXISTS catalogue_products (
    endpoint TEXT NOT NULL,
    product_code TEXT NOT NULL,
    record TEXT NOT NULL,              -- JSON: the item without its variant ({"source": ..., "product": ...})
    file TEXT NOT NULL,
    mapping TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (endpoint, product_code)
);
CREATE TABLE IF NOT EXISTS catalogue_images (
    endpoint TEXT NOT NULL,
    product_code TEXT NOT NULL,
    image_id TEXT NOT NULL,
    variant_code TEXT,
    sha256 TEXT NOT NULL,              -- the picture's content: a replaced picture is sent again
    file TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (endpoint, product_code, image_id)
);
CREATE TABLE IF NOT EXISTS waiting (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    product_code TEXT NOT NULL,        -- the row's group_by value
    key TEXT NOT NULL,                 -- what finds its item: source_variant_code | sku | product
    value TEXT NOT NULL,               -- that key's value
    partial TEXT NOT NULL,             -- JSON: {"item": the fields the row sets, "cleared": [[section, name], ...]}
    file TEXT NOT NULL,
    mapping TEXT NOT NULL,
    line INTEGER NOT NULL,
    since REAL NOT NULL,
    until REAL NOT NULL                -- after this it is reported abandoned (update.wait_days)
);
CREATE INDEX IF NOT EXISTS waiting_endpoint ON waiting(endpoint, product_code);
CREATE TABLE IF NOT EXISTS released (
    waiting_id INTEGER NOT NULL,       -- a row of `waiting`, merged into ...
    file_id INTEGER NOT NULL,          -- ... a product of this file's journaled work ...
    product_code TEXT NOT NULL,        -- ... this one: the row is deleted once it is acknowledged
    PRIMARY KEY (file_id, product_code, waiting_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS released_row ON released(waiting_id);
CREATE TABLE IF NOT EXISTS joined (
    endpoint TEXT NOT NULL,
    product_code TEXT NOT NULL,
    variant_code TEXT NOT NULL,
    row TEXT NOT NULL,                 -- JSON: the row's item as built, before it took its product's fields
    add_fields TEXT NOT NULL,          -- JSON: the fields that are differences to the product's own value
    file TEXT NOT NULL,
    mapping TEXT NOT NULL,
    line INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (endpoint, product_code, variant_code)
);
CREATE TABLE IF NOT EXISTS models (
    endpoint TEXT NOT NULL,
    key TEXT NOT NULL,                 -- the model's code in lower case: codes differing by case are one model
    code TEXT NOT NULL,
    parent TEXT NOT NULL,              -- its parent model's code ('' for a root model)
    product TEXT NOT NULL,             -- JSON: its product fields
    file TEXT NOT NULL,
    mapping TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (endpoint, key)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,                -- error | success
    message TEXT NOT NULL
);
"""


@dataclass
class Job:
    id: int
    file_id: int
    kind: str
    payload: Any
    after_job: int | None
    text: str = ""  # the payload as kept: a products job's items as the API is sent them
    hashes: dict[tuple[str, str], str] | None = None  # products: (product, variant) -> hash of its bytes


class Journal:
    """One file's work being written to the ledger, inside the transaction of `Ledger.journaling`."""

    def __init__(self, db: sqlite3.Connection, file_id: int, now: float):
        self.db, self.file_id, self.now = db, file_id, now
        self.batch_ids: list[int] = []

    def batch(self, items: list[dict]) -> int:
        """Journal one products batch; returns its index among the file's batches.

        A `batches.Batch` is kept as the bytes it was sized by, with the hash of each item;
        a plain list is encoded here.
        """
        payload = items.payload().decode("utf-8") if isinstance(items, Batch) else encode_text(items)
        hashes = encode_text(items.hashes()) if isinstance(items, Batch) else None
        job_id = self.db.execute(
            "INSERT INTO jobs (file_id, kind, payload, hashes, created_at) VALUES (?, 'products', ?, ?, ?)",
            (self.file_id, payload, hashes, self.now),
        ).lastrowid
        assert job_id is not None
        self.batch_ids.append(job_id)
        return len(self.batch_ids) - 1

    def release(self, taken: Iterable[tuple[int, str]], settled: Iterable[int] = ()) -> None:
        """Rows that waited and went into this file's products: (waiting row id, product code journaled).

        They stay in the ledger, no longer waiting, until that product is acknowledged (then they are
        deleted) or refused by the API (then they wait again): never lost between journaling and sending.
        `settled`: rows merged into products that changed nothing acknowledged before: deleted now.
        """
        self.db.executemany("INSERT OR IGNORE INTO released (waiting_id, file_id, product_code) VALUES (?, ?, ?)",
                            [(waiting_id, self.file_id, code) for waiting_id, code in taken])
        self.db.executemany("DELETE FROM waiting WHERE id = ?", [(i,) for i in settled])

    def images(self, images: Iterable[tuple[int | None, dict]]) -> None:
        """Journal image jobs: (index of the batch holding the image's product, the ImageJob's fields)."""
        self.db.executemany(
            "INSERT INTO jobs (file_id, kind, payload, after_job, created_at) VALUES (?, 'image', ?, ?, ?)",
            [(self.file_id, encode_text(job), self.batch_ids[index] if index is not None else None, self.now)
             for index, job in images],
        )


@dataclass(frozen=True, slots=True)
class CatalogueVariant:
    """One variant as Stock2Shop last acknowledged it from this source.

    `item` is the whole API item (`{"source": ..., "product": {..., "variants": {...}}}`);
    a retired product's items say `"product_active": "false"` in their source.
    """

    product_code: str
    variant_code: str
    item: dict[str, Any]
    file: str  # the file and mapping that last set it
    mapping: str
    at: float  # when it was acknowledged (seconds since the epoch)


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """A row of an update file kept until a file brings its product (see connector.catalogue.Partial)."""

    product_code: str
    key: str
    value: str
    partial: dict[str, Any]
    file: str
    mapping: str
    line: int
    until: float
    since: float = 0.0
    id: int | None = None


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A product model (Akeneo): product fields for the products that name it; `parent` '' for a root."""

    code: str
    parent: str
    product: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JoinedRow:
    """A row of a join file (a PrestaShop combination): a variant of the product another file brings."""

    product_code: str
    variant_code: str
    item: dict[str, Any]  # as built from the row: the variant and its options, no product fields
    add: tuple[str, ...]  # fields that are differences to the product's own value
    file: str
    mapping: str
    line: int


@dataclass(frozen=True, slots=True)
class CatalogueProduct:
    """A product's product-level record as last acknowledged: the item without `product.variants`."""

    product_code: str
    record: dict[str, Any]
    file: str
    mapping: str
    at: float


@dataclass(frozen=True, slots=True)
class CatalogueImage:
    """An image of a product Stock2Shop acknowledged from this source, by its content hash."""

    product_code: str
    variant_code: str | None
    image_id: str
    sha256: str
    file: str
    at: float


class Ledger:
    """A handle on the state folder's ledger. One per process; not shared across threads."""

    FILE_NAME = "ledger.sqlite"

    MARKER_NAME = "ledger.marker"  # beside the ledger: it existed, so its absence is damage, not a fresh start
    _released_table: bool | None = None  # has the `released` table (a read-only ledger may be older)

    def __init__(self, path: Path, *, clock=time.time):
        self.path = path
        self.clock = clock
        self.marker = path.with_name(self.MARKER_NAME)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise LedgerError(f"cannot make the state folder {path.parent}: {_cause(exc)}") from None
        self._refuse_if_lost()
        old_umask = os.umask(0o077)  # the db, -wal and -shm files are owner-only
        try:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise _ledger_error(path, exc, "cannot be opened") from None
        finally:
            os.umask(old_umask)
        for suffix in ("", "-wal", "-shm"):
            extra = Path(f"{path}{suffix}")
            if extra.exists():
                os.chmod(extra, 0o600)
        if not self.marker.exists():
            try:
                write_json_atomic(self.marker, {"ledger": path.name, "created_at": iso_utc(self.clock())}, mode=0o600)
            except OSError as exc:
                raise LedgerError(f"cannot write {self.marker}: {_cause(exc)}") from None

    def _refuse_if_lost(self) -> None:
        """A ledger that existed (its marker says so) and is now gone or empty is never silently replaced.

        A new, empty ledger would send everything again and forget the work journaled for
        files that will not be pushed again; a person decides, with the path and the choices.
        """
        if self.path.is_dir():
            raise LedgerError(f"the ledger path {self.path} is a folder, not a file: "
                              "remove or rename it, or set folders.state to another folder")
        if not self.marker.exists():
            return
        size = self.path.stat().st_size if self.path.exists() else None
        if size:
            return
        state = "missing" if size is None else "empty (0 bytes)"
        raise LedgerError(
            f"the ledger {self.path} is {state}, but this state folder had one ({self.marker} says so): "
            "the work journaled in it may be lost. Restore it from a backup; or, to start afresh knowing that "
            f"every item will be sent again and unsent work is gone, delete {self.marker}")

    @classmethod
    def read_only(cls, state_dir: Path, *, clock=time.time) -> Ledger:
        """The ledger of `state_dir` opened read-only (`connector show`): safe beside a running `watch`.

        Nothing is created, migrated or locked; a missing ledger is a LedgerError.
        """
        self = cls.__new__(cls)
        self.path, self.clock = Path(state_dir) / cls.FILE_NAME, clock
        self.marker = self.path.with_name(cls.MARKER_NAME)
        if not self.path.is_file():
            raise LedgerError(f"there is no ledger at {self.path}: nothing was pushed with this state folder yet")
        try:
            self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                      timeout=30)
            self.db.execute("PRAGMA query_only = ON")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            raise _ledger_error(self.path, exc, "cannot be read") from None
        if "catalogue_variants" not in tables:
            self.db.close()
            raise LedgerError(f"the ledger {self.path} was written by an earlier version: run `connector push` or "
                              "`connector watch` once to bring it up to date")
        return self

    @classmethod
    def open(cls, state_dir: Path, **kwargs: Any) -> Ledger:
        return cls(Path(state_dir) / cls.FILE_NAME, **kwargs)

    def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        """Bring a ledger written by an earlier version up to this schema (columns only added)."""
        for table, column, kind in (("files", "started_at", "REAL"), ("jobs", "acked", "INTEGER"),
                                    ("files", "mapping_name", "TEXT"), ("jobs", "hashes", "TEXT")):
            if column not in {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables & {"sent", "sent_images"}:
            with self._transaction():
                self._migrate_memory(tables)

    def _migrate_memory(self, tables: set[str]) -> None:
        """Turn the old memory (hashes by product code alone) into the endpoint-keyed catalogue.

        The old tables did not say which API and source an acknowledgement was for, and held
        hashes, not items. The items come back from the acknowledged batches still in the
        ledger: an item of a done batch for endpoint E whose hash is the remembered one was
        acknowledged by E. What cannot be attributed that way is forgotten, so it is sent (whole)
        once more: never skipped for a source that did not get it.
        """
        if "sent" in tables:
            sent = {(p, v): h for p, v, h in self.db.execute(
                "SELECT source_product_code, source_variant_code, hash FROM sent")}
            variants: dict[tuple[str, str, str], tuple] = {}
            for endpoint, name, report, at, payload in self.db.execute(
                "SELECT files.endpoint, files.name, files.report, jobs.done_at, jobs.payload FROM jobs"
                " JOIN files ON files.id = jobs.file_id WHERE jobs.kind = 'products' AND jobs.state = 'done'"
                " ORDER BY jobs.id"
            ).fetchall():
                mapping = _mapping_name(report)
                for it in json.loads(payload):
                    code = it["source"]["source_product_code"]
                    variant = it["product"]["variants"]["source_variant_code"]
                    if sent.get((code, variant)) == item_hash(it):
                        variants[(endpoint, code, variant)] = (it, name, mapping, at or 0.0)
            self._remember_items(
                [(e, it, name, mapping, at) for (e, _, _), (it, name, mapping, at) in variants.items()])
            self.db.execute("DROP TABLE sent")
        if "sent_images" in tables:
            known = {(p, h) for p, h in self.db.execute("SELECT source_product_code, sha256 FROM sent_images")}
            rows = {}
            for endpoint, name, at, payload in self.db.execute(
                "SELECT files.endpoint, files.name, jobs.done_at, jobs.payload FROM jobs"
                " JOIN files ON files.id = jobs.file_id WHERE jobs.kind = 'image' AND jobs.state = 'done'"
                " ORDER BY jobs.id"
            ).fetchall():
                job = json.loads(payload)
                if (job.get("source_product_code"), job.get("sha256")) in known:
                    rows[(endpoint, job["source_product_code"], job["image_id"])] = (
                        job.get("source_variant_code"), job["sha256"], name, at or 0.0)
            self.db.executemany(
                "INSERT OR REPLACE INTO catalogue_images (endpoint, product_code, image_id, variant_code, sha256,"
                " file, at) VALUES (?, ?, ?, ?, ?, ?, ?)", [(*key, *value) for key, value in rows.items()])
            self.db.execute("DROP TABLE sent_images")

    # -- files ---------------------------------------------------------------------------

    def find_file(self, sha256: str, endpoint: str, mapping_sha256: str | None = None) -> dict | None:
        """The newest journaled or pushed record of this content for this endpoint, or None.

        With `mapping_sha256`, only a record made with that mapping counts; unfinished work
        is found whatever the mapping, so it is always resumed.
        """
        row = self.db.execute(
            "SELECT id, name, status, finished_at, mtime_ns, mapping_sha256 FROM files"
            " WHERE sha256 = ? AND endpoint = ? AND status != 'refused'"
            " AND (status = 'journaled' OR ? IS NULL OR mapping_sha256 = ?) ORDER BY id DESC LIMIT 1",
            (sha256, endpoint, mapping_sha256, mapping_sha256),
        ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "name": row[1], "status": row[2], "finished_at": row[3], "mtime_ns": row[4]}

    def journal(self, report: Report, *, mtime_ns: int, endpoint: str,
                batches: Iterable[list[dict]], images: Iterable[tuple[int | None, dict]],
                waiting: Iterable[WaitingRow] = (), released: Iterable[int] = (),
                joined: dict[str, list[JoinedRow]] | None = None, models: Iterable[ModelRecord] = ()) -> int:
        """Write a file and all its work in ONE transaction, before anything is sent.

        `batches` are lists of API items; `images` pairs the index of the batch holding the
        image's product with the image job's fields. `waiting` are this file's rows that wait
        for their product; `released` the ids of rows that waited and leave the ledger now (abandoned;
        rows that went into `batches` are kept until acknowledged: `Journal.release`). `joined`: a join
        file's rows per product, replacing that product's earlier ones. Returns the file id.
        """
        with self.journaling(report, mtime_ns=mtime_ns, endpoint=endpoint, waiting=waiting, released=released,
                             joined=joined, models=models) as journal:
            for items in batches:
                journal.batch(items)
            journal.images(images)
        return journal.file_id

    @contextlib.contextmanager
    def journaling(self, report: Report, *, mtime_ns: int, endpoint: str,
                   waiting: Iterable[WaitingRow] = (), released: Iterable[int] = (),
                   joined: dict[str, list[JoinedRow]] | None = None,
                   models: Iterable[ModelRecord] = ()) -> Iterator[Journal]:
        """Write a file and its work in ONE transaction, a batch at a time (only one batch's bytes in memory).

        `waiting`, `released`, `joined` and `models` are the catalogue's side of the file (see `journal`).

        The report is kept as it is when the block ends, so counts made while batching are
        in it. An exception in the block leaves nothing of the file in the ledger.
        """
        now = self.clock()
        with self._transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO models (endpoint, key, code, parent, product, file, mapping, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(endpoint, m.code.casefold(), m.code, m.parent, encode_text(m.product), report.file,
                  report.mapping_name or "", now) for m in models])
            for code, rows in (joined or {}).items():
                self.db.execute("DELETE FROM joined WHERE endpoint = ? AND product_code = ?", (endpoint, code))
                self.db.executemany(
                    "INSERT OR REPLACE INTO joined (endpoint, product_code, variant_code, row, add_fields, file,"
                    " mapping, line, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(endpoint, code, r.variant_code, encode_text(r.item), encode_text(list(r.add)), r.file,
                      r.mapping, r.line, now) for r in rows])
            self.db.executemany("DELETE FROM waiting WHERE id = ?", [(i,) for i in released])
            self.db.executemany(
                "INSERT INTO waiting (endpoint, product_code, key, value, partial, file, mapping, line, since, until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(endpoint, w.product_code, w.key, w.value, encode_text(w.partial), w.file, w.mapping, w.line,
                  now, w.until) for w in waiting])
            file_id = self.db.execute(
                "INSERT INTO files (sha256, name, size, mtime_ns, mapping_sha256, mapping_name, endpoint, status,"
                " report, started_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'journaled', '{}', ?, ?)",
                (report.sha256, report.file, report.size, mtime_ns, report.mapping_sha256, report.mapping_name or "",
                 endpoint,
                 report.started_at, now),
            ).lastrowid
            assert file_id is not None
            journal = Journal(self.db, file_id, now)
            yield journal
            data, rejected = report.to_ledger()
            self.db.execute("UPDATE files SET mapping_sha256 = ?, report = ?, rejected = ? WHERE id = ?",
                            (report.mapping_sha256, encode_text(data), encode_text(rejected), file_id))

    def finish_file(self, file_id: int, report: Report) -> None:
        """Keep the final report of a file whose jobs have all ended."""
        with self._transaction():
            self.db.execute(
                "UPDATE files SET status = ?, report = ?, finished_at = ? WHERE id = ?",
                (report.status, encode_text(report.to_json()), report.finished_at or self.clock(),
                 file_id),
            )

    def record_refused(self, report: Report, *, endpoint: str) -> int:
        """A file refused before anything was journaled (kept so `status` can list it)."""
        now = self.clock()
        with self._transaction():
            file_id = self.db.execute(
                "INSERT INTO files (sha256, name, size, endpoint, status, report, started_at, created_at, finished_at)"
                " VALUES (?, ?, ?, ?, 'refused', ?, ?, ?, ?)",
                (report.sha256 or "", report.file, report.size or 0, endpoint,
                 encode_text(report.to_json()), report.started_at, now, now),
            ).lastrowid
            assert file_id is not None
            return file_id

    def unfinished_files(self, endpoint: str) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM files WHERE status = 'journaled' AND endpoint = ? ORDER BY id", (endpoint,))]

    def other_endpoints(self, endpoint: str) -> list[str]:
        """Endpoints other than this one that still have unsent work (shown, never drained here)."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT endpoint FROM files WHERE status = 'journaled' AND endpoint != ?", (endpoint,))]

    def file_report(self, file_id: int) -> Report:
        """The report of one file as last kept (planned, or final), with its rejected rows."""
        report, rejected, started, finished = self.db.execute(
            "SELECT report, rejected, started_at, finished_at FROM files WHERE id = ?", (file_id,)).fetchone()
        return Report.from_ledger(json.loads(report), json.loads(rejected), started_at=started, finished_at=finished)

    def file_name(self, file_id: int) -> str:
        return self.db.execute("SELECT name FROM files WHERE id = ?", (file_id,)).fetchone()[0]

    def file_job_states(self, file_id: int) -> dict[tuple[str, str], int]:
        """Counts of (kind, state) for one file's jobs."""
        rows = self.db.execute(
            "SELECT kind, state, COUNT(*) FROM jobs WHERE file_id = ? GROUP BY kind, state", (file_id,)
        )
        return {(kind, state): n for kind, state, n in rows}

    def file_sent_counts(self, file_id: int) -> dict[str, int]:
        """Items and images acknowledged for one file, counted as they were acknowledged."""
        items = self.db.execute(
            "SELECT COALESCE(SUM(COALESCE(acked, CASE WHEN state = 'done' THEN json_array_length(payload) END)), 0)"
            " FROM jobs WHERE file_id = ? AND kind = 'products'", (file_id,)).fetchone()[0]
        images = self.db.execute(
            "SELECT COUNT(*) FROM jobs WHERE file_id = ? AND kind = 'image' AND state = 'done'", (file_id,)
        ).fetchone()[0]
        return {"items_sent": items, "images_sent": images}

    def close_job_with_problem(self, job_id: int, state: str, reason: str, file_id: int, problem: Problem) -> None:
        """End a job unsent and say why in the file's report, in one transaction."""
        with self._transaction():
            self.db.execute(
                "UPDATE jobs SET state = ?, last_error = ?, done_at = ? WHERE id = ?",
                (state, reason, self.clock(), job_id),
            )
            self.db.execute("INSERT INTO problems (file_id, problem) VALUES (?, ?)",
                            (file_id, encode_text(problem.as_dict())))

    def refuse_items(self, job_id: int, file_id: int, problems: list[Problem], remaining: list[dict],
                     refused: Iterable[str] = ()) -> None:
        """Record the API's refusals and keep only the items still to send, in one transaction.

        With nothing remaining the job ends: done when part of it was acknowledged (the images
        of those products may then go), failed when the API refused every item of it. Rows that
        waited and went into the `refused` products wait again (see `Journal.release`).
        """
        with self._transaction():
            for chunk in _chunks(sorted(set(refused)), 500):
                marks = ",".join("?" * len(chunk))
                self.db.execute("DELETE FROM released WHERE waiting_id IN (SELECT waiting_id FROM released"
                                f" WHERE file_id = ? AND product_code IN ({marks}))", (file_id, *chunk))
            self.db.executemany("INSERT INTO problems (file_id, problem) VALUES (?, ?)",
                                [(file_id, encode_text(p.as_dict())) for p in problems])
            if remaining:
                self.db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (encode_text(remaining), job_id))
            else:
                self.db.execute(
                    "UPDATE jobs SET state = CASE WHEN COALESCE(acked, 0) > 0 THEN 'done' ELSE 'failed' END,"
                    " last_error = ?, done_at = ? WHERE id = ?",
                    ("the API refused some of its items", self.clock(), job_id))

    def refused_products(self, file_id: int) -> set[str]:
        """Products of a file the API refused while it was being sent."""
        return {p.product for p in self.problems(file_id) if p.kind == "api" and p.product}

    def problems(self, file_id: int) -> list[Problem]:
        """Problems found while sending one file's work, in the order found."""
        return [Problem.from_dict(json.loads(p)) for (p,) in self.db.execute(
            "SELECT problem FROM problems WHERE file_id = ? ORDER BY id", (file_id,))]

    # -- jobs ----------------------------------------------------------------------------

    def next_job(self, endpoint: str) -> Job | None:
        """The oldest pending job for this endpoint: the ledger drains in the order it was written."""
        jobs = self.next_jobs(endpoint, 1)
        return jobs[0] if jobs else None

    def next_jobs(self, endpoint: str, limit: int) -> list[Job]:
        """The `limit` oldest pending jobs for this endpoint, in the order they were written."""
        rows = self.db.execute(
            "SELECT jobs.id, file_id, kind, payload, after_job, hashes FROM jobs JOIN files ON files.id = jobs.file_id"
            " WHERE jobs.state = 'pending' AND files.endpoint = ? ORDER BY jobs.id LIMIT ?", (endpoint, limit))
        return [Job(r[0], r[1], r[2], json.loads(r[3]), r[4], r[3], _hashes(r[5])) for r in rows]

    def pending_products(self, endpoint: str) -> set[str]:
        """Products with items journaled and not yet acknowledged: never "unchanged" meanwhile."""
        codes: set[str] = set()
        for (payload,) in self.db.execute(
            "SELECT payload FROM jobs JOIN files ON files.id = jobs.file_id"
            " WHERE jobs.state = 'pending' AND jobs.kind = 'products' AND files.endpoint = ?", (endpoint,)
        ):
            codes.update(item["source"]["source_product_code"] for item in json.loads(payload))
        return codes

    def job_state(self, job_id: int) -> str:
        return self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def attempt(self, job_id: int, error: str | None) -> None:
        """Count a send attempt that did not finish the job (the job stays pending)."""
        with self._transaction():
            self.db.execute(
                "UPDATE jobs SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error, job_id)
            )
            if error:
                self._event("error", error)

    def products_acknowledged(self, job_id: int, items: list[dict], remaining: list[dict] | None = None,
                              hashes: dict[tuple[str, str], str] | None = None) -> None:
        """Mark what was acknowledged and put it in the catalogue, atomically.

        `items` are the API items one request queued (from this job's payload); `hashes` the
        sha256 of each one's bytes as journaled and sent (`Job.hashes`), so the catalogue
        remembers what the API was sent, not a second encoding of it. With `remaining` (part
        of a batch too big for the API was acknowledged), the batch stays pending with only
        the items still to send.
        """
        now = self.clock()
        with self._transaction():
            self.db.execute("UPDATE jobs SET acked = COALESCE(acked, 0) + ? WHERE id = ?", (len(items), job_id))
            if remaining:
                self.db.execute("UPDATE jobs SET payload = ? WHERE id = ?", (encode_text(remaining), job_id))
            else:
                self.db.execute("UPDATE jobs SET state = 'done', done_at = ?, attempts = attempts + 1 WHERE id = ?",
                                (now, job_id))
            endpoint, name, mapping = self._job_origin(job_id)
            self._remember_items([(endpoint, it, name, mapping, now) for it in items], hashes or {})
            self._settle_released(job_id, items, remaining or [])
            self._event("success", f"job {job_id} acknowledged")

    def _settle_released(self, job_id: int, items: list[dict], remaining: list[dict]) -> None:
        """Rows that waited and went into products now acknowledged whole: they leave the ledger.

        A product is acknowledged whole when none of its items remains: not in this batch (a 413 sends
        a batch in parts) nor in the file's next batch (a product too big for one batch goes on in the
        next; batches keep the file's order, so only a batch's last product can)."""
        file_id = self.db.execute("SELECT file_id FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        codes = {it["source"]["source_product_code"] for it in items}
        taken = self._released_into(file_id, codes)
        if not taken:  # the usual case: no row of an earlier file went into these products
            return
        codes -= {it["source"]["source_product_code"] for it in remaining}
        if items and not remaining:
            after = self.db.execute(
                "SELECT json_extract(payload, '$[0].source.source_product_code') FROM jobs WHERE file_id = ?"
                " AND kind = 'products' AND state = 'pending' AND id > ? ORDER BY id LIMIT 1",
                (file_id, job_id)).fetchone()
            if after is not None:
                codes.discard(after[0])
        for chunk in _chunks(sorted(codes), 500):
            marks = ",".join("?" * len(chunk))
            self.db.execute(f"DELETE FROM released WHERE file_id = ? AND product_code IN ({marks})", (file_id, *chunk))
        rows = sorted({waiting_id for waiting_id, code in taken if code in codes})
        for part in _chunks(rows, 500):
            marks = ",".join("?" * len(part))
            self.db.execute(f"DELETE FROM waiting WHERE id IN ({marks}) AND NOT EXISTS"
                            " (SELECT 1 FROM released WHERE released.waiting_id = waiting.id)", part)

    def _released_into(self, file_id: int, codes: Iterable[str]) -> list[tuple[int, str]]:
        """(waiting row id, product code) of rows that waited and went into these products of a file."""
        out: list[tuple[int, str]] = []
        for chunk in _chunks(sorted(set(codes)), 500):
            marks = ",".join("?" * len(chunk))
            out.extend(self.db.execute(f"SELECT waiting_id, product_code FROM released WHERE file_id = ?"
                                       f" AND product_code IN ({marks}) ORDER BY waiting_id", (file_id, *chunk)))
        return out

    def released_rows(self, file_id: int, codes: Iterable[str]) -> list[tuple[str, WaitingRow]]:
        """Rows that waited and went into these products of a file's work: (product code, the row)."""
        taken = self._released_into(file_id, codes)
        rows = {}
        for chunk in _chunks(sorted({w for w, _ in taken}), 500):
            marks = ",".join("?" * len(chunk))
            for i, p, k, v, partial, f, m, line, since, until in self.db.execute(
                    "SELECT id, product_code, key, value, partial, file, mapping, line, since, until FROM waiting"
                    f" WHERE id IN ({marks})", chunk):
                rows[i] = WaitingRow(p, k, v, json.loads(partial), f, m, line, until, since, i)
        return [(code, rows[w]) for w, code in taken if w in rows]

    def images_acknowledged(self, acknowledged: list[tuple[int, ImageJob]]) -> None:
        """Image jobs one request queued (job id, the image): done, and in the catalogue, atomically."""
        now = self.clock()
        with self._transaction():
            self.db.executemany("UPDATE jobs SET state = 'done', done_at = ?, attempts = attempts + 1 WHERE id = ?",
                                [(now, job_id) for job_id, _ in acknowledged])
            rows = []
            for job_id, image in acknowledged:
                endpoint, name, _ = self._job_origin(job_id)
                rows.append((endpoint, image.source_product_code, image.image_id, image.source_variant_code,
                             image.sha256, name, now))
            self.db.executemany(
                "INSERT OR REPLACE INTO catalogue_images (endpoint, product_code, image_id, variant_code, sha256,"
                " file, at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._event("success", f"{len(acknowledged)} image job(s) acknowledged")

    def catalogue_hashes(self, endpoint: str, codes: Iterable[str]) -> dict[tuple[str, str], str]:
        """Hashes of the items last acknowledged at `endpoint` for the variants of these products."""
        out: dict[tuple[str, str], str] = {}
        for chunk in _chunks(list(codes), 500):
            marks = ",".join("?" * len(chunk))
            for p, v, h in self.db.execute(
                "SELECT product_code, variant_code, hash FROM catalogue_variants"
                f" WHERE endpoint = ? AND product_code IN ({marks})", (endpoint, *chunk)):
                out[(p, v)] = h
        return out

    def image_known(self, endpoint: str, image: ImageJob) -> bool:
        """True when `endpoint` acknowledged this very picture (same id, same content) for its product."""
        return self.db.execute(
            "SELECT 1 FROM catalogue_images WHERE endpoint = ? AND product_code = ? AND image_id = ? AND sha256 = ?",
            (endpoint, image.source_product_code, image.image_id, image.sha256)).fetchone() is not None

    def known_items(self, endpoint: str, product_codes: Iterable[str] | None = None) -> dict[tuple[str, str], dict]:
        """The whole items an update merges onto: the catalogue's, overlaid by items journaled and not yet sent.

        Keyed by (product code, variant code); for these products, or (None) every product.
        """
        codes = None if product_codes is None else set(product_codes)
        items = {(v.product_code, v.variant_code): v.item for v in self.catalogue_variants(endpoint, codes)}
        for (payload,) in self.db.execute(
            "SELECT payload FROM jobs JOIN files ON files.id = jobs.file_id"
            " WHERE jobs.state = 'pending' AND jobs.kind = 'products' AND files.endpoint = ? ORDER BY jobs.id",
            (endpoint,)
        ):
            for it in json.loads(payload):
                code = it["source"]["source_product_code"]
                if codes is None or code in codes:
                    items[(code, it["product"]["variants"]["source_variant_code"])] = it
        return items

    def catalogue_fields(self, endpoint: str, paths: list[str]) -> Iterator[tuple]:
        """(product code, variant code, *values) of every variant of `endpoint`'s catalogue: only the
        values at these JSON paths (e.g. "$.product.variants.qty"; arrays and objects as JSON text).

        Read by SQLite without decoding whole items: an update file compares its rows with the
        catalogue this way and merges only the items it changes (bench/bench_merge.py).
        """
        columns = "".join(", json_extract(item, ?)" for _ in paths)
        cursor = self.db.execute(
            f"SELECT product_code, variant_code{columns} FROM catalogue_variants WHERE endpoint = ?",
            (*paths, endpoint))
        while rows := cursor.fetchmany(5000):
            yield from rows

    def catalogue_items_beside(self, endpoint: str, paths: list[str],
                               families: list[tuple[str, str, list[str] | None]]) -> Iterator[tuple[str, str, str]]:
        """(product code, variant code, item as JSON text) of the variants of `endpoint`'s catalogue that
        hold a value at one of `paths`, or an entry of a family not named: each family is (JSON path,
        the entries' name key, the names, or None for any entry).

        What a full file does not map (fields, warehouses) is found by SQLite without decoding items;
        only the items holding some are read.
        """
        tests: list[str] = []
        args: list[Any] = []
        for path in paths:
            tests.append("json_type(item, ?) IS NOT NULL")
            args.append(path)
        for path, key, names in families:
            if names is None:
                tests.append("json_array_length(item, ?) > 0")
                args.append(path)
                continue
            marks = ",".join("?" * len(names)) or "NULL"
            tests.append(f"EXISTS (SELECT 1 FROM json_each(item, ?) WHERE coalesce(json_extract(value, ?), '')"
                         f" NOT IN ({marks}))")
            args.extend([path, f"$.{key}", *names])
        if not tests:
            return
        cursor = self.db.execute(
            "SELECT product_code, variant_code, item FROM catalogue_variants WHERE endpoint = ? AND ("
            + " OR ".join(tests) + ")", (endpoint, *args))
        while rows := cursor.fetchmany(5000):
            yield from rows

    def model_records(self, endpoint: str) -> dict[str, ModelRecord]:
        """Every product model known at this endpoint, by its code in lower case."""
        return {key: ModelRecord(code, parent, json.loads(product)) for key, code, parent, product in self.db.execute(
            "SELECT key, code, parent, product FROM models WHERE endpoint = ?", (endpoint,))}

    def joined_rows(self, endpoint: str, product_codes: Iterable[str]) -> dict[str, list[JoinedRow]]:
        """The join files' rows kept for these products, by product, in file order."""
        out: dict[str, list[JoinedRow]] = {}
        for chunk in _chunks(sorted(set(product_codes)), 500):
            marks = ",".join("?" * len(chunk))
            for p, v, row, add, file, mapping, line in self.db.execute(
                "SELECT product_code, variant_code, row, add_fields, file, mapping, line FROM joined"
                f" WHERE endpoint = ? AND product_code IN ({marks}) ORDER BY product_code, line", (endpoint, *chunk)):
                out.setdefault(p, []).append(JoinedRow(p, v, json.loads(row), tuple(json.loads(add)), file,
                                                       mapping, line))
        return out

    def waiting_rows(self, endpoint: str) -> list[WaitingRow]:
        """Rows of update files waiting for their product at this endpoint, oldest first (not those gone
        into work journaled and not yet acknowledged: see `Journal.release`)."""
        return [WaitingRow(p, k, v, json.loads(partial), f, m, line, until, since, i)
                for i, p, k, v, partial, f, m, line, since, until in self.db.execute(
                    "SELECT id, product_code, key, value, partial, file, mapping, line, since, until FROM waiting"
                    " WHERE endpoint = ?" + self._not_released + " ORDER BY id", (endpoint,))]

    @property
    def _not_released(self) -> str:
        """The clause that leaves out rows gone into journaled work (a ledger of an earlier version has none)."""
        if self._released_table is None:
            self._released_table = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'released'").fetchone() is not None
        if not self._released_table:
            return ""
        return " AND NOT EXISTS (SELECT 1 FROM released WHERE released.waiting_id = waiting.id)"

    # -- the catalogue, read ----------------------------------------------------------------

    def catalogue_variants(self, endpoint: str, product_codes: Iterable[str] | None = None
                           ) -> Iterator[CatalogueVariant]:
        """Every variant of the catalogue of `endpoint` (or of these products), by product and variant code.

        >>> for v in ledger.catalogue_variants("https://api.example#source=7", ["TEE"]):
        ...     v.variant_code, v.item["product"]["variants"]["qty"], v.file
        """
        for rows in self._catalogue_rows(
                "SELECT product_code, variant_code, item, file, mapping, at FROM catalogue_variants",
                endpoint, product_codes, "product_code, variant_code"):
            for p, v, item, file, mapping, at in rows:
                yield CatalogueVariant(p, v, json.loads(item), file, mapping, at)

    def catalogue_products(self, endpoint: str, product_codes: Iterable[str] | None = None
                           ) -> Iterator[CatalogueProduct]:
        """The product-level record of every product of the catalogue of `endpoint` (or of these products)."""
        for rows in self._catalogue_rows(
                "SELECT product_code, record, file, mapping, at FROM catalogue_products",
                endpoint, product_codes, "product_code"):
            for p, record, file, mapping, at in rows:
                yield CatalogueProduct(p, json.loads(record), file, mapping, at)

    def catalogue_images(self, endpoint: str, product_codes: Iterable[str] | None = None
                         ) -> Iterator[CatalogueImage]:
        """The acknowledged images of every product of `endpoint`'s catalogue (or of these products)."""
        for rows in self._catalogue_rows(
                "SELECT product_code, variant_code, image_id, sha256, file, at FROM catalogue_images",
                endpoint, product_codes, "product_code, image_id"):
            for p, v, image_id, sha256, file, at in rows:
                yield CatalogueImage(p, v, image_id, sha256, file, at)

    def _catalogue_rows(self, select: str, endpoint: str, codes: Iterable[str] | None, order: str
                        ) -> Iterator[list[tuple]]:
        if codes is None:
            cursor = self.db.execute(f"{select} WHERE endpoint = ? ORDER BY {order}", (endpoint,))
            while rows := cursor.fetchmany(1000):
                yield rows
            return
        for chunk in _chunks(sorted(set(codes)), 500):
            marks = ",".join("?" * len(chunk))
            yield self.db.execute(f"{select} WHERE endpoint = ? AND product_code IN ({marks}) ORDER BY {order}",
                                  (endpoint, *chunk)).fetchall()

    def _job_origin(self, job_id: int) -> tuple[str, str, str]:
        """(endpoint, file name, mapping name) of the file a job belongs to."""
        endpoint, name, mapping, report = self.db.execute(
            "SELECT files.endpoint, files.name, files.mapping_name, files.report FROM jobs"
            " JOIN files ON files.id = jobs.file_id WHERE jobs.id = ?", (job_id,)).fetchone()
        return endpoint, name, mapping or _mapping_name(report)

    def _remember_items(self, rows: list[tuple[str, dict, str, str, float]],
                        hashes: dict[tuple[str, str], str] | None = None) -> None:
        """Put acknowledged items (endpoint, item, file, mapping, at) in the catalogue; later rows win.
        `hashes`: the hash of each item's bytes as sent, by (product, variant), where known."""
        variants, products = [], {}
        for endpoint, it, name, mapping, at in rows:
            code = it["source"]["source_product_code"]
            variant = it["product"]["variants"]["source_variant_code"]
            text = encode_text(it)
            digest = (hashes or {}).get((code, variant)) or hashlib.sha256(text.encode("utf-8")).hexdigest()
            variants.append((endpoint, code, variant, text, digest, name, mapping, at))
            products[(endpoint, code)] = (it, name, mapping, at)  # the last item of a product gives its record
        self.db.executemany(
            "INSERT OR REPLACE INTO catalogue_variants (endpoint, product_code, variant_code, item, hash, file,"
            " mapping, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", variants)
        self.db.executemany(
            "INSERT OR REPLACE INTO catalogue_products (endpoint, product_code, record, file, mapping, at)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(*key, _product_record(it), name, mapping, at)
                                           for key, (it, name, mapping, at) in products.items()])

    def compact(self, before: float) -> int:
        """Drop the bodies of jobs that ended before `before` (epoch seconds), for files that finished.

        Their items are in the catalogue; the counts a report shows are kept (`acked`). Pending
        work and unfinished files are never touched. Returns the jobs compacted; when many were,
        the file is vacuumed so the space goes back to the disk.
        """
        with self._transaction():
            count = self.db.execute(
                "UPDATE jobs SET acked = COALESCE(acked, CASE WHEN kind = 'products' AND state = 'done'"
                " THEN json_array_length(payload) END), payload = 'null'"
                " WHERE state != 'pending' AND payload != 'null' AND done_at < ?"
                " AND file_id IN (SELECT id FROM files WHERE status != 'journaled')", (before,)).rowcount
        if count >= 1000:
            try:
                self.db.execute("VACUUM")
            except sqlite3.Error as exc:  # another process reading for a long time: next time
                raise _ledger_error(self.path, exc, "cannot be compacted") from None
        return count

    # -- what `status` and the health file show -------------------------------------------

    def backlog(self, endpoint: str | None = None) -> dict:
        """Work waiting in the ledger: for one endpoint, or (None) for every endpoint."""
        where = "jobs.state = 'pending'" + ("" if endpoint is None else " AND files.endpoint = ?")
        args = () if endpoint is None else (endpoint,)
        join = "FROM jobs JOIN files ON files.id = jobs.file_id WHERE " + where
        counts = dict(self.db.execute(f"SELECT kind, COUNT(*) {join} GROUP BY kind", args).fetchall())
        oldest = self.db.execute(f"SELECT MIN(jobs.created_at) {join}", args).fetchone()[0]
        return {
            "batches": counts.get("products", 0),
            "images": counts.get("image", 0),
            "oldest_age_s": round(self.clock() - oldest, 1) if oldest else None,
        }

    def last_error(self) -> dict | None:
        row = self.db.execute("SELECT at, message FROM events WHERE kind = 'error' ORDER BY id DESC LIMIT 1").fetchone()
        return {"at": iso_utc(row[0]), "message": row[1]} if row else None

    def last_success_at(self) -> str | None:
        row = self.db.execute("SELECT MAX(at) FROM events WHERE kind = 'success'").fetchone()
        return iso_utc(row[0]) if row and row[0] else None

    def recent_files(self, limit: int = 10) -> list[dict]:
        return [
            {"name": n, "status": s, "finished_at": iso_utc(f) if f else None, "sha256": h}
            for n, s, f, h in self.db.execute(
                "SELECT name, status, finished_at, sha256 FROM files ORDER BY id DESC LIMIT ?", (limit,)
            )
        ]

    # -- internals -------------------------------------------------------------------------

    def _event(self, kind: str, message: str) -> None:
        self.db.execute("INSERT INTO events (at, kind, message) VALUES (?, ?, ?)", (self.clock(), kind, message[:500]))
        # keep the events table small: it is a window on the recent past, not a history
        self.db.execute("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - 1000")

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db, self.path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error; SQLite's errors become LedgerError with the path.

    When the real error (a full disk) already ended the transaction, the failing ROLLBACK is
    not allowed to hide it: the message says "database or disk is full", not "cannot rollback".
    """

    def __init__(self, db: sqlite3.Connection, path: Path):
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _ledger_error(self.path, exc, "cannot be written") from None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as commit_error:
                exc = commit_error
        with contextlib.suppress(sqlite3.Error):
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _ledger_error(self.path, exc, "cannot be written") from None
        return False


def _hashes(text: str | None) -> dict[tuple[str, str], str] | None:
    """A batch's item hashes by (product, variant); a pair listed twice is left out (hashed again when sent)."""
    if not text:
        return None
    out: dict[tuple[str, str], str] = {}
    twice: set[tuple[str, str]] = set()
    for product, variant, digest in json.loads(text):
        key = (product, variant)
        if key in out:
            twice.add(key)
        out[key] = digest
    for key in twice:
        del out[key]
    return out


def _ledger_error(path: Path, exc: sqlite3.Error, what: str) -> LedgerError:
    """SQLite's error as a person can act on it: the ledger's path, the real cause, what to do."""
    text = str(exc)
    if "disk is full" in text or "disk I/O" in text:
        cause = _disk_cause(path) or text
        advice = "free space (or fix the disk) where the ledger lives and run again; nothing of this step was kept"
    elif "not a database" in text or "malformed" in text:
        cause = f"it is damaged ({text})"
        advice = (f"restore it from a backup; or move it aside and delete {path.with_name(Ledger.MARKER_NAME)} "
                  "to start afresh (every item is then sent again)")
    elif "readonly" in text or "read-only" in text:
        cause, advice = f"it is read-only ({text})", "make the state folder and the ledger writable by this user"
    elif "unable to open" in text:
        cause = _disk_cause(path) or text
        advice = "check that the state folder exists, is a folder and is writable by this user"
    else:
        cause, advice = text, "see the log for details"
    return LedgerError(f"the ledger {path} {what}: {cause}; {advice}")


def _disk_cause(path: Path) -> str | None:
    """The operating system's own reason the ledger's folder cannot take a write, if it has one."""
    try:
        stats = os.statvfs(path.parent)
    except OSError as exc:
        return _cause(exc)
    if stats.f_bavail * stats.f_frsize < 1 << 20:
        return f"the disk holding {path.parent} is full ({stats.f_bavail * stats.f_frsize} bytes free)"
    if not os.access(path.parent, os.W_OK):
        return f"{path.parent} is not writable by this user"
    return None


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _mapping_name(report: str | None) -> str:
    """The mapping name a file's stored report names ("" when it names none)."""
    try:
        return (json.loads(report or "{}").get("mapping") or {}).get("name") or ""
    except (ValueError, AttributeError):
        return ""


def _cause(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)


def _product_record(item: dict) -> str:
    """The catalogue's record of a product: an item's source and product fields, without its variant."""
    return encode_text({"source": item["source"],
                        "product": {k: v for k, v in item["product"].items() if k != "variants"}})
