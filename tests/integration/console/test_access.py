"""Who may see and do what, over real HTTP: open reads on loopback, a login for the rest, 403 and 405
for every action that lacks a session, a CSRF token, a configured token, or comes as a GET."""

from __future__ import annotations

import re
from contextlib import closing

from ugcwatchd.ledger import InputFile, PlannedJob

from .conftest import TOKEN, Served, csrf_in, logged_in


def _item(served: Served) -> int:
    item = served.ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox="/in",
        outbox="/out",
        key="alice",
        inputs=[InputFile("photo", "/in/alice.jpg", "alice.jpg", "ab" * 32, 1, 1)],
        jobs=[PlannedJob("alice.facedub", "k1", {"duration": 5}, 1)],
    )
    return item.id


def test_console_read_pages_are_open_on_loopback_with_a_strict_policy(served: Served) -> None:
    item = _item(served)
    with served.client() as client:
        for path in ("/", "/items", "/items?name=alice", f"/items/{item}", "/live/overview", "/overview.json"):
            assert client.get(path).status_code == 200, path
        page = client.get("/")
        nonce = re.search(r'<script nonce="([^"]+)"', page.text)
        assert nonce is not None and f"script-src 'nonce-{nonce.group(1)}'" in page.headers["content-security-policy"]
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert page.headers["server-timing"].startswith("app;dur=")
        assert client.get(f"/items/{item + 1}").status_code == 404


def test_console_answers_only_to_a_loopback_host_name_there(served: Served) -> None:
    with served.client() as client:
        assert client.get("/", headers={"host": "attacker.example"}).status_code == 421
        assert client.get("/", headers={"host": f"localhost:{served.port}"}).status_code == 200


def test_console_beyond_loopback_every_page_needs_a_session(served: Served) -> None:
    served.console.open_reads = False  # what listening on 0.0.0.0 or a LAN address sets
    with served.client() as stranger:
        first = stranger.get("/items")
        assert first.status_code == 303 and first.headers["location"] == "/login?next=/items"
        assert stranger.get("/live/overview").status_code == 401
        assert stranger.get("/overview.json").status_code == 401
        assert stranger.get("/login").status_code == 200
    client, _ = logged_in(served)
    with closing(client):
        assert client.get("/items").status_code == 200 and client.get("/overview.json").status_code == 200


def test_console_actions_need_a_session_the_csrf_token_and_a_post(served: Served) -> None:
    item = _item(served)
    before = served.ledger.timeline(item)
    with served.client() as stranger:
        assert stranger.post(f"/items/{item}/approve", data={"csrf": "guess"}).status_code == 403
    client, csrf = logged_in(served)
    with closing(client):
        assert client.post(f"/items/{item}/approve", data={"csrf": csrf + "x"}).status_code == 403
        assert client.post(f"/items/{item}/approve", content=f"csrf={csrf}").status_code == 403  # no form type
        for path in (f"/items/{item}/approve", f"/items/{item}/reject", f"/items/{item}/retry", "/jobs/1/adopt"):
            assert client.get(path).status_code == 405
        assert client.post(f"/items/{item}/approve", data={"csrf": csrf}).status_code == 303  # refused: not held
    assert served.ledger.timeline(item) == before


def test_console_login_refuses_a_wrong_token_then_waits_after_ten(served: Served) -> None:
    with served.client() as client:
        csrf = csrf_in(client.get("/login").text)
        assert client.post("/login", data={"csrf": "forged", "token": TOKEN}).status_code == 403
        for _ in range(10):
            wrong = client.post("/login", data={"csrf": csrf, "token": "not-the-token-at-all"})
            assert wrong.status_code == 403 and "That is not the console token." in wrong.text
        assert client.post("/login", data={"csrf": csrf, "token": TOKEN}).status_code == 429
        assert "ugcwatchd_session" not in client.cookies


def test_console_session_cookie_flags_and_logout(served: Served) -> None:
    with served.client() as client:
        csrf = csrf_in(client.get("/login").text)
        done = client.post("/login", data={"csrf": csrf, "token": f"  {TOKEN}"[2:], "next": "//elsewhere.example"})
        assert done.status_code == 303 and done.headers["location"] == "/"  # never sent to another site
        cookie = done.headers["set-cookie"]
        assert cookie.startswith("ugcwatchd_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert "Path=/" in cookie and TOKEN not in cookie
        session_csrf = csrf_in(client.get("/").text)
        assert client.post("/logout", data={"csrf": "wrong"}).status_code == 403
        assert client.post("/logout", data={"csrf": session_csrf}).status_code == 303
        assert 'action="/logout"' not in client.get("/").text


def test_console_without_a_token_has_actions_off_and_says_how_to_set_one(tokenless: Served) -> None:
    item = _item(tokenless)
    with tokenless.client() as client:
        assert "UGCWATCHD_CONSOLE_TOKEN" in client.get("/").text
        refused = client.post(f"/items/{item}/approve", data={"csrf": "x"})
        assert refused.status_code == 403 and "No console token is set" in refused.text
        assert client.post("/login", data={"csrf": "x", "token": ""}).status_code == 403
        assert "<form" not in client.get("/login").text
