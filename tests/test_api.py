"""The API client against the sandbox over real HTTP: tokens, pacing, retries, redaction."""

from __future__ import annotations

import io
import logging
import shutil
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import requests

from connector.api import (
    ApiClient,
    ApiError,
    ApiUnavailable,
    AuthFailed,
    DataRejected,
    RateLimiter,
    _retry_after,
    classify,
)
from connector.config import ApiSettings
from connector.logs import setup_logging
from connector.sandbox import Faults
from tests.misbehaving import Misbehaving
from tests.support import FakeTime, pipeline_for, settings_for


def item(code: str, variant: str | None = None, **variant_fields) -> dict:
    return {
        "source": {"source_id": 1, "product_active": "true", "source_product_code": code,
                   "sync_token": "0", "fetch_token": "0"},
        "product": {"title": f"Product {code}",
                    "variants": {"source_variant_code": variant or code, "sku": variant or code, **variant_fields}},
    }


class CountingClient(ApiClient):
    """The real client, counting its logins."""

    logins = 0

    def authenticate(self) -> None:
        self.logins += 1
        super().authenticate()


def client_for(sb, fake: FakeTime | None = None, **settings) -> CountingClient:
    fake = fake or FakeTime()
    api = ApiSettings(url=sb.url, username="demo", password="demo", source_id=1,
                      **{"rate": 1000.0, "retry_budget": 120.0, **settings})
    return CountingClient(api, sleep=fake.sleep, clock=fake.monotonic, rng=lambda: 1.0)


def stored_codes(sb) -> list[str]:
    return sorted(v["source_variant_code"] for p in sb.state()["products"] for v in p["variants"])


def test_one_login_serves_every_request(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    client = client_for(sb)
    for n in range(3):
        assert client.queue_products([item(f"P{n}")]) == {"system_products": {"sync_product": 1}}
    assert client.logins == 1
    assert stored_codes(sb) == ["P0", "P1", "P2"]


def test_expired_token_is_renewed_once_and_the_work_goes_on(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, expire_after=2))
    client = client_for(sb)
    for n in range(5):
        client.queue_products([item(f"P{n}")])
    assert stored_codes(sb) == [f"P{n}" for n in range(5)]
    assert client.logins >= 2


def test_wrong_password_is_an_auth_failure_without_the_password(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    api = ApiSettings(url=sb.url, username="demo", password="not-the-password", source_id=1)
    client = ApiClient(api)
    with pytest.raises(AuthFailed) as caught:
        client.queue_products([item("P")])
    assert "not-the-password" not in str(caught.value)


@pytest.mark.parametrize("retry_after", ["seconds", "date"])
def test_429_waits_for_retry_after_then_succeeds(make_sandbox, retry_after):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, burst_every=1, burst_size=2,
                                                 retry_after=retry_after, retry_after_seconds=7))
    fake = FakeTime()
    client = client_for(sb, fake)
    client.queue_products([item("P1")])  # the burst comes after every first request
    client.queue_products([item("P2")])
    assert stored_codes(sb) == ["P1", "P2"]
    assert client.requests["429"] == 2
    # each 429 made us wait about as long as the server asked (an HTTP date has 1 s resolution)
    assert sum(s for s in fake.sleeps if s >= 5) >= 2 * 5


def test_429_without_retry_after_backs_off_with_growing_waits(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, burst_every=1, burst_size=3))
    fake = FakeTime()
    client = client_for(sb, fake)
    client.queue_products([item("P1")])
    client.queue_products([item("P2")])
    assert client.requests["429"] == 3
    backoffs = [s for s in fake.sleeps if s >= 0.5]
    assert len(backoffs) >= 3 and backoffs == sorted(backoffs)


def test_5xx_are_retried_until_every_item_is_stored(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=3, error_rate=0.5))
    client = client_for(sb)
    for n in range(10):
        client.queue_products([item(f"P{n}")])
    assert stored_codes(sb) == sorted(f"P{n}" for n in range(10))
    assert sum(client.requests[s] for s in ("500", "502", "503")) > 0


