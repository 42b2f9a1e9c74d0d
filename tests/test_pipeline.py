"""End to end: files through the whole pipeline to the sandbox API over real HTTP."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from connector.sandbox import Faults
from tests.support import pipeline_for, settings_for

ROOT = Path(__file__).resolve().parents[1]


def variant_codes(state: dict) -> dict[str, list[str]]:
    return {p["source_product_code"]: sorted(v["source_variant_code"] for v in p["variants"]) for p in state["products"]}


def test_example_export_sends_products_then_their_images_in_fifo_order(fast_sandbox, tmp_path, example):
    outcome = pipeline_for(tmp_path, fast_sandbox).run_file(example / "products.csv")
    assert outcome.status == "done", outcome.message
    state = fast_sandbox.state()
    queue = state["queue"]
    assert queue and all(entry["status"] == "accepted" for entry in queue), [e for e in queue if e["status"] != "accepted"]
    first_product_seq = {}
    for entry in queue:
        if entry["kind"] == "product":
            first_product_seq.setdefault(entry["source_product_code"], entry["seq"])
    images = [e for e in queue if e["kind"] == "image"]
    assert len(images) == 4  # three tee photos and the mug; the broken kettle photo is refused
    for image in images:
        assert image["seq"] > first_product_seq[image["source_product_code"]]
    mains = {i["source_product_code"]: i["image_id"] for i in state["images"] if i["main"]}
    assert mains == {"TEE-CLASSIC": "tee-black.jpg", "00471": "mug.jpg"}


def test_each_variant_is_one_item_and_a_bad_row_holds_back_only_its_product(fast_sandbox, tmp_path, example):
    outcome = pipeline_for(tmp_path, fast_sandbox).run_file(example / "products.csv")
    stored = variant_codes(fast_sandbox.state())
    assert stored == {
        "TEE-CLASSIC": ["TEE-BLA-L", "TEE-BLA-M", "TEE-BLA-S", "TEE-WHI-L", "TEE-WHI-M", "TEE-WHI-S"],
        "00471": ["00471"],  # leading zeros kept
        "KETTLE-2L": ["KETTLE-2L"],  # its broken photo doesn't hold it back
    }
    product_items = [e for e in fast_sandbox.state()["queue"] if e["kind"] == "product"]
    assert len(product_items) == 9  # 6 tee variants, mug, kettle, and the lantern's delete
    refused = {row.cells["source_product_code"]: reason for row, reason in outcome.rejected}
    assert set(refused) == {"BOOTS-HIKE", "GLOVES-WNTR", "CABLE-USB"}
    assert len(outcome.rejected) == 5
    counts = outcome.to_json()["counts"]
    assert counts["items_sent"] == 9 and counts["images_sent"] == 4
    price_problem = next(p for p in outcome.to_json()["problems"] if p.get("value") == "12,5O")
    assert price_problem["column"] == "price" and price_problem["line"] == 11  # header, 6 tee rows, mug, kettle, boots size 8


def test_the_same_file_again_is_a_duplicate_and_a_changed_price_sends_one_item(fast_sandbox, tmp_path, example):
    pipeline = pipeline_for(tmp_path, fast_sandbox)
    assert pipeline.run_file(example / "products.csv").status == "done"
    before = len(fast_sandbox.state()["queue"])
    shutil.copy(example / "products.csv", example / "products-tuesday.csv")  # the ERP exported the same again
    again = pipeline.run_file(example / "products-tuesday.csv")
    assert again.status == "duplicate" and "already pushed as products.csv" in again.message
    rerun = pipeline.run_file(example / "products.csv")  # the very file, run again (as after a crash)
    assert rerun.status == "done" and rerun.to_json()["counts"]["items_sent"] == 9  # its own report back
    assert len(fast_sandbox.state()["queue"]) == before

    text = (example / "products.csv").read_text(encoding="utf-8")
    (example / "products.csv").write_text(text.replace("00471,6001234010012,79.95", "00471,6001234010012,84.95", 1),
                                          encoding="utf-8")
    changed = pipeline.run_file(example / "products.csv")
    assert changed.status == "done"
    new = fast_sandbox.state()["queue"][before:]
    assert [(e["kind"], e["source_variant_code"]) for e in new] == [("product", "00471")]
    assert changed.to_json()["counts"]["items_unchanged"] == 8


def test_expired_tokens_429s_5xx_and_lost_answers_are_survived(make_sandbox, tmp_path, example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(
        seed=7, error_rate=0.2, burst_every=3, burst_size=2, retry_after="seconds", drop_rate=0.1, expire_after=3))
    outcome = pipeline_for(tmp_path, sb).run_file(example / "products.csv")
    assert outcome.status == "done", outcome.message
    stored = variant_codes(sb.state())
    assert sorted(stored) == ["00471", "KETTLE-2L", "TEE-CLASSIC"] and len(stored["TEE-CLASSIC"]) == 6
    assert len(sb.state()["images"]) == 4
    by_status = outcome.to_json()["requests"]["by_status"]
    assert by_status.get("429") and any(k.startswith("5") for k in by_status), by_status  # retries really happened
    assert outcome.to_json()["requests"]["total"] > 3  # more than the one batch, one image request and a login


def test_api_down_keeps_the_work_waiting_and_a_later_run_sends_it_once(make_sandbox, tmp_path, example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, error_rate=1.0))
    pipeline = pipeline_for(tmp_path, sb)
    waiting = pipeline.run_file(example / "products.csv")
    assert waiting.status == "waiting"
    assert "wait in the ledger" in waiting.message
    assert sb.state()["products"] == []

    sb.set_faults(Faults())
    resumed = pipeline_for(tmp_path, sb).run_file(example / "products.csv")  # a new process, the same ledger
    assert resumed.status == "done"
    product_items = [e for e in sb.state()["queue"] if e["kind"] == "product"]
    assert len(product_items) == 9  # each item once: 5xx answers were never processed
    assert len(resumed.rejected) == 5  # the rejected rows survive in the ledger for the report


def test_a_push_killed_after_journaling_resumes_and_sends_everything_once(make_sandbox, tmp_path, example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, latency=0.4))
    (tmp_path / "connector.yaml").write_text("batch:\n  max_items: 2\n", encoding="utf-8")
    env = {**os.environ, "S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo",
           "S2S_SOURCE_ID": "1", "S2S_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "connector", "push", str(example / "products.csv"), "--report-dir", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ledger = tmp_path / "state" / "ledger.sqlite"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if ledger.exists():
            try:
                with sqlite3.connect(ledger) as db:
                    if db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[0]:
                        break  # journaled, and the first batch acknowledged
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the push never journaled its work")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with sqlite3.connect(ledger) as db:
        pending = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending'").fetchone()[0]
        acknowledged = [json.loads(p) for (p,) in db.execute(
            "SELECT payload FROM jobs WHERE state = 'done' AND kind = 'products'")]
    assert pending > 0 and acknowledged  # killed after the first acknowledgement, before the end
    acknowledged_codes = {it["product"]["variants"]["source_variant_code"] for batch in acknowledged for it in batch}

    sb.set_faults(Faults())
    rerun = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    state = sb.state()
    stored = variant_codes(state)
    assert sorted(stored) == ["00471", "KETTLE-2L", "TEE-CLASSIC"] and len(stored["TEE-CLASSIC"]) == 6
    sent = Counter(e["source_variant_code"] for e in state["queue"] if e["kind"] == "product")
    assert all(sent[code] == 1 for code in acknowledged_codes)  # nothing acknowledged was sent again
    repeated = [code for code, n in sent.items() if n > 1]
    assert len(repeated) <= 2  # at most the batch in flight at the kill (2 items) went twice
    assert len(state["images"]) == 4


def _mapping_with(tmp_path: Path, **source) -> Path:
    spec = yaml.safe_load((ROOT / "mappings" / "stock2shop.yaml").read_text(encoding="utf-8"))
    spec["name"] = "test-variant"
    spec["source"].update(source)
    path = tmp_path / "mappings" / "test-variant.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def _rows(example: Path) -> tuple[list[str], list[list[str]]]:
    with (example / "products.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write(path: Path, header, rows, *, delimiter=",", encoding="utf-8", decimal_comma=False) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        if decimal_comma:
            row = [c.replace(".", ",") if c.replace(".", "").isdigit() and c.count(".") == 1 else c for c in row]
        writer.writerow(row)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


@pytest.mark.parametrize("variant", ["cp1252", "semicolon-decimal-comma", "utf8-bom", "xlsx", "xls"])
def test_real_world_encodings_and_formats_reach_the_api_intact(fast_sandbox, tmp_path, example, variant):
    header, rows = _rows(example)
    rows[0][2] = "Classic Cotton Tee – Café"  # an en dash and an accent (both in cp1252)
    for row in rows:
        if row[0] == "TEE-CLASSIC":
            row[2] = rows[0][2]
    mapping = None
    if variant == "cp1252":
        path = _write(example / "export.csv", header, rows, encoding="cp1252")
    elif variant == "semicolon-decimal-comma":
        path = _write(example / "export.csv", header, rows, delimiter=";", decimal_comma=True)
        mapping = str(_mapping_with(tmp_path, decimal=",", thousands=" "))
    elif variant == "utf8-bom":
        path = _write(example / "export.csv", header, rows, encoding="utf-8-sig")
    elif variant == "xlsx":
        path = _xlsx(example / "export.xlsx", header, rows)
    else:
        path = _xls(example / "export.xls", header, rows)
    outcome = pipeline_for(tmp_path, fast_sandbox).run_file(path, mapping=mapping)
    assert outcome.status == "done", outcome.message
    state = fast_sandbox.state()
    products = {p["source_product_code"]: p for p in state["products"]}
    assert products["TEE-CLASSIC"]["title"] == "Classic Cotton Tee – Café"
    assert "00471" in products  # leading zeros survive every format
    kettle = products["KETTLE-2L"]["variants"][0]
    assert float(kettle["price"]) == 1299.5
    assert sorted(t["tier"] for t in kettle["price_tiers"]) == ["retail", "wholesale"]
    assert sorted(q["description"] for q in kettle["qty_availability"]) == ["cpt", "jhb"]
    if variant == "cp1252":
        assert outcome.to_json()["read"]["encoding"] == "cp1252"
    if variant == "semicolon-decimal-comma":
        assert outcome.to_json()["read"]["delimiter"] == ";"


def _xlsx(path: Path, header, rows) -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(header)
    numeric = {"price", "qty", "grams", "price_wholesale", "price_retail", "qty_jhb", "qty_cpt"}
    for row in rows:
        cells = []
        for name, value in zip(header, row, strict=False):  # rows read from a CSV may be short
            try:
                cells.append(float(value) if name in numeric and value else value)
            except ValueError:
                cells.append(value)
        ws.append(cells)
    wb.save(path)
    return path


def _xls(path: Path, header, rows) -> Path:
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("Products")
    for c, name in enumerate(header):
        sheet.write(0, c, name)
    numeric = {"price", "qty", "grams", "price_wholesale", "price_retail", "qty_jhb", "qty_cpt"}
    for r, row in enumerate(rows, start=1):
        for c, (name, value) in enumerate(zip(header, row, strict=False)):  # rows read from a CSV may be short
            try:
                sheet.write(r, c, float(value) if name in numeric and value else value)
            except ValueError:
                sheet.write(r, c, value)
    book.save(str(path))
    return path


def test_items_the_api_refuses_are_reported_and_the_rest_of_the_batch_still_goes(fast_sandbox, tmp_path, example):
    """The sandbox already holds TEE-CLASSIC with one option; the file's two-option variants clash with it."""
    import requests

    token = fast_sandbox.issue_token()
    stored = {"source": {"source_id": 1, "product_active": "true", "source_product_code": "TEE-CLASSIC",
                         "sync_token": "0", "fetch_token": "0"},
              "product": {"title": "Classic Cotton Tee", "options": [{"name": "Colour", "position": 1}],
                          "variants": {"source_variant_code": "TEE-OLD", "sku": "TEE-OLD", "option1": "Red"}}}
    answer = requests.post(f"{fast_sandbox.url}/v1/products/queue", params={"token": token},
                           json={"system_products": [stored]}, timeout=10)
    assert answer.status_code == 200

    outcome = pipeline_for(tmp_path, fast_sandbox).run_file(example / "products.csv")
    assert outcome.status == "done"
    refused = [p for p in outcome.to_json()["problems"] if p["kind"] == "api"]
    assert refused and {p["product"] for p in refused} == {"TEE-CLASSIC"}
    assert all("refused by the API" in p["reason"] for p in refused)
    products = variant_codes(fast_sandbox.state())
    assert products["00471"] == ["00471"] and products["KETTLE-2L"] == ["KETTLE-2L"]
    assert products["TEE-CLASSIC"] == ["TEE-OLD"]  # nothing of the refused product was applied
    images = fast_sandbox.state()["images"]
    assert [i["source_product_code"] for i in images] == ["00471"]  # the tee photos wait for a product that never came
    assert outcome.to_json()["counts"]["products_refused_by_api"] == 1


