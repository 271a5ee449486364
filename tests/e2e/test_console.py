"""The web console served by the real daemon against the sandbox: in a real browser (the distribution's
Chromium driven by Playwright), over plain HTTP for what must be refused, and its ETA for a real batch."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console_history import seed
from tests.support import wait_for
from ugcwatchd.sandbox.media import make_photo

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-token-for-the-tests-0123"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = os.environ.get("UGCWATCHD_CONSOLE_SCREENSHOT")  # a path: the browser test saves the overview there


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def world(root: Path, sb: SandboxProcess, port: int, rule: str = "") -> Path:
    for folder in ("faces/inbox", "faces/outbox"):
        (root / folder).mkdir(parents=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f'providers:\n  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        f"console_listen: 127.0.0.1:{port}\n"
        f"rules:\n  - {{name: faces, inbox: faces/inbox, {rule}facedub: {{}}}}\n"
    )
    return rules


def drop(root: Path, stem: str, photo: Path, video: Path) -> None:
    shutil.copy(photo, root / "faces" / "inbox" / f"{stem}{photo.suffix}")
    shutil.copy(video, root / "faces" / "inbox" / f"{stem}.mp4")


def overview(base: str) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = httpx.get(f"{base}/overview.json", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return None
    return document


def ledger_state(state: Path) -> tuple[list[tuple[Any, ...]], int]:
    """Every job's state and detail, and how many events there are: what an action would change."""
    db = sqlite3.connect(f"file:{state / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        jobs = db.execute("SELECT id, state, detail FROM jobs ORDER BY id").fetchall()
        return jobs, int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        db.close()


def login(client: httpx.Client) -> tuple[str, str]:
    """Log in through the form, as a browser does: the session's CSRF token, and its cookie as it was set."""
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None, form.text
    done = client.post("/login", data={"csrf": csrf.group(1), "token": TOKEN, "next": "/"})
    assert done.status_code == 303, done.text
    page = client.get("/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1), done.headers["set-cookie"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium from the distribution (never a downloaded browser)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs the chromium package")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium): the console's browser test needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the playwright package is missing (pip install -e '.[test]')")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


