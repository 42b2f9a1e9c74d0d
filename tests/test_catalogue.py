"""The catalogue: what each source acknowledged, across files and runs, end to end over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.config import Rule, Settings
from connector.ledger import Ledger
from connector.sandbox import Faults
from connector.wire import item_hash
from tests.support import pipeline_for, settings_for

ROOT = Path(__file__).resolve().parents[1]


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


# -- update files -------------------------------------------------------------------------------

CORPUS = ROOT.parent / "shared" / "corpus"
OPENBOXES = CORPUS / "openboxes"

STOCK_MAPPING = """
name: warehouse-stock
mode: update
update: {clear: "-"}
source: {decimal: "."}
group_by: Product code
same_variant: sum
variant:
  source_variant_code: Product code
  qty_availability:
    entries: [{name: "{warehouse}", value: {column: Physical QOH, type: int}}]
  qty: {sum: qty_availability}
"""


def stock_settings(tmp_path: Path, sb, mapping: str = STOCK_MAPPING, **update):
    settings = settings_for(tmp_path, sb)
    folder = tmp_path / "mappings"
    folder.mkdir(exist_ok=True)
    (folder / "warehouse-stock.yaml").write_text(mapping, encoding="utf-8")
    return settings


def stored(sb) -> dict[str, dict]:
    return {p["source_product_code"]: p for p in sb.state()["products"]}


def product_requests(sb) -> int:
    return sb.state()["stats"]["by_path"].get("/v1/products/queue", 0)


def copy_corpus(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "drop"
    folder.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(OPENBOXES / name, folder / name)
    return folder


def test_a_stock_file_after_the_full_file_changes_only_the_quantities_in_one_request(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    pipeline = pipeline_for(tmp_path, fast_sandbox, stock_settings(tmp_path, fast_sandbox))
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    before = stored(fast_sandbox)["QX039"]
    requests = product_requests(fast_sandbox)

    outcome = pipeline.run_file(drop / "mainWarehouseInventory.csv", mapping="warehouse-stock")
    assert outcome.status == "done", outcome.message
    after = stored(fast_sandbox)["QX039"]
    for name in ("title", "product_type", "tags", "meta"):
        assert after[name] == before[name], name
    assert after["meta"] and after["product_type"] == "Pain" and after["tags"]
    (variant,) = after["variants"]
    assert variant["price"] == 0.25 and variant["qty"] == 100000
    assert variant["qty_availability"] == [{"description": "mainWarehouseInventory", "qty": 100000}]
    assert product_requests(fast_sandbox) - requests == 1  # 57 merged items in one request
    (record,) = pipeline.ledger.catalogue_variants(pipeline.endpoint, ["QX039"])
    assert (record.file, record.mapping) == ("mainWarehouseInventory.csv", "warehouse-stock")


def test_three_warehouse_files_keep_three_entries_and_none_is_lost_when_one_comes_again(fast_sandbox, tmp_path):
    names = ("products.csv", "mainWarehouseInventory.csv", "bostonWarehouseInventory.csv",
             "chicagoWarehouseInventory.csv")
    drop = copy_corpus(tmp_path, *names)
    settings = stock_settings(tmp_path, fast_sandbox)
    settings.rules = [Rule(pattern="*WarehouseInventory.csv", mapping="warehouse-stock", warehouse="{stem}")]
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(drop / "products.csv", mapping="openboxes").status == "done"
    for name in names[1:]:
        assert pipeline.run_file(drop / name).status == "done"
    (tz835,) = stored(fast_sandbox)["TZ835"]["variants"]
    by_warehouse = {e["description"]: e["qty"] for e in tz835["qty_availability"]}
    assert by_warehouse == {"mainWarehouseInventory": 7600, "bostonWarehouseInventory": 3800,
                            "chicagoWarehouseInventory": 760}
    assert tz835["qty"] == 7600 + 3800 + 760 and tz835["price"] == 0.29

    requests = product_requests(fast_sandbox)
    assert pipeline.run_file(drop / "bostonWarehouseInventory.csv").status == "done"  # the same file again
    assert product_requests(fast_sandbox) == requests  # ... sends nothing
    text = (drop / "bostonWarehouseInventory.csv").read_text(encoding="utf-8")
    (drop / "bostonWarehouseInventory.csv").write_text(text.replace(",003P218,01/31/2023,RACK1-SHELF1,,3800,",
                                                                    ",003P218,01/31/2023,RACK1-SHELF1,,3700,"),
                                                       encoding="utf-8")
    changed = pipeline.run_file(drop / "bostonWarehouseInventory.csv")
    assert changed.status == "done" and changed.to_json()["counts"]["items_sent"] == 1
    assert product_requests(fast_sandbox) - requests == 1
    (tz835,) = stored(fast_sandbox)["TZ835"]["variants"]
    assert {e["description"]: e["qty"] for e in tz835["qty_availability"]} == {
        "mainWarehouseInventory": 7600, "bostonWarehouseInventory": 3700, "chicagoWarehouseInventory": 760}
    assert tz835["qty"] == 7600 + 3700 + 760


def test_a_stock_file_before_its_products_waits_then_whole_items_go_once(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    pipeline = pipeline_for(tmp_path, fast_sandbox, stock_settings(tmp_path, fast_sandbox))
    early = pipeline.run_file(drop / "mainWarehouseInventory.csv", mapping="warehouse-stock")
    assert early.status == "done", early.message
    assert fast_sandbox.state()["queue"] == []  # nothing half is ever sent
    counts = early.to_json()["counts"]
    assert counts["rows_waiting"] == 57 and counts["items_sent"] == 0
    waiting = [p for p in early.to_json()["problems"] if p["kind"] == "waiting"]
    assert "waiting for its product" in waiting[0]["reason"]

    products = pipeline.run_file(drop / "products.csv", mapping="openboxes")
    assert products.status == "done", products.message
    sent = Counter_of(fast_sandbox)
    assert len(sent) == 57 and set(sent.values()) == {1}  # each whole item once
    (variant,) = stored(fast_sandbox)["QX039"]["variants"]
    assert variant["qty"] == 100000 and variant["price"] == 0.25
    assert stored(fast_sandbox)["QX039"]["title"] == "Morphine 10mg immediate release tablet"
    assert pipeline.ledger.waiting_rows(pipeline.endpoint) == []


def Counter_of(sb) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in sb.state()["queue"]:
        if e["kind"] == "product":
            out[e["source_variant_code"]] = out.get(e["source_variant_code"], 0) + 1
    return out


PRICE_MAPPING = """
name: prices
mode: update
update: {key: sku, clear: "-"}
group_by: sku
variant:
  sku: sku
  price: {column: price, type: decimal}
  barcode: {column: was}
