"""The console against a hostile world, over real HTTP: forms from other origins, fixed and replayed
cookies, odd methods, hostile numbers and search strings, two tabs approving at once, sidecars that are
traps (a FIFO, a symlink to a secret, a huge file), and clients too slow to finish a request."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from contextlib import closing
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from tests.support import wait_for
from ugcwatchd.console import server as server_module
from ugcwatchd.console.app import build_app
from ugcwatchd.console.auth import SESSION_COOKIE
from ugcwatchd.console.server import CONNECTIONS_MAX
from ugcwatchd.ledger import Failure, InputFile, JobDetail, PlannedJob
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import ErrorCode, FailStage, HoldReason, ItemState, JobState

from .conftest import TOKEN, Served, csrf_in, free_port, logged_in

HUGE = "9" * 30  # beyond SQLite's 64-bit integers


def _held(served: Served, name: str = "quote") -> int:
    item = served.ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(served.config.rules[0].inboxes()[0].path),
        outbox=str(served.config.rules[0].inboxes()[0].outbox),
        key=name,
        inputs=[InputFile("photo", f"/in/{name}.jpg", f"{name}.jpg", "ab" * 32, 1, 1)],
        jobs=[PlannedJob(f"{name}.facedub", f"k-{name}", {"duration": 5}, 1, state=JobState.HELD,
                         detail=JobDetail(held=HoldReason.APPROVAL))],
    )  # fmt: skip
    return item.id


def _snapshot(served: Served) -> tuple[object, ...]:
    db = served.ledger._db
    return (
        db.execute("SELECT id, state, detail FROM jobs ORDER BY id").fetchall(),
        db.execute("SELECT COUNT(*) FROM events").fetchone()[0],
    )


def test_console_form_from_another_origin_without_the_csrf_token_is_refused_and_changes_nothing(
    served: Served,
) -> None:
    item = _held(served)
    before = _snapshot(served)
    client, _ = logged_in(served)
    with closing(client):
        # A page on another port of this host is the same site: the browser sends the session cookie.
        for origin in ("http://127.0.0.1:9999", "null", None, f"http://127.0.0.1:{served.port}"):
            headers = {"origin": origin} if origin else {}
            for form in ({}, {"csrf": ""}, {"csrf": "guessed"}, {"csrf": "x" * 43}):
                refused = client.post(f"/items/{item}/approve", data=form, headers=headers)
                assert refused.status_code == 403, (origin, form)
        # Without the form type a browser sends, the token is not even read.
        plain = client.post(f"/items/{item}/approve", content=b"{}", headers={"content-type": "text/plain"})
        assert plain.status_code == 403
    assert _snapshot(served) == before


def test_console_login_forged_from_another_site_or_with_a_fixed_session_id_gets_no_session(served: Served) -> None:
    with served.client() as attacker:
        csrf_of_attacker = csrf_in(attacker.get("/login").text)
    with served.client() as victim:
        # Login CSRF: a form from elsewhere carries a login token, but not the cookie it was made for.
        forged = victim.post("/login", data={"csrf": csrf_of_attacker, "token": TOKEN, "next": "/"})
        assert forged.status_code == 403 and SESSION_COOKIE not in forged.headers.get("set-cookie", "")
        # Fixation: a session id planted in the browser (say by a page on another port) is never adopted.
        victim.cookies.set(SESSION_COOKIE, "planted-by-the-attacker")
        csrf = csrf_in(victim.get("/login").text)
        done = victim.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/"})
        assert done.status_code == 303
        issued = done.cookies[SESSION_COOKIE]
        assert issued != "planted-by-the-attacker" and len(issued) >= 40
    with served.client() as planted:
        planted.cookies.set(SESSION_COOKIE, "planted-by-the-attacker")
        assert 'action="/logout"' not in planted.get("/").text


def test_console_cookie_replayed_after_logout_is_no_session(served: Served) -> None:
    item = _held(served)
    client, csrf = logged_in(served)
    cookie = client.cookies[SESSION_COOKIE]
    with closing(client):
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
    before = _snapshot(served)
    with served.client() as replay:
        replay.cookies.set(SESSION_COOKIE, cookie)
        assert replay.post(f"/items/{item}/approve", data={"csrf": csrf}).status_code == 403
    assert _snapshot(served) == before


def test_console_action_by_get_head_options_put_or_delete_is_405_and_changes_nothing(served: Served) -> None:
    item = _held(served)
    before = _snapshot(served)
    client, csrf = logged_in(served)
    with closing(client):
        for path in (f"/items/{item}/approve", f"/items/{item}/reject", f"/items/{item}/retry", "/jobs/1/adopt",
                     "/jobs/1/resubmit", "/logout"):  # fmt: skip
            for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
                answer = client.request(method, path, params={"csrf": csrf, "confirm": "yes"})
                assert answer.status_code == 405, (method, path)
        assert client.post("/login", params={"token": TOKEN}).status_code == 403  # a token in the URL is no login
    assert _snapshot(served) == before


def test_console_beyond_loopback_every_read_route_needs_a_session(served: Served) -> None:
    item = _held(served)
    port = free_port()
    served.run(served.console.apply(served.console.prepare(f"0.0.0.0:{port}")))  # every interface
    assert not served.console.open_reads
    app = build_app(served.console)
    paths = [r.path for r in app.app.routes if isinstance(r, Route) and "GET" in (r.methods or ())]  # type: ignore[attr-defined]
    open_ones = {"/login", "/favicon.ico"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as stranger:
        for path in paths:
            url = path.replace("{item:int}", str(item))
            answer = stranger.get(url)
            if path in open_ones:
                assert answer.status_code in (200, 204), path
                continue
            assert answer.status_code in (303, 401), (path, answer.status_code)
            assert "quote" not in answer.text, path
            if answer.status_code == 303:
                assert answer.headers["location"].startswith("/login?next=")
            assert stranger.head(url).status_code in (303, 401), path
        # Another host name is fine here (a NAS name), but still no page without the login.
        assert stranger.get("/overview.json", headers={"host": "nas.example"}).status_code == 401


def test_console_loopback_refuses_host_names_a_rebinding_page_could_send(served: Served) -> None:
    with served.client() as client:
        for host in ("attacker.example", "127.0.0.1.nip.io", "localhost.", "evil.localhost", "", "[::ffff:7f00:1]"):
            assert client.get("/overview.json", headers={"host": host}).status_code == 421, host
        for host in ("127.0.0.1", f"127.0.0.1:{served.port}", "localhost", f"[::1]:{served.port}"):
            assert client.get("/overview.json", headers={"host": host}).status_code == 200, host
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw:  # HTTP/1.0: no Host at all
        raw.sendall(b"GET /overview.json HTTP/1.0\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 421")


def test_console_hostile_numbers_and_search_strings_are_answered_never_a_crash(served: Served) -> None:
    item = _held(served, "o'brien_100%")
    with served.client() as client:
        for query in ("before=-5", f"before={HUGE}", "before=%C2%B2", "before=1e9", "before=0x10", "before="):
            assert client.get(f"/items?{query}").status_code == 200, query
        assert client.get(f"/items/{HUGE}").status_code == 404
        assert client.get(f"/live/items/{HUGE}").status_code == 404
        # A NUL is dropped (no name holds one): no filter, every item.
        for name, found in (("o'brien", True), ("b_i", False), ("n%1", False), ("0%", True), ("_", True),
                            ('"; DROP', False), ("\\", False), ("%25", False), ("\x00", True)):  # fmt: skip
            page = client.get("/items", params={"name": name})
            assert page.status_code == 200 and (f'data-item="{item}"' in page.text) is found, name
        assert client.get("/items", params={"state": "x' OR '1'='1", "client": "%"}).status_code == 200
    client, csrf = logged_in(served)
    with closing(client):
        for path in (f"/items/{HUGE}/approve", f"/items/{HUGE}/retry", f"/jobs/{HUGE}/adopt", f"/jobs/{HUGE}/resubmit"):
            assert client.post(path, data={"csrf": csrf, "confirm": "yes"}).status_code == 404, path
        assert client.get("/", params={"next": HUGE}).status_code == 200


def test_console_approve_posted_from_two_tabs_at_once_sends_the_work_once(served: Served) -> None:
    item = _held(served)
    tabs = [logged_in(served) for _ in range(2)]
    answers: list[int] = []
    start = threading.Barrier(len(tabs) * 3)

    def click(client: httpx.Client, csrf: str) -> None:
        start.wait()
        answers.append(client.post(f"/items/{item}/approve", data={"csrf": csrf, "next": "/"}).status_code)

    threads = [threading.Thread(target=click, args=tab) for tab in tabs for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for client, _ in tabs:
        client.close()
    assert answers == [303] * 6
    events = [e.kind for e in served.ledger.timeline(item)]
    assert events.count("item approved") == 1
    assert served.ledger.jobs_of(item)[0].state == JobState.QUEUED


def _sidecar_traps(served: Served, secret: Path) -> tuple[int, Path]:
    item = _held(served, "trap")
    outbox = Path(served.ledger.item(item).outbox)
    outbox.mkdir(parents=True, exist_ok=True)
    os.mkfifo(outbox / "trap.facedub.status.json")  # opening it to read would wait for a writer forever
    (outbox / "trap.facedub.quote.json").symlink_to(secret)
    with (outbox / "trap.facedub.result.json").open("wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: huge to read, nothing on disk
    evil = '{"kind": "error", "message": "</pre><img src=x onerror=alert(1)>"}'
    (outbox / "trap.facedub.error.json").write_text(evil)
    return item, outbox / "trap.facedub.status.json"


def _release(fifo: Path) -> None:
    """Open the FIFO for writing without waiting: a reader stuck on it (the bug) goes on."""
    with contextlib.suppress(OSError):  # ENXIO: no reader waits on it, nothing to release
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_console_item_page_never_reads_a_fifo_a_symlink_or_a_huge_sidecar(served: Served, tmp_path: Path) -> None:
    secret = tmp_path / "console_token"
    secret.write_text("the-secret-credential-0123456789")
    item, fifo = _sidecar_traps(served, secret)
    before = {t.ident for t in threading.enumerate()}
    try:
        with served.client() as client:
            for _ in range(8):  # more than the default thread pool's workers
                started = time.monotonic()
                page = client.get(f"/items/{item}")
                took = time.monotonic() - started
                assert page.status_code == 200 and took < 1.5, took
        text = page.text
        assert "the-secret-credential" not in text
        assert "not shown: a symbolic link" in text and "not shown: not a regular file" in text
        assert "not shown: 67108864 bytes" in text
        assert "&lt;img src=x onerror=alert(1)&gt;" in text and "<img src=x" not in text

        def stuck() -> list[str]:  # a read left waiting on the FIFO would stay here for good
            return [t.name for t in threading.enumerate() if t.ident not in before and t.name != "console_0"]

        wait_for(lambda: not stuck(), timeout=5, what=f"no reader thread left behind: {stuck()}")
    finally:
        _release(fifo)


def test_console_stops_within_seconds_while_clients_trickle_a_request(served: Served) -> None:
    client, csrf = logged_in(served)
    with closing(client):
        cookie = client.cookies[SESSION_COOKIE]
    slow_head = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    slow_body = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    try:
        slow_head.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # headers never finish
        slow_body.sendall(
            b"POST /items/1/approve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + f"Cookie: {SESSION_COOKIE}={cookie}\r\nContent-Length: 1000\r\n\r\ncsrf={csrf}".encode()
        )  # a body that never finishes, held in the route that reads the form
        server = served.console._server
        assert server is not None
        state = server.server_state  # both connected, and the POST's route waits for the rest of its form
        wait_for(lambda: len(state.connections) >= 2 and state.tasks, timeout=10, what="the slow clients")
        started = time.monotonic()
        served.run(served.console.stop())
        took = time.monotonic() - started
    finally:
        slow_head.close()
        slow_body.close()
    assert took < 4.5, took


SCRIPTED = "<script>alert(1)</script>'\""
IMG = "<img src=x onerror=alert(1)>"


class _Markup(HTMLParser):
    """Every tag and attribute of a page, to find any that came from the ledger instead of the template."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _hostile_ledger(served: Served) -> tuple[int, int, int]:
    """A failed item, a quote and an ambiguous job, paid work for the chart: every name and text hostile."""
    ledger, parts = served.ledger, {"client": IMG}
    long_name = "x" * 240 + SCRIPTED[:6] + ".jpg"  # 250 bytes, markup at the end

    def add(key: str, state: JobState, detail: JobDetail) -> tuple[int, int]:
        names = (f"{SCRIPTED}.jpg", f"caf\udce9{IMG}.mp4", long_name)
        item = ledger.add_item(
            rule=f"<svg onload=alert(1)>{key}", provider="facedub", inbox=f"/srv/{IMG}/in", outbox=f"/srv/{IMG}/out",
            key=key, parts=parts,
            inputs=[InputFile(f"r{n}", f"/srv/in/{n}", name, "ab" * 32, 1, 1) for n, name in enumerate(names)],
            jobs=[PlannedJob(f"{SCRIPTED}{key}.facedub", f"k-{key}", {"duration": 5}, 1, state=state, detail=detail)],
        )  # fmt: skip
        return item.id, ledger.jobs_of(item.id)[0].id

    failed, job = add("failed", JobState.QUEUED, JobDetail())
    said = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, f"provider said {SCRIPTED}{IMG}")
    ledger.move_job(job, JobState.FAILED, detail=JobDetail(failure=said))
    ledger.move_item(failed, ItemState.FAILED)
    ledger.record_console_act(failed, job, "retry", {"done": IMG, "message": SCRIPTED})
    add("quote", JobState.HELD, JobDetail(held=HoldReason.APPROVAL))
    unclear, unclear_job = add("unclear", JobState.QUEUED, JobDetail())
    ledger.move_job(unclear_job, JobState.SUBMITTING, sent_at=1.0)
    ledger.move_job(unclear_job, JobState.AMBIGUOUS, detail=ledger.job(unclear_job).detail.but(
        held=HoldReason.AMBIGUOUS, candidates=('"><script>alert(2)</script>', IMG)))  # fmt: skip
    _, job = add("paid", JobState.QUEUED, JobDetail())
    ledger.move_job(job, JobState.SUBMITTING, sent_at=time.time() - 60)
    ledger.move_job(job, JobState.SUBMITTED, remote_id=IMG)
    remote = RemoteState(IMG, "completed", stage=SCRIPTED, credits_charged=3)
    done = ledger.job(job).detail.but(remote=remote, completed_at=time.time())
    ledger.move_job(job, JobState.REMOTE_DONE, detail=done)
    ledger.move_job(job, JobState.DELIVERED, detail=ledger.job(job).detail)
    return failed, unclear, unclear_job


