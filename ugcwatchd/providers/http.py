"""HTTP plumbing shared by the provider clients: the client factory, error mapping, Retry-After.

This is the one place where httpx's exceptions and status codes become the project's
:class:`~ugcwatchd.errors.ProviderError` classes, and where secrets are kept out of messages.
"""

from __future__ import annotations

import email.utils
import random
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from .. import __version__
from ..errors import (
    AuthRejected,
    Conflict,
    Forbidden,
    NotFound,
    NotUploaded,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
)
from ..urls import https_or_loopback

USER_AGENT = f"ugcwatchd/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
BACKOFF_CAP = 300.0  # exponential backoff is capped at 5 minutes


def make_client(
    base_url: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
) -> httpx.AsyncClient:
    """The one way this project builds an HTTP client; tests pass ``transport=``."""
    if transport is None:
        # Nagle's algorithm stalls small request bodies behind delayed ACKs; every call here is small.
        transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
    )


def check_fetchable(url: str) -> None:
    """Only https is fetched, except loopback (the sandbox): a result URL must not travel in clear."""
    if https_or_loopback(url):
        return
    raise Rejected(
        "download", f"refusing to fetch {_safe_url(url)}: only https URLs are fetched (http only on loopback)"
    )


def _safe_url(url: str) -> str:
    """A URL without its query string, which may carry a signature."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff(attempt: int, base: float = 1.0, cap: float = BACKOFF_CAP, rng: random.Random | None = None) -> float:
    """Seconds to wait before try ``attempt`` (1-based): exponential, capped, with full jitter."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def provider_message(response: httpx.Response) -> str:
    """The provider's own error text: ``{"error": …}``, ``{"detail": …}``, or the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return str(body)[:300]


def raise_for_answer(
    provider: str,
    response: httpx.Response,
    *,
    mutating: bool,
    forbidden_resource: Callable[[str], bool] | None = None,
) -> None:
    """Raise the classified error for a non-2xx answer.

    A 403 refuses the account (:class:`AuthRejected`: check the plan and the key), unless
    ``forbidden_resource`` says from the provider's message that it refuses one resource only
    (:class:`Forbidden`, e.g. a file of another user), which a client of such a provider passes.
    """
    status = response.status_code
    if status < 400:
        return
    said = provider_message(response)
    kw: dict[str, Any] = {"status": status, "provider_error": said}
    if status == 400 or status == 422:
        raise Rejected(provider, f"{provider} rejected the request: {said}", **kw)
    if status == 401:
        raise AuthRejected(
            provider, f"{provider} rejected the API key ({status}): {said}", remedy="check the key", **kw
        )
    if status == 402:
        raise OutOfCredits(provider, f"{provider} has too few credits: {said}", **kw)
    if status == 403:
        if forbidden_resource is not None and forbidden_resource(said):
            raise Forbidden(provider, f"{provider} refused: {said}", **kw)
        raise AuthRejected(
            provider, f"{provider} refused the account ({status}): {said}", remedy="check the plan and the key", **kw
        )
    if status == 404:
        raise NotFound(provider, f"{provider} does not know it: {said}", **kw)
    if status == 409:
        raise Conflict(provider, f"{provider}: {said}", **kw)
    if status == 412:
        raise NotUploaded(provider, f"{provider}: {said}", **kw)
    if status == 429:
        wait = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimited(provider, f"{provider} asks us to slow down: {said}", retry_after=wait, **kw)
    # 5xx and anything unexpected: the request may or may not have taken effect.
    raise Transient(provider, f"{provider} answered {status}: {said}", outcome_unknown=mutating, **kw)


@contextmanager
def map_transport_errors(provider: str, *, mutating: bool) -> Iterator[None]:
    """httpx's transport errors as :class:`Transient`; unknown outcome once the request may be out."""
    try:
        yield
    except ProviderError:
        raise
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        # Nothing reached the provider: safe to send again.
        raise Transient(provider, f"cannot reach {provider}: {_describe(exc)}") from None
    except httpx.TransportError as exc:
        raise Transient(provider, f"{provider} did not answer: {_describe(exc)}", outcome_unknown=mutating) from None


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc).strip() or type(exc).__name__
    try:
        return f"{text} ({_safe_url(str(exc.request.url))})"
    except RuntimeError:  # no request attached
        return text