product:
  vendor: brand
"""


def test_an_update_by_sku_keeps_blanks_clears_on_purpose_and_changes_the_whole_product(fast_sandbox, tmp_path,
                                                                                       example):
    settings = stock_settings(tmp_path, fast_sandbox, PRICE_MAPPING)
    (tmp_path / "mappings" / "prices.yaml").write_text(PRICE_MAPPING, encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(example / "products.csv").status == "done"
    tee = {v["sku"]: v for v in stored(fast_sandbox)["TEE-CLASSIC"]["variants"]}
    sku = sorted(tee)[0]
    assert tee[sku]["barcode"]
    requests = product_requests(fast_sandbox)
    (example / "prices.csv").write_text(f"sku,price,was,brand\n{sku},111.5,,Acme\nNOPE-1,5,,\n", encoding="utf-8")
    outcome = pipeline.run_file(example / "prices.csv", mapping="prices")
    assert outcome.status == "done", outcome.message
    after = stored(fast_sandbox)["TEE-CLASSIC"]
    variants = {v["sku"]: v for v in after["variants"]}
    assert variants[sku]["price"] == 111.5
    assert variants[sku]["barcode"] == tee[sku]["barcode"]  # blank keeps
    assert after["vendor"] == "Acme"  # a product-level field: every variant of the product takes it
    assert outcome.to_json()["counts"]["items_sent"] == len(variants) and product_requests(fast_sandbox) == requests + 1
    assert outcome.to_json()["counts"]["rows_waiting"] == 1  # NOPE-1 is not known

    (example / "prices2.csv").write_text(f"sku,price,was,brand\n{sku},,,-\n", encoding="utf-8")
    cleared = pipeline.run_file(example / "prices2.csv", mapping="prices")
    assert cleared.status == "done", cleared.message
    after = stored(fast_sandbox)["TEE-CLASSIC"]
    assert not after.get("vendor")  # cleared on purpose
    assert {v["sku"]: v for v in after["variants"]}[sku]["price"] == 111.5  # blank keeps


def test_a_row_waits_at_most_update_wait_days_then_is_reported_abandoned(fast_sandbox, tmp_path):
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    clock = [1_000_000.0]
    settings = stock_settings(tmp_path, fast_sandbox, STOCK_MAPPING.replace('update: {clear: "-"}',
                                                                            "update: {wait_days: 2}"))
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings, clock=lambda: clock[0])
    pipeline.ledger.clock = lambda: clock[0]
    assert pipeline.run_file(drop / "mainWarehouseInventory.csv", mapping="warehouse-stock").status == "done"
    clock[0] += 3 * 86400
    outcome = pipeline.run_file(drop / "products.csv", mapping="openboxes")
    assert outcome.to_json()["counts"]["rows_abandoned"] == 57
    abandoned = [p for p in outcome.to_json()["problems"] if p["kind"] == "waiting"]
    assert len(abandoned) == 57 and "abandoned" in abandoned[0]["reason"]
    (variant,) = stored(fast_sandbox)["QX039"]["variants"]
    assert "qty" not in variant or variant["qty"] in (None, 0)
    assert pipeline.ledger.waiting_rows(pipeline.endpoint) == []


def test_a_merged_send_killed_midway_resumes_and_every_item_goes_whole_once(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    settings = stock_settings(tmp_path, sb)
    assert pipeline_for(tmp_path, sb, settings).run_file(drop / "products.csv", mapping="openboxes").status == "done"
    first = len(sb.state()["queue"])
    sb.set_faults(Faults(seed=1, latency=0.3))
    (tmp_path / "connector.yaml").write_text(
        f"batch:\n  max_items: 5\nfolders:\n  mappings: {tmp_path / 'mappings'}\n", encoding="utf-8")
    env = {**os.environ, "S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo",
           "S2S_SOURCE_ID": "1", "S2S_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "connector", "push", str(drop / "mainWarehouseInventory.csv"),
           "--mapping", "warehouse-stock", "--report-dir", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ledger = tmp_path / "state" / "ledger.sqlite"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(ledger) as db:
            if db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done' AND file_id > 1").fetchone()[0]:
                break  # the merged items journaled, and their first batch acknowledged
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the push never journaled its work")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with sqlite3.connect(ledger) as db:
        pending = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending'").fetchone()[0]
    assert pending > 0  # killed in the middle of the merged send

    sb.set_faults(Faults())
    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    merged = [e for e in sb.state()["queue"][first:] if e["kind"] == "product"]
    sent: dict[str, int] = {}
    for e in merged:
        sent[e["source_variant_code"]] = sent.get(e["source_variant_code"], 0) + 1
    assert len(sent) == 57
    assert sum(n - 1 for n in sent.values()) <= 5  # at most the batch in flight at the kill went twice
    for product in sb.state()["products"]:  # none half: every stored item is whole, with its new qty
        (variant,) = product["variants"]
        assert product["title"] and product["product_type"] is not None and variant["price"] is not None
        assert variant["qty_availability"][0]["description"] == "mainWarehouseInventory"
    assert stored(sb)["QX039"]["variants"][0]["qty"] == 100000
    catalogue = Ledger.open(tmp_path / "state")
    endpoint = pipeline_for(tmp_path, sb, settings).endpoint
    assert {v.file for v in catalogue.catalogue_variants(endpoint)} == {"mainWarehouseInventory.csv"}


# -- vanished products ----------------------------------------------------------------------------

COMPLETE_MAPPING = """
name: full-catalogue
complete: true
vanished: delete
group_by: code
product:
  title: title
