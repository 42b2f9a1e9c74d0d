"""At the API's floor: the limiter earns no 429, each item is encoded once, start-up is shown."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from connector import batches, pipeline, wire
from connector.api import ApiClient
from connector.config import ApiSettings
from connector.ledger import Ledger
from connector.pipeline import Pipeline, plan_file
from connector.sandbox import Faults
from tests.support import FakeTime, pipeline_for, settings_for
from tests.test_send import export as two_option_export
from tests.test_send import store_one_option_product

HEADER = "source_product_code,source_variant_code,title,sku,price,qty,option1_name,option1_value"


def export(path: Path, products: int, variants: int = 2) -> Path:
    lines = [HEADER]
    for n in range(products):
        for v in range(variants):
            lines.append(f"P{n:04d},P{n:04d}-{v},Product {n} é,P{n:04d}-{v},{10 + v}.50,{n % 7},Size,S{v}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("burst_every, burst_size", [(0, 0), (5, 1), (7, 3)])
def test_the_limiter_at_the_announced_rate_never_earns_a_429_even_between_injected_ones(
        make_sandbox, tmp_path, burst_every, burst_size):
    """The sandbox and the client on one clock: requests take no time at all, the worst case for pacing.

    The client starts at the configured 1/s and follows the announced 3/s; the sandbox injects
    bursts of 429s (with Retry-After) that the push survives. Of all the 429s, the rate limit
    itself gave none: only the injected ones were seen.
    """
    fake = FakeTime()
    sb = make_sandbox(rate=3.0, unauth_rate=1.0, clock=fake.monotonic,
                      faults=Faults(seed=1, burst_every=burst_every, burst_size=burst_size, retry_after="seconds"))
    settings = settings_for(tmp_path, sb)
    settings.api = ApiSettings(url=sb.url, username="demo", password="demo", source_id=1, retry_budget=600.0)
    settings.batch.max_items = 4  # 120 items: 30 product requests
    client = ApiClient(settings.api, sleep=fake.sleep, clock=fake.monotonic, rng=lambda: 0.5)
    push = Pipeline(settings, client, Ledger.open(settings.folders.state))
    started = fake.now
    report = push.run_file(export(tmp_path / "stock.csv", 60))

    stats = sb.state()["stats"]
    assert report.status == "done" and report.counts.items_sent == 120
    assert stats["rate_limited"] == 0, stats  # the limiter never caused one
    assert client.limiter.rate == 3.0  # it followed the announced rate itself
    injected = stats["responses_429"]
    assert (injected > 0) == (burst_every > 0)
    assert client.requests["429"] == injected
    if not burst_every:  # and it went at the rate: 30 requests at 3/s, not at 1/s
        assert fake.now - started < 30 / 3 * 1.1 + 1


def test_an_item_is_encoded_once_and_acknowledged_by_the_hash_of_the_bytes_sent(make_sandbox, tmp_path, monkeypatch):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    encoded: list[bytes] = []

    def counted(value):
        data = wire.encode(value)
        encoded.append(data)
        return data

    def never(item):
        raise AssertionError("an item was encoded again to hash it")

    monkeypatch.setattr(batches, "_dumps", counted)
    monkeypatch.setattr(pipeline, "item_hash", never)
    settings = settings_for(tmp_path, sb)
    settings.batch.max_items = 10
    push = pipeline_for(tmp_path, sb, settings)
    report = push.run_file(export(tmp_path / "stock.csv", 25))
    push.close()

    assert report.status == "done" and report.counts.items_sent == 50
    assert len(encoded) == 50  # once each, while batching
    db = sqlite3.connect(settings.folders.state / Ledger.FILE_NAME)
    sent = {(p, v): h for p, v, h in db.execute("SELECT product_code, variant_code, hash FROM catalogue_variants")}
    assert sorted(sent.values()) == sorted(hashlib.sha256(data).hexdigest() for data in encoded)
    payloads = [text for (text,) in db.execute("SELECT payload FROM jobs WHERE kind = 'products' ORDER BY id")]
    assert len(payloads) == 5
    assert b",".join(p.encode()[1:-1] for p in payloads) == b",".join(encoded)  # journaled as the very bytes


def test_a_batch_the_api_cut_down_still_records_the_hashes_of_the_bytes_sent(make_sandbox, tmp_path):
    """After a refusal the rest of a batch goes as a new body; its items' hashes are still those of their bytes."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    store_one_option_product(sb, "P007")  # the file's two-option variants of P007 then clash: refused by the API
    path = two_option_export(tmp_path / "stock.csv", 12)
    push = pipeline_for(tmp_path, sb)
    report = push.run_file(path)
    push.close()
    assert report.status == "done" and report.counts.products_refused_by_api == 1

    built = plan_file(path, settings_for(tmp_path, sb), mapping="stock2shop")
    expected = {(p.code, it["product"]["variants"]["source_variant_code"]): wire.item_hash(it)
                for p in built.products for it in p.items if p.code != "P007"}
    db = sqlite3.connect(tmp_path / "state" / Ledger.FILE_NAME)
    sent = {(p, v): h for p, v, h in db.execute("SELECT product_code, variant_code, hash FROM catalogue_variants")}
    assert sent == expected


