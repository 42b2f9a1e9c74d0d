"""The status page over plain HTTP: what it serves, what it refuses, and its one action.

The browser tests (test_browser.py) click through the page; these check the edges a browser
would never send: path traversal, a foreign Host or Origin, a missing CSRF token, no token.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from connector.config import ConfigError, Settings, WatchSettings, is_loopback, load_settings
from connector.health import read_health
from connector.overview import Overview, PutBackError, original_name
from connector.page import render
from connector.sandbox import Sandbox, SandboxConfig
from tests.support import wait_real
from tests.watching import BAD_CSV, GOOD_CSV, PASSWORD, Service, quick_settings, running_service

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "page-token-sentinel-9Kd"


def raw_get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A GET with the path sent exactly as given (requests and browsers would normalise `..`)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


@contextlib.contextmanager
def a_pushed_and_a_failed_file(tmp_path: Path) -> Iterator[Service]:
    """A real service that has archived one file and failed another."""
    sb = Sandbox(SandboxConfig(users={"demo": PASSWORD}, rate=100.0)).start(host="127.0.0.1", port=0)
    try:
        settings = quick_settings(tmp_path, sb)
        (settings.folders.inbox / "good.csv").write_text(GOOD_CSV)
        (settings.folders.inbox / "bad.csv").write_text(BAD_CSV)
        with running_service(settings) as service:
            service.wait_for_file("archive", "good__")
            service.wait_for_file("failed", "bad__")
            yield service
    finally:
        sb.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One service for the tests that only look (one per module and worker: starting one costs ~1 s)."""
    with a_pushed_and_a_failed_file(tmp_path_factory.mktemp("served")) as service:
        yield service


@pytest.fixture
def fresh(tmp_path):
    """A service of its own, for a test that changes what it has."""
    with a_pushed_and_a_failed_file(tmp_path) as service:
        yield service


# --- security ----------------------------------------------------------------------------------

def test_watch_refuses_to_start_off_loopback_without_a_token(tmp_path, monkeypatch, capsys):
    from connector.cli import main

    config = tmp_path / "connector.yaml"
    config.write_text("watch:\n  http_port: 8799\n  http_host: 0.0.0.0\n")
    for name, value in (("S2S_USERNAME", "u"), ("S2S_PASSWORD", "p"), ("S2S_SOURCE_ID", "1")):
        monkeypatch.setenv(name, value)
    assert main(["watch", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "http_host '0.0.0.0' is not a loopback address" in err and "http_token" in err
    assert not (tmp_path / "state" / "health.json").exists()  # it never started
    # with a token it is a valid setting (not started here: tests talk only to 127.0.0.1)
    config.write_text("watch:\n  http_port: 8799\n  http_host: 0.0.0.0\n")
    settings = load_settings(config, {"S2S_HTTP_TOKEN": TOKEN})
    assert settings.watch.http_token == TOKEN and TOKEN not in repr(settings)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("192.168.1.10", False), ("::", False), ("example.com", False),
])
def test_only_loopback_addresses_go_without_a_token(host, loopback):
    assert is_loopback(host) is loopback