variant:
  source_variant_code: code
  sku: code
  price: {column: price, type: decimal}
"""


def catalogue_file(path: Path, codes) -> Path:
    path.write_text("code,title,price\n" + "".join(f"P{n:03},Product {n},{n}.50\n" for n in codes),
                    encoding="utf-8")
    return path


def test_a_complete_file_missing_60_percent_deletes_nothing_and_says_so_until_allowed(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "full-catalogue.yaml").write_text(COMPLETE_MAPPING, encoding="utf-8")
    drop = tmp_path / "drop"
    drop.mkdir()
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(catalogue_file(drop / "all.csv", range(10)), mapping="full-catalogue").status == "done"
    assert len(stored(fast_sandbox)) == 10

    partial = catalogue_file(drop / "monday.csv", range(4))  # 6 of 10 products are missing
    guarded = pipeline.run_file(partial, mapping="full-catalogue")
    assert guarded.status == "done", guarded.message
    assert len(stored(fast_sandbox)) == 10  # nothing deleted
    (why,) = [p for p in guarded.to_json()["problems"] if p["kind"] == "vanished"]
    assert "6 of 10 products" in why["reason"] and "max_vanished (1)" in why["reason"]
    assert "--allow-deletions" in why["reason"]
    counts = guarded.to_json()["counts"]
    assert counts["products_vanished"] == 6 and counts["products_deleted"] == 0

    refused = drop / "broken.csv"  # a file refused for its data never deletes
    refused.write_text("code,title,price\nP000,,x\n", encoding="utf-8")
    assert pipeline.run_file(refused, mapping="full-catalogue").status == "refused"
    assert len(stored(fast_sandbox)) == 10

    allowed = pipeline_for(tmp_path, fast_sandbox, settings, allow_deletions=True)
    shutil.copy(partial, drop / "tuesday.csv")
    outcome = allowed.run_file(drop / "tuesday.csv", mapping="full-catalogue")
    assert outcome.status == "done", outcome.message
    assert sorted(stored(fast_sandbox)) == ["P000", "P001", "P002", "P003"]  # exactly those deleted
    deletes = [e for e in fast_sandbox.state()["queue"] if e.get("status") == "accepted" and
               e["source_product_code"] in {f"P{n:03}" for n in range(4, 10)}]
    assert deletes and outcome.to_json()["counts"]["products_deleted"] == 6
    retired = {v.product_code: v.item["source"]["product_active"] for v in allowed.ledger.catalogue_variants(
        allowed.endpoint)}
    assert retired["P009"] == "false" and retired["P000"] == "true"
    again = allowed.run_file(catalogue_file(drop / "wednesday.csv", range(4)), mapping="full-catalogue")
    assert again.to_json()["counts"]["products_vanished"] == 0  # retired products are not retired again


def test_a_complete_file_with_vanished_keep_reports_and_deletes_nothing(fast_sandbox, tmp_path):
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "full-catalogue.yaml").write_text(
        COMPLETE_MAPPING.replace("vanished: delete", "vanished: keep"), encoding="utf-8")
    drop = tmp_path / "drop"
    drop.mkdir()
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings, allow_deletions=True)
    assert pipeline.run_file(catalogue_file(drop / "all.csv", range(3)), mapping="full-catalogue").status == "done"
    outcome = pipeline.run_file(catalogue_file(drop / "less.csv", range(2)), mapping="full-catalogue")
    assert outcome.to_json()["counts"]["products_vanished"] == 1 and len(stored(fast_sandbox)) == 3


# -- connector show -------------------------------------------------------------------------------

def test_show_tells_what_the_catalogue_holds_and_what_waits_while_another_process_writes(fast_sandbox, tmp_path,
                                                                                          example, monkeypatch,
                                                                                          capsys):
    from connector.cli import main
    from tests.support import FakeClock

    pipeline = pipeline_for(tmp_path, fast_sandbox, stock_settings(tmp_path, fast_sandbox))
    assert pipeline.run_file(example / "products.csv").status == "done"
    (example / "stock.csv").write_text("Product code,Physical QOH\nNEW-1,5\n", encoding="utf-8")
    assert pipeline.run_file(example / "stock.csv", mapping="warehouse-stock").to_json()["counts"]["rows_waiting"] == 1
    for name, value in {"S2S_API_URL": fast_sandbox.url, "S2S_SOURCE_ID": "1",
                        "S2S_STATE_DIR": str(tmp_path / "state")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    writer = sqlite3.connect(tmp_path / "state" / "ledger.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process (watch) holds the write lock
    try:
        capsys.readouterr()
        assert main(["show", "TEE-BLA-M"], clock=FakeClock()) == 0  # a variant code finds its product
        text = capsys.readouterr().out
        assert "product TEE-CLASSIC" in text and "Classic Cotton Tee" in text
        assert "variant TEE-WHI-S: set by products.csv (stock2shop) at" in text
        assert "image tee-black.jpg" in text
        assert main(["show", "NEW-1", "--json"], clock=FakeClock()) == 0
        found = json.loads(capsys.readouterr().out)
        assert found["products"] == [] and found["waiting"][0]["file"] == "stock.csv"
        assert main(["show", "NOTHING"], clock=FakeClock()) == 1
        assert "not in the catalogue" in capsys.readouterr().out
    finally:
        writer.execute("ROLLBACK")
        writer.close()


# -- retention ------------------------------------------------------------------------------------

def test_compaction_drops_old_bodies_and_keeps_counts_the_catalogue_and_what_is_unsent(make_sandbox, tmp_path,
                                                                                       example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    now = [time.time()]
    pipeline = pipeline_for(tmp_path, sb, clock=lambda: now[0])
    pipeline.ledger.clock = lambda: now[0]
    assert pipeline.run_file(example / "products.csv").status == "done"
    file_id = pipeline.ledger.db.execute("SELECT MAX(id) FROM files").fetchone()[0]
    counts = pipeline.ledger.file_sent_counts(file_id)
    assert pipeline.tidy() == 0  # nothing is old yet
    sb.set_faults(Faults(seed=1, error_rate=1.0))
    shutil.copy(example / "products.csv", example / "later.csv")
    text = (example / "later.csv").read_text(encoding="utf-8").replace("Classic Cotton Tee", "Cotton Tee")
    (example / "later.csv").write_text(text, encoding="utf-8")
    assert pipeline.run_file(example / "later.csv").status == "waiting"  # journaled, not acknowledged

    now[0] += 91 * 86400
    assert pipeline.tidy() > 0
    kept = dict(pipeline.ledger.db.execute("SELECT state, MIN(payload != 'null') FROM jobs GROUP BY state"))
    assert kept["pending"] == 1  # unsent work keeps its body, however old
    assert not pipeline.ledger.db.execute("SELECT 1 FROM jobs WHERE state = 'done' AND payload != 'null'").fetchone()
    assert pipeline.ledger.file_sent_counts(file_id) == counts  # the report's counts survive
    assert len(list(pipeline.ledger.catalogue_variants(pipeline.endpoint))) == 9
    sb.set_faults(Faults())
    assert pipeline.drain() and {p["title"] for p in sb.state()["products"]} >= {"Cotton Tee"}


def test_a_row_waiting_for_its_product_sends_no_picture_before_it(fast_sandbox, tmp_path, example):
    mapping = STOCK_MAPPING + "images:\n  columns: [picture]\n"
    pipeline = pipeline_for(tmp_path, fast_sandbox, stock_settings(tmp_path, fast_sandbox, mapping))
    (example / "stock.csv").write_text("Product code,Physical QOH,picture\nNEW-1,5,mug.jpg\n", encoding="utf-8")
    outcome = pipeline.run_file(example / "stock.csv", mapping="warehouse-stock")
    assert outcome.status == "done" and outcome.to_json()["counts"]["rows_waiting"] == 1
    assert outcome.to_json()["counts"]["images_to_send"] == 0
    assert fast_sandbox.state()["queue"] == []


# -- rows of other files released by this one ------------------------------------------------------

MODELS = """
name: t-models
group_by: code
models: {parent: parent}
product: {title: name}
variant: {}
"""
MODEL_PRODUCTS = """
name: t-products
group_by: {column: parent, fallback: sku}
join: {model: parent}
product: {title: name}
variant: {source_variant_code: sku, sku: sku, price: {column: price, type: decimal}}
"""


def test_rows_of_an_earlier_file_refused_when_released_are_reported_against_that_file(fast_sandbox, tmp_path):
    """products.csv's rows wait for model M1; models.csv brings it, and they are refused together (two
    variants without options). Their lines are products.csv's: models.csv's own lines 2 and 3 are fine."""
    settings = stock_settings(tmp_path, fast_sandbox)
    for name, text in (("t-models", MODELS), ("t-products", MODEL_PRODUCTS)):
        (tmp_path / "mappings" / f"{name}.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "products.csv").write_text("sku,parent,name,price\nS1,M1,Mug small,10\nS2,M1,Mug large,12\n",
                                           encoding="utf-8")
    (tmp_path / "models.csv").write_text("code,parent,name\nM1,,Mug\nM2,,Jug\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    first = pipeline.run_file(tmp_path / "products.csv", mapping="t-products")
    assert first.counts.rows_waiting == 2 and first.rows.refused == 0
    second = pipeline.run_file(tmp_path / "models.csv", mapping="t-models")

    assert second.rows.line() == "2 read = 2 items + 0 folded + 0 refused + 0 skipped"  # its own rows are fine
    assert second.rejected == [] and second.counts.rows_refused == 0
    refused = [p for p in second.problems.stored if p.severity == "error"]
    assert refused and all("products.csv" in p.reason and p.line is None for p in refused), refused
    assert [p.reason for p in refused] == [
        "line 3 of products.csv: is a second variant without options (line 2 of products.csv is the first); "
        "give the variants options or their own product codes"]
    assert stored(fast_sandbox) == {}  # M1's two variants without options are not sent


def test_a_join_row_refused_once_joined_is_named_with_its_file(fast_sandbox, tmp_path):
    """combinations.csv waits for P8; products.csv brings it at 100, and one combination's impact of -150
    makes a price below 0: the problem is at combinations.csv's line, and products.csv refuses only its own
    row of P8, saying why (before, both were put at products.csv's line of P8)."""
    from tests.test_review_defects import COMBINATIONS, PRODUCTS

    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-L,L,0\nP8,P8-S,S,-150\n",
                                               encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP9,Gadget,P9-own,50\nP8,Widget,P8-own,100\n",
                                           encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "combinations.csv", mapping="shop-combinations").counts.rows_waiting == 2
    outcome = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")

    assert outcome.rows.line() == "2 read = 1 items + 0 folded + 1 refused + 0 skipped"
    assert [(r.row.line, r.reason) for r in outcome.rejected] == [
        (3, "product P8 held back because of line 3 of combinations.csv")]
    refused = [p for p in outcome.problems.stored if p.severity == "error"]
    assert len(refused) == 1 and refused[0].line is None and refused[0].product == "P8"
    assert refused[0].reason.startswith("line 3 of combinations.csv: ") and "-50" in refused[0].reason
    assert set(stored(fast_sandbox)) == {"P9"}