def test_console_every_page_shows_hostile_names_and_messages_as_text(served: Served) -> None:
    failed, unclear, unclear_job = _hostile_ledger(served)
    client, csrf = logged_in(served)  # logged in: the pages carry their forms too
    with closing(client):
        refused = client.post(f"/jobs/{unclear_job}/adopt", data={"csrf": csrf, "remote_id": SCRIPTED,
                                                                       "next": f"/items/{unclear}"})  # fmt: skip
        assert refused.status_code == 303
        paths = ["/", "/live/overview", "/live/spend", "/items", f"/items/{failed}", f"/live/items/{failed}",
                 f"/items/{unclear}", f"/items?name={SCRIPTED}&client={IMG}&rule={IMG}&state={SCRIPTED}"]  # fmt: skip
        pages = {path: client.get(path) for path in paths}
        document = client.get("/overview.json")
    assert document.headers["content-type"] == "application/json" and document.json()["recent_failures"]
    assert "Refused: " in pages["/"].text and "alert(2)" in pages[f"/items/{unclear}"].text
    assert "caf\\xe9&lt;img" in pages["/items"].text and "&lt;img src=x onerror=alert(1)&gt;" in pages["/"].text
    for path, page in pages.items():
        assert page.status_code == 200, path
        markup = _Markup()
        markup.feed(page.text)
        scripts = [attrs for tag, attrs in markup.tags if tag == "script"]
        assert len(scripts) == (0 if path.startswith("/live") else 1) and all("nonce" in a for a in scripts), path
        for tag, attrs in markup.tags:
            assert tag not in ("img", "iframe", "object", "embed", "base", "form") or (
                tag == "form" and attrs.get("method") in ("get", "post") and str(attrs.get("action")).startswith("/")
            ), (path, tag, attrs)
            assert not [a for a in attrs if a.startswith("on")], (path, tag, attrs)
            assert not any(str(v).strip().lower().startswith("javascript:") for v in attrs.values()), (path, attrs)