def test_a_short_page_token_is_refused_without_showing_it(tmp_path):
    config = tmp_path / "connector.yaml"
    config.write_text("watch:\n  http_port: 8799\n  http_token: abc123xyz\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "at least 16 characters" in str(caught.value) and "abc123xyz" not in str(caught.value)
    config.write_text(f"api:\n  password: {TOKEN}\nwatch:\n  http_port: 8799\n  http_token: {TOKEN}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "watch.http_token: it is the API password" in str(caught.value) and TOKEN not in str(caught.value)


def test_health_port_is_the_old_name_of_http_port(tmp_path):
    config = tmp_path / "connector.yaml"
    config.write_text("watch:\n  health_port: 8123\n")
    assert load_settings(config, {}).watch.http_port == 8123
    config.write_text("watch:\n  health_port: 8123\n  http_port: 8124\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "keep only http_port" in str(caught.value)


def test_secrets_in_a_broken_yaml_are_hidden(tmp_path):
    config = tmp_path / "connector.yaml"
    config.write_text(f"watch:\n  http_token: {TOKEN}\nnotify:\n  webhook_url: https://x/hook/{TOKEN}x\n  - [\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert TOKEN not in str(caught.value)


def test_files_outside_the_reports_of_archive_and_failed_are_never_served(served):
    url = served.page_url
    report = next(served.settings.folders.archive.rglob("good__*.report.json"))
    relative = report.relative_to(served.settings.folders.archive).as_posix()
    status, body = raw_get(url, f"/files/archive/{relative}")
    assert status == 200 and b'"file": "good.csv"' in body
    (served.settings.folders.archive / "2020").mkdir()
    os.symlink(served.settings.folders.state / "health.json", served.settings.folders.archive / "2020" / "x.report.json")
    for path in ["/files/archive/../state/ledger.sqlite", "/files/archive/%2e%2e/state/health.json",
                 "/files/archive/..%2fstate%2fhealth.json", "/files/state/health.json",
                 "/files/archive//etc/passwd", "/files/archive/2020/x.report.json",  # a symlink out
                 f"/files/archive/{relative.removesuffix('.report.json')}",  # the export itself: not a report
                 f"/files/failed/{relative}", "/files/archive/" + relative.replace("/", "%5c")]:
        status, body = raw_get(url, path)
        assert status == 404, path
        assert b"state" not in body and b"ledger" not in body


def test_a_foreign_host_is_refused_on_loopback(served):
    status, _ = raw_get(served.page_url, "/", {"Host": "attacker.example:80"})
    assert status == 421
    status, _ = raw_get(served.page_url, "/", {"Host": f"localhost:{urlsplit(served.page_url).port}"})
    assert status == 200


def test_put_back_needs_the_csrf_token_and_the_page_origin(fresh):
    served = fresh
    url = served.page_url
    failed = served.placed("failed", "bad__")[0]
    relative = failed.relative_to(served.settings.folders.failed).as_posix()
    html = requests.get(url, timeout=5).text
    token = csrf_of(html)
    for form, headers in [({"file": relative}, {}), ({"file": relative, "csrf": "0" * 64}, {}),
                          ({"file": relative, "csrf": token}, {"Origin": "http://attacker.example"})]:
        reply = requests.post(url + "retry", data=form, headers=headers, allow_redirects=False, timeout=5)
        assert reply.status_code == 403
    assert failed.exists() and not (served.settings.folders.inbox / "bad.csv").exists()
    for method in (requests.get, requests.put):
        assert method(url + "retry", timeout=5).status_code in (404, 405, 501)
    failed.write_text(GOOD_CSV.replace("P1", "P3"))  # fixed by a person
    reply = requests.post(url + "retry", data={"file": relative, "csrf": token}, timeout=5)
    assert reply.status_code == 200 and "bad.csv is back in the inbox" in reply.text
    served.wait_for_file("archive", "bad__")


def test_a_file_put_back_is_no_longer_counted_or_listed_as_failed(tmp_path, make_sandbox):
    settings = quick_settings(tmp_path, make_sandbox(users={"demo": PASSWORD}, rate=100.0))
    (settings.folders.inbox / "bad.csv").write_text(GOOD_CSV.replace("10.00", "ten").replace("12.00", "twelve"))
    with running_service(settings) as service:
        _put_back_a_fixed_file(service)


def _put_back_a_fixed_file(service: Service) -> None:
    from connector.status import render_status

    folders = service.settings.folders
    failed = service.wait_for_file("failed", "bad__")[0]
    companions = [Path(str(failed) + s) for s in (".error.json", ".rejected.csv", ".rejected.xlsx")]
    assert all(p.exists() for p in companions)
    wait_real(lambda: requests.get(service.page_url + "healthz", timeout=5).json()["failed_files"] == 1, 10, "1 failed")
    html = requests.get(service.page_url, timeout=5).text
    failed.write_text(GOOD_CSV.replace("P1", "P3"))  # fixed by a person
    relative = failed.relative_to(folders.failed).as_posix()
    reply = requests.post(service.page_url + "retry", data={"file": relative, "csrf": csrf_of(html)}, timeout=5)
    assert reply.status_code == 200 and "bad.csv is back in the inbox" in reply.text
    service.wait_for_file("archive", "bad__")

    # nothing of it is left where failed files are listed and counted ...
    assert [p for p in folders.failed.rglob("*") if p.is_file() and p.parent.name != "put-back"] == []
    wait_real(lambda: requests.get(service.page_url + "healthz", timeout=5).json()["failed_files"] == 0, 10,
              "failed_files 0 (counted again after the put back, not at the next walk of failed/)")
    html = requests.get(service.page_url, timeout=5).text
    assert "Put back in the inbox" not in html and 'class="status refused"' not in html
    assert "Last failed: (0 file(s) in failed/) none" in render_status(service.settings)
    # ... and its old reason and refused rows are kept for a person, beside where it was
    kept = failed.parent / "put-back"
    assert sorted(p.name for p in kept.iterdir()) == sorted(p.name for p in companions)
    assert '"status": "refused"' in (kept / companions[0].name).read_text()


def test_the_health_endpoint_beside_the_page(served):
    reply = requests.get(served.page_url + "healthz", timeout=5)
    assert reply.status_code == 200 and reply.json()["state"] == "ok"
    assert reply.json()["health_url"] == served.page_url + "healthz"


def test_a_token_protects_page_files_health_and_actions(tmp_path, make_sandbox, caplog):
    sb = make_sandbox(users={"demo": PASSWORD}, rate=100.0)
    settings = quick_settings(tmp_path, sb)
    settings.watch.http_token = TOKEN
    (settings.folders.inbox / "bad.csv").write_text(BAD_CSV)
    caplog.set_level(logging.INFO)
    with running_service(settings) as service:
        failed = service.wait_for_file("failed", "bad__")[0]
        url = service.page_url
        anonymous = requests.get(url, allow_redirects=False, timeout=5)
        assert anonymous.status_code == 303 and anonymous.headers["Location"] == "/login"
        assert requests.get(url + "healthz", timeout=5).status_code == 401
        sidecar = failed.relative_to(settings.folders.failed).as_posix() + ".error.json"
        assert requests.get(url + f"files/failed/{sidecar}", allow_redirects=False, timeout=5).status_code == 303
        assert requests.post(url + "retry", data={"file": "x"}, timeout=5).status_code == 401

        bearer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert bearer.status_code == 200 and "bad.csv" in bearer.text and TOKEN not in bearer.text

        browser = requests.Session()
        login = browser.get(url + "login", timeout=5).text
        wrong = browser.post(url + "login", data={"token": "nope", "csrf": csrf_of(login)}, timeout=5)
        assert wrong.status_code == 401 and "not right" in wrong.text
        assert browser.post(url + "login", data={"token": TOKEN}, timeout=5).status_code == 403  # no CSRF token
        page = browser.post(url + "login", data={"token": TOKEN, "csrf": csrf_of(login)}, timeout=5)
        assert page.status_code == 200 and "bad.csv" in page.text
        cookie = next(c for c in browser.cookies)
        assert cookie.value != TOKEN and TOKEN not in cookie.value and cookie.has_nonstandard_attr("HttpOnly")
        assert browser.get(url + f"files/failed/{sidecar}", timeout=5).json()["status"] == "refused"
        assert TOKEN not in page.text and PASSWORD not in page.text
    assert TOKEN not in caplog.text and PASSWORD not in caplog.text


# --- the page's parts ------------------------------------------------------------------------

def test_the_page_shows_the_service_api_backlog_files_and_chart(served):
    html = requests.get(served.page_url, timeout=5).text
    assert '<meta http-equiv="refresh"' in html and "<script" not in html
    assert re.search(r"https?://(?!127\.0\.0\.1)", html.replace('xmlns="http://www.w3.org/2000/svg"', "")) is None
    for text in ("Stock2Shop API", "Rate in use", "Backlog", "Last files", "good.csv", "bad.csv",
                 "no row of the file could be sent", "Sent per day, last 30 days", "<svg", "Put back in the inbox"):
        assert text in html, text
    assert re.search(r"good\.csv</td><td><span class=\"status done\">done</span></td><td class=\"n\">2</td>"
                     r"<td class=\"n\">2</td>", html)  # 2 products, 2 items sent
    assert PASSWORD not in html and "token=" not in html


def test_a_rejected_xlsx_beside_the_report_is_linked(served):
    report = next(served.settings.folders.archive.rglob("good__*.report.json"))
    xlsx = Path(str(report).removesuffix(".report.json") + ".rejected.xlsx")
    xlsx.write_bytes(b"PK\x03\x04 made by the test")
    os.utime(report)  # a newer mtime: its cached summary is read again
    html = requests.get(served.page_url, timeout=5).text
    assert "refused rows (XLSX)" in html
    link = re.search(r'href="(/files/archive/[^"]+\.rejected\.xlsx)"', html).group(1)
    reply = requests.get(served.page_url.rstrip("/") + link, timeout=5)
    assert reply.content == xlsx.read_bytes() and "attachment" in reply.headers["Content-Disposition"]


def test_the_progress_of_the_file_being_pushed_and_the_chart_come_from_the_ledger(tmp_path, make_sandbox):
    from tests.support import pipeline_for

    sandbox = make_sandbox(users={"demo": PASSWORD})
    settings = quick_settings(tmp_path, sandbox)
    pipeline = pipeline_for(tmp_path, sandbox, settings)
    path = tmp_path / "products.csv"
    path.write_text(GOOD_CSV)
    pipeline.run_file(path)
    ledger = pipeline.ledger
    ledger.db.execute("UPDATE files SET status = 'journaled'")  # as if it were still being sent
    ledger.db.execute("UPDATE jobs SET state = 'pending'")
    view = Overview(settings).collect({"state": "ok", "busy": {"with": "products.csv", "since": "now"}}, rate=2.0)
    assert view["working"] == [{"name": "products.csv", "batches": [0, 1], "images": [0, 0]}]
    assert view["backlog"]["batches"] == 1 and view["api"]["rate"] == 2.0
    assert view["daily"][-1]["items"] == 2 and len(view["daily"]) == 30
    html = render(view, csrf="x")
    assert 'batches 0 of 1 <progress max="1" value="0"' in html and "Busy with <b>products.csv</b>" in html


@pytest.mark.parametrize(("placed", "original"), [
    ("PRODUCTS__20250614T101502Z__3fa9c1d2.csv", "PRODUCTS.csv"),
    ("a__b__20250614T101502Z__3fa9c1d2__12.xlsx", "a__b.xlsx"),
    ("noext__20250614T101502Z__3fa9c1d2", "noext"),
    ("plain.csv", "plain.csv"),
])
def test_original_name(placed, original):
    assert original_name(placed) == original


def test_put_back_never_overwrites_and_brings_the_done_file(tmp_path):
    settings = Settings(watch=WatchSettings(done_file=True))
    for name in ("inbox", "failed", "archive", "state"):
        setattr(settings.folders, name, tmp_path / name)
        (tmp_path / name).mkdir()
    day = settings.folders.failed / "2025" / "06" / "14"
    day.mkdir(parents=True)
    placed = day / "stock__20250614T101502Z__3fa9c1d2.csv"
    placed.write_text("x")
    overview = Overview(settings)
    (settings.folders.inbox / "stock.csv").write_text("newer")
    with pytest.raises(PutBackError, match="already in the inbox"):
        overview.put_back("2025/06/14/stock__20250614T101502Z__3fa9c1d2.csv")
    assert (settings.folders.inbox / "stock.csv").read_text() == "newer" and placed.exists()
    (settings.folders.inbox / "stock.csv").unlink()
    assert overview.put_back("2025/06/14/stock__20250614T101502Z__3fa9c1d2.csv") == "stock.csv"
    assert (settings.folders.inbox / "stock.csv").read_text() == "x" and not placed.exists()
    assert (settings.folders.inbox / "stock.csv.done").exists()
    for bad in ("../inbox/stock.csv", "2025/06/14/stock__20250614T101502Z__3fa9c1d2.csv.error.json", ""):
        with pytest.raises(PutBackError):
            overview.put_back(bad)


def test_a_port_that_cannot_be_bound_stops_the_start_with_a_message(tmp_path, sandbox):
    import socket
    import threading

    from connector.watch import serve

    settings = quick_settings(tmp_path, sandbox)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings.watch.http_port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"watch\.http_port: cannot serve the status page"):
            serve(settings, lambda: None, stop=threading.Event())


def test_health_port_still_serves_the_page_with_a_warning(tmp_path, sandbox, caplog):
    settings = quick_settings(tmp_path, sandbox)
    settings.watch.http_port, settings.watch.health_port = None, 0
    settings.watch = WatchSettings.model_validate(settings.watch.model_dump())
    caplog.set_level(logging.INFO)
    with running_service(settings) as service:
        assert requests.get(service.page_url, timeout=5).status_code == 200
    assert "watch.health_port is the old name of watch.http_port" in caplog.text


def test_the_page_answers_while_the_loop_is_busy_with_a_long_file(tmp_path):
    import threading
    import time
    from types import SimpleNamespace

    from connector.watch import serve
    from tests.support import report_of, wait_real

    gate = threading.Event()

    class LongFile:  # the pipeline's thread is held inside one file until the test lets it go
        def run_file(self, path, *, mapping=None):
            gate.wait(20)
            return report_of("done", {"file": path.name}, message=f"{path.name}: done")

        def drain(self):
            return True

        def close(self):
            pass

    settings = quick_settings(tmp_path, SimpleNamespace(url="http://127.0.0.1:9"))
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings, LongFile), kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        (settings.folders.inbox / "long.csv").write_text(GOOD_CSV)
        wait_real(lambda: ((read_health(settings.watch.health_file) or {}).get("busy") or {}).get("with") == "long.csv",
                  10, "the loop busy with long.csv")
        url = read_health(settings.watch.health_file)["health_url"].removesuffix("healthz")
        started = time.monotonic()
        for _ in range(5):
            reply = requests.get(url, timeout=5)
            assert reply.status_code == 200 and "Busy with <b>long.csv</b>" in reply.text
        assert time.monotonic() - started < 2.5
    finally:
        gate.set()
        stop.set()
        thread.join(15)
    assert not thread.is_alive()


def test_a_hostile_report_file_is_shown_as_text(tmp_path):
    settings = Settings()
    for name in ("inbox", "failed", "archive", "state"):
        setattr(settings.folders, name, tmp_path / name)
    day = settings.folders.archive / "2025" / "06" / "14"
    day.mkdir(parents=True)
    (day / "x__20250614T101502Z__3fa9c1d2.csv.report.json").write_text(
        '{"file": "<b>x</b>.csv", "status": "<i>done</i>", "finished_at": 5, "message": "<script>alert(1)</script>",'
        ' "counts": {"products": "<script>", "items_sent": true}, "timings_s": {"total": "<img>"}}')
    (day / "y__20250614T101502Z__3fa9c1d2.csv.report.json").write_text("not json at all")
    view = Overview(settings).collect({"state": "ok", "problems": ["<script>p</script>"]})
    html = render(view, csrf="x")
    assert "<script" not in html and "<b>x" not in html and "<img" not in html and "<i>done" not in html
    assert "<td>x.csv</td>" in html and "<td>y.csv</td>" in html  # a name with a / is not a name
