"""The FaceDub API: every documented endpoint, typed, within its rate limits; and its adapter."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from ..errors import NotFound, OddAnswer, RateLimited
from ..rules import FaceDubProvider, ProviderSettings
from .base import (
    Account,
    Fingerprint,
    InputRef,
    Intent,
    JobSpec,
    Reconciled,
    RemoteState,
    RemoteStateName,
    Sharing,
    SubmitHooks,
    expectations,
)
from .client import ApiClient, backoff_wait
from .facedub_answers import ApiKeyInfo, CreatedJob, Job, NewApiKey, Usage
from .http import Listing, Unreadable, map_transport_errors, on_loopback, parse_records
from .limits import RateWindows
from .transfer import DownloadLimits, FilePart, content_type_of, download, multipart

PROVIDER = "facedub"
DOCUMENTED_WINDOWS = {"POST /jobs": 10, "GET /jobs/*": 60, "other": 120}
RUNNING = frozenset({"queued", "processing"})
SHARED_SLOT_POLL = 1.25  # seconds between two slot counts while waiting, with several daemons
SLOT_WAIT = 30.0  # a 429 asking for longer gives the job back to wait in the queue; a shorter one is waited here


class FaceDubClient(ApiClient):
    """Async client for one FaceDub account; waits for its rate windows instead of causing 429s."""

    windows: RateWindows  # every FaceDub request counts in one of the documented windows

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        windows: RateWindows | None = None,
        get_attempts: int = 3,
        retry_base: float = 0.5,
        on_answer: Callable[[int], None] | None = None,
        download_limits: DownloadLimits | None = None,
    ) -> None:
        super().__init__(
            PROVIDER,
            base_url,
            auth_headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
            transport=transport,
            windows=windows or RateWindows(DOCUMENTED_WINDOWS),
            retry_wait=backoff_wait,
            get_attempts=get_attempts,
            retry_base=retry_base,
            on_answer=on_answer,
        )
        self.download_limits = download_limits or DownloadLimits(loopback=on_loopback(base_url))

    # -- jobs -------------------------------------------------------------------------------------

    async def create_job(
        self,
        photo: Path,
        video: Path,
        duration: int,
        *,
        counted: bool = False,
        expect: tuple[Fingerprint | None, Fingerprint | None] = (None, None),
        on_sent: Callable[[], Awaitable[None]] | None = None,
    ) -> CreatedJob:
        """``POST /jobs``: paid. A transport failure after sending raises Transient(outcome_unknown).

        ``counted``: the caller already waited for the POST window (to commit its intent after the wait).
        ``expect``: what photo and video must still be; a difference abandons the request before its body
        completes, so nothing is created. ``on_sent`` is awaited once the whole body is handed over.
        """
        body, headers = multipart(
            {"duration": str(duration)},
            [
                FilePart("character_photo", photo, content_type_of(photo), expect[0]),
                FilePart("reference_video", video, content_type_of(video), expect[1]),
            ],
            on_sent=on_sent,
        )
        response = await self._send(
            "POST", "/jobs", window="POST /jobs", mutating=True, counted=counted, content=body, headers=headers
        )
        return self._read(response, CreatedJob, "POST /jobs", mutating=True)

    async def list_jobs(self) -> Listing[Job]:
        """``GET /jobs``: the 50 most recent jobs, in one call; unreadable ones in ``.unreadable``."""
        return await self._get_list("/jobs", Job, window="GET /jobs/*")

    async def list_jobs_data(self) -> Any:
        """``GET /jobs`` as decoded JSON, for a list shared with other daemons (:meth:`jobs_of` reads it)."""
        return await self._get("/jobs", lambda data: data, window="GET /jobs/*", what="GET /jobs")

    def jobs_of(self, data: Any) -> Listing[Job]:
        """A ``GET /jobs`` answer's records, read as :meth:`list_jobs` reads them."""
        listing = parse_records(PROVIDER, Job, data, "GET /jobs")
        for odd in listing.unreadable:
            self.once(f"GET /jobs: {odd.id or odd.problem}", odd.problem)
        return listing

    async def get_job(self, job_id: str) -> Job:
        return await self._get_one(f"/jobs/{job_id}", Job, window="GET /jobs/*", what="GET /jobs/{job_id}")

    async def stream_job(self, job_id: str, token: str) -> AsyncIterator[Job]:
        """``GET /jobs/{id}/stream?token=JWT``: each status change until the job ends (SSE)."""
        await self.windows.acquire("GET /jobs/*")
        with map_transport_errors(PROVIDER, mutating=False):
            url = self._api.base_url.join(f"jobs/{job_id}/stream")  # the JWT alone, as EventSource would
            async with self._bare.stream("GET", url, params={"token": token}, timeout=None) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self._raise_for_answer(response, mutating=False)
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        yield self._read(httpx.Response(200, text=line[5:]), Job, "a stream event", mutating=False)

    async def download(self, url: str, target: Path) -> int:
        """Stream a result URL (a CDN link, fetched without the key) into ``target``; bytes written."""
        return await download(self._bare, PROVIDER, url, target, self.download_limits)

    # -- account ----------------------------------------------------------------------------------

    async def usage(self) -> Usage:
        return await self._get_one("/usage", Usage, window="other")

    async def create_api_key(self, name: str) -> NewApiKey:
        response = await self._send("POST", "/api-keys", window="other", mutating=True, json={"name": name})
        return self._read(response, NewApiKey, "POST /api-keys", mutating=True)

    async def list_api_keys(self) -> list[ApiKeyInfo]:
        return await self._get_list("/api-keys", ApiKeyInfo, window="other")

    async def revoke_api_key(self, key_id: str) -> None:
        await self._send("DELETE", f"/api-keys/{key_id}", window="other", mutating=True)


