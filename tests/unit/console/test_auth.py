"""The console's access rules in isolation: the token compare, sessions, CSRF tokens, cookies, hosts."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tests.support import ManualClock
from ugcwatchd.console.auth import (
    SESSION_IDLE,
    SESSIONS_KEPT,
    Sessions,
    cookie_flags,
    csrf_ok,
    is_loopback,
    same_secret,
    split_host,
)

TOKEN = SecretStr("a-console-token-0123456789")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a-console-token-0123456789", True),
        ("a-console-token-012345678", False),  # a prefix
        ("a-console-token-01234567890", False),  # longer
        ("A-console-token-0123456789", False),
        ("", False),
        (" a-console-token-0123456789", False),
        ("a-console-token-\udce9", False),  # not even encodable: refused, never an exception
    ],
)
def test_auth_token_compare_accepts_only_the_token(given: str, expected: bool) -> None:
    assert same_secret(given, TOKEN) is expected


def test_auth_cookie_flags_are_httponly_samesite_strict_for_the_whole_console() -> None:
    flags = cookie_flags()
    assert flags["httponly"] is True and flags["samesite"] == "strict" and flags["path"] == "/"


def test_auth_session_has_its_own_csrf_token_compared_exactly() -> None:
    sessions = Sessions()
    one, two = sessions.create(TOKEN), sessions.create(TOKEN)
    assert one.id != two.id and one.csrf != two.csrf and len(one.csrf) >= 32
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, two.csrf)
    assert not csrf_ok(one, None) and not csrf_ok(one, "") and not csrf_ok(None, one.csrf)
    assert not csrf_ok(one, one.csrf[:-1])


def test_auth_session_ends_when_the_token_changes() -> None:
    sessions = Sessions()
    session = sessions.create(TOKEN)
    assert sessions.get(session.id, TOKEN) is session
    assert sessions.get(session.id, SecretStr("another-token-0123456789")) is None
    assert sessions.get(session.id, TOKEN) is None  # ended for good, not only while the token differs
    assert sessions.get(sessions.create(TOKEN).id, None) is None  # no token configured: nobody is logged in


def test_auth_session_unused_for_twelve_hours_ends() -> None:
    clock = ManualClock(1000.0)
    sessions = Sessions(clock=clock)
    session = sessions.create(TOKEN)
    clock.advance(SESSION_IDLE - 1)
    assert sessions.get(session.id, TOKEN) is session  # used: the idle time starts again
    clock.advance(SESSION_IDLE + 1)
    assert sessions.get(session.id, TOKEN) is None


def test_auth_sessions_beyond_the_limit_end_the_least_recently_used() -> None:
    sessions = Sessions()
    first = sessions.create(TOKEN)
    second = sessions.create(TOKEN)
    sessions.get(first.id, TOKEN)  # first is used again: second is now the oldest
    for _ in range(SESSIONS_KEPT - 1):
        sessions.create(TOKEN)
    assert len(sessions) == SESSIONS_KEPT
    assert sessions.get(first.id, TOKEN) is first and sessions.get(second.id, TOKEN) is None


def test_auth_login_form_token_is_bound_to_its_cookie_nonce() -> None:
    sessions = Sessions()
    nonce, csrf = sessions.login_nonce()
    other, _ = sessions.login_nonce()
    assert sessions.login_form_ok(nonce, csrf)
    assert not sessions.login_form_ok(other, csrf)
    assert not sessions.login_form_ok(None, csrf) and not sessions.login_form_ok(nonce, "")
    assert not Sessions().login_form_ok(nonce, csrf)  # signed with this process's secret only


def test_auth_ten_wrong_tokens_in_a_minute_make_logins_wait() -> None:
    clock = ManualClock(0.0)
    sessions = Sessions(clock=clock)
    for _ in range(10):
        assert sessions.may_try()
        sessions.failed()
    assert not sessions.may_try()
    clock.advance(61)
    assert sessions.may_try()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("nas.example", False),
        ("localhost.evil.example", False),
        ("evil.localhost", False),  # some browsers ask DNS for it: a rebinding name
        ("localhost.", False),
    ],
)
def test_auth_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("header", "host"),
    [("127.0.0.1:8790", "127.0.0.1"), ("[::1]:8790", "::1"), ("localhost", "localhost"), ("::1", "::1")],
)
def test_auth_split_host_drops_the_port(header: str, host: str) -> None:
    assert split_host(header) == host
