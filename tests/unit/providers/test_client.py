"""The plumbing both API clients share: the retry wait policies and the 403 hook, on canned answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.errors import AuthRejected, Forbidden, OddAnswer, RateLimited, Transient, UploadRefused
from ugcwatchd.providers.client import RETRY_CAP, backoff_wait, retry_after_or_backoff
from ugcwatchd.providers.dublab import DubLabClient
from ugcwatchd.providers.facedub import FaceDubClient
from ugcwatchd.providers.limits import RateWindows

KEY = SecretStr("k_client_test")
USAGE = {"plan": "agency", "credits_used": 0, "credits_limit": 150, "credits_remaining": 150}
ME = {"id": "u1", "seconds": 60}
ANOTHER_USERS = {"error": "Forbidden: file belongs to another user"}


def answers(*responses: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport giving ``responses`` in turn (the last one from then on), and the requests it saw."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses[min(len(seen), len(responses)) - 1]

    return httpx.MockTransport(handle), seen


def test_backoff_wait_429_with_retry_after_ignores_it() -> None:
    limited = RateLimited("facedub", "slow down", retry_after=30.0)
    for attempt in (1, 2, 3):
        ceiling = min(RETRY_CAP, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= backoff_wait(limited, attempt, 0.5) <= ceiling


def test_retry_after_or_backoff_429_with_retry_after_waits_that_long() -> None:
    assert retry_after_or_backoff(RateLimited("dublab", "slow down", retry_after=7.0), 1, 0.5) == 7.0


@pytest.mark.parametrize(
    "exc", [RateLimited("dublab", "slow down"), RateLimited("dublab", "now", retry_after=0.0), Transient("dublab", "x")]
)
def test_retry_after_or_backoff_without_retry_after_backs_off(exc: Exception) -> None:
    assert isinstance(exc, RateLimited | Transient)
    assert 0.25 <= retry_after_or_backoff(exc, 1, 0.5) <= 0.5


def test_clients_wait_policy_facedub_backoff_dublab_retry_after() -> None:
    fd = FaceDubClient("https://fd.test", KEY)
    dl = DubLabClient("https://dl.test", KEY)
    assert (fd.retry_wait, dl.retry_wait) == (backoff_wait, retry_after_or_backoff)
    assert dl.windows is None and isinstance(fd.windows, RateWindows)


@pytest.mark.anyio
async def test_get_transient_then_ok_retries_and_counts_every_answer() -> None:
    transport, seen = answers(httpx.Response(503, text="busy"), httpx.Response(200, json=USAGE))
    statuses: list[int] = []
    async with FaceDubClient(
        "https://fd.test",
        KEY,
        transport=transport,
        windows=RateWindows({}),
        retry_base=0.001,
        on_answer=statuses.append,
    ) as fd:
        usage = await fd.usage()
    assert usage.credits_remaining == 150
    assert (len(seen), statuses) == (2, [503, 200])


@pytest.mark.anyio
async def test_get_429_on_every_attempt_raises_after_get_attempts() -> None:
    transport, seen = answers(httpx.Response(429, json={"error": "Too many requests"}, headers={"Retry-After": "0"}))
    async with DubLabClient("https://dl.test", KEY, transport=transport, get_attempts=2, retry_base=0.001) as dl:
        with pytest.raises(RateLimited):
            await dl.me()
    assert len(seen) == 2


@pytest.mark.anyio
async def test_dublab_client_403_about_another_users_file_is_forbidden() -> None:
    transport, _ = answers(httpx.Response(403, json=ANOTHER_USERS))
    async with DubLabClient("https://dl.test", KEY, transport=transport) as dl:
        with pytest.raises(Forbidden):
            await dl.start_dub("f1")


@pytest.mark.anyio
async def test_facedub_client_403_with_the_same_words_is_auth_rejected() -> None:
    transport, _ = answers(httpx.Response(403, json=ANOTHER_USERS))
    async with FaceDubClient("https://fd.test", KEY, transport=transport, windows=RateWindows({})) as fd:
        with pytest.raises(AuthRejected):
            await fd.usage()


@pytest.mark.anyio
async def test_dublab_client_upload_403_whatever_it_says_is_upload_refused(tmp_path: Path) -> None:
    """The upload host speaks for one presigned URL, never for the account or another user's file."""
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"\0" * 64)
    transport, seen = answers(httpx.Response(403, json=ANOTHER_USERS))
    async with DubLabClient("https://dl.test", KEY, transport=transport) as dl:
        with pytest.raises(UploadRefused) as refused:
            await dl.upload("https://uploads.test/put?sig=1", media, "video/mp4")
    assert refused.value.status == 403 and not isinstance(refused.value, AuthRejected | Forbidden)
    assert "apikey" not in seen[0].headers  # the bare client: no key on the upload host