def test_a_lost_answer_is_retried_without_duplicating_the_product(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=2, drop_rate=0.5))
    client = client_for(sb)
    for n in range(6):
        client.queue_products([item(f"P{n}")])
    assert stored_codes(sb) == [f"P{n}" for n in range(6)]
    assert client.requests["error"] > 0  # some answers really were lost


def test_retries_stop_at_the_budget_and_say_so(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=1, error_rate=1.0))
    fake = FakeTime()
    client = client_for(sb, fake, retry_budget=60.0)
    with pytest.raises(ApiUnavailable) as caught:
        client.queue_products([item("P")])
    assert "budget 60 s" in str(caught.value)
    assert fake.now - 1000.0 < 60.0  # never slept past the budget


def test_data_errors_are_not_retried_and_name_the_item(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    client = client_for(sb)
    with pytest.raises(DataRejected) as caught:
        client.queue_products([item("GOOD"), item("BAD", price="abc")])
    assert caught.value.status == 400
    assert [e["index"] for e in caught.value.errors] == [1]
    assert "price" in caught.value.errors[0]["field"]
    assert client.requests["400"] == 1


def test_the_rate_limiter_spaces_requests_and_follows_the_header():
    fake = FakeTime()
    limiter = RateLimiter(1.0, clock=fake.monotonic, sleep=fake.sleep)
    for _ in range(3):
        limiter.wait()
    guard = RateLimiter.WINDOW_GUARD
    assert fake.sleeps == [pytest.approx(1.0 + guard)] * 2
    limiter.follow("3")  # the announced rate itself, not a share of it
    assert limiter.rate == 3.0
    limiter.follow("not a number")
    assert limiter.rate == 3.0


@pytest.mark.parametrize("rate", [0.5, 1.0, 2.5, 3.0, 10.0])
def test_the_limiter_never_puts_more_than_the_rate_in_any_one_second_window(rate):
    fake = FakeTime()
    limiter = RateLimiter(rate, clock=fake.monotonic, sleep=fake.sleep)
    sent = []
    for n in range(60):
        limiter.wait()
        sent.append(fake.now)
        fake.advance(0.01 if n % 7 else 0.2)  # requests take a while, some longer than others
    allowed = max(1, int(rate))
    window = max(1.0, 1 / rate)
    for i, at in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < at + window) <= allowed
    elapsed = sent[-1] - sent[0]
    assert 59 / elapsed > 0.95 * min(rate, allowed)  # and it goes at the rate: nothing held back


def test_real_pacing_never_earns_a_429(make_sandbox):
    """Real clock: 8 requests at the sandbox's 3/s limit; the header raises us from 1/s to 3/s."""
    sb = make_sandbox(rate=3.0)
    api = ApiSettings(url=sb.url, username="demo", password="demo", source_id=1)
    client = ApiClient(api)
    started = time.monotonic()
    for n in range(8):
        client.queue_products([item(f"P{n}")])
    assert client.requests["429"] == 0
    assert time.monotonic() - started < 6.0


@pytest.mark.parametrize("value, expected", [
    ("5", 5.0), ("0", 0.0), ("100000", 120.0), ("soon", None), (None, None),
])
def test_retry_after_is_read_in_seconds_and_capped(value, expected):
    assert _retry_after(value, 120.0) == expected


def test_the_token_never_appears_in_debug_logs_or_errors(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=5, error_rate=0.3, expire_after=3, drop_rate=0.2))
    stream = io.StringIO()
    setup_logging("DEBUG", "text", stream=stream)
    try:
        client = client_for(sb)
        tokens = set()
        for n in range(8):
            client.queue_products([item(f"P{n}")])
            tokens.add(client.token)
        with pytest.raises(DataRejected) as caught:
            client.queue_products([item("BAD", qty="many")])
        logging.getLogger("test").info("url was %s/v1/sources?token=%s", sb.url, client.token)
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue() + str(caught.value)
    assert "token=***" in text  # urllib3's DEBUG lines were there, redacted
    for token in tokens:
        assert token not in text


