"""The API client against the sandbox over real HTTP: tokens, pacing, retries, redaction."""

from __future__ import annotations

import io
import logging
import time

import pytest

from connector.api import ApiClient, ApiError, ApiUnavailable, AuthFailed, DataRejected, RateLimiter, _retry_after
from connector.config import ApiSettings
from connector.logs import setup_logging
from connector.sandbox import Faults
from tests.support import FakeTime


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
    assert fake.sleeps == [1.0, 1.0]
    limiter.follow("3")
    limiter.wait()  # this slot was booked at the old rate
    limiter.wait()
    assert fake.sleeps[-1] == pytest.approx(1 / 2.7)
    limiter.follow("not a number")
    assert limiter.rate == pytest.approx(2.7)


def test_real_pacing_never_earns_a_429(make_sandbox):
    """Real clock: 8 requests at the sandbox's 3/s limit; the header raises us from 1/s to 2.7/s."""
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