_STATES: dict[str, RemoteStateName] = {
    "queued": "queued",
    "processing": "running",
    "completed": "completed",
    "failed": "failed",
}
CLOCK_SKEW = 60.0  # seconds our clock and FaceDub's may disagree by
LIST_LIMIT = 50  # GET /jobs shows the 50 most recent jobs


def remote_state(job: Job) -> RemoteState:
    state, charged = _STATES.get(job.status, "running"), job.credits_charged
    return RemoteState(job.id, state, job.stage, output_url=job.output_url, error=job.error, credits_charged=charged)


def created_state(created: CreatedJob) -> RemoteState:
    """What the creation answer says: FaceDub charges then, and only this answer tells the overage."""
    state, charged = _STATES.get(created.status, "queued"), created.credits_charged
    return RemoteState(created.job_id, state, credits_charged=charged, is_overage=created.is_overage)


def _may_match(odd: Unreadable, owned: Collection[str], duration: int, low: float, high: float) -> bool:
    """Whether an unreadable record may be the job we look for: unless its id, duration or time rule it out."""
    seconds, created = odd.number("duration_seconds"), odd.number("created_at")
    outside = created is not None and not low <= created <= high
    return not (odd.id in owned or seconds not in (None, duration) or outside)


def estimate_credits(duration: int) -> int:
    """``ceil(duration / 5)`` credits: FaceDub's API document charges 2 credits for a 10 s example."""
    return math.ceil(duration / 5)


