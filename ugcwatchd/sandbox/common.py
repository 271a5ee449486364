"""Parts the three sandbox services share: configuration, JSON errors, rate windows, tokens, faults.

The sandbox is written from the two API documents alone and imports nothing of the client, so that a
misreading in the client cannot hide behind the same misreading here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Clock = Callable[[], float]


@dataclass
class SandboxConfig:
    """Everything `ugcwatchd sandbox` can be told; docs/providers.md lists the knobs."""

    host: str = "127.0.0.1"
    port: int = 8787
    job_seconds: float = 8.0
    facedub_keys: list[str] = field(default_factory=lambda: ["fdb_sandbox"])
    dublab_keys: list[str] = field(default_factory=lambda: ["dl_sandbox"])
    facedub_credits: int = 150
    dublab_seconds: int = 3600
    fail_rate: float = 0.0
    seed: int | None = None
    upload_expires: int = 900
    rate_window: float = 60.0  # the documents' one-minute windows; shorter only to rehearse faster
    clock: Clock = time.time


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The documented error shape: ``{"error": "..."}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def json_body(request: Request) -> dict[str, Any] | Response:
    """The request's JSON object, or a 400 answer saying why it is not one."""
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError):
        return error(400, "Request body must be valid JSON")
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object")
    return body


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if there is one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class SlidingWindow:
    """A per-key sliding one-minute request log: exact, like the documents describe."""

    def __init__(self, limit: int, clock: Clock, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float | None:
        """Count one request; None when allowed, else the seconds until one is allowed again."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window - now
        hits.append(now)
        return None


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds, never 0 (a client would retry at once)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class TokenSigner:
    """HS256 JWTs for FaceDub's SSE stream; the sandbox is the only party that reads them."""

    def __init__(self, clock: Clock) -> None:
        self._secret = secrets.token_bytes(32)
        self._clock = clock

    def issue(self, subject: str, ttl: int = 3600) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": subject, "iat": int(self._clock()), "exp": int(self._clock()) + ttl}
        payload = _b64(json.dumps(claims).encode())
        signature = _b64(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"

    def subject(self, token: str) -> str | None:
        """The token's subject when it is ours and unexpired, else None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = _b64(hmac.new(self._secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return None
        if not isinstance(claims, dict) or claims.get("exp", 0) < self._clock():
            return None
        sub = claims.get("sub")
        return sub if isinstance(sub, str) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RequestStats:
    """Counts of answers by route and status, served at ``GET /sandbox/stats`` for tests and benchmarks."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, int]] = {}

    def record(self, route: str, status: int) -> None:
        by_status = self.answers.setdefault(route, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1


class _DroppedError(Exception):
    """Raised to make the server close the connection mid-answer (an injected fault)."""


class DropFilter(logging.Filter):
    """Keeps injected connection drops out of the server's error log; they are on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedError))


class FaultInjector:
    """ASGI middleware answering a share of requests with a 500, a 502 or a dropped connection.

    Half of the faults strike before the request is handled, half after it took effect with its
    answer thrown away, so that a client's handling of unknown outcomes is exercised.
    """

    def __init__(
        self,
        app: ASGIApp,
        rate: float,
        rng: random.Random,
        render: Callable[[int], Response],
        stats: RequestStats,
        route_of: Callable[[Scope], str],
    ) -> None:
        self.app = app
        self.rate = rate
        self.rng = rng
        self.render = render
        self.stats = stats
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.route_of(scope)
        if scope["path"].startswith("/sandbox/") or self.rng.random() >= self.rate:
            await self.app(scope, receive, _recording(send, self.stats, route))
            return
        kind = self.rng.choice(("500", "502", "drop"))
        # A stream never "takes effect" before it ends, so its faults always strike first.
        after = self.rng.random() < 0.5 and not route.endswith("/stream")
        if after:
            await self.app(scope, receive, _discard)
        self.stats.record(f"{route} (fault {'after' if after else 'before'})", 0 if kind == "drop" else int(kind))
        if kind == "drop":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
            raise _DroppedError()
        await self.render(int(kind))(scope, receive, send)


def _recording(send: Send, stats: RequestStats, route: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            stats.record(route, message["status"])
        await send(message)

    return wrapped


async def _discard(message: Message) -> None:
    """Swallows an answer that the fault injector decided is lost on the way."""