@pytest.mark.parametrize("seed", range(4))
def test_tokens_expiring_in_a_storm_of_5xx_are_renewed_not_fatal(make_sandbox, seed):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, faults=Faults(seed=seed, error_rate=0.5, expire_after=2))
    client = client_for(sb)
    for n in range(10):
        client.queue_products([item(f"P{n}")])
    assert stored_codes(sb) == sorted(f"P{n}" for n in range(10))


def test_a_wrong_url_is_a_setup_error_not_refused_data(make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0)
    api = ApiSettings(url=sb.url + "/typo", username="demo", password="demo", source_id=1, rate=1000.0)
    client = ApiClient(api, sleep=FakeTime().sleep)
    with pytest.raises(ApiError) as caught:
        client.queue_products([item("P")])
    assert not isinstance(caught.value, DataRejected)
    assert "404" in str(caught.value) and "api.url" in str(caught.value)


# -- classify(): every answer judged in one place ------------------------------------------

ACK = b'{"system_products": {"sync_product": 2}}'
JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html"}
REFUSED = b'{"error": "validation failed", "errors": [{"index": 3, "field": "price", "message": "x"}, {"index": 1}]}'
SHAPE = b'{"error": "bad", "errors": [{"index": null, "field": "system_products", "message": "not a list"}]}'
MIXED = b'{"errors": [{"index": 1, "field": "price"}, {"field": "source_id", "message": "not yours"}]}'


@pytest.mark.parametrize("status, headers, body, expect, kind, details", [
    # the API's own answer, and only it, acknowledges
    (200, JSON, ACK, "system_products", "acknowledged", {"data": {"system_products": {"sync_product": 2}}}),
    (200, {}, ACK, "system_products", "acknowledged", {}),  # no Content-Type: the body decides
    (200, {"Content-Type": "text/plain"}, ACK, "system_products", "acknowledged", {}),
    (201, JSON, b'{"system_images": {"sync_image": 1}}', "system_images", "acknowledged", {}),
    (200, JSON, b'{"anything": 1}', None, "acknowledged", {}),
    (200, HTML, b"<html><body>Proxy login</body></html>", "system_products", "unavailable",
     {"reason": "HTTP 200 but not the API's answer (no JSON object; text/html, 37 bytes: '<html><body>Proxy login</body></html>')"}),
    (200, JSON, b"", "system_products", "unavailable", {"reason": "HTTP 200 but not the API's answer (no JSON object; application/json, empty body)"}),
    (200, JSON, b'{"status": "ok"}', "system_products", "unavailable", {"reason": "HTTP 200 but not the API's answer (JSON without 'system_products'; application/json, 16 bytes: '{\"status\": \"ok\"}')"}),
    (200, JSON, b'[{"system_products": 1}]', "system_products", "unavailable", {}),
    (200, JSON, b'{"system_images": {"sync_image": 1}}', "system_products", "unavailable", {}),
    (204, {}, b"", "system_products", "unavailable", {}),
    (200, {}, b"\xff\xfe\x00garbage", "system_products", "unavailable", {}),
    # refused data, with the items named when every error names one
    (400, JSON, REFUSED, "system_products", "refused", {"indexes": {1, 3}, "past_token": True}),
    (422, JSON, REFUSED, "system_products", "refused", {"indexes": {1, 3}}),
    (409, JSON, b'{"errors": [{"index": 0}]}', None, "refused", {"indexes": {0}}),
    (400, JSON, SHAPE, "system_products", "refused", {"indexes": None}),
    (400, JSON, MIXED, "system_products", "refused", {"indexes": {1}}),  # and one about the whole request
    (400, JSON, b'{"errors": [{"index": "2"}, {"message": "no index"}]}', None, "refused", {"indexes": None}),
    (400, HTML, b"<h1>Bad Request</h1>", "system_products", "refused",
     {"indexes": None, "errors": [], "reason": "HTTP 400 <h1>Bad Request</h1>"}),
    (400, {}, b"", None, "refused", {"indexes": None, "reason": "HTTP 400"}),
    (413, HTML, b"<h1>413 Request Entity Too Large</h1>", "system_products", "too_large", {"indexes": None}),
    # slow down, or try again later
    (429, {"Retry-After": "7", "x-S2S-RateLimit": "3"}, b"", None, "retry", {"retry_after": 7.0, "past_token": False}),
    (429, {"retry-after": "100000"}, b"", None, "retry", {"retry_after": 100000.0}),  # the client caps it
    (429, {}, b'{"error": "too many"}', None, "retry", {"retry_after": None}),
    (500, JSON, b'{"error": "boom"}', None, "unavailable", {"retry_after": None, "past_token": True}),
    (502, HTML, b"<h1>Bad Gateway</h1>", None, "unavailable", {"reason": "HTTP 502 <h1>Bad Gateway</h1>"}),
    (503, {"Retry-After": "30"}, b"", None, "unavailable", {"retry_after": 30.0}),
    (504, {}, b"", None, "unavailable", {}),
    (408, {}, b"", None, "unavailable", {"past_token": False}),
    # the token
    (401, JSON, b'{"error": "invalid or expired token"}', None, "renew_token", {"past_token": False}),
    (403, JSON, b"", None, "renew_token", {}),
    # no retry helps: the URL, a redirect, a proxy
    (404, HTML, b"<h1>Not Found</h1>", None, "fatal", {"reason": "unexpected HTTP 404 <h1>Not Found</h1>; check api.url"}),
    (405, JSON, b'{"error": "GET not allowed"}', None, "fatal", {}),
    (410, {}, b"", None, "fatal", {}),
    (301, {"Location": "https://app.stock2shop.com/v1/products/queue?token=abc123"}, b"", None, "fatal",
     {"reason": "HTTP 301, a redirect to https://app.stock2shop.com/v1/products/queue?token=***; "
                "check api.url (use the address it names)"}),
    (302, {}, b"", None, "fatal", {}),
])
def test_classify_says_what_to_do_with_each_answer(status, headers, body, expect, kind, details):
    verdict = classify(status, headers, body, expect)
    assert verdict.kind == kind
    for name, value in details.items():
        assert getattr(verdict, name) == value, name