class FaceDub:
    """The FaceDub adapter: job slots counted from the account's own job list, reconciliation by time."""

    name = PROVIDER
    budget_unit = "credits"
    submissions_at_once = 1  # submit() itself waits for one of the account's job slots
    # Reconciled by creation time and duration alone: a second unknown outcome beside the first could
    # make both ambiguous, so nothing new is sent while one is unresolved.
    reconcile_serially = True
    bills_on_completion = False

    def __init__(
        self,
        client: FaceDubClient,
        *,
        max_concurrent_jobs: int = 2,
        slot_poll: float = 2.0,
        reconcile_window: float = 900.0,
    ) -> None:
        self.client = client
        self.max_concurrent_jobs = max_concurrent_jobs
        self.slot_poll = slot_poll
        self.reconcile_window = reconcile_window  # a large upload takes minutes; the job exists once it arrived
        self._active: set[str] = set()
        self._synced = False
        self._submit_lock: AbstractAsyncContextManager[object] = asyncio.Lock()
        self._shared = False  # other daemons submit to this account too
        self._sharing: Sharing | None = None
        self._listed: tuple[float, Listing[Job]] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: ProviderSettings,
        key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_answer: Callable[[int], None] | None = None,
    ) -> FaceDub:
        """The adapter for the ``providers.facedub`` block and its key."""
        if not isinstance(settings, FaceDubProvider):
            raise TypeError(f"FaceDub needs the providers.facedub settings, not {type(settings).__name__}")
        limits = DownloadLimits(settings.max_download_bytes, settings.download_timeout, on_loopback(settings.base_url))
        client = FaceDubClient(settings.base_url, key, transport=transport, on_answer=on_answer, download_limits=limits)
        # Waiting for a slot, look every second: GET /jobs* allows 60 a minute, the client window keeps it there.
        return cls(client, max_concurrent_jobs=settings.max_concurrent_jobs, slot_poll=1.0)

    @staticmethod
    def job_spec(token: str, inputs: Sequence[InputRef], params: Mapping[str, Any]) -> JobSpec:
        """(photo, video) and the duration; a batch job names its pair's inputs in its parameters."""
        if "photo" in params:
            by_name = {i.name: i.path for i in inputs}
            files = (by_name[params["photo"]], by_name[params["video"]])
        else:
            by_role = {i.role: i.path for i in inputs}
            files = (by_role["photo"], by_role["video"])
        return JobSpec(token, files, {"duration": params["duration"]}, expectations(inputs))

    @staticmethod
    def estimate_params(params: Mapping[str, Any]) -> int:
        return estimate_credits(int(params["duration"]))

    @classmethod
    def describe_job(cls, params: Mapping[str, Any]) -> str:
        return f"duration {params['duration']} s, ~{cls.estimate_params(params)} credits"

    def estimate(self, spec: JobSpec) -> int:
        return self.estimate_params(spec.params)

    async def account(self) -> Account:
        usage = await self.client.usage()
        total = usage.credits_limit + usage.bonus_credits
        return Account(
            PROVIDER, usage.credits_remaining, f"plan {usage.plan}, {usage.credits_remaining} of {total} credits left"
        )

    async def languages(self) -> None:
        """FaceDub's jobs take no language."""
        return None

    async def _sync(self, *, fresh: bool = False) -> Listing[Job]:
        """Count the account's queued and processing jobs: those hold its slots, ours or not.

        Waiting for a slot and polling both read GET /jobs; a list younger than ``slot_poll`` serves
        both, so together they stay within the 60-a-minute window instead of queueing behind it. An
        unreadable record holds a slot when it says it runs (else a 429 at worst, which creates nothing)."""
        now = asyncio.get_running_loop().time()
        if not fresh and self._listed is not None and now - self._listed[0] < self.slot_poll * 0.9:
            return self._listed[1]
        jobs = await self._list(fresh)
        self._listed = (asyncio.get_running_loop().time(), jobs)
        running = [odd.id or f"#{n}" for n, odd in enumerate(jobs.unreadable) if odd.field("status") in RUNNING]
        self._active = {j.id for j in jobs if j.active} | set(running)
        self._synced = True
        return jobs

    async def _list(self, fresh: bool) -> Listing[Job]:
        """``GET /jobs``; shared by the daemons of one ledger, a list another took within a second serves a
        poll (the window of 60 a minute is the account's), never a count of slots or a reconciliation."""
        if self._sharing is None:
            return await self.client.list_jobs()
        if not fresh and (data := await asyncio.to_thread(self._sharing.recent, "GET /jobs", self.slot_poll)):
            return self.client.jobs_of(data)
        data = await self.client.list_jobs_data()
        await asyncio.to_thread(self._sharing.keep, "GET /jobs", data)
        return self.client.jobs_of(data)

    async def submit(self, spec: JobSpec, hooks: SubmitHooks) -> str:
        photo, video = spec.inputs
        duration = int(spec.params["duration"])
        async with self._submit_lock:
            if self._shared:  # another daemon may have taken a slot since this one last looked
                self._synced, self._listed = False, None
            while True:
                if not self._synced or len(self._active) >= self.max_concurrent_jobs:
                    await self._sync(fresh=self._shared)
                    while len(self._active) >= self.max_concurrent_jobs:
                        await asyncio.sleep(self.slot_poll)
                        await self._sync(fresh=self._shared)
                # The window first, then the intent: the intent is committed right before the request.
                await self.client.windows.acquire("POST /jobs")
                await hooks.submitting("create", None)
                self._listed = None  # from here on, a list taken before this POST tells nothing about it
                try:
                    created = await self.client.create_job(
                        photo,
                        video,
                        duration,
                        counted=True,
                        expect=(spec.expect(photo), spec.expect(video)),
                        on_sent=hooks.sent,
                    )
                except RateLimited as limited:
                    # Refused, so nothing was created: someone else holds a slot, or a window is full. The client
                    # blocks the endpoint for Retry-After; count the slots again, or give a long wait to the queue.
                    self._synced, self._listed = False, None
                    if (limited.retry_after or 0.0) > SLOT_WAIT:
                        raise
                    continue
                self._active.add(created.job_id)
                self._listed = None  # the list no longer shows every job that holds a slot
                await hooks.created(created_state(created))  # the charge: a job that fails later still has it
                return created.job_id

    async def refresh(self, remote_ids: Collection[str]) -> dict[str, RemoteState]:
        """Each job's state; a job whose record is unreadable is left out (not listed this time), never missing."""
        jobs = await self._sync()
        listed = {j.id: j for j in jobs}
        unreadable = {odd.id for odd in jobs.unreadable}
        states: dict[str, RemoteState] = {}
        for remote_id in remote_ids:
            job = listed.get(remote_id)
            if job is None and remote_id not in unreadable:  # older than the 50 listed: ask for it alone
                try:
                    job = await self.client.get_job(remote_id)
                except NotFound:
                    states[remote_id] = RemoteState(remote_id, "missing")
                    continue
                except OddAnswer:
                    continue  # logged by the client; this job only is asked again at the next poll
            if job is not None:
                states[remote_id] = remote_state(job)
        return states

    async def fetch(self, state: RemoteState, target: Path) -> int | None:
        if not state.output_url:
            return None
        return await self.client.download(state.output_url, target)

    async def reconcile(self, intent: Intent, owned: Collection[str]) -> Reconciled:
        """FaceDub takes no client reference: match by creation time and duration.

        Under the submission lock: no submission (of this daemon, or of another sharing the account) is
        between its intent and its recorded remote id, so an unowned job in the list is not someone's
        answer still on its way."""
        async with self._submit_lock:
            return await self._reconcile(intent, owned)

    async def _reconcile(self, intent: Intent, owned: Collection[str]) -> Reconciled:
        jobs = await self._sync(fresh=True)  # never a list that may predate the submission in question
        duration = int(intent.spec.params["duration"])
        until = intent.until if intent.until is not None else intent.sent_at + self.reconcile_window
        low, high = intent.sent_at - CLOCK_SKEW, until + CLOCK_SKEW
        for odd in jobs.unreadable:  # absence is never concluded while a record that may be ours is unreadable
            if _may_match(odd, owned, duration, low, high):
                raise OddAnswer(PROVIDER, f"cannot reconcile yet: {odd.problem}")
        found = tuple(
            j.id for j in jobs if j.id not in owned and j.duration_seconds == duration and low <= j.created_at <= high
        )
        if len(found) > 1:
            return Reconciled("ambiguous", candidates=found)
        if len(found) == 1:
            return Reconciled("adopt", found[0])
        dates = [j.created_at for j in jobs] + [d for odd in jobs.unreadable if (d := odd.number("created_at"))]
        if len(jobs) + len(jobs.unreadable) >= LIST_LIMIT and min(dates, default=high) > low:
            return Reconciled("ambiguous")  # the window reaches past the 50 listed jobs: absence proves nothing
        return Reconciled("none")

    async def remember(self, sent_at: list[float]) -> None:
        await self.client.windows.seed("POST /jobs", sent_at)

    def share(self, sharing: Sharing) -> None:
        """The windows counted for every daemon, and slots counted then taken by one daemon at a time."""
        self.client.windows = sharing.windows(DOCUMENTED_WINDOWS)
        self._submit_lock = sharing.mutex(f"{PROVIDER} submit")
        self._shared, self._sharing = True, sharing
        # Counting slots reads the list itself, each time: look a little less often than one daemon
        # would, so the polls of every daemon still find room in the account's window of 60 a minute.
        self.slot_poll = max(self.slot_poll, SHARED_SLOT_POLL)

    async def aclose(self) -> None:
        await self.client.aclose()
