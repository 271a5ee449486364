"""The FaceDub API (seeds/000): every documented endpoint, typed, within its rate limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from ..errors import RateLimited, Transient
from .http import backoff, make_client, map_transport_errors, raise_for_answer
from .limits import RateWindows
from .transfer import FilePart, content_type_of, download, multipart

PROVIDER = "facedub"
DOCUMENTED_WINDOWS = {"POST /jobs": 10, "GET /jobs/*": 60, "other": 120}
TERMINAL = frozenset({"completed", "failed"})


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CreatedJob(_Answer):
    job_id: str
    status: str
    credits_charged: int
    is_overage: bool = False


class Job(_Answer):
    id: str
    status: str
    stage: str | None = None
    output_url: str | None = None
    created_at: int
    error: str | None = None
    duration_seconds: int | None = None
    credits_charged: int | None = None

    @property
    def active(self) -> bool:
        """Queued or processing: holding one of the account's two job slots."""
        return self.status not in TERMINAL


class Usage(_Answer):
    plan: str
    credits_used: int
    credits_limit: int
    bonus_credits: int = 0
    credits_remaining: int


class ApiKeyInfo(_Answer):
    id: str
    name: str
    prefix: str
    created_at: int


class NewApiKey(ApiKeyInfo):
    key: SecretStr


class FaceDubClient:
    """Async client for one FaceDub account; waits for its rate windows instead of causing 429s."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        windows: RateWindows | None = None,
        get_attempts: int = 3,
        retry_base: float = 0.5,
    ) -> None:
        self._api = make_client(
            base_url, headers={"Authorization": f"Bearer {api_key.get_secret_value()}"}, transport=transport
        )
        # Result links point at a CDN: fetched without the API key.
        self._bare = make_client(transport=transport)
        self.windows = windows or RateWindows(DOCUMENTED_WINDOWS)
        self.get_attempts = get_attempts
        self.retry_base = retry_base

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._bare.aclose()

    async def __aenter__(self) -> FaceDubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, window: str, *, mutating: bool = False, **kw: Any) -> httpx.Response:
        await self.windows.acquire(window)
        with map_transport_errors(PROVIDER, mutating=mutating):
            response = await self._api.request(method, path, **kw)
        if response.status_code == 429:
            try:
                raise_for_answer(PROVIDER, response, mutating=mutating)
            except RateLimited as limited:
                self.windows.hold_off(window, limited.retry_after or 1.0)
                raise
        raise_for_answer(PROVIDER, response, mutating=mutating)
        return response

    async def _get(self, path: str, window: str) -> Any:
        """An idempotent GET, retried a few times on transient failures and 429s."""
        for attempt in range(1, self.get_attempts + 1):
            try:
                return (await self._send("GET", path, window)).json()
            except (Transient, RateLimited):
                if attempt == self.get_attempts:
                    raise
                await asyncio.sleep(backoff(attempt, base=self.retry_base, cap=5.0))
        raise AssertionError("unreachable")

    # -- jobs -------------------------------------------------------------------------------------

    async def create_job(self, photo: Path, video: Path, duration: int) -> CreatedJob:
        """``POST /jobs``: paid. A transport failure after sending raises Transient(outcome_unknown)."""
        body, headers = multipart(
            {"duration": str(duration)},
            [
                FilePart("character_photo", photo, content_type_of(photo)),
                FilePart("reference_video", video, content_type_of(video)),
            ],
        )
        response = await self._send("POST", "/jobs", "POST /jobs", mutating=True, content=body, headers=headers)
        return CreatedJob.model_validate(response.json())

    async def list_jobs(self) -> list[Job]:
        """``GET /jobs``: the 50 most recent jobs, in one call."""
        return [Job.model_validate(j) for j in await self._get("/jobs", "GET /jobs/*")]

    async def get_job(self, job_id: str) -> Job:
        return Job.model_validate(await self._get(f"/jobs/{job_id}", "GET /jobs/*"))

    async def stream_job(self, job_id: str, token: str) -> AsyncIterator[Job]:
        """``GET /jobs/{id}/stream?token=JWT``: each status change until the job ends (SSE)."""
        await self.windows.acquire("GET /jobs/*")
        with map_transport_errors(PROVIDER, mutating=False):
            # The stream authenticates with the JWT alone, as EventSource would.
            url = self._api.base_url.join(f"jobs/{job_id}/stream")
            async with self._bare.stream("GET", url, params={"token": token}, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_answer(PROVIDER, response, mutating=False)
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        yield Job.model_validate(json.loads(line[5:].strip()))

    async def download_output(self, job: Job, target: Path) -> int:
        """Stream a completed job's ``output_url`` into ``target``; bytes written."""
        if not job.output_url:
            raise ValueError(f"job {job.id} has no output_url")
        return await download(self._bare, PROVIDER, job.output_url, target)

    # -- account ----------------------------------------------------------------------------------

    async def usage(self) -> Usage:
        return Usage.model_validate(await self._get("/usage", "other"))

    async def create_api_key(self, name: str) -> NewApiKey:
        response = await self._send("POST", "/api-keys", "other", mutating=True, json={"name": name})
        return NewApiKey.model_validate(response.json())

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        return [ApiKeyInfo.model_validate(k) for k in await self._get("/api-keys", "other")]

    async def revoke_api_key(self, key_id: str) -> None:
        await self._send("DELETE", f"/api-keys/{key_id}", "other", mutating=True)
