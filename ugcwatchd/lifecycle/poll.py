"""Polling: one list call per provider refreshes every submitted job; finished ones go to delivery."""

from __future__ import annotations

import logging
from dataclasses import replace

from ..errors import LeaseLost
from ..ledger import Job
from ..providers.base import RemoteState
from ..states import RELEASABLE_HOLDS, ErrorCode, FailStage, JobState
from .context import ACCOUNT_EVERY, Work
from .disposition import Retry, Step

log = logging.getLogger("ugcwatchd.lifecycle")
LOST_AFTER = (3, 60.0)  # "not found" three times over a minute: the job is lost remotely


def keeping_charge(earlier: RemoteState | None, now: RemoteState) -> RemoteState:
    """The provider's latest word on a job, keeping what an earlier word said of its charge and this one
    leaves out: FaceDub's job records never repeat the overage its creation answer told."""
    if earlier is None or earlier.remote_id != now.remote_id:
        return now
    charged = now.credits_charged if now.credits_charged is not None else earlier.credits_charged
    overage = now.is_overage if now.is_overage is not None else earlier.is_overage
    return replace(now, credits_charged=charged, is_overage=overage)


class Poll:
    """Refreshes the submitted jobs of one provider at a time, on that provider's cadence."""

    def __init__(self, work: Work) -> None:
        self.work = work

    async def __call__(self, name: str) -> None:
        """Refresh every submitted job of one provider with one list call."""
        w = self.work
        ps = w.providers[name]
        if ps.paused:
            return
        waiting = any(j.held in RELEASABLE_HOLDS for j in w.ledger.jobs_in(JobState.HELD, provider=name))
        if waiting or w.clock() - ps.account_checked >= ACCOUNT_EVERY:
            await w.refresh_account(ps)
        jobs = [j for j in w.ledger.jobs_in(JobState.SUBMITTED, provider=name) if j.remote_id]
        if not jobs:
            ps.last_poll_ok = w.clock()
            return
        try:
            states = await ps.provider.refresh([j.remote_id for j in jobs if j.remote_id])
        except Exception as exc:
            if isinstance(w.settle_provider(ps, exc, Step.POLL), Retry):
                ps.tell(f"poll failed, tried again at the next one: {exc}")
            return
        ps.last_poll_ok = w.clock()
        for job in jobs:
            state = states.get(job.remote_id or "")
            if state is not None:
                try:
                    self._observe(job, state)
                except LeaseLost:
                    continue  # taken over by another daemon meanwhile: its poll records this

    def _observe(self, job: Job, state: RemoteState) -> None:
        w = self.work
        state = keeping_charge(job.detail.remote, state)
        if state.state == "completed":
            detail = job.detail.but(remote=state, completed_at=w.clock())
            w.ledger.move_job(job.id, JobState.REMOTE_DONE, expect=JobState.SUBMITTED, detail=detail)
        elif state.state == "failed":
            message = state.error or "the provider reports the job failed"
            w.fail(
                job,
                FailStage.POLL,
                ErrorCode.REMOTE_FAILED,
                f"{job.provider} could not make {job.name}: {message}",
                provider_error=state.error,
                retryable=True,
                remote=state,  # a provider that charged at creation charged for this failure too
            )
        elif state.state == "missing":
            misses = (*job.detail.missing, w.clock())
            count, window = LOST_AFTER
            if len(misses) >= count and misses[-1] - misses[0] >= window:
                w.fail(
                    job,
                    FailStage.POLL,
                    ErrorCode.LOST_REMOTELY,
                    f"{job.provider} no longer knows job {job.remote_id}",
                    http_status=404,
                    retryable=True,
                )
            else:
                w.note(job, missing=misses)
        elif job.detail.remote != state:
            w.note(job, remote=state)
