"""The console in a real browser (the distribution's Chromium, driven by Playwright) where the world is
unkind: a phone's width with names of 250 bytes, JavaScript turned off, and a page on another port of
this host that posts a form to the console with the operator's session cookie."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ugcwatchd.ledger import InputFile, JobDetail, PlannedJob
from ugcwatchd.states import HoldReason, JobState

from .conftest import TOKEN, Served

CHROMIUM = Path("/usr/bin/chromium")
LONG = "a" * 120 + "_" + "b" * 125 + ".jpg"  # 250 bytes, no place to break


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs the chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


def _quote(served: Served) -> int:
    inbox = served.config.rules[0].inboxes()[0]
    item = served.ledger.add_item(
        rule="faces", provider="facedub", inbox=f"{inbox.path}/{'deep' * 30}", outbox=f"{inbox.outbox}/{'x' * 200}",
        key="long", parts={"client": "c" * 200},
        inputs=[InputFile("photo", f"{inbox.path}/{LONG}", LONG, "ab" * 32, 1, 1)],
        jobs=[PlannedJob(LONG.replace(".jpg", ".facedub"), "k", {"duration": 5}, 1, state=JobState.HELD,
                         detail=JobDetail(held=HoldReason.APPROVAL))],
    )  # fmt: skip
    return item.id


def _log_in(page: Any, base: str) -> None:
    page.goto(f"{base}/login?next=/")
    page.fill("input[name=token]", TOKEN)
    page.click("button.go")
    page.wait_for_url(f"{base}/")


def test_console_browser_phone_width_no_javascript_and_a_form_from_another_port(served: Served, chromium: Any) -> None:
    item = _quote(served)
    base = served.base
    evil = f"http://127.0.0.1:{served.port + 1 if served.port < 65535 else served.port - 1}"
    # A phone, JavaScript off: every page readable without sideways scrolling, and the forms still work.
    phone = chromium.new_context(viewport={"width": 360, "height": 740}, java_script_enabled=False)
    try:
        page = phone.new_page()
        _log_in(page, base)
        for path in ("/", "/items", f"/items/{item}", f"/items?name={LONG[:30]}"):
            page.goto(base + path)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 360, (path, wide)
        page.goto(f"{base}/")
        assert "awaiting approval: about 1 credits" in page.inner_text("#held")
        assert "stamp" in page.content()  # served whole: no script needed to see it
        # The other port is the same site: the cookie goes along, but the form cannot know the CSRF token.
        page.route(f"{evil}/**", lambda route: route.fulfill(content_type="text/html", body=(
            f'<form method="post" action="{base}/items/{item}/approve"><input name="next" value="/">'
            '<button id="go">win a prize</button></form>')))  # fmt: skip
        page.goto(f"{evil}/prize")
        with page.expect_response(f"{base}/items/{item}/approve") as answer:
            page.click("#go")
        assert answer.value.status == 403 and "CSRF token is missing" in answer.value.text()  # the cookie went along
        assert served.ledger.jobs_of(item)[0].state == JobState.HELD
        # The operator's own form, without JavaScript, approves it.
        page.goto(f"{base}/items/{item}")
        page.get_by_role("button", name="Approve").click()
        page.wait_for_url(f"{base}/items/{item}")
        assert "approved" in page.inner_text(".flash")
        assert served.ledger.jobs_of(item)[0].state == JobState.QUEUED
    finally:
        phone.close()
