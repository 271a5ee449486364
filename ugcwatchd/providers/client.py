"""What every provider's API client shares: its two HTTP clients, sending a request, retried reads.

A provider's client passes what differs as parameters: its auth headers, its rate windows (if its API
documents any), how long a retried read waits, and how to tell a 403 about one resource from a 403
about the account. The per-endpoint methods stay in the provider's own module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Self

import httpx

from ..errors import ProviderError, RateLimited, Transient
from .http import backoff, make_client, map_transport_errors, raise_for_answer
from .limits import RateWindows

RETRY_CAP = 5.0  # a retried read waits at most this long: the next poll asks again anyway

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

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._bare.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _raise_for_answer(self, response: httpx.Response, *, mutating: bool) -> None:
        raise_for_answer(self.provider, response, mutating=mutating, forbidden_resource=self.forbidden_resource)

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

    async def _get(self, path: str, *, window: str | None = None) -> Any:
        """An idempotent GET's JSON, retried a few times on transient failures and 429s."""
        for attempt in range(1, self.get_attempts + 1):
            try:
                return (await self._send("GET", path, window=window)).json()
            except (Transient, RateLimited) as exc:
                if attempt == self.get_attempts:
                    raise
                await asyncio.sleep(self.retry_wait(exc, attempt, self.retry_base))
        raise AssertionError("unreachable")
