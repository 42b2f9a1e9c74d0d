"""Alerts to a webhook: a small HTTP receiver in the test takes (or refuses) what is posted.

The notifier's windows and retry pauses are read from a clock the test moves by hand; its
thread and the deliveries are real (HTTP on 127.0.0.1).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connector.config import NotifySettings
from connector.notify import Notifier, api_trouble, detect_format
from tests.support import wait_real
from tests.watching import BAD_CSV, PASSWORD, quick_settings, running_service

SECRET_PATH = "/hook/T000/B000/sentinel-hook-secret-5Zp"


class Receiver:
    """A webhook receiver on 127.0.0.1: records every JSON body; answers 500 to the first
    `failures` posts, and waits `delay` seconds before answering when told to."""

    def __init__(self, failures: int = 0, delay: float = 0.0):
        self.bodies: list[dict] = []
        self.attempts = 0
        self.failures, self.delay = failures, delay
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.attempts += 1
                if receiver.delay:
                    receiver.release.wait(receiver.delay)
                if receiver.attempts <= receiver.failures:
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"

    def texts(self) -> list[str]:
        return [b["text"] for b in self.bodies]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class HandClock:
    """monotonic() and time() that move only when the test says."""

    def __init__(self):
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1_750_000_000.0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def notifier():
    made: list[Notifier] = []

    def make(url: str, clock: HandClock, **kwargs) -> Notifier:
        settings = NotifySettings(webhook_url=url, after_minutes=kwargs.pop("after_minutes", 15),
                                  timeout=kwargs.pop("timeout", 2), format=kwargs.pop("format", "auto"))
        n = Notifier(settings, clock=clock, tick=0.01, retry_base=10, retry_cap=40, **kwargs)  # type: ignore[arg-type]
        n.start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.stop()


def settle(n: Notifier | None = None) -> None:
    """Wait until the notifier's thread has handled what it was told and looked at its timers
    twice more (so what it did not send, it was not going to send)."""
    if n is None:
        time.sleep(0.3)
        return
    wait_real(n.events.empty, 5, "the events handled")
    start = n.rounds
    wait_real(lambda: n.rounds >= start + 2, 5, "two more rounds")


def down(error: str = "ConnectionError: the API does not answer") -> dict:
    return {"api_waiting": True, "last_error": {"at": "2025-06-14T10:00:00Z", "message": error},
            "last_success_at": "2025-06-14T09:00:00Z", "backlog": {"batches": 3, "images": 0}}


UP = {"api_waiting": False, "last_error": {"at": "2025-06-14T10:00:00Z", "message": "x"},
      "last_success_at": "2025-06-14T10:20:00Z", "backlog": {"batches": 0, "images": 0}}


def test_one_message_per_failed_file_and_a_repeat_waits_for_its_window(receiver, notifier):
    r, clock = receiver(), HandClock()
    n = notifier(r.url, clock)
    n.file_failed("PRODUCTS.csv", "no row of the file could be sent")
    wait_real(lambda: len(r.bodies) == 1, 5, "the first alert")
    n.file_failed("PRODUCTS.csv", "still broken")
    n.file_failed("PRODUCTS.csv", "broken a third time")
    n.file_failed("STOCK.csv", "empty file")
    wait_real(lambda: len(r.bodies) == 2, 5, "the other file's alert")
    settle(n)
    assert "PRODUCTS.csv failed: no row of the file could be sent" in r.texts()[0]
    assert "STOCK.csv failed: empty file" in r.texts()[1] and len(r.bodies) == 2  # the repeats wait
    clock.advance(15 * 60)
    wait_real(lambda: len(r.bodies) == 3, 5, "the repeats, told once")
    settle(n)
    assert len(r.bodies) == 3 and "PRODUCTS.csv failed again 2 time(s)" in r.texts()[2]
    assert "broken a third time" in r.texts()[2]
    assert r.bodies[0]["event"] == "file_failed" and r.bodies[0]["file"] == "PRODUCTS.csv"


def test_the_api_unreachable_for_after_minutes_is_told_once_and_so_is_its_recovery(receiver, notifier):
    r, clock = receiver(), HandClock()
    n = notifier(r.url, clock, after_minutes=15)
    n.observe(down())
    settle(n)
    clock.advance(14 * 60)
    n.observe(down())
    settle(n)
    assert r.bodies == []  # 14 min is not long enough
    clock.advance(61)
    n.observe(down())
    wait_real(lambda: len(r.bodies) == 1, 5, "the outage alert")
    assert "unreachable for 15 min" in r.texts()[0] and "ConnectionError" in r.texts()[0]
    clock.advance(60 * 60)
    n.observe(down())
    settle(n)
    assert len(r.bodies) == 1  # still the same outage: said once
    n.observe(UP)
    wait_real(lambda: len(r.bodies) == 2, 5, "the recovery")
    assert r.bodies[1]["event"] == "api_recovered"
    n.observe(down())  # a new outage: told again once it has lasted its own 15 min
    settle(n)
    clock.advance(10 * 60)
    n.observe(down())
    settle(n)
    assert len(r.bodies) == 2
    clock.advance(5 * 60)
    wait_real(lambda: len(r.bodies) == 3, 5, "the second outage alert")


def test_a_short_outage_says_nothing(receiver, notifier):
    r, clock = receiver(), HandClock()
    n = notifier(r.url, clock)
    n.observe(down())
    settle(n)
    clock.advance(5 * 60)
    n.observe(UP)
    settle(n)
    clock.advance(60 * 60)
    settle(n)
    assert r.bodies == []


def test_a_receiver_that_fails_then_works_gets_the_message_later(receiver, notifier, caplog):
    r, clock = receiver(failures=2), HandClock()
    caplog.set_level(logging.INFO)
    n = notifier(r.url, clock)
    n.file_failed("A.csv", "refused")
    wait_real(lambda: r.attempts == 1, 5, "the first try")
    settle(n)
    assert r.bodies == [] and r.attempts == 1  # waits its pause (10 s on this clock) before trying again
    clock.advance(10)
    wait_real(lambda: r.attempts == 2, 5, "the second try")
    clock.advance(20)
    wait_real(lambda: len(r.bodies) == 1, 5, "the delivery")
    assert "A.csv failed: refused" in r.texts()[0]
    warnings = [rec.getMessage() for rec in caplog.records if getattr(rec, "event", "") == "notify_failed"]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0]  # once per streak
    assert "sentinel-hook-secret" not in caplog.text and SECRET_PATH not in caplog.text


def test_a_hanging_receiver_never_blocks_the_service(receiver, notifier):
    r, clock = receiver(delay=5.0), HandClock()
    n = notifier(r.url, clock, timeout=0.3)
    started = time.monotonic()
    for i in range(1000):  # far more than the queue holds: the rest is counted, never waited for
        n.file_failed(f"F{i}.csv", "refused")
        n.observe(down())
    assert time.monotonic() - started < 0.5
    wait_real(lambda: r.attempts >= 1, 5, "a try")
    assert r.bodies == []
    r.release.set()  # the receiver answers again from now on
    r.delay = 0.0
    clock.advance(60)
    wait_real(lambda: len(r.bodies) >= 1, 10, "deliveries after the receiver came back")


@pytest.mark.parametrize(("url", "setting", "fmt", "keys"), [
    ("https://hooks.slack.com/services/T/B/x", "auto", "slack", {"text"}),
    ("https://acme.webhook.office.com/webhookb2/x", "auto", "teams", {"text"}),
    ("https://monitor.example/hook", "auto", "json", {"text", "event", "host", "at", "file", "reason"}),
    ("https://monitor.example/hook", "slack", "slack", {"text"}),
])
def test_formats(url, setting, fmt, keys):
    n = Notifier(NotifySettings(webhook_url=url, format=setting))
    assert n.format == fmt and detect_format(url) in ("slack", "teams", "json")
    from connector.notify import Message

    payload = n.payload(Message("file:a", "file_failed", "a.csv failed", {"file": "a.csv", "reason": "r"}))
    assert set(payload) == keys and payload["text"].endswith("a.csv failed")


@pytest.mark.parametrize(("snapshot", "is_down"), [
    (down(), True),
    (UP, False),
    ({"backlog": {"batches": 1, "images": 0}, "last_error": {"at": "2025-06-14T10:00:01Z", "message": "e"},
      "last_success_at": "2025-06-14T10:00:00Z"}, True),  # retrying inside a long file
    ({"backlog": {"batches": 0, "images": 0}, "last_error": {"at": "2025-06-14T10:00:01Z", "message": "e"},
      "last_success_at": "2025-06-14T10:00:00Z"}, False),  # nothing waits on it
    ({}, False),
])
def test_api_trouble(snapshot, is_down):
    assert (api_trouble(snapshot) is not None) is is_down


def test_a_real_service_alerts_once_when_a_file_fails(tmp_path, make_sandbox, receiver, caplog):
    r = receiver()
    sb = make_sandbox(users={"demo": PASSWORD}, rate=100.0)
    settings = quick_settings(tmp_path, sb)
    settings.notify = NotifySettings(webhook_url=r.url, format="slack")
    caplog.set_level(logging.INFO)
    (settings.folders.inbox / "bad.csv").write_text(BAD_CSV)
    with running_service(settings) as service:
        service.wait_for_file("failed", "bad__")
        wait_real(lambda: len(r.bodies) == 1, 10, "the alert")
        (settings.folders.inbox / "empty.csv").write_text("")
        service.wait_for_file("failed", "empty__")
        wait_real(lambda: len(r.bodies) == 2, 10, "the second alert")
        settle()
    assert len(r.bodies) == 2 and set(r.bodies[0]) == {"text"}
    assert "bad.csv failed" in r.texts()[0] and "empty.csv failed" in r.texts()[1] and "0 bytes" in r.texts()[1]
    for text in (*r.texts(), caplog.text):
        assert PASSWORD not in text and "sentinel-hook-secret" not in text and "token=" not in text


def test_what_waits_at_stop_gets_one_last_try(receiver):
    r = receiver(failures=1)
    n = Notifier(NotifySettings(webhook_url=r.url), clock=HandClock(), tick=0.01)
    n.start()
    n.file_failed("LAST.csv", "refused")
    wait_real(lambda: r.attempts == 1, 5, "the first try")
    settle(n)
    assert r.bodies == []  # the next try is 10 s away on this clock, which does not move
    started = time.monotonic()
    n.stop()
    assert "LAST.csv failed" in r.texts()[0] and time.monotonic() - started < 2


def test_a_file_whose_every_item_the_api_refused_is_alerted_too(tmp_path, make_sandbox, receiver):
    from tests.watching import GOOD_CSV

    r = receiver()
    sb = make_sandbox(users={"demo": PASSWORD}, rate=100.0, source_id=2)  # the settings say source 1: not ours
    settings = quick_settings(tmp_path, sb)
    settings.notify = NotifySettings(webhook_url=r.url)
    (settings.folders.inbox / "good.csv").write_text(GOOD_CSV)
    with running_service(settings) as service:
        service.wait_for_file("archive", "good__")
        wait_real(lambda: len(r.bodies) == 1, 10, "the alert")
    assert r.bodies[0]["file"] == "good.csv" and "the API refused every item" in r.bodies[0]["reason"]


def test_the_webhook_url_is_redacted_whole_and_as_urllib3_logs_it(receiver):
    from connector.logs import redact

    r = receiver()
    Notifier(NotifySettings(webhook_url=r.url + "?key=sentinel-query-8Hq"))
    for line in (f"POST {r.url}", f'"POST {SECRET_PATH}?key=sentinel-query-8Hq HTTP/1.1" 500 0', f"path {SECRET_PATH}"):
        assert "sentinel" not in redact(line), line


def test_a_burst_of_failures_is_not_a_flood(receiver, notifier):
    r, clock = receiver(), HandClock()
    n = notifier(r.url, clock)
    for i in range(25):
        n.file_failed(f"F{i:02}.csv", "refused")
    wait_real(lambda: len(r.bodies) == 10, 5, "the first ten")
    settle(n)
    assert len(r.bodies) == 10  # the other 15 wait for the window
    n.file_failed("F00.csv", "again")  # its own cause is in its window: told with the next round
    settle(n)
    clock.advance(15 * 60)
    wait_real(lambda: len(r.bodies) == 12, 5, "the summary and the repeat")
    settle(n)
    summary = next(b for b in r.bodies if b["event"] == "files_failed")
    assert summary["text"].count(".csv") == 10 and "15 more file failure(s)" in summary["text"]
    assert "and 5 more" in summary["text"] and len(summary["files"]) == 15
    assert any("F00.csv failed again 1 time(s)" in t for t in r.texts()), r.texts()[10:]
    assert len(r.bodies) == 12