def big_product_files(tmp_path: Path, sandbox) -> Settings:
    """s.csv, a stock file whose rows wait for SMALL1 and BIG1; p.csv brings them, BIG1 too big to send
    in the 64 KiB batches of the settings returned (mappings big-stock and big-products)."""
    from tests.test_review_defects import FULL, UPDATE

    settings = stock_settings(tmp_path, sandbox)
    settings.batch.max_bytes = 64 * 1024
    (tmp_path / "mappings" / "big-stock.yaml").write_text(UPDATE, encoding="utf-8")
    (tmp_path / "mappings" / "big-products.yaml").write_text(FULL, encoding="utf-8")
    (tmp_path / "s.csv").write_text("code,qty\nSMALL1,4\nBIG1,5\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text(f"code,title,body,price\nSMALL1,Small,,5\nBIG1,Big,{'x' * 66000},10\n",
                                    encoding="utf-8")
    return settings


def test_a_waiting_row_merged_into_a_product_held_back_is_named_with_its_file(fast_sandbox, tmp_path):
    """s.csv's row for BIG1 waits; p.csv brings BIG1 too big to send: p.csv refuses its own row, and the
    row of s.csv that went into it is named with its file, not taken for a row of p.csv."""
    settings = big_product_files(tmp_path, fast_sandbox)
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "s.csv", mapping="big-stock").counts.rows_waiting == 2
    outcome = pipeline.run_file(tmp_path / "p.csv", mapping="big-products")

    assert outcome.rows.line() == "2 read = 1 items + 0 folded + 1 refused + 0 skipped"
    assert [r.row.line for r in outcome.rejected] == [3]
    named = [p.reason for p in outcome.problems.stored if "s.csv" in p.reason]
    assert len(named) == 1 and named[0].startswith("line 3 of s.csv (waiting for its product, merged into BIG1): "
                                                   "product BIG1 held back: an item is ")
    assert stored(fast_sandbox)["SMALL1"]["variants"][0]["qty"] == 4 and "BIG1" not in stored(fast_sandbox)


