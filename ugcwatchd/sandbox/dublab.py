"""The DubLab API, as its published document describes it: me, dubs, init-dub, start-dub, langs."""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from ..languages import LANGUAGES
from .common import OddAnswers, RequestStats, SandboxConfig, Shape, answer_after, error, json_body
from .media import probe_duration
from .uploads import UploadSigner

_MIME = re.compile(r"^(video|audio)/[A-Za-z0-9.+-]+$")
_QUEUED_SHARE = 0.15  # of a dub's time spent "In Queue"
_FAIL_AT = 0.5  # share of a dub's time after which a doomed dub reports failure
UPLOADING, IN_QUEUE, PROCESSING, FAILED, COMPLETED = 1, 2, 3, 4, 5
# --odd-answers: what a malformed answer may do to a dub record or to /me.
_DUB_SHAPE = Shape(
    required=("id", "name", "externalStatusId", "createdAt"),
    wrong=(("name", lambda v: None), ("externalStatusId", str), ("progressPercentage", lambda v: v + 0.5)),
)
_ME_SHAPE = Shape(required=("id", "seconds"), wrong=(("seconds", lambda v: v + 0.5), ("seconds", str)))


def iso(ts: float) -> str:
    """``2026-04-12T17:20:40.611Z``, the document's timestamp format."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


@dataclass
class User:
    id: str
    key: str
    email: str
    seconds: int
    created: float
    subscriptionStatus: str | None = "active"  # noqa: N815 - the document's field names
    subscriptionPlan: str | None = "hobby"  # noqa: N815
    fail_jobs: bool = False
    dispatch_down: bool = False

    def profile(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": "Sandbox User",
            "username": self.email,
            "firstName": None,
            "lastName": None,
            "seconds": self.seconds,
            "defaultDubLang": "de",
            "subscriptionStatus": self.subscriptionStatus,
            "subscriptionPlan": self.subscriptionPlan,
            "createdAt": iso(self.created),
        }


@dataclass
class DubFile:
    id: str
    owner: str
    name: str
    type: str
    source_lang: str
    dest_lang: str
    duration: float | None
    studio: bool
    created: float
    uploaded: bool = False
    measured: float | None = None
    started: float | None = None
    failure: str | None = None
    billed: bool = False

    def state(self, now: float, job_seconds: float) -> tuple[int, int]:
        """(externalStatusId, progressPercentage) at ``now``."""
        if self.started is None:
            return UPLOADING, 0
        f = (now - self.started) / job_seconds if job_seconds > 0 else math.inf
        if self.failure is not None and f >= _FAIL_AT:
            return FAILED, _percent(_FAIL_AT)
        if f >= 1:
            return COMPLETED, 100
        return (IN_QUEUE, 0) if f < _QUEUED_SHARE else (PROCESSING, _percent(f))

    def billed_seconds(self) -> int:
        """Whole seconds billed: the measured length, rounded, never less than one."""
        return max(1, round(self.measured or 0))


def _percent(f: float) -> int:
    return max(1, min(99, int((f - _QUEUED_SHARE) / (1 - _QUEUED_SHARE) * 100)))


class DubLab:
    """In-memory DubLab: one user per configured key; billing happens when a dub completes."""

    def __init__(self, config: SandboxConfig, signer: UploadSigner, stats: RequestStats) -> None:
        self.config = config
        self.clock = config.clock
        self.signer = signer
        self.stats = stats
        self.users: dict[str, User] = {}
        self.files: dict[str, DubFile] = {}
        self.odd = OddAnswers(config.odd_answers, config.seed, "dublab", stats)
        # Uploads are measured in a worker thread; the event loop reads the same records.
        self._lock = threading.Lock()
        for n, key in enumerate(config.dublab_keys, start=1):
            user = User(str(uuid.uuid4()), key, f"user{n}@sandbox.dublab.app", config.dublab_seconds, self.clock())
            self.users[key] = user

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/me", self.me, methods=["GET"]),
            Route("/api/v1/dubs", self.dubs, methods=["GET"]),
            Route("/api/v1/init-dub", self.init_dub, methods=["POST"]),
            Route("/api/v1/start-dub", self.start_dub, methods=["POST"]),
            Route("/api/langs", self.langs, methods=["GET"]),
            Route("/sandbox/account", self.sandbox_account, methods=["POST"]),
            Route("/sandbox/stats", self.sandbox_stats, methods=["GET"]),
        ]

    @staticmethod
    def route_of(scope: Scope) -> str:
        return f"{scope['method']} {scope['path']}"

    def _user(self, request: Request) -> User | Response:
        key = request.headers.get("apikey")
        if not key:
            if request.headers.get("authorization"):
                return error(401, "Missing API key: send it in the apikey header, not Authorization: Bearer")
            return error(401, "Missing API key: send it in the apikey header")
        user = self.users.get(key)
        if user is None:
            return error(401, "Invalid API key")
        self._settle(user)
        return user

    def _settle(self, user: User) -> None:
        """Bill every dub of ``user`` that has completed since we last looked (exactly once each)."""
        now = self.clock()
        with self._lock:
            for f in self.files.values():
                if f.owner == user.id and not f.billed and f.state(now, self.config.job_seconds)[0] == COMPLETED:
                    f.billed = True
                    user.seconds = max(0, user.seconds - f.billed_seconds() * (2 if f.studio else 1))

    def _record(self, f: DubFile) -> dict[str, Any]:
        status, progress = f.state(self.clock(), self.config.job_seconds)
        return {
            "id": f.id,
            "name": f.name,
            "type": f.type,
            "sourceLang": f.source_lang,
            "destLang": f.dest_lang,
            "externalStatusId": status,
            "progressPercentage": progress,
            "externalErrorMessage": f.failure if status == FAILED else None,
            "duration": f.duration,
            "measuredDuration": f.billed_seconds() if status == COMPLETED else None,
            "isStudioQuality": f.studio,
            "source": "api",
            "createdAt": iso(f.created),
        }

    async def me(self, request: Request) -> Response:
        user = self._user(request)
        return user if isinstance(user, Response) else self.odd.answer("GET /api/v1/me", user.profile(), _ME_SHAPE)

    async def dubs(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        mine = [f for f in self.files.values() if f.owner == user.id]
        return self.odd.answer("GET /api/v1/dubs", [self._record(f) for f in reversed(mine)], _DUB_SHAPE)

    async def langs(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        return JSONResponse([{"code": code, "name": name} for code, name in LANGUAGES.items()])

    async def init_dub(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        problem = _check_init(body)
        if problem is not None:
            return error(400, problem)
        f = DubFile(
            id=str(uuid.uuid4()),
            owner=user.id,
            name=body["name"],
            type=body["fileType"],
            source_lang=body["source_lang"],
            dest_lang=body["dest_lang"],
            duration=body.get("duration"),
            studio=bool(body.get("isStudioQuality", False)),
            created=self.clock(),
        )
        with self._lock:
            self.files[f.id] = f
        return JSONResponse(
            {
                "file": {
                    "id": f.id,
                    "name": f.name,
                    "source": "api",
                    "externalStatusId": UPLOADING,
                    "internalStatusId": 1,
                },
                "uploadUrl": self.signer.url(user.id, f.id, f.name, f.type),
            }
        )

    async def start_dub(self, request: Request) -> Response:
        user = self._user(request)
        if isinstance(user, Response):
            return user
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        file_id = body.get("fileId")
        if not isinstance(file_id, str) or not file_id:
            return error(400, "fileId is required")
        with self._lock:
            f = self.files.get(file_id)
            if f is None:
                return error(404, "File not found")
            if f.owner != user.id:
                return error(403, "Forbidden: file belongs to another user")
            if f.started is not None:
                return error(409, "Dub already in progress or completed")
            if not f.uploaded:
                return error(412, "Source file not uploaded yet")
            if user.seconds <= 0:
                return error(402, "Insufficient credit balance")
            if user.dispatch_down:
                return error(502, "Processing backend unavailable: dispatch failed")
            f.started = self.clock()
            if f.measured is None:
                f.failure = "Could not decode the uploaded media: unsupported or corrupt file"
            elif user.fail_jobs:
                f.failure = "Dubbing failed: no speech detected in the source audio"
        return await answer_after(self.config.answer_delay, JSONResponse({"success": True, "fileId": f.id}))

    def on_upload(self, owner: str, file_id: str, path: Path) -> None:
        """Called by the upload host once a PUT is stored: measure it, mark the record uploaded."""
        measured = probe_duration(path)
        with self._lock:
            f = self.files.get(file_id)
            if f is not None and f.owner == owner and f.started is None:
                f.uploaded, f.measured = True, measured

    async def sandbox_account(self, request: Request) -> Response:
        """Sandbox-only: change the caller's balance, subscription or failure switches."""
        user = self._user(request)
        if isinstance(user, Response):
            return user
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        fields: dict[str, tuple[type, ...]] = {
            "seconds": (int,),
            "subscriptionStatus": (str, type(None)),
            "subscriptionPlan": (str, type(None)),
            "fail_jobs": (bool,),
            "dispatch_down": (bool,),
        }
        for name, value in body.items():
            kinds = fields.get(name)
            if kinds is None or type(value) not in kinds:
                return error(400, f"{name!r} is not a settable account field ({', '.join(fields)})")
            setattr(user, name, value)
        return JSONResponse({**user.profile(), "fail_jobs": user.fail_jobs, "dispatch_down": user.dispatch_down})

    async def sandbox_stats(self, request: Request) -> Response:
        started = sum(1 for f in self.files.values() if f.started is not None)
        return JSONResponse({"answers": self.stats.answers, "files_created": len(self.files), "files_started": started})


def _check_init(body: dict[str, Any]) -> str | None:
    """Why an init-dub body is invalid, or None."""
    for name in ("fileType", "name", "source_lang", "dest_lang"):
        if not isinstance(body.get(name), str) or not body[name].strip():
            return f"{name} is required"
    if not _MIME.match(body["fileType"]):
        return f"fileType {body['fileType']!r} is not a video or audio MIME type"
    if body["source_lang"] != "auto" and body["source_lang"] not in LANGUAGES:
        return f"source_lang {body['source_lang']!r} is not a supported language code"
    if body["dest_lang"] == "auto":
        return "dest_lang cannot be 'auto': auto-detection is only for source_lang"
    if body["dest_lang"] not in LANGUAGES:
        return f"dest_lang {body['dest_lang']!r} is not a supported language code"
    duration = body.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float) or duration < 0):
        return "duration must be a non-negative number of seconds"
    studio = body.get("isStudioQuality")
    if studio is not None and not isinstance(studio, bool):
        return "isStudioQuality must be a boolean"
    return None
