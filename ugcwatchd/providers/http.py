"""HTTP plumbing shared by the provider clients: the client factory, error mapping, Retry-After.

This is the one place where httpx's exceptions, status codes and unreadable bodies (pydantic's
``ValidationError``, JSON errors) become the project's :class:`~ugcwatchd.errors.ProviderError`
classes, and where secrets are kept out of messages.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from .. import __version__
from ..errors import (
    AuthRejected,
    Conflict,
    DownloadFailed,
    Forbidden,
    NotFound,
    NotUploaded,
    OddAnswer,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
    UploadRefused,
)

USER_AGENT = f"ugcwatchd/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
BACKOFF_CAP = 300.0  # exponential backoff is capped at 5 minutes
RETRY_AFTER_CAP = 600.0  # a longer Retry-After (86400 has been seen) is waited out for 10 minutes at most

log = logging.getLogger("ugcwatchd.providers")
M = TypeVar("M", bound=BaseModel)


class Once:
    """Logs a message the first time its key comes up, and at debug level after that."""

    def __init__(self, limit: int = 512) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, key: str, message: str) -> None:
        if key in self._seen:
            log.debug("%s", message)
            return
        if len(self._seen) >= self._limit:  # bounded: a provider inventing new oddities cannot grow it
            self._seen.clear()
        self._seen.add(key)
        log.warning("%s", message)


ONCE = Once()  # for requests made outside an API client (presigned uploads, result links)


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


_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")


def local_host(host: str) -> bool:
    """This machine: loopback, the unspecified address, ``localhost`` and the numeric forms a resolver
    takes for them (``127.1``, ``0x7f.1``, ``2130706433``)."""
    host = host.lower().rstrip(".").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return bool(_NUMERIC_HOST.fullmatch(host))  # not a plain address, yet numeric: never fetched blindly
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def on_loopback(base_url: str) -> bool:
    """Whether a provider's own base URL is on this machine (the sandbox)."""
    return local_host(urlsplit(base_url).hostname or "")