def test_a_newer_file_is_never_skipped_as_unchanged_while_an_older_one_waits(make_sandbox, tmp_path, example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    csv_path = example / "products.csv"
    original = csv_path.read_text(encoding="utf-8")
    assert pipeline_for(tmp_path, sb).run_file(csv_path).status == "done"  # mug at 79.95 acknowledged

    sb.set_faults(Faults(seed=1, error_rate=1.0))
    csv_path.write_text(original.replace(",79.95,", ",99.99,", 1), encoding="utf-8")
    assert pipeline_for(tmp_path, sb).run_file(csv_path).status == "waiting"  # 99.99 waits in the ledger

    sb.set_faults(Faults())
    csv_path.write_text(original, encoding="utf-8")  # the next export is back at 79.95
    assert pipeline_for(tmp_path, sb).run_file(csv_path).status == "done"
    mug = next(p for p in sb.state()["products"] if p["source_product_code"] == "00471")
    assert float(mug["variants"][0]["price"]) == 79.95  # the newest file won


def test_a_request_too_big_for_the_server_is_sent_in_smaller_parts(make_sandbox, tmp_path, example):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, max_body_bytes=4000)
    outcome = pipeline_for(tmp_path, sb).run_file(example / "products.csv")
    assert outcome.status == "done"
    assert outcome.to_json()["requests"]["by_status"].get("413", 0) >= 1
    stored = variant_codes(sb.state())
    assert len(stored["TEE-CLASSIC"]) == 6 and stored["00471"] == ["00471"]


