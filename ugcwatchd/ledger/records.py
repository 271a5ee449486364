"""The ledger's rows as typed records, and a job's detail: its hold, failure, retry and remote view.

A job's detail is stored as one flat JSON object (the format of the first ledgers, kept so that an
existing state folder reads unchanged); :class:`JobDetail` is its only reader and writer.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..names import from_db, to_db
from ..providers.base import RemoteState
from ..states import ErrorCode, FailStage, HoldReason, ItemState, JobState
from .backend import Row


@dataclass(frozen=True)
class InputFile:
    role: str  # photo | video | media
    path: str
    name: str
    sha256: str
    bytes: int
    mtime_ns: int
    mime: str | None = None
    seconds: float | None = None
    inode: int | None = None  # None in items recorded before inodes were
    parked: str | None = None  # where delivery moved it (archive or failed folder), once it has


@dataclass(frozen=True)
class ItemSettings:
    """What an item was planned with: it finishes under these even if its rule is renamed or gone.

    ``anchors`` maps the outbox, archive and failed folders to the nearest folder that existed at
    planning, as (path, device, inode): nothing is written below one that is no longer that folder.
    """

    on_success: str  # archive | delete | keep
    on_failure: str  # move | keep
    archive_dir: str
    failed_dir: str
    anchors: dict[str, tuple[str, int, int]] = field(default_factory=dict)

    def dumps(self) -> str:
        data = asdict(self)
        data["anchors"] = {k: list(v) for k, v in self.anchors.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> ItemSettings | None:
        if not text:
            return None
        data = json.loads(text)
        anchors = {k: (str(v[0]), int(v[1]), int(v[2])) for k, v in data.get("anchors", {}).items()}
        return cls(data["on_success"], data["on_failure"], data["archive_dir"], data["failed_dir"], anchors)


@dataclass(frozen=True)
class Earlier:
    """For a duplicate: the delivered job whose result this content already has."""

    job: str
    sidecar: str
    remote_id: str | None


@dataclass(frozen=True)
class Failure:
    """Why a job failed: what its error sidecar says."""

    stage: FailStage
    code: ErrorCode
    message: str
    retryable: bool = False
    http_status: int | None = None
    provider_error: str | None = None
    earlier: Earlier | None = None


# Plain values stored under their own names, only when set.
_OPTIONAL = (
    "retry_at",
    "submitted_at",
    "completed_at",
    "sidecar",
    "output",
    "trouble",
    "body_sent_at",
    "reconcile_from",
    "none_seen_at",
)


@dataclass(frozen=True)
class JobDetail:
    """Everything about a job beyond its columns."""

    held: HoldReason | None = None
    failure: Failure | None = None
    retry_at: float | None = None  # not before this wall-clock time
    download_tries: int = 0
    missing: tuple[float, ...] = ()  # when the provider said it does not know the job
    remote: RemoteState | None = None  # the provider's last word on it
    candidates: tuple[str, ...] = ()  # remote jobs an ambiguous reconciliation found
    submitted_at: float | None = None
    completed_at: float | None = None
    adopted: bool = False  # found by reconciliation rather than by the answer to our request
    sidecar: str | None = None  # "result" or "error" once the terminal sidecar is written
    output: str | None = None  # the output file's name, once downloaded
    trouble: str | None = None  # the last local error delivering it (a full disk, a vanished share)
    body_sent_at: float | None = None  # when the last paid request's body was handed over in full
    reconcile_from: float | None = None  # body end unknown: the grace counts from the first reconciliation
    none_seen_at: float | None = None  # the first reconciliation read, after the grace, that found nothing

    def but(self, **changes: Any) -> JobDetail:
        """A copy with ``changes``."""
        return replace(self, **changes)

    def cleared(self) -> JobDetail:
        """What an operator's retry keeps: everything but the error, the hold and the remote view."""
        return JobDetail(submitted_at=self.submitted_at, adopted=self.adopted)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.held is not None:
            out["held"] = str(self.held)
        if self.failure is not None:
            f = self.failure
            out.update(
                stage=str(f.stage),
                code=str(f.code),
                message=f.message,
                retryable=f.retryable,
                http_status=f.http_status,
                provider_error=f.provider_error,
            )
            if f.earlier is not None:
                out.update(
                    earlier_job=f.earlier.job, earlier_sidecar=f.earlier.sidecar, earlier_remote_id=f.earlier.remote_id
                )
        for key in _OPTIONAL:
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.download_tries:
            out["download_tries"] = self.download_tries
        if self.missing:
            out["missing"] = list(self.missing)
        if self.candidates:
            out["candidates"] = list(self.candidates)
        if self.adopted:
            out["adopted"] = True
        if self.remote is not None:
            out["remote"] = asdict(self.remote)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobDetail:
        failure = None
        if data.get("code"):
            earlier = None
            if data.get("earlier_sidecar"):
                earlier = Earlier(
                    str(data.get("earlier_job")), str(data["earlier_sidecar"]), data.get("earlier_remote_id")
                )
            failure = Failure(
                FailStage(data["stage"]),
                ErrorCode(data["code"]),
                str(data.get("message") or ""),
                bool(data.get("retryable", False)),
                data.get("http_status"),
                data.get("provider_error"),
                earlier,
            )
        remote = data.get("remote")
        return cls(
            held=HoldReason(data["held"]) if data.get("held") else None,
            failure=failure,
            retry_at=data.get("retry_at"),
            download_tries=int(data.get("download_tries", 0)),
            missing=tuple(data.get("missing", ())),
            remote=RemoteState(**remote) if isinstance(remote, dict) else None,
            candidates=tuple(data.get("candidates", ())),
            submitted_at=data.get("submitted_at"),
            completed_at=data.get("completed_at"),
            adopted=bool(data.get("adopted", False)),
            sidecar=data.get("sidecar"),
            output=data.get("output"),
            trouble=data.get("trouble"),
            body_sent_at=data.get("body_sent_at"),
            reconcile_from=data.get("reconcile_from"),
            none_seen_at=data.get("none_seen_at"),
        )

    def dumps(self) -> str | None:
        data = self.to_json()
        return json.dumps(data, sort_keys=True) if data else None


