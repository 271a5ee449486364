"""Parts the three sandbox services share: configuration, JSON errors, rate windows, tokens, faults.

The sandbox is written from the two API documents alone and imports nothing of the client, so that a
misreading in the client cannot hide behind the same misreading here.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Clock = Callable[[], float]

# How FaceDub's result links (``output_url``) answer: ``--download-mode``.
DOWNLOAD_MODES = ("normal", "slow", "huge", "redirect-http", "redirect-html", "truncated", "error")

# Scope keys by which the fault injector and a service tell each other about one request.
AFTER_FAULT = "ugcwatchd.sandbox.after_fault"  # the fault injector will throw this answer away
OWN_ANSWER = "ugcwatchd.sandbox.own_answer"  # ... unless the service says its answer is the fault


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
    # Rehearsal knobs; each default leaves the documented behaviour untouched.
    late_create: float = 0.0  # FaceDub POST /jobs answers 504 and creates the job this many seconds later
    answer_delay: float = 0.0  # paid requests take effect at once; their answer waits this many seconds
    odd_answers: float = 0.0  # share of list/account GETs answered with a malformed 200
    retry_after: int | None = None  # the Retry-After of every 429; None: the honest value
    download_mode: str = "normal"  # one of DOWNLOAD_MODES
    clock: Clock = time.time

    def __post_init__(self) -> None:
        if self.download_mode not in DOWNLOAD_MODES:
            raise ValueError(f"download_mode must be one of {', '.join(DOWNLOAD_MODES)}, not {self.download_mode!r}")
        if self.late_create < 0 or self.answer_delay < 0 or (self.retry_after is not None and self.retry_after < 0):
            raise ValueError("late_create, answer_delay and retry_after cannot be negative")
        if not 0 <= self.odd_answers <= 1:
            raise ValueError("odd_answers is a share, from 0 to 1")


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


def retry_after(seconds: float, told: int | None = None) -> dict[str, str]:
    """A ``Retry-After`` header in whole seconds, never 0 (a client would retry at once).

    ``told`` (``--retry-after``) replaces the honest value, whatever it is.
    """
    return {"Retry-After": str(max(1, math.ceil(seconds)) if told is None else told)}


async def answer_after(seconds: float, response: Response) -> Response:
    """``response``, held ``seconds`` (``--answer-delay``); the request has already taken effect."""
    if seconds > 0:
        await asyncio.sleep(seconds)
    return response


@dataclass(frozen=True)
class Shape:
    """How ``--odd-answers`` may spoil one record of an endpoint's answer."""

    required: tuple[str, ...]  # the "missing field" variant drops one of these
    wrong: tuple[tuple[str, Callable[[Any], Any]], ...]  # the "wrong type" variant: (field, spoiled value)


_ODD_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Just a moment...</title></head>"
    "<body><p>Checking your browser before accessing the site.</p></body></html>\n"
)


class OddAnswers:
    """``--odd-answers``: a share of successful list/account answers replaced by a malformed 200.

    One of three, at random: an HTML page (``text/html``), the JSON with a required field missing,
    or the JSON with one field of the wrong type. In a list, one record is spoiled; an empty list
    becomes ``{}``. Seeded from ``--seed`` (apart from the fault injector's draws, per service).
    """

    KINDS = ("html", "missing", "wrong-type")

    def __init__(self, rate: float, seed: int | None, service: str, stats: RequestStats) -> None:
        self.rate = rate
        self.rng = random.Random(None if seed is None else f"{seed}:{service}:odd-answers")
        self.stats = stats

    def answer(self, route: str, payload: dict[str, Any] | list[dict[str, Any]], shape: Shape) -> Response:
        """The honest JSON answer, or now and then a malformed one (counted in the statistics)."""
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return JSONResponse(payload)
        kind = self.rng.choice(self.KINDS)
        self.stats.record(f"{route} (odd {kind})", 200)
        if kind == "html":
            return HTMLResponse(_ODD_HTML)
        records = payload if isinstance(payload, list) else [payload]
        if not records:
            return JSONResponse({})
        record = self.rng.choice(records)
        if kind == "missing":
            del record[self.rng.choice(shape.required)]
        else:
            name, spoil = self.rng.choice(shape.wrong)
            record[name] = spoil(record[name])
        return JSONResponse(payload)


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


class DroppedError(Exception):
    """Raised to make the server close the connection mid-answer (an injected fault)."""


class DropFilter(logging.Filter):
    """Keeps injected connection drops out of the server's error log; they are on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedError))


class FaultInjector:
    """ASGI middleware answering a share of requests with a 500, a 502 or a dropped connection.

    Half of the faults strike before the request is handled, half after it took effect with its
    answer thrown away, so that a client's handling of unknown outcomes is exercised. A service may
    claim an after-effect fault for an answer of its own (``OWN_ANSWER``: ``--late-create``'s 504).
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
            scope[AFTER_FAULT] = True
            await self.app(scope, receive, _own_answer_only(scope, send, self.stats, route))
            if scope.get(OWN_ANSWER):
                return
        self.stats.record(f"{route} (fault {'after' if after else 'before'})", 0 if kind == "drop" else int(kind))
        if kind == "drop":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})
            raise DroppedError()
        await self.render(int(kind))(scope, receive, send)


def _recording(send: Send, stats: RequestStats, route: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            stats.record(route, message["status"])
        await send(message)

    return wrapped


def _own_answer_only(scope: Scope, send: Send, stats: RequestStats, route: str) -> Send:
    """Swallows an answer that the fault injector decided is lost, unless the service claimed the fault."""

    async def wrapped(message: Message) -> None:
        if scope.get(OWN_ANSWER):
            if message["type"] == "http.response.start":
                stats.record(f"{route} (fault after)", message["status"])
            await send(message)

    return wrapped


class Drip(Response):
    """An answer written piece by piece, ``interval`` seconds apart, under an announced ``length``.

    ``drop`` closes the connection after the last piece instead of ending the answer. It stops as
    soon as the client goes away, so an endless drip costs nothing once nobody listens.
    """

    def __init__(self, pieces: Iterable[bytes], *, length: int, interval: float, drop: bool = False) -> None:
        super().__init__(headers={"content-length": str(length)}, media_type="video/mp4")
        self.pieces = pieces
        self.interval = interval
        self.drop = drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            for n, piece in enumerate(self.pieces):
                if n and self.interval > 0:
                    await asyncio.wait({gone}, timeout=self.interval)
                if gone.done():
                    return
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            if self.drop:
                raise DroppedError()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
