"""`connector verify [--repair]`: what the API acknowledged and then lost is found, and mended.

End to end over HTTP against the sandbox, whose queue is made to fail items after
acknowledging them (Faults.queue_fail_rate): real CSV files, real JPEGs, a real ledger.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from connector import watch
from connector.channels import SearchChannel, choose
from connector.cli import EXIT_CODES
from connector.config import Folders, VerifySettings, WatchSettings
from connector.health import read_health
from connector.ledger import Ledger
from connector.sandbox import Faults
from connector.status import render_status
from connector.verify import Finding, acknowledged, compare
from tests.support import CliResult as Result
from tests.support import FakeClock, pipeline_for, run_cli, settings_for, wait_real

HEADER = "source_product_code,source_variant_code,title,sku,price,qty,image1,image2,option1_name,option1_value\n"


@pytest.fixture
def run(monkeypatch, capsys) -> Callable[..., Result]:
    """`run(args, cwd, env)`: `connector ARGS` in-process, in `cwd`, with only `env`'s S2S_* variables."""
    return lambda args, cwd, env=None: run_cli(monkeypatch, capsys, args, cwd, env)


def jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path, "JPEG")


def stored(sb) -> dict[str, dict]:
    return {p["source_product_code"]: p for p in sb.state()["products"]}


def report(workdir: Path) -> dict:
    return json.loads((workdir / "reports" / "verify.report.json").read_text(encoding="utf-8"))