# -- rows that waited leave the ledger only once their product is sent ----------------------------

def waiting_lines(pipeline) -> list[tuple[str, int]]:
    return [(w.file, w.line) for w in pipeline.ledger.waiting_rows(pipeline.endpoint)]


def test_a_row_waiting_for_a_product_held_back_while_batching_waits_on_and_goes_with_the_fixed_file(
        fast_sandbox, tmp_path):
    """s.csv's rows wait; p.csv brings BIG1 too big to send: s.csv's row of BIG1 stays in the ledger and
    the report says so; p2.csv brings BIG1 fixed, and it goes with s.csv's quantity."""
    settings = big_product_files(tmp_path, fast_sandbox)
    (tmp_path / "p2.csv").write_text("code,title,body,price\nBIG1,Big,Shorter now,10\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "s.csv", mapping="big-stock").counts.rows_waiting == 2

    held = pipeline.run_file(tmp_path / "p.csv", mapping="big-products")
    assert held.status == "done" and held.counts.products_held_back == 1
    assert waiting_lines(pipeline) == [("s.csv", 3)]  # SMALL1's row went and left; BIG1's waits on
    (note,) = [p.reason for p in held.problems.stored if "s.csv" in p.reason]
    assert note.endswith("; the row still waits, and goes with the next file that brings BIG1")
    assert stored(fast_sandbox)["SMALL1"]["variants"][0]["qty"] == 4 and "BIG1" not in stored(fast_sandbox)

    fixed = pipeline.run_file(tmp_path / "p2.csv", mapping="big-products")
    assert fixed.status == "done" and fixed.counts.items_sent == 1
    assert stored(fast_sandbox)["BIG1"]["variants"][0]["qty"] == 5  # s.csv's row, never pushed again
    assert waiting_lines(pipeline) == []


def test_rows_waiting_for_a_model_whose_product_is_held_back_wait_on_and_go_with_the_next_file_sending_it(
        fast_sandbox, tmp_path):
    """products.csv's rows wait for M1; models.csv brings M1 and it is held back (S2 repeats S1's options):
    the rows wait on and the report says so, and models.csv's models are kept. products2.csv sends M1 with S2
    fixed: S1's row that waited goes with it, S2's is superseded, and both leave the ledger once it is sent."""
    options = MODEL_PRODUCTS.replace("name: t-products", "name: t-sized") + "options:\n  - {name: Size, value: size}\n"
    settings = stock_settings(tmp_path, fast_sandbox)
    for name, text in (("t-models", MODELS), ("t-sized", options)):
        (tmp_path / "mappings" / f"{name}.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "products.csv").write_text("sku,parent,name,price,size\nS1,M1,Mug small,10,S\nS2,M1,Mug large,12,S\n",
                                           encoding="utf-8")
    (tmp_path / "models.csv").write_text("code,parent,name\nM1,,Mug\nM2,,Jug\n", encoding="utf-8")
    (tmp_path / "products2.csv").write_text("sku,parent,name,price,size\nS2,M1,Mug large,12,L\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "products.csv", mapping="t-sized").counts.rows_waiting == 2

    held = pipeline.run_file(tmp_path / "models.csv", mapping="t-models")
    assert held.status == "done", held.message  # its own rows are fine: its models are kept
    assert held.counts.products_held_back == 1 and stored(fast_sandbox) == {}
    assert waiting_lines(pipeline) == [("products.csv", 2), ("products.csv", 3)]
    notes = [p.reason for p in held.problems.stored if p.kind == "waiting"]
    assert notes == [f"line {n} of products.csv (waiting for its product, merged into M1): product M1 held back "
                     "because of line 3 of products.csv; the row still waits, and goes with the next file that "
                     "brings M1" for n in (2, 3)]
    assert set(pipeline.ledger.model_records(pipeline.endpoint)) == {"m1", "m2"}

    fixed = pipeline.run_file(tmp_path / "products2.csv", mapping="t-sized")
    assert fixed.status == "done" and fixed.counts.items_sent == 2, fixed.message
    sizes = {v["sku"]: (v["option1"], v["price"]) for v in stored(fast_sandbox)["M1"]["variants"]}
    assert sizes == {"S1": ("S", 10), "S2": ("L", 12)}  # S2 as products2.csv has it, not as it waited
    assert stored(fast_sandbox)["M1"]["title"] == "Mug"
    assert waiting_lines(pipeline) == []


def test_a_product_the_api_refuses_keeps_the_rows_that_waited_for_it_and_names_them(fast_sandbox, tmp_path):
    """The sandbox holds P1 with one option; s.csv's rows wait for P1's variants; p.csv brings P1 with two
    options and the API refuses it: s.csv's rows are named with their file and wait again; p2.csv brings P1
    as the API takes it, and they go with it."""
    from tests.test_review_defects import UPDATE
    from tests.test_send import store_one_option_product

    store_one_option_product(fast_sandbox, "P1")
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "big-stock.yaml").write_text(UPDATE, encoding="utf-8")
    two = ("name: opt-products\ngroup_by: code\nproduct: {title: title}\n"
           "variant: {source_variant_code: sku, sku: sku, price: {column: price, type: decimal}}\n"
           "options:\n  - {name: Colour, value: colour}\n  - {name: Size, value: size}\n")
    (tmp_path / "mappings" / "opt-products.yaml").write_text(two, encoding="utf-8")
    (tmp_path / "mappings" / "one-option.yaml").write_text(
        two.replace("opt-products", "one-option").replace("  - {name: Size, value: size}\n", ""), encoding="utf-8")
    (tmp_path / "s.csv").write_text("code,qty\nP1-R,4\nP1-B,6\nP2-R,1\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("code,sku,title,price,colour,size\nP1,P1-R,Tee,5,Red,S\nP1,P1-B,Tee,5,Blue,S\n"
                                    "P2,P2-R,Cap,3,Red,M\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "s.csv", mapping="big-stock").counts.rows_waiting == 3

    refused = pipeline.run_file(tmp_path / "p.csv", mapping="opt-products")
    assert refused.status == "done" and refused.counts.products_refused_by_api == 1
    assert waiting_lines(pipeline) == [("s.csv", 2), ("s.csv", 3)]  # P2's row went with P2 and left
    named = sorted(p.reason for p in refused.problems.stored if "s.csv" in p.reason)
    assert named == [f"line {n} of s.csv (waiting for its product, merged into P1): refused by the API with "
                     "product P1; the row waits again, and goes with the next file that brings P1" for n in (2, 3)]
    assert stored(fast_sandbox)["P2"]["variants"][0]["qty"] == 1

    (tmp_path / "p2.csv").write_text("code,sku,title,price,colour\nP1,P1-R,Tee,5,Green\nP1,P1-B,Tee,5,Blue\n",
                                     encoding="utf-8")
    taken = pipeline.run_file(tmp_path / "p2.csv", mapping="one-option")
    assert taken.status == "done" and taken.counts.products_refused_by_api == 0
    qty = {v["sku"]: v["qty"] for v in stored(fast_sandbox)["P1"]["variants"]}
    assert (qty["P1-R"], qty["P1-B"]) == (4, 6)
    assert waiting_lines(pipeline) == []


def test_rows_that_waited_survive_a_crash_between_journaling_and_sending_and_go_once(make_sandbox, tmp_path):
    """The API is down when p.csv brings the product s.csv's rows waited for: the rows leave `waiting` but stay
    in the ledger with the journaled work; a new process sends it, and only then are they gone."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    drop = copy_corpus(tmp_path, "products.csv", "mainWarehouseInventory.csv")
    settings = stock_settings(tmp_path, sb)
    first = pipeline_for(tmp_path, sb, settings)
    assert first.run_file(drop / "mainWarehouseInventory.csv", mapping="warehouse-stock").counts.rows_waiting == 57
    sb.set_faults(Faults(seed=1, error_rate=1.0))
    down = first.run_file(drop / "products.csv", mapping="openboxes")
    assert down.status == "waiting"
    first.close()  # the process ends (as after a crash: everything it wrote is in the ledger)

    db = sqlite3.connect(settings.folders.state / Ledger.FILE_NAME)
    assert db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0] == 57  # kept ...
    assert db.execute("SELECT COUNT(*) FROM released").fetchone()[0] == 57  # ... with the work that holds them
    db.close()
    sb.set_faults(Faults())
    second = pipeline_for(tmp_path, sb, settings)
    assert second.ledger.waiting_rows(second.endpoint) == []  # not merged again meanwhile
    assert second.drain()
    assert len(Counter_of(sb)) == 57 and set(Counter_of(sb).values()) == {1}  # each whole item once
    (variant,) = stored(sb)["QX039"]["variants"]
    assert variant["qty"] == 100000 and variant["price"] == 0.25
    db = sqlite3.connect(settings.folders.state / Ledger.FILE_NAME)
    assert db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM released").fetchone()[0] == 0
    db.close()
    second.close()


def test_a_join_file_s_rows_in_a_product_the_api_refuses_are_named_with_their_file(fast_sandbox, tmp_path):
    """The sandbox holds P8 with a variant of option L; combinations.csv's rows wait for P8; products.csv
    brings P8 and the API refuses it (its L repeats the stored one's): combinations.csv's rows are named
    with their file and kept."""
    import requests

    from tests.test_review_defects import COMBINATIONS, PRODUCTS

    old = {"source": {"source_id": 1, "product_active": "true", "source_product_code": "P8", "sync_token": "0",
                      "fetch_token": "0"},
           "product": {"title": "Old", "options": [{"name": "Size", "position": 1}],
                       "variants": {"source_variant_code": "P8-OLD", "sku": "P8-OLD", "option1": "L"}}}
    assert requests.post(f"{fast_sandbox.url}/v1/products/queue", params={"token": fast_sandbox.issue_token()},
                         json={"system_products": [old]}, timeout=10).status_code == 200
    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "shop-products.yaml").write_text(PRODUCTS, encoding="utf-8")
    (tmp_path / "mappings" / "shop-combinations.yaml").write_text(COMBINATIONS, encoding="utf-8")
    (tmp_path / "combinations.csv").write_text("id,ref,size,impact\nP8,P8-L,L,0\nP8,P8-S,S,-5\n", encoding="utf-8")
    (tmp_path / "products.csv").write_text("id,name,ref,price\nP9,Gadget,P9-own,50\nP8,Widget,P8-own,100\n",
                                           encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "combinations.csv", mapping="shop-combinations").counts.rows_waiting == 2
    outcome = pipeline.run_file(tmp_path / "products.csv", mapping="shop-products")
    assert outcome.status == "done" and outcome.counts.products_refused_by_api == 1, outcome.message
    named = [p.reason for p in outcome.problems.stored if "combinations.csv" in p.reason]
    assert named == [f"line {n} of combinations.csv (joined into P8): refused by the API with product P8; the row "
                     "is kept, and goes with the next file that brings P8 or combinations.csv" for n in (2, 3)]
    assert len(pipeline.ledger.joined_rows(pipeline.endpoint, ["P8"])["P8"]) == 2


def test_a_row_waiting_for_a_product_held_back_by_its_own_file_is_said_to_wait_on(fast_sandbox, tmp_path):
    """p.csv brings BIG1 with a price that is no number: BIG1 is held back before anything merges into it;
    s.csv's row of BIG1 is untouched, and p.csv's report says it still waits."""
    from tests.test_review_defects import FULL, UPDATE

    settings = stock_settings(tmp_path, fast_sandbox)
    (tmp_path / "mappings" / "big-stock.yaml").write_text(UPDATE, encoding="utf-8")
    (tmp_path / "mappings" / "big-products.yaml").write_text(FULL.replace("price: price", "price: {column: price, "
                                                                                       "type: decimal}"),
                                                           encoding="utf-8")
    (tmp_path / "s.csv").write_text("code,qty\nSMALL1,4\nBIG1,5\n", encoding="utf-8")
    (tmp_path / "p.csv").write_text("code,title,body,price\nSMALL1,Small,,5\nBIG1,Big,,ten\n", encoding="utf-8")
    pipeline = pipeline_for(tmp_path, fast_sandbox, settings)
    assert pipeline.run_file(tmp_path / "s.csv", mapping="big-stock").counts.rows_waiting == 2
    outcome = pipeline.run_file(tmp_path / "p.csv", mapping="big-products")
    assert outcome.status == "done" and outcome.counts.products_held_back == 1
    notes = [p.reason for p in outcome.problems.stored if "s.csv" in p.reason]
    assert notes == ["line 3 of s.csv (waiting for its product): product BIG1 held back; the row still waits, and "
                     "goes with the next file that brings BIG1"]
    assert waiting_lines(pipeline) == [("s.csv", 3)]