def fetchable(url: str, *, loopback: bool) -> bool:
    """https only; this machine (over http or https) only when ``loopback`` (the provider is on it too)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host or parts.scheme not in ("http", "https"):
        return False
    if local_host(host):
        return loopback
    return parts.scheme == "https"


def check_fetchable(url: str, *, provider: str = "download", loopback: bool) -> None:
    """Raise :class:`Rejected` unless :func:`fetchable`: an answer must not make us read local services."""
    if fetchable(url, loopback=loopback):
        return
    raise Rejected(
        provider,
        f"refusing to fetch {safe_url(url)}: only https URLs are fetched, and this machine only while the "
        "provider itself is on it",
    )


def safe_url(url: str) -> str:
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


_XML_ERROR = re.compile(r"<Code>([^<]*)</Code>.*?<Message>([^<]*)</Message>", re.DOTALL)


def provider_message(response: httpx.Response) -> str:
    """The provider's own error text: ``{"error": …}``, ``{"detail": …}``, S3's ``<Code>: <Message>``,
    or the start of the body."""
    try:
        body: Any = response.json()
    except ValueError:
        xml = _XML_ERROR.search(response.text)
        if xml:
            return f"{xml.group(1)}: {xml.group(2)}"
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
    once: Once = ONCE,
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
        if wait is not None and wait > RETRY_AFTER_CAP:
            once(
                f"{provider}: long Retry-After",
                f"{provider} asks us to wait {wait:.0f} s (Retry-After); waiting {RETRY_AFTER_CAP:.0f} s at most",
            )
            wait = RETRY_AFTER_CAP
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
        return f"{text} ({safe_url(str(exc.request.url))})"
    except RuntimeError:  # no request attached
        return text


def raise_for_upload(provider: str, response: httpx.Response) -> None:
    """A presigned upload host's refusal (400, 401, 403: an expired URL, a signature mismatch) is about
    that one URL, never the account: :class:`UploadRefused`. Anything else as :func:`raise_for_answer`."""
    status = response.status_code
    if status in (400, 401, 403):
        said = provider_message(response)
        raise UploadRefused(
            provider, f"the upload host refused the upload ({status}): {said}", status=status, provider_error=said
        )
    if status >= 300:
        raise_for_answer(provider, response, mutating=False)


def raise_for_download(provider: str, url: str, status: int, said: str) -> NoReturn:
    """A result link that answered anything but 200: 400/422 refuse it for good (``download_refused``);
    everything else (a redirect that cannot be followed, 401, 403, 404, 429, 5xx) is a failed download,
    tried again later. The link is fetched without the key, so no answer of it says anything of the account."""
    kw: dict[str, Any] = {"status": status, "provider_error": said or None}
    if status in (400, 422):
        raise Rejected(provider, f"the result host refused {safe_url(url)} ({status}): {said}", **kw)
    raise DownloadFailed(
        provider, f"the result host answered {status} for {safe_url(url)}: {said or 'no reason'}", **kw
    )


# -- answers that are not what the document describes --------------------------------------------------


@dataclass(frozen=True)
class Unreadable:
    """One record of a list answer that could not be read: its raw value and what was wrong with it."""

    raw: object
    problem: str

    def field(self, name: str) -> object:
        """A field of the raw record, or None."""
        return self.raw.get(name) if isinstance(self.raw, dict) else None

    @property
    def id(self) -> str | None:
        value = self.field("id")
        return value if isinstance(value, str) and value else None

    def number(self, name: str) -> float | None:
        """A numeric field of the raw record, or None."""
        value = self.field(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Listing(list[M]):
    """The readable records of a list answer; ``unreadable`` holds the others, each skipped alone."""

    unreadable: tuple[Unreadable, ...] = ()


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problems(exc: ValidationError) -> str:
    """What pydantic found wrong, in a few words: ``created_at: should be a valid integer (got 1.5)``."""
    said = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "the body"
        if error["type"] == "missing":
            said.append(f"{where}: missing")
        else:
            said.append(f"{where}: {error['msg'][0].lower()}{error['msg'][1:]} (got {_shown(error.get('input'))})")
    more = len(exc.errors()) - 3
    return "; ".join(said) + (f"; and {more} more" if more > 0 else "")


def decode_json(provider: str, response: httpx.Response, what: str, *, mutating: bool = False) -> Any:
    """The answer's JSON, or :class:`OddAnswer` (an HTML page, a cut-off body)."""
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        kind = response.headers.get("content-type", "no Content-Type").split(";")[0]
        raise OddAnswer(
            provider,
            f"{provider} answered {what} with {response.status_code} but not with JSON ({kind}): "
            f"{_shown(response.text.strip())}",
            status=response.status_code,
            outcome_unknown=mutating,
        ) from None


def parse_answer(provider: str, model: type[M], data: Any, what: str, *, mutating: bool = False) -> M:
    """``data`` as ``model``, or :class:`OddAnswer` saying what was wrong with it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise OddAnswer(
            provider,
            f"{provider} answered {what} with a body its document does not describe: {problems(exc)}",
            outcome_unknown=mutating,
        ) from None


def parse_records(provider: str, model: type[M], data: Any, what: str) -> Listing[M]:
    """A list answer read record by record: one odd record is set aside, never the whole answer.

    Not a list at all (``{}``, an object): :class:`OddAnswer`.
    """
    if not isinstance(data, list):
        raise OddAnswer(
            provider, f"{provider} answered {what} with {type(data).__name__} {_shown(data)} where a list belongs"
        )
    listing: Listing[M] = Listing()
    unreadable = []
    for n, record in enumerate(data):
        try:
            listing.append(model.model_validate(record))
        except ValidationError as exc:
            known = record.get("id") if isinstance(record, dict) else None
            name = f"record {known}" if isinstance(known, str) else f"record #{n + 1}"
            unreadable.append(Unreadable(record, f"{provider}: {what}: {name} is unreadable: {problems(exc)}"))
    listing.unreadable = tuple(unreadable)
    return listing