@dataclass(frozen=True)
class PlannedJob:
    name: str  # e.g. "clip.de" or "alice.facedub"
    dedupe_key: str
    params: dict[str, Any]
    estimate: int | None = None
    state: JobState = JobState.QUEUED  # FAILED for a job refused at planning (invalid, unpaired, duplicate)
    detail: JobDetail = field(default_factory=JobDetail)


@dataclass(frozen=True)
class Job:
    id: int
    item_id: int
    token: str
    name: str
    provider: str
    dedupe_key: str
    params: dict[str, Any]
    estimate: int | None
    state: JobState
    stage: str | None
    remote_id: str | None
    sent_at: float | None
    attempts: int
    detail: JobDetail

    @property
    def failure(self) -> Failure | None:
        return self.detail.failure

    @property
    def held(self) -> HoldReason | None:
        return self.detail.held


@dataclass(frozen=True)
class Item:
    id: int
    rule: str
    provider: str
    inbox: str
    outbox: str
    key: str
    state: ItemState
    reason: str | None
    settings: ItemSettings | None = None
    parts: dict[str, str] = field(default_factory=dict)  # the named parts of its inbox: {"client": "acme"}


def new_token() -> str:
    """A job's ledger token: short, unique, safe in a file name (DubLab's record name carries it)."""
    return "ugc-" + secrets.token_hex(6)


def parts_to_db(parts: dict[str, str]) -> str | None:
    """An item's named parts as the ledger stores them: JSON of the names as :func:`to_db` stores them, keys
    sorted, so one client folder is one text on both backends (the ``charged_by`` tallies key on it)."""
    return json.dumps({to_db(k): to_db(v) for k, v in parts.items()}, sort_keys=True) if parts else None


def parts_from_db(text: str | None) -> dict[str, str]:
    """The named parts :func:`parts_to_db` stored, exactly as the folder names were.

    Parts written before (lone surrogates as JSON escapes) read the same: :func:`from_db` leaves them be.
    """
    return {from_db(k): from_db(v) for k, v in json.loads(text).items()} if text else {}


def item_from_row(row: Row) -> Item:
    return Item(
        row["id"],
        row["rule"],
        row["provider"],
        from_db(row["inbox"]),
        from_db(row["outbox"]),
        from_db(row["key"]),
        ItemState(row["state"]),
        row["reason"],
        ItemSettings.loads(row["settings"]),
        parts_from_db(row["parts"]),
    )


def job_from_row(row: Row) -> Job:
    return Job(
        row["id"],
        row["item_id"],
        row["token"],
        from_db(row["name"]),
        row["provider"],
        row["dedupe_key"],
        json.loads(row["params"]),
        row["estimate"],
        JobState(row["state"]),
        row["stage"],
        row["remote_id"],
        row["sent_at"],
        row["attempts"],
        JobDetail.from_json(json.loads(row["detail"])) if row["detail"] else JobDetail(),
    )


def input_from_row(r: Row) -> InputFile:
    return InputFile(
        r["role"],
        from_db(r["path"]),
        from_db(r["name"]),
        r["sha256"],
        r["bytes"],
        r["mtime_ns"],
        r["mime"],
        r["seconds"],
        r["inode"],
        from_db(r["parked"]) if r["parked"] else None,
    )
