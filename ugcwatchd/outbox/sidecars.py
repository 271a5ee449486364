"""The sidecar documents: what a status, result or error sidecar says about a job.

Each is UTF-8 JSON with the fields every sidecar has (version, kind, rule, provider, job, inputs,
remote id, state, times), plus the fields of its kind. docs/design.md describes them for readers.
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
    }


def result_document(s: Subject, output: str | None, now: float) -> Document:
    remote = s.job.detail.remote
    document = _base(s, "result", "delivered", now)
    document.update(
        {
            "output": output,
            "output_url": remote.output_url if remote else None,
            "credits_charged": remote.credits_charged if remote else None,
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
