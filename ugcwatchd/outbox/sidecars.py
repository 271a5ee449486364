"""The sidecar documents: what a status, result or error sidecar says about a job.

Each is UTF-8 JSON with the fields every sidecar has (version, kind, rule, provider, job, inputs,
remote id, state, times, what was asked and the named parts of the inbox), plus the fields of its kind.
docs/design.md describes them for readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ledger import InputFile, Item, Job
from ..names import shown
from ..states import HoldReason, JobState
from .files import iso

SIDECAR_VERSION = 1
Document = dict[str, Any]
# What a job asked of its provider, among its ledger parameters (the rest is the daemon's own: the
# measured length, the content type, a batch job's pair): FaceDub's duration; DubLab's from, to, studio.
REQUEST_KEYS = ("duration", "from", "to", "studio_quality")


def sidecar_path(outbox: Path, job: str, kind: str) -> Path:
    """``{outbox}/{job}.{kind}.json``; a job name may carry subfolders (``sub/clip.de``)."""
    return outbox / f"{job}.{kind}.json"


@dataclass(frozen=True)
class Subject:
    """A job with what every sidecar about it repeats."""

    item: Item
    job: Job
    inputs: list[InputFile]
    created_at: float

    @property
    def outbox(self) -> Path:
        return Path(self.item.outbox)

    def path(self, kind: str) -> Path:
        return sidecar_path(self.outbox, self.job.name, kind)


def request_of(params: dict[str, Any]) -> Document:
    """What the job asked: its parameters among :data:`REQUEST_KEYS`, studio quality as a yes or no."""
    request = {k: params[k] for k in REQUEST_KEYS if k in params}
    studio = request.get("studio_quality")
    if isinstance(studio, list):  # the languages that get studio quality: this job's one or not
        request["studio_quality"] = params.get("to") in studio
    return request


def _base(s: Subject, kind: str, state: str, now: float) -> Document:
    return {
        "ugcwatchd": SIDECAR_VERSION,
        "kind": kind,
        "rule": s.item.rule,
        "provider": s.job.provider,
        "job": shown(s.job.name),
        "inputs": [{"name": shown(i.name), "sha256": i.sha256, "bytes": i.bytes} for i in s.inputs],
        "remote_id": s.job.remote_id,
        "state": state,
        "created_at": iso(s.created_at),
        "updated_at": iso(now),
        "request": request_of(s.job.params),
        "parts": {shown(k): shown(v) for k, v in s.item.parts.items()},
    }


def _paid(s: Subject) -> Document:
    """What the provider charged for the job (null when it charged nothing known), and whether that was
    overage (FaceDub's word; null for a provider that has none)."""
    remote = s.job.detail.remote
    return {
        "credits_charged": remote.credits_charged if remote else None,
        "is_overage": remote.is_overage if remote else None,
    }


def result_document(s: Subject, output: str | None, now: float) -> Document:
    remote = s.job.detail.remote
    document = _base(s, "result", "delivered", now)
    document.update(
        {
            "output": output,
            "output_url": remote.output_url if remote else None,
            **_paid(s),
            "billed_seconds": remote.billed_seconds if remote else None,
            "submitted_at": iso(s.job.detail.submitted_at),
            "completed_at": iso(s.job.detail.completed_at),
        }
    )
    return document


def error_document(s: Subject, now: float) -> Document:
    failure = s.job.failure
    document = _base(s, "error", "failed", now)
    document.update(
        {
            "stage": failure.stage if failure else None,
            "code": failure.code if failure else None,
            "message": failure.message if failure else None,
            "http_status": failure.http_status if failure else None,
            "provider_error": failure.provider_error if failure else None,
            "retryable": failure.retryable if failure else False,
            "attempts": s.job.attempts,
            **_paid(s),
        }
    )
    if failure is not None and failure.earlier is not None:
        document.update(
            {
                "earlier_sidecar": failure.earlier.sidecar,
                "earlier_remote_id": failure.earlier.remote_id,
                "earlier_job": failure.earlier.job,
            }
        )
    return document


def status_document(s: Subject, paused: bool, now: float) -> Document:
    remote = s.job.detail.remote
    held = s.job.held or (HoldReason.PAUSED if paused else None)
    document = _base(s, "status", s.job.state, now)
    # A finished job waits only for its output: the stage says it is being fetched (or fetched again).
    downloading = s.job.state == JobState.REMOTE_DONE
    document.update(
        {
            "stage": "download" if downloading else (remote.stage if remote else None) or s.job.stage,
            "download_attempts": s.job.detail.download_tries if downloading else None,
            "progress": remote.progress if remote else None,
            "held_reason": held,
        }
    )
    return document
