"""What every provider's API client shares: its two HTTP clients, sending a request, retried reads.

A provider's client passes what differs as parameters: its auth headers, its rate windows (if its API
documents any), how long a retried read waits, and how to tell a 403 about one resource from a 403
about the account. The per-endpoint methods stay in the provider's own module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Self, TypeVar

import httpx

from ..errors import OddAnswer, ProviderError, RateLimited, Transient
from .http import (
    Listing,
    M,
    Once,
    backoff,
    decode_json,
    make_client,
    map_transport_errors,
    parse_answer,
    parse_records,
    raise_for_answer,
)
from .limits import RateWindows

RETRY_CAP = 5.0  # a retried read waits at most this long: the next poll asks again anyway
T = TypeVar("T")

RetryWait = Callable[[ProviderError, int, float], float]
"""Seconds to wait before reading again: ``(the error, the 1-based attempt that failed, retry_base)``."""


def backoff_wait(exc: ProviderError, attempt: int, base: float) -> float:
    """Exponential backoff with jitter from ``base``, whatever the error said."""
    return backoff(attempt, base=base, cap=RETRY_CAP)


def retry_after_or_backoff(exc: ProviderError, attempt: int, base: float) -> float:
    """A 429's Retry-After when it gives one, else exponential backoff with jitter from ``base``."""
    if isinstance(exc, RateLimited) and exc.retry_after:
        return exc.retry_after
    return backoff(attempt, base=base, cap=RETRY_CAP)


class ApiClient:
    """An async client for one account of one provider's API.

    ``_api`` carries the key; ``_bare`` carries no credentials, for other hosts (result links on a CDN,
    presigned upload URLs), which must never see the key. With ``windows``, every request waits for its
    rate window, and a 429 keeps that window shut for its Retry-After.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        auth_headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
        windows: RateWindows | None = None,
        retry_wait: RetryWait = backoff_wait,
        get_attempts: int = 3,
        retry_base: float = 0.5,
        on_answer: Callable[[int], None] | None = None,
        forbidden_resource: Callable[[str], bool] | None = None,
    ) -> None:
        self.provider = provider
        self._api = make_client(base_url, headers=auth_headers, transport=transport)
        self._bare = make_client(transport=transport)
        self.windows = windows
        self.retry_wait = retry_wait
        self.get_attempts = get_attempts
        self.retry_base = retry_base
        self.on_answer = on_answer  # metrics: every answer's status
        self.forbidden_resource = forbidden_resource  # see raise_for_answer
        self.once = Once()  # what keeps going wrong the same way is logged once

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._bare.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _raise_for_answer(self, response: httpx.Response, *, mutating: bool) -> None:
        raise_for_answer(
            self.provider, response, mutating=mutating, forbidden_resource=self.forbidden_resource, once=self.once
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        window: str | None = None,
        mutating: bool = False,
        counted: bool = False,
        **kw: Any,
    ) -> httpx.Response:
        """One request with the key; the answer, or its classified error.

        ``window``: the rate window the request counts in. ``counted``: the caller already waited for it.
        """
        if self.windows is not None and window is not None and not counted:
            await self.windows.acquire(window)
        with map_transport_errors(self.provider, mutating=mutating):
            response = await self._api.request(method, path, **kw)
        if self.on_answer is not None:
            self.on_answer(response.status_code)
        try:
            self._raise_for_answer(response, mutating=mutating)
        except RateLimited as limited:
            if self.windows is not None and window is not None:
                self.windows.hold_off(window, limited.retry_after or 1.0)
            raise
        return response

    async def _get(self, path: str, parse: Callable[[Any], T], *, window: str | None = None, what: str = "") -> T:
        """An idempotent GET's JSON, as ``parse`` reads it; retried a few times on transient failures,
        odd answers and 429s, unless the wait would be longer than :data:`RETRY_CAP` (the next poll
        asks again anyway)."""
        what = what or f"GET {path}"
        for attempt in range(1, self.get_attempts + 1):
            try:
                return parse(decode_json(self.provider, await self._send("GET", path, window=window), what))
            except OddAnswer as odd:
                self.once(f"{what}: odd answer", str(odd))
                failed: Transient | RateLimited = odd
            except (Transient, RateLimited) as exc:
                failed = exc
            wait = self.retry_wait(failed, attempt, self.retry_base)
            if attempt == self.get_attempts or wait > RETRY_CAP:
                raise failed
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _get_one(self, path: str, model: type[M], *, window: str | None = None, what: str = "") -> M:
        """A GET answering one object of the API document."""
        what = what or f"GET {path}"
        return await self._get(
            path, lambda data: parse_answer(self.provider, model, data, what), window=window, what=what
        )

    async def _get_list(self, path: str, model: type[M], *, window: str | None = None, what: str = "") -> Listing[M]:
        """A GET answering a list: read record by record, an unreadable record set aside (and logged once)."""
        what = what or f"GET {path}"
        listing = await self._get(
            path, lambda data: parse_records(self.provider, model, data, what), window=window, what=what
        )
        for odd in listing.unreadable:
            self.once(f"{what}: {odd.id or odd.problem}", odd.problem)
        return listing

    def _read(self, response: httpx.Response, model: type[M], what: str, *, mutating: bool) -> M:
        """The body of an answer that is not asked for again here (a POST); after a paid request an odd
        body leaves the outcome unknown."""
        try:
            data = decode_json(self.provider, response, what, mutating=mutating)
            return parse_answer(self.provider, model, data, what, mutating=mutating)
        except OddAnswer as odd:
            self.once(f"{what}: odd answer", str(odd))
            raise