@pytest.mark.parametrize("body", [REFUSED, SHAPE, MIXED, b'{"errors": []}', b"{}", b"<html>", b'{"errors": "x"}'])
def test_the_verdict_names_the_items_the_exception_names(body):
    verdict = classify(400, JSON, body, "system_products")
    assert verdict.indexes == DataRejected("refused", 400, verdict.errors).indexes


def test_classify_never_repeats_a_token_the_body_carries():
    body = b'<html>session expired for /v1/products/queue?token=abc123secret, "token": "abc123secret"</html>'
    for status in (200, 400, 404, 500):
        assert "abc123secret" not in classify(status, HTML, body, "system_products").reason


# -- over real HTTP: a server that misbehaves --------------------------------------------

def client_of(server: Misbehaving, fake: FakeTime | None = None, **settings) -> ApiClient:
    api = ApiSettings(url=server.url, username="demo", password="pass-sentinel-123", source_id=1,
                      **{"rate": 1000.0, "retry_budget": 0.1, **settings})
    fake = fake or FakeTime()
    return ApiClient(api, sleep=fake.sleep, clock=fake.monotonic, rng=lambda: 1.0)


def test_a_trickling_answer_is_cut_at_the_deadline_and_waits():
    with Misbehaving("trickle", interval=0.5) as server:
        client = client_of(server, request_deadline=1.0)
        started = time.monotonic()
        with pytest.raises(ApiUnavailable) as caught:
            client.queue_products([item("P")])
        elapsed = time.monotonic() - started
    assert elapsed < 2.5  # without the deadline: 50 s, a byte every 0.5 s
    assert "api.request_deadline (1 s" in str(caught.value)
    assert client.requests["error"] == 1 and client.requests["200"] == 1  # the login only


