"""The sandbox's sliding window and SSE tokens, on a clock the test moves."""

from __future__ import annotations

from tests.support import ManualClock
from ugcwatchd.sandbox.common import SlidingWindow, TokenSigner, retry_after


def test_window_under_limit_allows() -> None:
    window = SlidingWindow(3, ManualClock(0))
    assert [window.hit("u") for _ in range(3)] == [None, None, None]


def test_window_over_limit_tells_wait_until_oldest_leaves() -> None:
    clock = ManualClock(1000)
    window = SlidingWindow(2, clock)
    window.hit("u")
    clock.advance(20)
    window.hit("u")
    assert window.hit("u") == 40
    clock.advance(40)
    assert window.hit("u") is None  # the first hit slid out exactly at 60 s
    assert window.hit("u") == 20


def test_window_refused_requests_do_not_count() -> None:
    clock = ManualClock(0)
    window = SlidingWindow(1, clock)
    window.hit("u")
    for _ in range(5):
        assert window.hit("u") is not None
    clock.advance(60)
    assert window.hit("u") is None


def test_window_keys_are_independent() -> None:
    window = SlidingWindow(1, ManualClock(0))
    assert window.hit("a") is None
    assert window.hit("b") is None
    assert window.hit("a") is not None


def test_retry_after_rounds_up_and_is_never_zero() -> None:
    assert retry_after(0.01) == {"Retry-After": "1"}
    assert retry_after(9.2) == {"Retry-After": "10"}


def test_token_signer_round_trip_tamper_and_expiry() -> None:
    clock = ManualClock(0)
    signer = TokenSigner(clock)
    token = signer.issue("user_1", ttl=10)
    assert signer.subject(token) == "user_1"
    head, payload, sig = token.split(".")
    assert signer.subject(f"{head}.{payload}.{sig[:-2]}AA") is None
    assert signer.subject(TokenSigner(clock).issue("user_1")) is None  # another sandbox's secret
    assert signer.subject("fdb_sandbox") is None
    clock.advance(11)
    assert signer.subject(token) is None