def test_the_work_before_the_first_request_is_shown_stage_by_stage(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    shown: list[str] = []
    push = pipeline_for(tmp_path, sb, stage=shown.append,
                        progress=lambda done, total: shown.append(f"sending {done}/{total}"))
    push.run_file(export(tmp_path / "stock.csv", 3))
    assert shown[:7] == ["reading", "mapping", "checking", "locating images", "planning", "journaling",
                         "sending 0/1"]
    assert shown[-1] == "sending 1/1"


def test_check_writes_the_items_as_a_request_body_one_item_per_line(tmp_path, capsys):
    from connector.cli import main

    path = export(tmp_path / "stock.csv", 3)
    assert main(["check", str(path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "stock.csv.items.json").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == '{"system_products": [' and lines[-1] == "]}"
    items = [json.loads(line.rstrip(",")) for line in lines[1:-1]]
    assert [it["product"]["variants"]["sku"] for it in items] == [f"P{n:04d}-{v}" for n in range(3) for v in range(2)]
    assert json.loads(text)["system_products"] == items  # and the whole is the JSON the API would be sent
    assert "Product 0 é" in text  # UTF-8 as sent, not \\u escapes


def test_check_of_a_file_with_nothing_to_send_writes_an_empty_body(tmp_path, capsys):
    from connector.cli import main

    path = tmp_path / "empty.csv"
    path.write_text(HEADER + "\n", encoding="utf-8")
    main(["check", str(path), "--out", str(tmp_path / "out")])
    assert json.loads((tmp_path / "out" / "empty.csv.items.json").read_text()) == {"system_products": []}


def test_a_429_widens_the_limiters_guard_for_the_rest_of_the_run_within_a_bound():
    from connector.api import RateLimiter

    fake = FakeTime()
    limiter = RateLimiter(3.0, clock=fake.monotonic, sleep=fake.sleep)
    assert limiter.guard == RateLimiter.WINDOW_GUARD
    limiter.back_off(0.0)  # a 429: a request arrived within a window of the one 3 before it
    assert limiter.guard == 2 * RateLimiter.WINDOW_GUARD
    for _ in range(10):
        limiter.back_off(0.0)
    assert limiter.guard == RateLimiter.MAX_GUARD
    for _ in range(4):
        limiter.wait()
    assert fake.sleeps[-1] == pytest.approx(1.0 + RateLimiter.MAX_GUARD)


def test_a_file_whose_every_product_is_too_big_to_send_is_refused_and_nothing_is_journaled(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "\n" + "\n".join(
        f"P{n},P{n}-0,{'long title ' * 300},P{n}-0,10.00,1,Size,S" for n in range(3)) + "\n", encoding="utf-8")
    settings = settings_for(tmp_path, sb)
    settings.batch.max_bytes = 2000
    push = pipeline_for(tmp_path, sb, settings)
    report = push.run_file(path)
    push.close()
    assert report.status == "refused" and "no row of the file could be sent" in report.message
    assert sorted(p.product for p in report.problems.stored if p.kind == "size") == ["P0", "P1", "P2"]
    db = sqlite3.connect(settings.folders.state / Ledger.FILE_NAME)
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert db.execute("SELECT status FROM files").fetchall() == [("refused",)]
    assert sb.state()["stats"]["by_path"].get("/v1/products/queue", 0) == 0
