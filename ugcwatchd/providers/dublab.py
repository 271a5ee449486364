"""The DubLab API: every documented endpoint, typed, plus the presigned upload; and its adapter."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from ..errors import Conflict, NotUploaded, OddAnswer
from ..names import shown
from ..rules import ProviderSettings
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
from .client import ApiClient, retry_after_or_backoff
from .http import Listing, Unreadable, on_loopback
from .transfer import DownloadLimits, download, put_file

PROVIDER = "dublab"
UPLOADING, IN_QUEUE, PROCESSING, FAILED, COMPLETED = 1, 2, 3, 4, 5


class _Answer(BaseModel):
    # Strict: an answer is read as the document describes it, never coerced ("5" is not 5, 3600.5 not an int).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Me(_Answer):
    id: str
    email: str | None = None
    seconds: int
    subscriptionStatus: str | None = None  # noqa: N815 - the API's field names
    subscriptionPlan: str | None = None  # noqa: N815


class Dub(_Answer):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    id: str
    name: str
    type: str | None = None
    sourceLang: str | None = None  # noqa: N815
    destLang: str | None = None  # noqa: N815
    externalStatusId: int  # noqa: N815
    progressPercentage: int | float | None = None  # noqa: N815
    externalErrorMessage: str | None = None  # noqa: N815
    duration: float | None = None
    measuredDuration: float | None = None  # noqa: N815
    isStudioQuality: bool = False  # noqa: N815
    createdAt: str | None = None  # noqa: N815

    @property
    def done(self) -> bool:
        return self.externalStatusId in (FAILED, COMPLETED)


class FileRecord(_Answer):
    id: str
    name: str
    externalStatusId: int = UPLOADING  # noqa: N815


class InitDub(_Answer):
    file: FileRecord
    uploadUrl: str  # noqa: N815


class Language(_Answer):
    code: str
    name: str


def belongs_to_another_user(said: str) -> bool:
    """A 403 about one file of another user, not about the account."""
    return "another user" in said.lower()


class DubLabClient(ApiClient):
    """Async client for one DubLab account. Uploads go through a separate, credential-free client."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        get_attempts: int = 3,
        retry_base: float = 0.5,
        on_answer: Callable[[int], None] | None = None,
    ) -> None:
        # DubLab documents no rate limits: no windows; a 429's Retry-After is honoured when retrying.
        super().__init__(
            PROVIDER,
            base_url,
            auth_headers={"apikey": api_key.get_secret_value()},
            transport=transport,
            retry_wait=retry_after_or_backoff,
            get_attempts=get_attempts,
            retry_base=retry_base,
            on_answer=on_answer,
            forbidden_resource=belongs_to_another_user,
        )
        self.download_limits = DownloadLimits(loopback=on_loopback(base_url))

    async def me(self) -> Me:
        return await self._get_one("/api/v1/me", Me)

    async def dubs(self) -> Listing[Dub]:
        """``GET /api/v1/dubs``: every file record, in one call; unreadable ones in ``.unreadable``."""
        return await self._get_list("/api/v1/dubs", Dub)

    async def langs(self) -> list[Language]:
        """``GET /api/langs``, whole: a list missing a record would make a configured language look unknown."""
        listing = await self._get_list("/api/langs", Language)
        if listing.unreadable:
            raise OddAnswer(PROVIDER, f"cannot read the language list: {listing.unreadable[0].problem}")
        return listing

    async def init_dub(
        self,
        *,
        file_type: str,
        name: str,
        source_lang: str,
        dest_lang: str,
        duration: float | None = None,
        studio_quality: bool = False,
    ) -> InitDub:
        """``POST /api/v1/init-dub``: a file record and its presigned upload URL (not yet paid)."""
        body: dict[str, Any] = {"fileType": file_type, "name": name, "source_lang": source_lang, "dest_lang": dest_lang}
        if duration is not None:
            body["duration"] = duration
        body["isStudioQuality"] = studio_quality
        response = await self._send("POST", "/api/v1/init-dub", mutating=True, json=body)
        return self._read(response, InitDub, "POST /api/v1/init-dub", mutating=True)

    async def upload(
        self, upload_url: str, path: Path, content_type: str, *, expect: Fingerprint | None = None
    ) -> None:
        """PUT the file to the presigned URL with exactly the Content-Type given to init-dub.

        The upload host's refusal (an expired URL, a signature mismatch) raises UploadRefused: the
        submission is redone with a fresh init-dub, the account is not in question.
        """
        await put_file(self._bare, PROVIDER, upload_url, path, content_type, expect=expect)

    async def start_dub(self, file_id: str) -> None:
        """``POST /api/v1/start-dub``: starts the paid pipeline (409 if it already started)."""
        await self._send("POST", "/api/v1/start-dub", mutating=True, json={"fileId": file_id})

    async def download(self, url: str, target: Path) -> int:
        """Stream a result URL into ``target`` without the key; bytes written."""
        return await download(self._bare, PROVIDER, url, target, self.download_limits)