@pytest.mark.parametrize("mode, shown", [
    ("html", "text/html; charset=utf-8, 120 bytes: '<html><p>token ***</p>"),  # what came, redacted
    ("empty", "application/json, empty body"),
    ("wrong_json", "JSON without 'system_products'; application/json, 16 bytes"),
])
def test_a_200_that_is_not_the_apis_answer_acknowledges_nothing(mode, shown):
    with Misbehaving(mode) as server:
        raw = requests.post(server.url + "/v1/products/queue", data=b"{}", timeout=2)
        assert classify(raw.status_code, raw.headers, raw.content, "system_products").kind == "unavailable"
        fake = FakeTime()
        client = client_of(server, fake, retry_budget=5.0)
        with pytest.raises(ApiUnavailable) as caught:
            client.queue_products([item("P")])
    message = str(caught.value)
    assert "HTTP 200 but not the API's answer" in message and shown in message
    assert client.requests["200"] >= 2  # retried, as transient trouble is
    assert fake.now - 1000.0 < 5.0


def test_a_proxy_page_instead_of_an_answer_keeps_the_work_in_the_ledger(tmp_path):
    """End to end: products the API never acknowledged are not in the catalogue; the file waits."""
    with Misbehaving("html") as server:
        settings = settings_for(tmp_path, server)
        settings.api.retry_budget = 2.0
        drop = tmp_path / "drop"
        shutil.copytree(Path(__file__).resolve().parents[1] / "examples", drop, ignore=shutil.ignore_patterns("*.py"))
        pipeline = pipeline_for(tmp_path, server, settings)
        outcome = pipeline.run_file(drop / "products.csv")
    assert outcome.status == "waiting", outcome.message
    assert "wait in the ledger" in outcome.message
    waiting = pipeline.ledger.next_job(pipeline.endpoint)
    assert waiting is not None and waiting.kind == "products" and len(waiting.payload) == 9  # the whole batch
    assert pipeline.ledger.catalogue_hashes(pipeline.endpoint, ["TEE-CLASSIC", "00471", "KETTLE-2L"]) == {}  # nothing acknowledged
    assert server.paths.count("/v1/images/queue") == 0  # no image goes before its product


def test_a_refusal_naming_no_item_says_so():
    with Misbehaving("indexless400") as server:
        client = client_of(server)
        with pytest.raises(DataRejected) as caught:
            client.queue_products([item("A"), item("B")])
    assert caught.value.status == 400 and caught.value.indexes is None
    assert caught.value.errors[0]["field"] == "system_products"
    assert client.requests["400"] == 1  # never retried


def test_a_refusal_naming_items_gives_their_indexes_as_the_verdict_does():
    with Misbehaving("indexed400") as server:
        client = client_of(server)
        with pytest.raises(DataRejected) as caught:
            client.queue_products([item("A"), item("B"), item("C")])
        raw = requests.post(server.url + "/v1/products/queue", data=b"{}", timeout=2)
    assert classify(raw.status_code, raw.headers, raw.content).indexes == {0, 2}
    assert caught.value.indexes == {0, 2}
    assert [e["index"] for e in caught.value.errors] == [2, 0]


def test_5xx_then_the_apis_answer_is_one_acknowledgement():
    with Misbehaving("flaky", failures=2) as server:
        client = client_of(server, retry_budget=30.0)
        assert client.queue_products([item("P")]) == {"system_products": {"sync_product": 1}}
    assert client.requests["503"] == 2 and client.requests["200"] == 2  # the login and the answer
    assert server.paths.count("/v1/products/queue") == 3


@pytest.mark.parametrize("mode", ["html", "flaky", "garbage"])
def test_a_token_the_server_echoes_never_reaches_a_message_or_a_log(mode, caplog):
    sentinel = "S3NT1NEL/tok+en=="  # quoted differently in a URL's query than in a body
    with Misbehaving(mode, token=sentinel, failures=100) as server:
        client = client_of(server)
        with caplog.at_level(logging.DEBUG), pytest.raises(ApiError) as caught:
            client.queue_products([item("P")])
    text = str(caught.value) + caplog.text
    assert client.token == sentinel  # the server really handed it out
    for form in (sentinel, quote(sentinel, safe=""), quote_plus(sentinel), "pass-sentinel-123"):
        assert form not in text
    assert "***" in str(caught.value)  # the echo was there, redacted