def test_console_in_a_browser_updates_progress_finds_a_file_and_approves_a_quote(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path], chromium: Any
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rules = world(tmp_path, sb, port, "approve_above: 1, ")  # video.mp4 costs 1 credit, long.mp4 2
    seed(tmp_path / "state", tmp_path, items=150, now=time.time())  # a month of paid work: the spend chart
    daemon = DaemonProcess(rules, tmp_path / "state", {"UGCWATCHD_CONSOLE_TOKEN": TOKEN})
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    try:
        wait_for(lambda: overview(base), timeout=20, what="the console")
        drop(tmp_path, "alice", media["jpeg"], media["video.mp4"])
        drop(tmp_path, "bigshot", media["png"], media["long.mp4"])
        page.goto(f"{base}/login?next=/")
        page.fill("input[name=token]", TOKEN)
        page.click("button.go")
        page.wait_for_url(f"{base}/")
        # The running job's row changes while the page stays the same document (no reload).
        row = page.locator("#running tr", has_text="alice.facedub")
        row.wait_for(timeout=20_000)
        page.evaluate("window.notReloaded = true")
        first = row.inner_text()
        wait_for(lambda: row.count() and row.inner_text() != first, timeout=15, interval=0.2, what="progress to move")
        assert page.evaluate("window.notReloaded") is True
        held = page.locator("#held tr", has_text="bigshot.facedub")
        held.wait_for(timeout=20_000)
        assert "awaiting approval: about 2 credits" in held.inner_text()
        if SCREENSHOT:
            page.screenshot(path=SCREENSHOT, full_page=True)
        # Searching a file name finds its item, and only it.
        page.goto(f"{base}/items")
        page.fill("input[name=name]", "bigsh")
        page.click("form.search button")
        page.wait_for_url(re.compile(r".*/items\?name=bigsh.*"))
        found = page.inner_text("#items")
        assert "bigshot.png" in found and "alice" not in found and "clip" not in found
        # Approving the quote from the page sends the job.
        page.goto(f"{base}/")
        page.locator("#held tr", has_text="bigshot.facedub").get_by_role("button", name="Approve").click()
        page.wait_for_url(f"{base}/")
        assert "approved bigshot.facedub" in page.inner_text(".flash")
        stats = f"{sb.urls['facedub']}/sandbox/stats"
        wait_for(lambda: httpx.get(stats).json()["jobs_created"] == 2, timeout=20, what="the approved job to go")
    finally:
        page.close()
        assert daemon.stop() == 0, daemon.text()[-3000:]
    db = sqlite3.connect(f"file:{tmp_path / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    approved = db.execute("SELECT detail FROM events WHERE kind = 'item approved'").fetchall()
    db.close()
    assert len(approved) == 1 and '"by": "console"' in approved[0][0]
    assert TOKEN not in daemon.text() and "Traceback" not in daemon.text()


def test_console_action_without_session_with_wrong_csrf_or_by_get_is_refused_and_changes_nothing(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    port, moved = free_port(), free_port()
    rules = world(tmp_path, sb, port, "approve_above: 1, ")
    daemon = DaemonProcess(rules, tmp_path / "state", {"UGCWATCHD_CONSOLE_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: overview(base), timeout=20, what="the console")
        drop(tmp_path, "bigshot", media["png"], media["long.mp4"])
        held = wait_for(lambda: (o := overview(base)) and o["held"], timeout=20, what="the quote")
        item = held[0]["item"]
        before = ledger_state(tmp_path / "state")
        with httpx.Client(base_url=base) as stranger:
            assert stranger.post(f"/items/{item}/approve", data={"csrf": "x"}).status_code == 403
        with httpx.Client(base_url=base) as operator:
            csrf, cookie = login(operator)
            assert cookie.startswith("ugcwatchd_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert operator.post(f"/items/{item}/approve", data={"csrf": "wrong"}).status_code == 403
            assert operator.post(f"/items/{item}/approve", data={}).status_code == 403
            assert operator.get(f"/items/{item}/approve").status_code == 405
            assert operator.get(f"/items/{item}/reject").status_code == 405
            assert operator.get(f"/items/{item}/retry").status_code == 405
            assert csrf  # the right token exists: only the wrong one was refused
        assert ledger_state(tmp_path / "state") == before
        assert httpx.get(f"{sb.urls['facedub']}/sandbox/stats").json()["jobs_created"] == 0
        # A reload that moves the console restarts it on the new address.
        rules.write_text(rules.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{moved}"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: overview(f"http://127.0.0.1:{moved}"), timeout=20, what="the console on its new address")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/overview.json", timeout=5)
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert "reloaded" in daemon.text()


def test_console_eta_of_a_ten_pair_batch_is_within_a_fifth_of_the_actual_finish(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rules = world(tmp_path, sb, port)
    photos = [make_photo(tmp_path / f"p{n}.jpg", size=(320 + n, 400)) for n in range(10)]  # ten distinct drops
    daemon = DaemonProcess(rules, tmp_path / "state")
    outbox = tmp_path / "faces" / "outbox"
    try:
        wait_for(lambda: overview(base), timeout=20, what="the console")
        for n, photo in enumerate(photos):
            drop(tmp_path, f"pair{n}", photo, media["video.mp4"])
        # The forecast once a first job was seen finishing (the observed job time it builds on).
        wait_for(lambda: list(outbox.glob("*.result.json")), timeout=30, what="the first result")
        forecast = wait_for(
            lambda: (o := overview(base)) and o["providers"][0]["done_at"] and o, timeout=10, what="a forecast"
        )
        asked, predicted = forecast["at"], forecast["providers"][0]["done_at"]
        wait_for(lambda: len(list(outbox.glob("*.result.json"))) == 10, timeout=60, interval=0.05, what="the batch")
        finished = time.time()
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    error = (predicted - finished) / (finished - asked)
    print(f"ETA: predicted {predicted - asked:.1f} s, took {finished - asked:.1f} s: error {error:+.1%}")
    assert abs(error) <= 0.2
