"""The catalogue: what each source acknowledged, across files and runs, end to end over HTTP."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from connector.ledger import Ledger
from connector.wire import item_hash
from tests.support import pipeline_for, settings_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def fast_sandbox(make_sandbox):
    return make_sandbox(rate=1000.0, unauth_rate=1000.0)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    folder = tmp_path / "drop"
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("*.py"))
    return folder


def product_items(sb) -> list[dict]:
    return [e for e in sb.state()["queue"] if e["kind"] == "product"]


def test_one_state_folder_used_for_two_sources_sends_each_every_item(make_sandbox, tmp_path, example):
    test_account = make_sandbox(rate=1000.0, unauth_rate=1000.0, source_id=1)
    live = make_sandbox(rate=1000.0, unauth_rate=1000.0, source_id=2)
    assert pipeline_for(tmp_path, test_account).run_file(example / "products.csv").status == "done"
    settings = settings_for(tmp_path, live)
    settings.api.source_id = 2
    pipeline = pipeline_for(tmp_path, live, settings)
    outcome = pipeline.run_file(example / "products.csv")
    assert outcome.status == "done", outcome.message
    assert len(product_items(live)) == len(product_items(test_account)) == 9
    assert len(live.state()["images"]) == 4
    codes = {(v.product_code, v.variant_code) for v in pipeline.ledger.catalogue_variants(pipeline.endpoint)}
    first = pipeline_for(tmp_path, test_account).endpoint
    assert codes == {(v.product_code, v.variant_code) for v in pipeline.ledger.catalogue_variants(first)}
    assert len(codes) == 9


def test_a_replaced_picture_with_the_same_export_sends_that_picture_and_nothing_else(fast_sandbox, tmp_path,
                                                                                     example):
    pipeline = pipeline_for(tmp_path, fast_sandbox)
    assert pipeline.run_file(example / "products.csv").status == "done"
    before = len(fast_sandbox.state()["queue"])
    assert pipeline.run_file(example / "products.csv").status == "done"  # untouched: nothing goes
    assert len(fast_sandbox.state()["queue"]) == before

    shutil.copy(example / "images" / "tee-white.jpg", example / "images" / "mug.jpg")  # a new photo of the mug
    again = pipeline.run_file(example / "products.csv")
    assert again.status == "done", again.message
    new = fast_sandbox.state()["queue"][before:]
    assert [(e["kind"], e["source_product_code"], e["image_id"]) for e in new] == [("image", "00471", "mug.jpg")]
    assert again.to_json()["counts"]["items_sent"] == 0
    image = next(i for i in pipeline.ledger.catalogue_images(pipeline.endpoint, ["00471"]))
    assert image.image_id == "mug.jpg" and image.file == "products.csv"


def test_the_catalogue_keeps_each_item_with_the_file_and_mapping_that_set_it(fast_sandbox, tmp_path, example):
    pipeline = pipeline_for(tmp_path, fast_sandbox)
    assert pipeline.run_file(example / "products.csv").status == "done"
    variants = {v.variant_code: v for v in pipeline.ledger.catalogue_variants(pipeline.endpoint, ["TEE-CLASSIC"])}
    assert sorted(variants) == ["TEE-BLA-L", "TEE-BLA-M", "TEE-BLA-S", "TEE-WHI-L", "TEE-WHI-M", "TEE-WHI-S"]
    tee = variants["TEE-BLA-M"]
    assert tee.item["product"]["variants"]["sku"] and tee.item["product"]["title"] == "Classic Cotton Tee"
    assert (tee.file, tee.mapping) == ("products.csv", "stock2shop") and tee.at > 0
    sent = [e for e in product_items(fast_sandbox) if e["source_variant_code"] == "TEE-BLA-M"]
    assert len(sent) == 1
    (record,) = pipeline.ledger.catalogue_products(pipeline.endpoint, ["TEE-CLASSIC"])
    assert record.record["product"]["title"] == "Classic Cotton Tee" and "variants" not in record.record["product"]
    assert record.record["source"]["source_product_code"] == "TEE-CLASSIC"


def test_an_old_ledger_becomes_a_catalogue_for_the_source_that_acknowledged_it(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    endpoint = "http://api#source=1"
    tee = {"source": {"source_product_code": "TEE"}, "product": {"title": "Tee", "variants": {
        "source_variant_code": "TEE-M", "sku": "TEE-M", "qty": 3}}}
    stale = {"source": {"source_product_code": "MUG"}, "product": {"title": "Mug", "variants": {
        "source_variant_code": "MUG", "sku": "MUG"}}}
    with sqlite3.connect(state / "ledger.sqlite") as db:  # the schema before the catalogue
        db.executescript("""
            CREATE TABLE files (id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL, name TEXT NOT NULL,
                size INTEGER NOT NULL, mtime_ns INTEGER, mapping_sha256 TEXT, endpoint TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL, report TEXT NOT NULL, rejected TEXT NOT NULL DEFAULT '{}',
                started_at REAL, created_at REAL NOT NULL, finished_at REAL);
            CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL, kind TEXT NOT NULL,
                payload TEXT NOT NULL, after_job INTEGER, state TEXT NOT NULL DEFAULT 'pending',
                attempts INTEGER NOT NULL DEFAULT 0, acked INTEGER, last_error TEXT, created_at REAL NOT NULL,
                done_at REAL);
            CREATE TABLE sent (source_product_code TEXT NOT NULL, source_variant_code TEXT NOT NULL,
                hash TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (source_product_code, source_variant_code));
            CREATE TABLE sent_images (source_product_code TEXT NOT NULL, sha256 TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (source_product_code, sha256));
        """)
        report = json.dumps({"mapping": {"name": "stock2shop", "sha256": "m"}})
        db.execute("INSERT INTO files VALUES (1, 'f', 'products.csv', 1, 1, 'm', ?, 'done', ?, '{}', 1, 1, 2)",
                   (endpoint, report))
        db.execute("INSERT INTO jobs (file_id, kind, payload, state, created_at, done_at)"
                   " VALUES (1, 'products', ?, 'done', 1, 5)", (json.dumps([tee, stale]),))
        db.execute("INSERT INTO jobs (file_id, kind, payload, state, created_at, done_at) VALUES (1, 'image', ?,"
                   " 'done', 1, 6)", (json.dumps({"source_product_code": "TEE", "source_variant_code": None,
                                                  "image_id": "tee.jpg", "sha256": "abc"}),))
        db.executemany("INSERT INTO sent VALUES (?, ?, ?, 5)", [
            ("TEE", "TEE-M", item_hash(tee)),
            ("MUG", "MUG", "another-version"),  # acknowledged in a form no batch of the ledger holds
        ])
        db.execute("INSERT INTO sent_images VALUES ('TEE', 'abc', 6)")

    ledger = Ledger.open(state)
    (variant,) = ledger.catalogue_variants(endpoint)
    assert (variant.product_code, variant.variant_code, variant.item) == ("TEE", "TEE-M", tee)
    assert (variant.file, variant.mapping, variant.at) == ("products.csv", "stock2shop", 5)
    assert list(ledger.catalogue_variants("http://other#source=2")) == []  # never shared with another source
    assert [p.product_code for p in ledger.catalogue_products(endpoint)] == ["TEE"]
    assert [(i.product_code, i.image_id, i.sha256) for i in ledger.catalogue_images(endpoint)] == [
        ("TEE", "tee.jpg", "abc")]
    tables = {r[0] for r in ledger.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"sent", "sent_images"}
    ledger.close()
    Ledger.open(state).close()  # opening again finds nothing left to migrate