@pytest.mark.anyio
async def test_clients_send_their_own_auth_header_and_no_other() -> None:
    transport, seen = answers(httpx.Response(200, json=USAGE))
    async with FaceDubClient("https://fd.test", KEY, transport=transport, windows=RateWindows({})) as fd:
        await fd.usage()
    transport, seen_dl = answers(httpx.Response(200, json=ME))
    async with DubLabClient("https://dl.test", KEY, transport=transport) as dl:
        await dl.me()
    assert seen[0].headers["authorization"] == "Bearer k_client_test" and "apikey" not in seen[0].headers
    assert seen_dl[0].headers["apikey"] == "k_client_test" and "authorization" not in seen_dl[0].headers


@pytest.mark.anyio
async def test_get_429_with_a_retry_after_past_retry_cap_raises_at_once_capped() -> None:
    """A read is not slept on for minutes (the next poll asks again), and never for a day."""
    transport, seen = answers(httpx.Response(429, json={"error": "slow"}, headers={"Retry-After": "86400"}))
    async with DubLabClient("https://dl.test", KEY, transport=transport, get_attempts=3) as dl:
        with pytest.raises(RateLimited) as limited:
            await asyncio.wait_for(dl.me(), timeout=2)
    assert len(seen) == 1 and limited.value.retry_after == 600.0


@pytest.mark.anyio
async def test_get_odd_answer_then_ok_retries_like_a_5xx() -> None:
    page = httpx.Response(200, text="<!DOCTYPE html><html></html>", headers={"Content-Type": "text/html"})
    transport, seen = answers(page, httpx.Response(200, json=USAGE))
    async with FaceDubClient(
        "https://fd.test", KEY, transport=transport, windows=RateWindows({}), retry_base=0.001
    ) as fd:
        assert (await fd.usage()).credits_remaining == 150
    assert len(seen) == 2


@pytest.mark.anyio
async def test_get_odd_answer_every_time_raises_odd_answer_not_a_validation_error() -> None:
    transport, seen = answers(httpx.Response(200, json={**USAGE, "credits_remaining": 149.5}))
    async with FaceDubClient(
        "https://fd.test", KEY, transport=transport, windows=RateWindows({}), retry_base=0.001
    ) as fd:
        with pytest.raises(OddAnswer, match=r"credits_remaining: input should be a valid integer \(got 149.5\)"):
            await fd.usage()
    assert len(seen) == 3


@pytest.mark.anyio
async def test_rate_windows_hold_off_of_one_class_never_delays_another() -> None:
    windows = RateWindows({"POST /jobs": 10, "GET /jobs/*": 60, "other": 120})
    windows.hold_off("POST /jobs", 600)
    held = asyncio.create_task(windows.acquire("POST /jobs"))
    await asyncio.sleep(0)  # it holds the POST class now
    try:
        await asyncio.wait_for(asyncio.gather(windows.acquire("GET /jobs/*"), windows.acquire("other")), timeout=1)
        assert not held.done()
    finally:
        held.cancel()
