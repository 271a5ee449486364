"""The FaceDub API, as its published document describes it: jobs, usage, API keys, SSE, limits."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Scope

from .common import (
    AFTER_FAULT,
    OWN_ANSWER,
    Drip,
    OddAnswers,
    RequestStats,
    SandboxConfig,
    Shape,
    SlidingWindow,
    TokenSigner,
    answer_after,
    bearer_token,
    error,
    json_body,
    retry_after,
)
from .media import has_video_stream, mp4_bytes, sniff_photo

MAX_ACTIVE_KEYS = 5
MAX_CONCURRENT_JOBS = 2
MAX_LISTED_JOBS = 50
_STAGES = ("analyzing_motion", "generating_views", "rendering", "encoding")
_QUEUED_SHARE = 0.2  # of a job's time spent queued before processing starts
_FAIL_AT = 0.6  # share of a job's time after which a doomed job reports failure
_DRIP_PIECE, _DRIP_EVERY = 1024, 2.0  # --download-mode slow and huge: 1 KiB every 2 s
_HUGE_LENGTH = 1_000_000_000_000  # --download-mode huge: the Content-Length announced
# --odd-answers: what a malformed answer may do to a job record or to /usage.
_JOB_SHAPE = Shape(
    required=("id", "status", "created_at", "duration_seconds", "credits_charged"),
    wrong=(("created_at", lambda v: v + 0.5), ("duration_seconds", str), ("status", lambda v: None)),
)
_USAGE_SHAPE = Shape(
    required=("plan", "credits_used", "credits_limit", "credits_remaining"),
    wrong=(("credits_remaining", lambda v: v + 0.5), ("credits_used", str)),
)


@dataclass
class Account:
    """One FaceDub user: plan, credits and the switches tests use to provoke answers."""

    user_id: str
    credits_limit: int
    plan: str = "agency"
    suspended: bool = False
    credits_used: int = 0
    bonus_credits: int = 0
    fail_jobs: bool = False

    @property
    def credits_remaining(self) -> int:
        return max(0, self.credits_limit + self.bonus_credits - self.credits_used)

    def usage(self) -> dict[str, Any]:
        return {
            "plan": self.plan,
            "credits_used": self.credits_used,
            "credits_limit": self.credits_limit,
            "bonus_credits": self.bonus_credits,
            "credits_remaining": self.credits_remaining,
        }


@dataclass
class ApiKey:
    id: str
    owner: str
    name: str
    key: str
    created_at: int
    revoked: bool = False

    def listed(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "prefix": self.key[:12], "created_at": self.created_at}


@dataclass
class Job:
    id: str
    owner: str
    created: float
    seq: int
    duration: int
    credits_charged: int
    doomed: bool
    output_token: str = field(default_factory=lambda: secrets.token_hex(8))

    def progress(self, now: float, job_seconds: float) -> float:
        return (now - self.created) / job_seconds if job_seconds > 0 else math.inf

    def status(self, now: float, job_seconds: float) -> tuple[str, str]:
        """(status, stage) at ``now``: queued, then processing stages, then completed or failed."""
        f = self.progress(now, job_seconds)
        if self.doomed and f >= _FAIL_AT:
            return "failed", "failed"
        if f >= 1:
            return "completed", "done"
        if f < _QUEUED_SHARE:
            return "queued", "queued"
        return "processing", _STAGES[
            min(len(_STAGES) - 1, int((f - _QUEUED_SHARE) / (1 - _QUEUED_SHARE) * len(_STAGES)))
        ]

    def active(self, now: float, job_seconds: float) -> bool:
        return self.status(now, job_seconds)[0] in ("queued", "processing")


class FaceDub:
    """In-memory FaceDub: one Starlette app, one account per configured key."""

    def __init__(self, config: SandboxConfig, stats: RequestStats) -> None:
        self.config = config
        self.stats = stats
        self.clock = config.clock
        self.public_url = ""
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKey] = {}
        self.jobs: dict[str, Job] = {}
        self.pending: list[Job] = []  # --late-create: accepted, created at their ``created`` time
        self.odd = OddAnswers(config.odd_answers, config.seed, "facedub", stats)
        self.signer = TokenSigner(self.clock)
        self.windows = {
            "POST /jobs": SlidingWindow(10, self.clock, config.rate_window),
            "GET /jobs/*": SlidingWindow(60, self.clock, config.rate_window),
            "other": SlidingWindow(120, self.clock, config.rate_window),
        }
        for n, key in enumerate(config.facedub_keys, start=1):
            user_id = f"user_{n}"
            self.accounts[user_id] = Account(user_id, credits_limit=config.facedub_credits)
            self.keys[key] = ApiKey(f"key_sandbox{n}", user_id, "Sandbox key", key, int(self.clock()))

    def routes(self) -> list[Route]:
        return [
            Route("/jobs", self.create_job, methods=["POST"]),
            Route("/jobs", self.list_jobs, methods=["GET"]),
            Route("/jobs/{job_id}", self.get_job, methods=["GET"]),
            Route("/jobs/{job_id}/stream", self.stream_job, methods=["GET"]),
            Route("/usage", self.usage, methods=["GET"]),
            Route("/api-keys", self.create_key, methods=["POST"]),
            Route("/api-keys", self.list_keys, methods=["GET"]),
            Route("/api-keys/{key_id}", self.revoke_key, methods=["DELETE"]),
            Route("/cdn/{job_id}/{token}.mp4", self.download, methods=["GET"]),
            Route("/sandbox/token", self.sandbox_token, methods=["POST"]),
            Route("/sandbox/account", self.sandbox_account, methods=["POST"]),
            Route("/sandbox/stats", self.sandbox_stats, methods=["GET"]),
        ]

    @staticmethod
    def route_of(scope: Scope) -> str:
        """The route template of a request, for statistics: ids are folded into ``{id}``."""
        parts = scope["path"].split("/")
        if len(parts) > 2 and parts[1] in ("jobs", "api-keys", "cdn"):
            parts[2] = "{id}"
            parts = parts[:4]
        return f"{scope['method']} {'/'.join(parts)}"

    # -- authentication and limits --------------------------------------------------------------

    def _account_for_key(self, request: Request) -> Account | Response:
        self._create_due()
        if not request.headers.get("authorization"):
            return error(401, "Missing API key: send Authorization: Bearer fdb_…")
        api_key = self.keys.get(bearer_token(request) or "")
        if api_key is None or api_key.revoked:
            return error(401, "Invalid API key")
        return self.accounts[api_key.owner]

    def _admit(self, account: Account, window: str) -> Response | None:
        """The plan check and the per-user sliding window; None when the request may proceed."""
        if account.suspended:
            return error(403, "Forbidden: account suspended")
        if account.plan != "agency":
            return error(403, "Forbidden: API access requires an Agency plan")
        wait = self.windows[window].hit(account.user_id)
        if wait is not None:
            return error(
                429, f"Too many requests: rate limit for {window} exceeded", retry_after(wait, self.config.retry_after)
            )
        return None

    def _authorize(self, request: Request, window: str) -> Account | Response:
        account = self._account_for_key(request)
        if isinstance(account, Response):
            return account
        return self._admit(account, window) or account

    # -- jobs -----------------------------------------------------------------------------------

    def _view(self, job: Job) -> dict[str, Any]:
        status, stage = job.status(self.clock(), self.config.job_seconds)
        return {
            "id": job.id,
            "status": status,
            "stage": stage,
            "output_url": self._output_url(job) if status == "completed" else None,
            "created_at": int(job.created),
            "error": "Generation failed: no face could be tracked in the character photo"
            if status == "failed"
            else None,
            "duration_seconds": job.duration,
            "credits_charged": job.credits_charged,
        }

    async def create_job(self, request: Request) -> Response:
        account = self._authorize(request, "POST /jobs")
        if isinstance(account, Response):
            return account
        async with request.form(max_files=4, max_fields=16) as form:
            problem = _check_job_form(form.get("character_photo"), form.get("reference_video"))
            duration = _parse_duration(form.get("duration"))
            if problem is None and isinstance(duration, str):
                problem = duration
            if problem is not None:
                return error(400, f"Bad request: {problem}")
        assert isinstance(duration, int)
        now = self.clock()
        active = [
            j for j in self.jobs.values() if j.owner == account.user_id and j.active(now, self.config.job_seconds)
        ]
        if len(active) >= MAX_CONCURRENT_JOBS:
            soonest = min(j.created + self.config.job_seconds for j in active) - now
            return error(
                429,
                f"Too many requests: {MAX_CONCURRENT_JOBS} jobs are already running; wait for one to complete",
                retry_after(soonest, self.config.retry_after),
            )
        cost = math.ceil(duration / 5)
        if self._creates_late(request):
            # A backend that goes on after its gateway gave up: the job appears, charged, only later.
            request.scope[OWN_ANSWER] = True
            late = now + self.config.late_create
            self.pending.append(Job(secrets.token_hex(6), account.user_id, late, -1, duration, cost, account.fail_jobs))
            return await answer_after(self.config.answer_delay, error(504, "Gateway timeout"))
        is_overage = account.credits_remaining < cost
        account.credits_used += cost
        job = Job(secrets.token_hex(6), account.user_id, now, len(self.jobs), duration, cost, account.fail_jobs)
        self.jobs[job.id] = job
        return await answer_after(
            self.config.answer_delay,
            JSONResponse({"job_id": job.id, "status": "queued", "credits_charged": cost, "is_overage": is_overage}),
        )

    def _creates_late(self, request: Request) -> bool:
        """``--late-create`` strikes every POST /jobs, or with ``--fail-rate`` those it faults after effect."""
        if self.config.late_create <= 0:
            return False
        return self.config.fail_rate <= 0 or bool(request.scope.get(AFTER_FAULT))

    def _create_due(self) -> None:
        """Create the late jobs whose time has come, in that order, charging their credits now."""
        if not self.pending:
            return
        now = self.clock()
        due = sorted((j for j in self.pending if j.created <= now), key=lambda j: j.created)
        self.pending = [j for j in self.pending if j.created > now]
        for job in due:
            job.seq = len(self.jobs)
            self.accounts[job.owner].credits_used += job.credits_charged
            self.jobs[job.id] = job

    async def list_jobs(self, request: Request) -> Response:
        account = self._authorize(request, "GET /jobs/*")
        if isinstance(account, Response):
            return account
        mine = sorted((j for j in self.jobs.values() if j.owner == account.user_id), key=lambda j: -j.seq)
        return self.odd.answer("GET /jobs", [self._view(j) for j in mine[:MAX_LISTED_JOBS]], _JOB_SHAPE)

    async def get_job(self, request: Request) -> Response:
        account = self._authorize(request, "GET /jobs/*")
        if isinstance(account, Response):
            return account
        job = self.jobs.get(request.path_params["job_id"])
        if job is None or job.owner != account.user_id:
            return error(404, "Not found: job doesn't exist or isn't yours")
        return JSONResponse(self._view(job))

    async def stream_job(self, request: Request) -> Response:
        self._create_due()
        token = request.query_params.get("token")
        if not token:
            return error(401, "Unauthorized: SSE streaming requires a JWT in the token query parameter")
        user_id = self.signer.subject(token)
        if user_id is None or user_id not in self.accounts:
            return error(401, "Unauthorized: invalid or expired token (an API key is not a token)")
        account = self.accounts[user_id]
        refused = self._admit(account, "GET /jobs/*")
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["job_id"])
        if job is None or job.owner != user_id:
            return error(404, "Not found: job doesn't exist or isn't yours")
        return StreamingResponse(
            self._events(job), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _events(self, job: Job) -> AsyncIterator[str]:
        tick = max(0.02, min(0.25, self.config.job_seconds / 40))
        last: dict[str, Any] | None = None
        quiet = 0.0
        while True:
            view = self._view(job)
            if view != last:
                yield f"data: {json.dumps(view)}\n\n"
                last, quiet = view, 0.0
                if view["status"] in ("completed", "failed"):
                    return
            elif quiet >= 15:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(tick)
            quiet += tick

    async def download(self, request: Request) -> Response:
        """The CDN behind ``output_url``: unauthenticated, like a signed CDN link.

        ``--download-mode`` makes it misbehave; a link it redirects to (``?redirected=1``) is served
        normally.
        """
        self._create_due()
        job = self.jobs.get(request.path_params["job_id"])
        if (
            job is None
            or not secrets.compare_digest(job.output_token, request.path_params["token"])
            or job.status(self.clock(), self.config.job_seconds)[0] != "completed"
        ):
            return error(404, "Not found")
        mode = "normal" if "redirected" in request.query_params else self.config.download_mode
        if mode == "error":
            return error(503, "Service unavailable")
        if mode == "redirect-http":
            return Response(status_code=302, headers={"Location": f"{self._output_url(job)}?redirected=1"})
        if mode == "redirect-html":
            return Response("<html>Moved</html>", status_code=302, media_type="text/html")
        body = await asyncio.to_thread(mp4_bytes, job.duration)
        if mode == "slow":
            return Drip(_pieces(body), length=len(body), interval=_DRIP_EVERY)
        if mode == "huge":
            return Drip(_pieces(body, endless=True), length=_HUGE_LENGTH, interval=_DRIP_EVERY)
        if mode == "truncated":
            return Drip([body[: len(body) // 2]], length=len(body), interval=0, drop=True)
        return Response(body, media_type="video/mp4")

    def _output_url(self, job: Job) -> str:
        return f"{self.public_url}/cdn/{job.id}/{job.output_token}.mp4"

    # -- usage and keys -------------------------------------------------------------------------

    async def usage(self, request: Request) -> Response:
        account = self._authorize(request, "other")
        if isinstance(account, Response):
            return account
        return self.odd.answer("GET /usage", account.usage(), _USAGE_SHAPE)

    async def create_key(self, request: Request) -> Response:
        account = self._authorize(request, "other")
        if isinstance(account, Response):
            return account
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return error(400, "Bad request: name is required")
        if sum(1 for k in self.keys.values() if k.owner == account.user_id and not k.revoked) >= MAX_ACTIVE_KEYS:
            return error(400, f"Bad request: at most {MAX_ACTIVE_KEYS} active API keys; revoke one first")
        key = ApiKey(
            f"key_{secrets.token_hex(6)}",
            account.user_id,
            name.strip(),
            f"fdb_{secrets.token_hex(24)}",
            int(self.clock()),
        )
        self.keys[key.key] = key
        return JSONResponse({**key.listed(), "key": key.key})

    async def list_keys(self, request: Request) -> Response:
        account = self._authorize(request, "other")
        if isinstance(account, Response):
            return account
        return JSONResponse([k.listed() for k in self.keys.values() if k.owner == account.user_id and not k.revoked])

    async def revoke_key(self, request: Request) -> Response:
        account = self._authorize(request, "other")
        if isinstance(account, Response):
            return account
        for key in self.keys.values():
            if key.id == request.path_params["key_id"] and key.owner == account.user_id and not key.revoked:
                key.revoked = True
                return JSONResponse({"id": key.id, "revoked": True})
        return error(404, "Not found: API key doesn't exist or isn't yours")

    # -- sandbox-only controls ------------------------------------------------------------------

    async def sandbox_token(self, request: Request) -> Response:
        """Sandbox-only: a JWT for the SSE stream (the real service issues it to the dashboard)."""
        account = self._account_for_key(request)
        if isinstance(account, Response):
            return account
        return JSONResponse({"token": self.signer.issue(account.user_id), "expires_in": 3600})

    async def sandbox_account(self, request: Request) -> Response:
        """Sandbox-only: change the caller's plan, credits or failure switch to provoke answers."""
        account = self._account_for_key(request)
        if isinstance(account, Response):
            return account
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        fields = {
            "plan": str,
            "suspended": bool,
            "credits_limit": int,
            "credits_used": int,
            "bonus_credits": int,
            "fail_jobs": bool,
        }
        for name, value in body.items():
            kind = fields.get(name)
            if kind is None or type(value) is not kind:
                return error(400, f"Bad request: {name!r} is not a settable account field ({', '.join(fields)})")
            setattr(account, name, value)
        return JSONResponse({**account.usage(), "suspended": account.suspended, "fail_jobs": account.fail_jobs})

    async def sandbox_stats(self, request: Request) -> Response:
        self._create_due()
        return JSONResponse(
            {"answers": self.stats.answers, "jobs_created": len(self.jobs), "jobs_pending": len(self.pending)}
        )