def test_an_item_bigger_than_a_request_holds_back_only_its_product(fast_sandbox, tmp_path, example):
    settings = settings_for(tmp_path, fast_sandbox)
    settings.batch.max_bytes = 3000
    text = (example / "products.csv").read_text(encoding="utf-8")
    (example / "products.csv").write_text(text.replace("<p>Whistling kettle.</p>", "<p>" + "long " * 800 + "</p>"),
                                          encoding="utf-8")
    outcome = pipeline_for(tmp_path, fast_sandbox, settings).run_file(example / "products.csv")
    assert outcome.status == "done"
    assert "KETTLE-2L" not in variant_codes(fast_sandbox.state())
    size = [p for p in outcome.to_json()["problems"] if p["kind"] == "size"]
    assert size and size[0]["product"] == "KETTLE-2L" and "batch.max_bytes" in size[0]["reason"]
    assert any("KETTLE-2L held back" in reason for _, reason in outcome.rejected)
    assert "00471" in variant_codes(fast_sandbox.state())


def test_work_journaled_for_another_api_is_never_sent_here(make_sandbox, tmp_path, example):
    production = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, error_rate=1.0))
    assert pipeline_for(tmp_path, production).run_file(example / "products.csv").status == "waiting"
    other = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    shutil.copy(example / "products.xlsx", example / "other.xlsx")
    text = (example / "products.csv").read_text(encoding="utf-8").replace("Classic Cotton Tee", "Tee v2")
    (example / "other.csv").write_text(text, encoding="utf-8")
    pipeline = pipeline_for(tmp_path, other)
    assert pipeline.run_file(example / "other.csv").status == "done"
    assert pipeline.ledger.backlog()["batches"] == 1  # the production batch still waits, untouched
    titles = {p["title"] for p in other.state()["products"]}
    assert titles and "Classic Cotton Tee" not in titles


def test_cycles_frozen_with_one_file_are_freed_when_the_next_file_is_planned():
    """A watch plans file after file: what a file left in cycles must not stay frozen for months."""
    script = """
import gc, weakref
from connector.pipeline import _collector_paused
class Node:
    pass
gc.enable()
with _collector_paused(new_file=True):
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, as a long-lived object graph may hold
    gone = weakref.ref(a)
del a, b
with _collector_paused():  # the same file's next stage: not collected yet
    pass
kept = gone() is not None
with _collector_paused(new_file=True):
    pass
print("freed" if gone() is None and kept else "kept", gc.isenabled(), gc.get_freeze_count() > 0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1], check=True)
    assert done.stdout.split() == ["freed", "True", "True"]