def test_a_queue_that_loses_items_after_acknowledging_them_is_found_and_mended(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    for name, colour in (("p1.jpg", (200, 0, 0)), ("p2.jpg", (0, 200, 0)), ("p2-back.jpg", (0, 0, 200)),
                         ("p3.jpg", (200, 200, 0))):
        jpeg(tmp_path / "images" / name, colour)
    (tmp_path / "a.csv").write_text(HEADER + "P1,P1-A,Mug,P1-A,10.00,5,p1.jpg,,Size,S\nP1,P1-B,Mug,P1-B,11.00,6,p1.jpg,,Size,M\n"
                                    "P2,P2-A,Cup,P2-A,20.00,7,p2.jpg,\n", encoding="utf-8")
    assert run(["push", "a.csv"], tmp_path, env).returncode == 0
    first = run(["verify"], tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert report(tmp_path)["clean"] and report(tmp_path)["checked"]["variants"] == 3

    # The queue now acknowledges everything and keeps nothing: a price change of P1-A, a new
    # product P3 with its image, and a second image of P2 (whose item is unchanged) are lost.
    sb.set_faults(Faults(queue_fail_rate=1.0))
    (tmp_path / "b.csv").write_text(HEADER + "P1,P1-A,Mug,P1-A,12.50,5,p1.jpg,,Size,S\nP1,P1-B,Mug,P1-B,11.00,6,p1.jpg,,Size,M\n"
                                    "P2,P2-A,Cup,P2-A,20.00,7,p2.jpg,p2-back.jpg\n"
                                    "P3,P3-A,Bowl,P3-A,30.00,8,p3.jpg,\n", encoding="utf-8")
    pushed = run(["push", "b.csv"], tmp_path, env)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr  # every request was acknowledged
    assert [q["status"] for q in sb.state()["queue"][-4:]] == ["failed"] * 4
    sb.set_faults(Faults())

    found = run(["verify"], tmp_path, env)
    assert found.returncode == 1, found.stdout + found.stderr
    findings = {(f["kind"], f["product"], f.get("variant"), f.get("field")) for f in report(tmp_path)["findings"]}
    assert findings == {("missing_product", "P3", None, None), ("missing_image", "P3", "P3-A", None),
                        ("missing_image", "P2", "P2-A", None), ("differs", "P1", "P1-A", "price")}
    price = next(f for f in report(tmp_path)["findings"] if f["kind"] == "differs")
    assert (price["expected"], price["found"]) == (12.5, 10.0)
    assert "missing: 1 products, 0 variants, 2 images; differing: 1 fields" in found.stdout
    status = run(["status"], tmp_path, env)
    assert "Last verify:" in status.stdout and "missing 1 products" in status.stdout

    before = len(sb.state()["queue"])
    mended = run(["verify", "--repair"], tmp_path, env)
    assert mended.returncode == 0, mended.stdout + mended.stderr
    assert report(tmp_path)["repair"]["items_sent"] == 3 and report(tmp_path)["repair"]["images_sent"] == 2
    again = sb.state()["queue"][before:]
    # whole products, images after their product: P1 with both variants, P3, then the two images
    assert [(q["kind"], q["source_product_code"], q["source_variant_code"] or q["image_id"]) for q in again][:3] == \
        [("product", "P1", "P1-A"), ("product", "P1", "P1-B"), ("product", "P3", "P3-A")]
    assert {q["source_product_code"] for q in again if q["kind"] == "image"} == {"P2", "P3"}
    assert all(q["status"] == "accepted" for q in again)
    products = stored(sb)
    assert products["P1"]["variants"][0]["price"] == 12.5 and "P3" in products
    assert len(products["P2"]["images"]) == 2

    clean = run(["verify"], tmp_path, env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert report(tmp_path)["clean"] and report(tmp_path)["checked"] == {
        "products": 3, "variants": 4, "images": 4, "products_waiting": 0}
    assert "all there, as last sent" in clean.stdout


def test_an_image_whose_file_is_gone_cannot_be_repaired_and_is_named(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(queue_fail_rate=1.0, paths=("/v1/images/queue",)))
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    jpeg(tmp_path / "images" / "g.jpg", (9, 9, 9))
    (tmp_path / "g.csv").write_text(HEADER + "G,G-1,Glass,G-1,3.00,1,g.jpg,,,\n", encoding="utf-8")
    assert run(["push", "g.csv"], tmp_path, env).returncode == 0
    assert stored(sb)["G"]["images"] == []  # acknowledged, then lost by the queue
    sb.set_faults(Faults())
    (tmp_path / "images" / "g.jpg").unlink()

    result = run(["verify", "--repair"], tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [f["kind"] for f in report(tmp_path)["findings"]] == ["missing_image"]
    assert "product G: image g.jpg not in Stock2Shop" in result.stdout
    assert "not repaired: G: image not sent" in result.stdout
    assert report(tmp_path)["repair"]["images_sent"] == 0


def test_a_repair_the_api_cannot_take_now_waits_in_the_ledger_and_goes_with_the_next(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(queue_fail_rate=1.0))
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    (tmp_path / "connector.yaml").write_text("api:\n  retry_budget: 5\n", encoding="utf-8")
    (tmp_path / "h.csv").write_text(HEADER + "H,H-1,Hat,H-1,3.00,1,,,,\n", encoding="utf-8")
    assert run(["push", "h.csv"], tmp_path, env).returncode == 0
    sb.set_faults(Faults(error_rate=1.0))  # the queue answers 5xx: the repair cannot go now

    waiting = run(["verify", "--repair"], tmp_path, env)
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert "the rest waits in the ledger" in waiting.stdout and "H" not in stored(sb)
    assert "Ledger: 1 product batch(es)" in run(["status"], tmp_path, env).stdout  # the repair is journaled

    sb.set_faults(Faults())
    sent = run(["verify", "--repair"], tmp_path, env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "all there, as last sent" in sent.stdout and "H" in stored(sb)


def test_verify_pages_its_searches_through_the_rate_limited_client(make_sandbox, tmp_path):
    """60 products, 25 a page: 3 searches, through the account's only channel (listed once), each
    through the same client and limiter as the pushes."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    settings.verify.page_size = 25
    rows = "".join(f"Q{i},Q{i}-A,Thing {i},Q{i}-A,{i}.00,{i},,\n" for i in range(60))
    (tmp_path / "many.csv").write_text(HEADER + rows, encoding="utf-8")
    pipeline = pipeline_for(tmp_path, sb, settings)
    try:
        assert pipeline.run_file(tmp_path / "many.csv").status == "done"
        searches = sb.state()["stats"]["by_path"].get("/v1/products/elastic_search", 0)
        from connector.verify import run_verify

        result = run_verify(pipeline)
    finally:
        pipeline.close()
    assert result.clean and result.products_checked == 60
    by_path = sb.state()["stats"]["by_path"]
    assert by_path["/v1/products/elastic_search"] - searches == 3 and by_path["/v1/channels"] == 1
    assert result.requests == 4 and result.channel is not None and result.channel.channel_id == 1


def test_acknowledged_reads_the_last_acknowledged_item_of_each_variant_for_this_endpoint(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    for name, price in (("one.csv", "1.00"), ("two.csv", "2.00")):
        (tmp_path / name).write_text(HEADER + f"K,K-1,Kettle,K-1,{price},1,,\n", encoding="utf-8")
        pipeline = pipeline_for(tmp_path, sb, settings)
        try:
            assert pipeline.run_file(tmp_path / name).status == "done"
            endpoint = pipeline.endpoint
        finally:
            pipeline.close()
    ledger = Ledger.open(settings.folders.state)
    try:
        items = list(acknowledged(ledger, endpoint))
        elsewhere = list(acknowledged(ledger, "http://elsewhere#source=1"))
        asked = [len(list(acknowledged(ledger, endpoint, codes))) for codes in (["K"], ["K", "L"], ["L"], [])]
    finally:
        ledger.close()
    assert [(p, v, it["product"]["variants"]["price"]) for p, v, it in items] == [("K", "K-1", 2.0)]
    assert elsewhere == []
    assert asked == [1, 1, 0, 0]


def item(code: str, variant: str, **fields) -> dict:
    title = fields.pop("title", "T")
    return {"source": {"source_product_code": code, "product_active": "true"},
            "product": {"title": title, "variants": {"source_variant_code": variant, **fields}}}


def held(code: str, *variants: dict, title: str = "T", images: list | None = None) -> dict:
    return {"source_product_code": code, "title": title, "variants": list(variants), "images": images or []}


@pytest.mark.parametrize("expected, images, stored_, found", [
    # numbers as the API stores them: "10.50" is 10.5, a negative qty is kept as 0
    ({"A": {"A1": item("A", "A1", price="10.50", qty=-3, sku="A1")}}, {},
     {"A": held("A", {"source_variant_code": "A1", "price": 10.5, "qty": 0, "sku": "A1"})}, []),
    ({"A": {"A1": item("A", "A1", qty=4)}}, {},
     {"A": held("A", {"source_variant_code": "A1", "qty": 3})}, [Finding("differs", "A", "A1", "qty", 4, 3)]),
    ({"A": {"A1": item("A", "A1", sku="X", title="New")}}, {},
     {"A": held("A", {"source_variant_code": "A1", "sku": "Y"}, title="Old")},
     [Finding("differs", "A", "A1", "sku", "X", "Y"), Finding("differs", "A", None, "title", "New", "Old")]),
    ({"A": {"A1": item("A", "A1"), "A2": item("A", "A2")}}, {},
     {"A": held("A", {"source_variant_code": "A1"})}, [Finding("missing_variant", "A", "A2")]),
    # a field never sent is not compared; an image is known by its id or by its bytes' md5
    ({"A": {"A1": item("A", "A1")}}, {"A": [{"image_id": "i1"}, {"image_id": "i2", "md5": "ab"},
                                            {"image_id": "i3", "md5": "cd"}]},
     {"A": held("A", {"source_variant_code": "A1", "price": 9}, images=[{"source_image_code": "i1"}, {"hash": "AB"}])},
     [Finding("missing_image", "A", None, image_id="i3")]),
    ({"B": {"B1": item("B", "B1")}}, {"B": [{"image_id": "b"}]}, {},
     [Finding("missing_product", "B", expected=1), Finding("missing_image", "B", image_id="b")]),
])
def test_compare_finds_what_is_missing_or_differs(expected, images, stored_, found):
    assert compare(expected, images, stored_) == found


def test_compare_leaves_out_the_fields_not_asked_for():
    expected = {"A": {"A1": item("A", "A1", price=5, qty=1, title="New")}}
    held_there = {"A": held("A", {"source_variant_code": "A1", "price": 4, "qty": 1}, title="Edited in the console")}
    assert [f.field for f in compare(expected, {}, held_there)] == ["price", "title"]
    assert [f.field for f in compare(expected, {}, held_there, ["qty", "sku"])] == []


def test_the_sandbox_queue_fault_fails_a_share_of_items_reproducibly(make_sandbox):
    import requests

    def failed(seed: int) -> list[str]:
        sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=seed, queue_fail_rate=0.5))
        token = sb.issue_token()
        items = [item(f"Z{i}", f"Z{i}", sku=f"Z{i}") for i in range(20)]
        for it in items:
            it["source"].update(source_id=1, sync_token="0", fetch_token="0")
        answer = requests.post(f"{sb.url}/v1/products/queue", params={"token": token, "source_id": 1},
                               json={"system_products": items}, timeout=10)
        assert answer.json() == {"system_products": {"sync_product": 20}}  # all acknowledged
        state = sb.state()
        lost = [q["source_product_code"] for q in state["queue"] if q["status"] == "failed"]
        assert len(state["products"]) == 20 - len(lost)
        return lost

    assert 0 < len(failed(5)) < 20 and failed(5) == failed(5)


def watch_until(settings, sb, tmp_path: Path, condition: Callable[[dict], bool], what: str) -> dict[str, float]:
    """Run the service on a fake clock over real folders and the sandbox until `condition(health)`;
    returns when (the service's time) each logged event first happened."""
    clock = FakeClock()
    stop = threading.Event()
    seen: dict[str, float] = {}

    class When(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.setdefault(getattr(record, "event", ""), clock.monotonic())

    log = logging.getLogger(f"test.verify.{id(stop)}")
    log.addHandler(When())
    log.setLevel(logging.INFO)
    thread = threading.Thread(target=lambda: watch.serve(settings, lambda: pipeline_for(tmp_path, sb, settings),
                                                         stop=stop, clock=clock, log=log), daemon=True)
    thread.start()
    try:
        wait_real(lambda: condition(read_health(settings.watch.health_file) or {}), what=what)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    return seen


def watched(tmp_path: Path, sb, **verify) -> object:
    settings = settings_for(tmp_path, sb)
    settings.folders = Folders(inbox=tmp_path / "inbox", processing=tmp_path / "processing",
                               archive=tmp_path / "archive", failed=tmp_path / "failed", state=tmp_path / "state")
    settings.folders.inbox.mkdir(parents=True)
    settings.watch = WatchSettings(scan_interval=1.0, min_age=0.1, stable_interval=0.2, observer="none",
                                   health_file=tmp_path / "state" / "health.json")
    settings.verify = VerifySettings(after_minutes=1, **verify)
    (settings.folders.inbox / "w.csv").write_text(HEADER + "W,W-1,Whisk,W-1,5.00,1,,,,\n", encoding="utf-8")
    return settings


def searches(sb) -> int:
    return sb.state()["stats"]["by_path"].get("/v1/products/elastic_search", 0)


def test_watch_verifies_a_pushed_file_after_verify_after_minutes_and_shows_it_in_health(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(queue_fail_rate=1.0))
    settings = watched(tmp_path, sb)
    seen = watch_until(settings, sb, tmp_path, lambda h: "missing 1 products" in str(h.get("verify")),
                       "health to show the verify")
    health = read_health(settings.watch.health_file) or {}
    assert health["state"] == "degraded"
    assert any("verify found items missing" in p and "verify.repair" in p for p in health["problems"])
    assert seen["verify"] - seen["file_finished"] >= 60  # verify.after_minutes after the file, not before
    assert searches(sb) == 2  # through the account's only channel, and once without it: lost either way
    assert "missing 1 products" in render_status(settings)


def test_watch_with_verify_repair_sends_what_was_lost_and_checks_it_again(make_sandbox, tmp_path):
    # seed 1: the queue loses the first item it takes and keeps the second (the repair's)
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, queue_fail_rate=0.5))
    settings = watched(tmp_path, sb, repair=True)
    watch_until(settings, sb, tmp_path, lambda h: str(h.get("verify", "")).startswith("clean"),
                "the repaired product to be verified")
    assert [q["status"] for q in sb.state()["queue"]] == ["failed", "accepted"]
    assert searches(sb) == 3  # found missing (through the only channel, then without) and sent again; then there
    assert (read_health(settings.watch.health_file) or {})["state"] == "ok"


# -- a user that is not an admin: searches find nothing without a channel (api-docs) ----------

TWO = HEADER + "N1,N1-A,Net,N1-A,4.00,2,,,,\nN2,N2-A,Nail,N2-A,5.00,3,,,,\n"


def not_an_admin(make_sandbox, tmp_path: Path, channels: int, **env: str) -> tuple[object, dict]:
    """A sandbox whose user finds products only through one of its `channels`, and N1, N2 pushed to it."""
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, search_needs_channel=True, channels=channels)
    (tmp_path / "n.csv").write_text(TWO, encoding="utf-8")
    return sb, {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1", **env}


def sent(sb) -> dict[str, int]:
    """What reached the sandbox's queues: the queue log's length and the requests per queue path."""
    state = sb.state()
    return {"queue log": len(state["queue"]), **{p: state["stats"]["by_path"].get(p, 0)
                                                 for p in ("/v1/products/queue", "/v1/images/queue")}}


def searcher_of_product_s(sb):
    """Queue product S on the sandbox; return a search for it (query parameters: channel_id) giving the codes found."""
    import requests

    token = sb.issue_token()
    product = item("S", "S-1", sku="S-1")
    product["source"].update(source_id=1, sync_token="0", fetch_token="0")
    requests.post(f"{sb.url}/v1/products/queue", params={"token": token, "source_id": 1},
                  json={"system_products": [product]}, timeout=10).raise_for_status()

    def found(**params) -> list[str]:
        answer = requests.post(f"{sb.url}/v1/products/elastic_search", params={"token": token, **params},
                               json={"query": {"bool": {"filter": [{"terms": {"source_product_code": ["S"]}}]}}},
                               timeout=10)
        assert answer.status_code == 200  # no hits, never an error: the docs show none
        assert answer.json()["hits"]["total"] == len(answer.json()["system_products"])
        return [p["source_product_code"] for p in answer.json()["system_products"]]

    return found


def test_the_sandbox_finds_products_only_through_a_channel_of_a_user_that_is_not_an_admin(make_sandbox):
    import requests

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, search_needs_channel=True, channels=2)
    found = searcher_of_product_s(sb)

    assert (found(), found(channel_id=1), found(channel_id=2), found(channel_id=3)) == ([], ["S"], ["S"], [])
    listed = requests.get(f"{sb.url}/v1/channels", params={"token": sb.issue_token()},
                          timeout=10).json()["system_channels"]
    assert [(c["id"], c["description"]) for c in listed] == [(1, "Sandbox channel"), (2, "Sandbox channel 2")]


def test_a_user_that_is_not_an_admin_is_verified_through_the_configured_channel(run, make_sandbox, tmp_path):
    sb, env = not_an_admin(make_sandbox, tmp_path, channels=2, S2S_VERIFY_CHANNEL_ID="2")
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    result = run(["verify"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'searching through channel 2 (verify.channel_id)' in result.stdout
    assert "all there, as last sent" in result.stdout
    assert report(tmp_path)["channel"] == {"channel_id": 2, "how": "configured"} and report(tmp_path)["clean"]
    assert "/v1/channels" not in sb.state()["stats"]["by_path"]  # set: nothing to look up


def test_with_one_channel_and_none_set_verify_searches_through_it_and_says_so_once(run, make_sandbox, tmp_path):
    sb, env = not_an_admin(make_sandbox, tmp_path, channels=1)
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    result = run(["verify"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report(tmp_path)["checked"]["products"] == 2 and report(tmp_path)["clean"]
    assert report(tmp_path)["channel"] == {"channel_id": 1, "how": "only"}
    said = 'verify searches through channel 1 "Sandbox channel", the account\'s only channel'
    assert result.stderr.count(said) == 1, result.stderr
    assert "(set verify.channel_id (S2S_VERIFY_CHANNEL_ID) to choose another)" in result.stderr
    assert sb.state()["stats"]["by_path"]["/v1/channels"] == 1  # listed once, by verify (push lists none)


def test_with_two_channels_and_none_set_verify_could_not_see_the_products_and_repair_sends_nothing(
        run, make_sandbox, tmp_path):
    sb, env = not_an_admin(make_sandbox, tmp_path, channels=2)
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    before = sent(sb)

    blind = run(["verify"], tmp_path, env)
    assert blind.returncode == EXIT_CODES["unseen"] == 2, blind.stdout + blind.stderr
    out = blind.stdout
    assert "could not see the products: none of the 2 products acknowledged was found searching without a " \
           "channel (2 channels and none set in verify.channel_id)" in out
    assert 'set verify.channel_id (S2S_VERIFY_CHANNEL_ID) to the one that holds them: 1 "Sandbox channel", ' \
           '2 "Sandbox channel 2"' in out
    assert "missing:" not in out and "nothing is reported missing" in out
    kept = report(tmp_path)
    assert (kept["outcome"], kept["clean"], kept["findings"], kept["counts"]["missing_products"]) == \
        ("unseen", False, [], 0)
    assert kept["unseen"]["channels"] == [{"id": 1, "description": "Sandbox channel"},
                                          {"id": 2, "description": "Sandbox channel 2"}]
    assert "could not see the 2 products in Stock2Shop" in run(["status"], tmp_path, env).stdout

    refused = run(["verify", "--repair"], tmp_path, env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "--repair sent nothing" in refused.stdout and "verify.channel_id" in refused.stdout
    assert sent(sb) == before  # not one product request, not one item in the queue log
    assert report(tmp_path)["repair"] is None
    assert "Ledger: 0 product batch(es), 0 image(s) waiting" in run(["status"], tmp_path, env).stdout  # none journaled

    seen = run(["verify"], tmp_path, {**env, "S2S_VERIFY_CHANNEL_ID": "1"})
    assert seen.returncode == 0 and "all there, as last sent" in seen.stdout, seen.stdout + seen.stderr


def test_a_configured_channel_that_sees_nothing_names_the_accounts_channels(run, make_sandbox, tmp_path):
    sb, env = not_an_admin(make_sandbox, tmp_path, channels=2, S2S_VERIFY_CHANNEL_ID="7")
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    result = run(["verify", "--repair"], tmp_path, env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "none of the 2 products acknowledged was found searching through channel 7 (verify.channel_id); " \
           "if Stock2Shop does show them, that channel does not reach them" in result.stdout
    assert '1 "Sandbox channel", 2 "Sandbox channel 2"' in result.stdout
    assert sb.state()["stats"]["by_path"]["/v1/products/queue"] == 1  # the push's only


def test_products_lost_by_the_queue_are_missing_when_the_search_sees_the_rest_of_the_catalogue(
        make_sandbox, tmp_path):
    """watch checks only the products of the files it pushed: that all of those are gone is told
    from a blind search by looking for others of the catalogue."""
    from connector.verify import run_verify

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    (tmp_path / "kept.csv").write_text(TWO, encoding="utf-8")
    (tmp_path / "lost.csv").write_text(HEADER + "L1,L1-A,Lid,L1-A,1.00,1,,,,\nL2,L2-A,Lamp,L2-A,2.00,1,,,,\n",
                                       encoding="utf-8")
    pipeline = pipeline_for(tmp_path, sb, settings)
    try:
        assert pipeline.run_file(tmp_path / "kept.csv").status == "done"
        sb.set_faults(Faults(queue_fail_rate=1.0))
        assert pipeline.run_file(tmp_path / "lost.csv").status == "done"
        sb.set_faults(Faults())
        result = run_verify(pipeline, product_codes=["L1", "L2"])
        blind = run_verify(pipeline, product_codes=["L1", "L2"], channel=choose(None, [{"id": 1}, {"id": 2}]))
    finally:
        pipeline.close()
    assert result.unseen is None and result.outcome() == "mismatch"
    assert {(f.kind, f.product) for f in result.findings} == {("missing_product", "L1"), ("missing_product", "L2")}
    assert blind.unseen is None and len(blind.findings) == 2  # the sandbox's admin user sees without a channel


@pytest.mark.parametrize("configured, channels, expected", [
    (None, [{"id": 5, "description": "Web"}], (5, "only")),
    (None, [{"id": 5}, {"id": 6}], (None, "several")),
    (None, [], (None, "no_channels")),
    (None, None, (None, "unlisted")),
    (7, None, (7, "configured")),
    (7, [{"id": 5}], (7, "configured")),
])
def test_choose_the_channel_verify_searches_through(configured, channels, expected):
    chosen = choose(configured, channels)
    assert (chosen.channel_id, chosen.how) == expected


def test_watch_records_a_verify_that_could_not_see_the_products_as_a_problem_and_sends_nothing(
        make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, search_needs_channel=True, channels=2)
    settings = watched(tmp_path, sb, repair=True)
    watch_until(settings, sb, tmp_path, lambda h: "could not see" in str(h.get("verify")),
                "health to show the verify that could not see")
    health = read_health(settings.watch.health_file) or {}
    assert health["state"] == "degraded"
    assert any("could not see the 1 products" in p and "verify.channel_id" in p and "nothing was sent again" in p
               for p in health["problems"]), health["problems"]
    assert "missing 1 products" not in str(health)
    assert sb.state()["stats"]["by_path"]["/v1/products/queue"] == 1  # the file's push; no repair
    assert "could not see" in render_status(settings)


# -- an admin whose products are not linked to the account's one channel ----------------------

def test_the_sandbox_narrows_a_search_with_a_channel_to_the_products_linked_to_it(make_sandbox):

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, channel_narrows_search=True)
    found = searcher_of_product_s(sb)

    assert (found(), found(channel_id=1)) == (["S"], [])
    assert sb.state()["products"][0]["channels"] == []  # the queue links a product to no channel


def test_an_admin_whose_products_are_not_linked_to_the_only_channel_is_verified_without_it(
        run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, channel_narrows_search=True, channels=1)
    (tmp_path / "n.csv").write_text(TWO, encoding="utf-8")
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    before = sent(sb)

    result = run(["verify", "--repair"], tmp_path, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all there, as last sent" in result.stdout
    assert 'searching without a channel (the account\'s only channel, 1 "Sandbox channel", saw none of the ' \
           'products)' in result.stdout
    assert "searching through channel 1 found none of the 2 products" in result.stderr
    kept = report(tmp_path)
    assert kept["clean"] and kept["channel"] == {"channel_id": None, "how": "without_only"}
    assert kept["checked"]["products"] == 2 and kept["repair"] is None
    assert sent(sb) == before  # nothing sent again
    assert searches(sb) == 2  # through the channel (nothing), then once without it


def test_a_configured_channel_is_never_second_guessed(run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, channel_narrows_search=True, channels=1)
    (tmp_path / "n.csv").write_text(TWO, encoding="utf-8")
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1",
           "S2S_VERIFY_CHANNEL_ID": "1"}
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    before = sent(sb)
    result = run(["verify", "--repair"], tmp_path, env)
    assert result.returncode == EXIT_CODES["unseen"], result.stdout + result.stderr
    assert 'found searching through channel 1 "Sandbox channel" (verify.channel_id);' in result.stdout
    assert "nor searching" not in result.stdout
    assert "sees them only without one: leave verify.channel_id unset)" in result.stdout
    assert report(tmp_path)["channel"] == {"channel_id": 1, "how": "configured"}
    assert searches(sb) == 1 and sent(sb) == before


def test_a_user_that_sees_nothing_either_way_through_its_only_channel_is_told_both_were_searched(
        run, make_sandbox, tmp_path):
    sb, env = not_an_admin(make_sandbox, tmp_path, channels=1)
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    sb.reset()  # Stock2Shop lost them all: neither way finds them
    result = run(["verify", "--repair"], tmp_path, env)
    assert result.returncode == EXIT_CODES["unseen"], result.stdout + result.stderr
    assert 'none of the 2 products acknowledged was found searching through channel 1 "Sandbox channel", the ' \
           "account's only channel, nor searching without a channel;" in result.stdout
    assert report(tmp_path)["channel"] == {"channel_id": 1, "how": "only"}
    assert searches(sb) == 2 and sent(sb)["/v1/products/queue"] == 0


def test_a_catalogue_the_queue_lost_whole_is_sent_again_only_when_asked_with_resend_unseen(
        run, make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)  # an admin with one channel
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": "demo", "S2S_SOURCE_ID": "1"}
    (tmp_path / "n.csv").write_text(TWO, encoding="utf-8")
    assert run(["push", "n.csv"], tmp_path, env).returncode == 0
    sb.reset()  # acknowledged, then lost: neither way finds them
    before = sent(sb)

    told = run(["verify", "--repair"], tmp_path, env)
    assert told.returncode == EXIT_CODES["unseen"], told.stdout + told.stderr
    assert "both ways this account can search (its only channel, and without a channel) saw none" in told.stdout
    assert "set verify.channel_id" not in told.stdout  # the one channel there is was searched already
    assert "`connector verify --repair --resend-unseen` sends the 2 products again" in told.stdout
    assert sent(sb) == before  # never sent again on a search alone

    again = run(["push", "n.csv"], tmp_path, env)
    assert "nothing to send (push --full sends every item again)" in again.stdout, again.stdout

    resent = run(["verify", "--resend-unseen"], tmp_path, env)  # implies --repair
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "--resend-unseen: every one of them is sent again" in resent.stdout
    assert "repair: 2 products (2 items) and 0 images journaled again; sent 2 items" in resent.stdout
    kept = report(tmp_path)
    assert kept["outcome"] == "done" and kept["unseen"]["resent"] and kept["counts"]["missing_products"] == 2
    assert sorted(p["source_product_code"] for p in sb.state()["products"]) == ["N1", "N2"]
    assert run(["verify"], tmp_path, env).returncode == 0  # and now they are seen


@pytest.mark.parametrize("channel, expected", [
    (choose(None, [{"id": 5}]), (None, "without_only")),
    (SearchChannel(None, "without_only", ({"id": 5},)), (5, "only")),
    (choose(5, [{"id": 5}]), None),
    (choose(None, [{"id": 5}, {"id": 6}]), None),
    (choose(None, None), None),
])
def test_only_the_channel_verify_chose_itself_has_another_way_to_search(channel, expected):
    other = channel.alternative()
    assert (other if other is None else (other.channel_id, other.how)) == expected


# -- watch checks again, soon after it starts, what the last verify found not clean -----------

def serve_until(settings, sb, tmp_path: Path, until: Callable[[dict, float], bool],
                what: str) -> tuple[list[tuple[str, float, str]], float]:
    """Run the service on a fake clock over real folders and the sandbox until `until(health,
    service time)`; returns every logged (event, service time, message) and the service time it started."""
    clock = FakeClock()
    started = clock.monotonic()
    stop = threading.Event()
    events: list[tuple[str, float, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append((getattr(record, "event", ""), clock.monotonic(), record.getMessage()))

    log = logging.getLogger(f"test.verify.restart.{id(stop)}")
    log.setLevel(logging.INFO)
    keep = Keep()
    log.addHandler(keep)
    thread = threading.Thread(target=lambda: watch.serve(settings, lambda: pipeline_for(tmp_path, sb, settings),
                                                         stop=stop, clock=clock, log=log), daemon=True)
    thread.start()
    try:
        wait_real(lambda: until(read_health(settings.watch.health_file) or {}, clock.monotonic()), what=what)
    finally:
        stop.set()
        thread.join(10)
        log.removeHandler(keep)
    assert not thread.is_alive()
    return events, started


def first(events: list[tuple[str, float, str]], event: str) -> float:
    return next(t for e, t, _ in events if e == event)


def test_a_channel_fixed_while_the_service_was_stopped_is_verified_soon_after_it_starts_again(
        make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, search_needs_channel=True, channels=2)
    settings = watched(tmp_path, sb)  # no verify.channel_id among two channels: W cannot be seen
    watch_until(settings, sb, tmp_path, lambda h: "could not see" in str(h.get("verify")),
                "health to show the verify that could not see")

    settings.verify = VerifySettings(after_minutes=10, channel_id=2)  # the fix, then a restart
    (settings.folders.inbox / "x.csv").write_text(HEADER + "X,X-1,Xylophone,X-1,9.00,1,,,,\n", encoding="utf-8")
    events, started = serve_until(settings, sb, tmp_path, lambda h, now: str(h.get("verify", "")).startswith("clean"),
                                  "the verify after the restart")
    health = read_health(settings.watch.health_file) or {}
    assert health["state"] == "ok" and "(1 products checked)" in health["verify"]  # W; X waits for its own
    assert first(events, "file_finished") < first(events, "verify_recheck")  # the file the inbox held went first
    assert first(events, "verify") - started < 10  # soon after the start, not verify.after_minutes after the file
    said = next(m for e, _, m in events if e == "verify_recheck")
    assert "the last verify was not clean (at " in said and "could not see the 1 products" in said
    assert "checking a page of the catalogue again now that the service runs" in said
    assert 'searching through channel 2 (verify.channel_id)' in next(m for e, _, m in events if e == "verify")
    assert str(render_status(settings)).count("clean at") == 1


def test_products_found_missing_before_a_restart_are_checked_again_and_repaired_after_it(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(queue_fail_rate=1.0))
    settings = watched(tmp_path, sb)
    watch_until(settings, sb, tmp_path, lambda h: "missing 1 products" in str(h.get("verify")),
                "health to show W missing")
    sb.set_faults(Faults())
    settings.verify = VerifySettings(after_minutes=1, repair=True)
    events, started = serve_until(settings, sb, tmp_path, lambda h, now: str(h.get("verify", "")).startswith("clean"),
                                  "W repaired and found there")
    assert "checking its 1 products again" in next(m for e, _, m in events if e == "verify_recheck")
    assert [q["status"] for q in sb.state()["queue"]] == ["failed", "accepted"]  # sent again once, at the recheck
    repaired, clean = [t for e, t, _ in events if e == "verify"][:2]
    assert repaired - started < 10 and clean - repaired >= 60  # found at the start, checked after_minutes later
    assert (read_health(settings.watch.health_file) or {})["state"] == "ok"


def test_a_clean_last_verify_is_not_checked_again_at_start(make_sandbox, tmp_path):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = watched(tmp_path, sb)
    watch_until(settings, sb, tmp_path, lambda h: str(h.get("verify", "")).startswith("clean"), "a clean verify")
    before = searches(sb)
    # a recheck would come at the first quiet moment, within a second or two of the start
    events, started = serve_until(settings, sb, tmp_path, lambda h, now: now - FakeClock().monotonic() > 30,
                                  "half a minute of service time")
    assert "verify_recheck" not in {e for e, _, _ in events} and searches(sb) == before
    assert started == FakeClock().monotonic()  # the half minute was counted from the start


def test_the_check_after_start_waits_for_a_quiet_moment_a_bounded_time_and_checks_a_bounded_number(
        make_sandbox, tmp_path):
    from connector.verify import VerifyResult, keep_latest
    from connector.watch.verifying import RECHECK_PAGES, RECHECK_QUIET_MAX_S, VerifySchedule

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    settings.verify = VerifySettings(page_size=2)
    codes = [f"M{n:02}" for n in range(2 * RECHECK_PAGES + 3)]
    settings.folders.state.mkdir(parents=True, exist_ok=True)
    keep_latest(settings.folders.state, VerifyResult(endpoint="e", started_at=0.0, findings=[
        Finding("missing_product", code, expected=1) for code in codes]))
    clock = FakeClock()
    schedule = VerifySchedule(settings, clock, logging.getLogger("test.verify.recheck"))
    pipeline = pipeline_for(tmp_path, sb, settings)
    ran: list[str] = []

    def call(check, busy):
        ran.append(busy)
        return check(pipeline)

    try:
        assert schedule.due_in() == RECHECK_QUIET_MAX_S  # due now; the loop wakes for it by then at the latest
        schedule.run_if_due(call, quiet=False)  # a file ready or on its way: it goes first
        assert ran == [] and schedule.due_in() == RECHECK_QUIET_MAX_S
        clock.advance(RECHECK_QUIET_MAX_S)
        schedule.run_if_due(call, quiet=False)  # waited long enough: between two files, then
    finally:
        pipeline.close()
    assert ran == ["checking again the products of the last verify"]
    assert schedule.unresolved == set(codes[2 * RECHECK_PAGES:])  # the rest wait for the next verify
    assert schedule.due_in() is None and schedule.last and schedule.last["clean"]  # none of them acknowledged here


def test_a_check_after_start_with_nothing_to_check_keeps_the_last_result_and_is_not_tried_again(
        make_sandbox, tmp_path):
    from connector.verify import VerifyResult, keep_latest
    from connector.watch.verifying import VerifySchedule

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    settings = settings_for(tmp_path, sb)
    settings.folders.state.mkdir(parents=True, exist_ok=True)
    keep_latest(settings.folders.state, VerifyResult(endpoint="e", started_at=0.0, products_checked=3,
                                                     unseen={"products": 3, "reason": "no channel"}))
    schedule = VerifySchedule(settings, FakeClock(), logging.getLogger("test.verify.recheck"))
    pipeline = pipeline_for(tmp_path, sb, settings)  # its ledger holds no catalogue: no page to check
    try:
        schedule.run_if_due(lambda check, busy: check(pipeline))
    finally:
        pipeline.close()
    assert schedule.due_in() is None and searches(sb) == 0
    assert schedule.last and schedule.last["unseen"]["products"] == 3  # kept: nothing said it changed


def test_a_kept_search_without_the_only_channel_goes_back_through_it_when_it_sees_nothing(make_sandbox, tmp_path):
    """watch keeps the way its first verify searched; the account may change under it."""
    from connector.verify import run_verify

    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, search_needs_channel=True, channels=1)
    settings = settings_for(tmp_path, sb)
    (tmp_path / "n.csv").write_text(TWO, encoding="utf-8")
    pipeline = pipeline_for(tmp_path, sb, settings)
    kept = SearchChannel(None, "without_only", ({"id": 1, "description": "Web"},))
    try:
        assert pipeline.run_file(tmp_path / "n.csv").status == "done"
        result = run_verify(pipeline, channel=kept)
        sb.reset()  # now neither way finds them
        blind = run_verify(pipeline, channel=kept)
    finally:
        pipeline.close()
    assert result.clean and (result.channel.channel_id, result.channel.how) == (1, "only")
    assert blind.unseen and "found searching without a channel (the account's only channel, 1 \"Web\", saw none " \
        "of the products), nor searching through channel 1; check that Stock2Shop shows them" in blind.unseen["reason"]