_STATES: dict[int, RemoteStateName] = {
    UPLOADING: "queued",
    IN_QUEUE: "queued",
    PROCESSING: "running",
    FAILED: "failed",
    COMPLETED: "completed",
}


def remote_state(dub: Dub) -> RemoteState:
    billed = dub.measuredDuration if dub.externalStatusId == COMPLETED else None
    return RemoteState(
        remote_id=dub.id,
        state=_STATES.get(dub.externalStatusId, "running"),
        stage={1: "uploading", 2: "in_queue", 3: "processing", 4: "failed", 5: "completed"}.get(dub.externalStatusId),
        progress=float(dub.progressPercentage) if dub.progressPercentage is not None else None,
        # The document names no result URL, and no field name is guessed: a thumbnailUrl or a
        # callbackUrl is not the dub. The result sidecar records the dub itself.
        output_url=None,
        error=dub.externalErrorMessage,
        credits_charged=math.ceil(billed) * (2 if dub.isStudioQuality else 1) if billed is not None else None,
        billed_seconds=billed,
    )


def _may_be(odd: Unreadable, token: str, owned: Collection[str]) -> bool:
    """Whether an unreadable record may be the one of ``token``: unless its id or its name rule it out."""
    name = odd.field("name")
    return not (odd.id in owned or (isinstance(name, str) and token not in name))


def estimate_seconds(seconds: float, studio_quality: bool) -> int:
    """``ceil(seconds) x (2 if studio quality)``: DubLab bills the measured length, twice in studio quality."""
    return math.ceil(seconds) * (2 if studio_quality else 1)