def _check_job_form(photo: object, video: object) -> str | None:
    """Why the uploaded files cannot make a job, or None."""
    if not isinstance(photo, UploadFile):
        return "character_photo is required (a JPG, PNG or WebP file)"
    if not isinstance(video, UploadFile):
        return "reference_video is required (a video file)"
    head = photo.file.read(16)
    photo.file.seek(0)
    if sniff_photo(head) is None:
        return "character_photo must be a JPG, PNG or WebP image"
    if not has_video_stream(video.file):
        return "reference_video must be a readable video file"
    return None


def _pieces(body: bytes, *, endless: bool = False) -> Iterator[bytes]:
    """``body`` in 1 KiB pieces; ``endless``: then zeros, forever."""
    for start in range(0, len(body), _DRIP_PIECE):
        yield body[start : start + _DRIP_PIECE]
    while endless:
        yield bytes(_DRIP_PIECE)


def _parse_duration(raw: object) -> int | str:
    """The duration field as an int in 1..30 (default 5), or a message saying what is wrong."""
    if raw is None:
        return 5
    if not isinstance(raw, str) or not raw.strip().isdigit():
        return "duration must be a whole number of seconds from 1 to 30"
    value = int(raw)
    return value if 1 <= value <= 30 else "duration must be between 1 and 30 seconds"