def test_console_login_never_sends_the_browser_to_another_site(served: Served) -> None:
    for back in ("//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example", "https://evil.example",
                 "/%2F%2Fevil.example", " /x", "javascript:alert(1)"):  # fmt: skip
        with served.client() as client:
            csrf = csrf_in(client.get("/login").text)
            done = client.post("/login", data={"csrf": csrf, "token": TOKEN, "next": back})
            location = done.headers["location"]
            assert done.status_code == 303 and location.startswith("/") and not location.startswith("//"), back
            assert "\t" not in location and "\n" not in location and "\\" not in location, back


def test_console_idle_connections_are_capped_and_closed_so_the_daemon_keeps_its_files(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "REQUEST_WAIT", 0.5)  # instead of 10 s, for the test
    server = served.console._server
    assert server is not None
    idle: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS_MAX + 20):  # connect, send nothing: each would hold a descriptor forever
            idle.append(socket.create_connection(("127.0.0.1", served.port), timeout=5))
        state = server.server_state
        wait_for(lambda: len(state.connections) == CONNECTIONS_MAX, timeout=5, what="the cap")
        assert all(s.recv(10) == b"" for s in idle[-20:])  # beyond the cap: closed at once
        wait_for(lambda: not state.connections, timeout=5, what="idle connections to be closed")
        assert all(s.recv(10) == b"" for s in idle[:5])  # those within it: closed when they sent nothing
        assert httpx.get(f"{served.base}/overview.json", timeout=5).status_code == 200
    finally:
        for s in idle:
            s.close()