class DubLab:
    """The DubLab adapter: init-dub, upload, start-dub, with the ledger token in the file name."""

    name = PROVIDER
    budget_unit = "seconds"
    submissions_at_once = 2
    reconcile_serially = False  # the token in the record's name tells every submission apart
    bills_on_completion = True

    def __init__(self, client: DubLabClient) -> None:
        self.client = client

    @classmethod
    def from_settings(
        cls,
        settings: ProviderSettings,
        key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_answer: Callable[[int], None] | None = None,
    ) -> DubLab:
        """The adapter for the ``providers.dublab`` block and its key."""
        return cls(DubLabClient(settings.base_url, key, transport=transport, on_answer=on_answer))

    @staticmethod
    def job_spec(token: str, inputs: Sequence[InputRef], params: Mapping[str, Any]) -> JobSpec:
        """(media,) and the job's own parameters."""
        by_role = {i.role: i.path for i in inputs}
        return JobSpec(token, (by_role["media"],), params, expectations(inputs))

    @staticmethod
    def estimate_params(params: Mapping[str, Any]) -> int:
        return estimate_seconds(float(params["seconds"]), bool(params.get("studio_quality")))

    @classmethod
    def describe_job(cls, params: Mapping[str, Any]) -> str:
        return f"{params['seconds']:.1f} s, ~{cls.estimate_params(params)} seconds of credit"

    @staticmethod
    def remote_name(spec: JobSpec) -> str:
        """``clip.<token>.mp4``: the record's name carries the token, so it can be found again.

        A JSON body is UTF-8: a name whose bytes are not shows them as ``\\xNN``.
        """
        media = spec.inputs[0]
        return f"{shown(media.stem)}.{spec.token}{shown(media.suffix)}"

    def estimate(self, spec: JobSpec) -> int:
        return self.estimate_params(spec.params)

    async def account(self) -> Account:
        me = await self.client.me()
        plan = f"plan {me.subscriptionPlan}, {me.subscriptionStatus}" if me.subscriptionPlan else "no subscription"
        return Account(PROVIDER, me.seconds, f"{plan}, {me.seconds} seconds of credit left")

    async def languages(self) -> frozenset[str]:
        return frozenset(lang.code for lang in await self.client.langs())

    async def submit(self, spec: JobSpec, hooks: SubmitHooks) -> str:
        media = spec.inputs[0]
        content_type = str(spec.params["content_type"])
        await hooks.submitting("init", None)
        init = await self.client.init_dub(
            file_type=content_type,
            name=self.remote_name(spec),
            source_lang=str(spec.params.get("from", "auto")),
            dest_lang=str(spec.params["to"]),
            duration=round(float(spec.params["seconds"]), 3) if spec.params.get("seconds") is not None else None,
            studio_quality=bool(spec.params.get("studio_quality", False)),
        )
        file_id = init.file.id
        await hooks.submitting("upload", file_id)
        await self.client.upload(init.uploadUrl, media, content_type, expect=spec.expect(media))
        await hooks.submitting("start", file_id)
        try:
            await self.client.start_dub(file_id)
        except Conflict:
            pass  # 409: it already started, which is what we asked for
        except NotUploaded:
            # 412: the upload did not register; send it again, then start.
            await self.client.upload(init.uploadUrl, media, content_type, expect=spec.expect(media))
            await hooks.submitting("start", file_id)
            await self.client.start_dub(file_id)
        return file_id

    async def refresh(self, remote_ids: Collection[str]) -> dict[str, RemoteState]:
        """Each dub's state; a dub whose record is unreadable is left out (not listed this time), never
        missing. While a record without a readable id is in the list, no absent dub counts as missing."""
        dubs = await self.client.dubs()
        listed = {d.id: d for d in dubs}
        unreadable = {odd.id for odd in dubs.unreadable}
        states: dict[str, RemoteState] = {}
        for remote_id in remote_ids:
            if remote_id in listed:
                states[remote_id] = remote_state(listed[remote_id])
            elif remote_id not in unreadable and None not in unreadable:
                states[remote_id] = RemoteState(remote_id, "missing")
        return states

    async def fetch(self, state: RemoteState, target: Path) -> int | None:
        """DubLab documents no result URL: there is nothing to download."""
        return None

    async def reconcile(self, intent: Intent, owned: Collection[str]) -> Reconciled:
        """Find the record by the token in its name; finish an interrupted start-dub on the same record.

        Re-sending start-dub for the same file is safe (409 once started), whereas a new record could
        later run beside a start that was still in flight: so an unknown start is completed, not redone.
        """
        dubs = await self.client.dubs()
        for odd in dubs.unreadable:  # absence is never concluded while a record that may be ours is unreadable
            if _may_be(odd, intent.spec.token, owned):
                raise OddAnswer(PROVIDER, f"cannot reconcile yet: {odd.problem}")
        mine = [d for d in dubs if intent.spec.token in d.name and d.id not in owned]
        started = [d.id for d in mine if d.externalStatusId != UPLOADING]
        if len(started) > 1:
            return Reconciled("ambiguous", candidates=tuple(started))
        if started:
            return Reconciled("adopt", started[0])
        if intent.stage == "start" and intent.remote_id in {d.id for d in mine}:
            try:
                await self.client.start_dub(intent.remote_id)
            except Conflict:
                pass
            except NotUploaded:
                return Reconciled("none")  # never uploaded, so it can never start: begin afresh
            return Reconciled("adopt", intent.remote_id)
        # Records that never started cost nothing and will never start: submit afresh.
        return Reconciled("none")

    async def remember(self, sent_at: list[float]) -> None:
        """DubLab documents no rate limits: nothing to seed."""

    def share(self, sharing: Sharing) -> None:
        """DubLab documents no account-wide limits: its seconds are reserved in the ledger like credits."""

    async def aclose(self) -> None:
        await self.client.aclose()
