"""The console's actions, each an operator's explicit act: done through the same code as the commands
(``retry``, ``approve``, ``reject``) and recorded in the ledger as an event that names the console.

Every action checks the job's or item's state first and refuses with a sentence when it no longer
applies (another operator, a file or the daemon got there first); a refused action changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import approvals, ops
from ..errors import UgcwatchdError
from ..ledger import Ledger
from ..ledger.backend import INTEGRITY_ERRORS
from ..names import shown
from ..rules import Config
from ..states import ItemState, JobState

BY = "console"


class Refused(Exception):
    """An action that does not apply now; its text says why, for the operator."""


def _refusing(act: Callable[[], str]) -> str:
    try:
        return act()
    except UgcwatchdError as exc:
        raise Refused(str(exc)) from None
    except OSError as exc:  # an input that cannot be put back now (a share gone, a permission)
        raise Refused(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


def retry(ledger: Ledger, config: Config, item_id: int) -> str:
    """Queue the failed jobs of the item again (``ugcwatchd retry``): may cost credits."""
    lines = _refusing(lambda: "; ".join(ops.retry(ledger, config, [item_id])))
    ledger.record_console_act(item_id, None, "retry", {"done": lines})
    return lines


def approve(ledger: Ledger, item_id: int) -> str:
    """Send the item's work held for approval; the approval event names the console."""
    return _refusing(lambda: approvals.approve(ledger, item_id, by=BY).line)


def reject(ledger: Ledger, item_id: int) -> str:
    """Refuse the item's work held for approval: its jobs fail ``rejected_by_operator``."""
    return _refusing(lambda: approvals.reject(ledger, item_id, by=BY).line)


def _ambiguous(ledger: Ledger, job_id: int) -> None:
    try:
        job = ledger.job(job_id)
    except UgcwatchdError:
        raise Refused(f"there is no job {job_id}") from None
    if job.state != JobState.AMBIGUOUS:
        raise Refused(f"job {job_id} ({shown(job.name)}) is {job.state}, not ambiguous: there is nothing to resolve")


def adopt(ledger: Ledger, job_id: int, remote_id: str, clock: Callable[[], float] = time.time) -> str:
    """Resolve an ambiguous job as the remote job ``remote_id``, one of its recorded candidates: it is
    polled and delivered from there. A candidate another job already owns is refused."""
    _ambiguous(ledger, job_id)
    job = ledger.job(job_id)
    if remote_id not in job.detail.candidates:
        raise Refused(f"{remote_id!r} is not one of the candidates of job {job_id}")
    owner = ledger.job_owning(job.provider, remote_id)
    if owner is not None and owner.id != job_id:
        raise Refused(f"{job.provider} job {remote_id} already belongs to job {owner.id} ({shown(owner.name)})")
    detail = job.detail.but(held=None, candidates=(), adopted=True, submitted_at=job.detail.submitted_at or clock())
    try:
        ledger.move_job(job_id, JobState.SUBMITTED, expect=JobState.AMBIGUOUS, remote_id=remote_id, detail=detail)
    except INTEGRITY_ERRORS:  # adopted by another job between the check and the move
        raise Refused(f"{job.provider} job {remote_id} was just taken by another job") from None
    except UgcwatchdError as exc:
        raise Refused(str(exc)) from None
    if ledger.item(job.item_id).state == ItemState.PLANNED:
        ledger.move_item(job.item_id, ItemState.RUNNING)
    ledger.record_console_act(job.item_id, job_id, "adopt", {"job": shown(job.name), "remote_id": remote_id})
    return f"{shown(job.name)}: adopted {job.provider} job {remote_id}; it is polled from now on"


def resubmit(ledger: Ledger, job_id: int, *, confirmed: bool) -> str:
    """Send an ambiguous job again, once the operator confirmed that the provider created nothing for it."""
    if not confirmed:
        raise Refused("tick the box confirming that the provider created no job for it: nothing was changed")
    _ambiguous(ledger, job_id)
    job = ledger.job(job_id)
    try:
        ledger.requeue(job_id)
    except UgcwatchdError as exc:
        raise Refused(str(exc)) from None
    ledger.record_console_act(job.item_id, job_id, "resubmit", {"job": shown(job.name), "confirmed": True})
    return f"{shown(job.name)}: queued to be sent again (it may cost credits)"
