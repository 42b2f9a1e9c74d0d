"""The status page in a real browser: Chromium from the system's packages, driven by Playwright.

One browser for the module; a real `connector watch` service on real folders pushing to the
sandbox over HTTP. `.ci/run` installs Chromium (apt) when /usr/bin/chromium is missing; nothing
is downloaded by Playwright itself.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.watching import BAD_CSV, GOOD_CSV, PASSWORD, quick_settings, running_service

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "page-token-sentinel-3Wm"

if not os.environ.get("CI") and not Path(CHROMIUM).exists():  # in CI a missing browser is a failure, not a skip
    pytest.skip(f"no {CHROMIUM}: apt-get install chromium (.ci/run does)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which(CHROMIUM) or CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def service(tmp_path, make_sandbox):
    sb = make_sandbox(users={"demo": PASSWORD}, rate=100.0)
    settings = quick_settings(tmp_path, sb)
    (settings.folders.inbox / "good.csv").write_text(GOOD_CSV)
    (settings.folders.inbox / "bad.csv").write_text(BAD_CSV)
    with running_service(settings) as svc:
        svc.wait_for_file("archive", "good__")
        svc.wait_for_file("failed", "bad__")
        yield svc


def test_the_page_shows_the_pushed_and_the_failed_file_and_a_fixed_file_goes_back(page, service):
    page.goto(service.page_url)
    assert page.locator("h1 .state").inner_text() == "ok"
    recent = page.locator("tr.recent-file")
    assert recent.count() == 2
    good = recent.filter(has_text="good.csv")
    assert good.locator("td").nth(2).inner_text() == "done" and good.locator("td").nth(4).inner_text() == "2"
    failed = page.locator("tr.failed-file")
    assert failed.count() == 1 and "bad.csv" in failed.inner_text()
    assert failed.locator("td.reason").inner_text() == "bad.csv: refused: no row of the file could be sent"
    assert page.locator("svg[role=img] rect").count() == 60  # items and images, 30 days
    assert page.locator("meta[http-equiv=refresh]").count() == 1

    failed.get_by_role("link", name="report").click()  # a plain link: the reason file opens in the tab
    page.wait_for_url(re.compile(r"/files/failed/.+\.error\.json$"))
    assert '"status": "refused"' in page.content()
    page.go_back()

    placed = service.placed("failed", "bad__")[0]
    placed.write_text(GOOD_CSV.replace("P1", "P7"))  # a person fixes the file
    page.locator("tr.failed-file").get_by_role("button", name="Put back in the inbox").click()
    assert "bad.csv is back in the inbox" in page.get_by_role("status").inner_text()
    service.wait_for_file("archive", "bad__")
    page.goto(service.page_url)
    assert page.locator("tr.failed-file").count() == 0
    assert page.locator("tr.recent-file").filter(has_text="bad.csv").filter(has_text="done").count() == 1


def test_a_post_without_the_csrf_token_is_refused(page, service):
    page.goto(service.page_url)
    relative = page.locator("tr.failed-file input[name=file]").get_attribute("value")
    assert relative and ".." not in relative
    # the same request the button makes, from the page's own origin, but without the token
    reply = page.request.post(service.page_url + "retry", form={"file": relative})
    assert reply.status == 403 and "CSRF" in reply.text()
    page.evaluate("document.querySelector('tr.failed-file input[name=csrf]').remove()")
    page.locator("tr.failed-file").get_by_role("button").click()
    assert "CSRF" in page.content()
    assert service.placed("failed", "bad__") and not (service.settings.folders.inbox / "bad.csv").exists()


def test_login_with_the_token_and_no_secret_on_the_page(browser, tmp_path, make_sandbox):
    sb = make_sandbox(users={"demo": PASSWORD}, rate=100.0)
    settings = quick_settings(tmp_path, sb)
    settings.watch.http_token = TOKEN
    (settings.folders.inbox / "bad.csv").write_text(BAD_CSV)
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        with running_service(settings) as svc:
            svc.wait_for_file("failed", "bad__")
            page.goto(svc.page_url)
            assert page.url.endswith("/login")
            page.get_by_label("Token of the status page").fill("wrong")
            page.get_by_role("button", name="Log in").click()
            assert "not right" in page.content()
            page.get_by_label("Token of the status page").fill(TOKEN)
            page.get_by_role("button", name="Log in").click()
            assert page.locator("tr.failed-file").count() == 1
            html = page.content()
            cookies = context.cookies()
            assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
            assert cookies[0]["value"] != TOKEN
            assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
            for secret in (TOKEN, PASSWORD, "token="):
                assert secret not in html
            assert re.search(r"password", html, re.IGNORECASE) is None
    finally:
        context.close()

