"""Reconciliation: what became of a submission whose outcome is unknown (a crash, a timeout, a 5xx).

Nothing is sent again until the provider has been asked. A provider that may create a job after
answering (``settle_after`` > 0, FaceDub) is concluded to have created nothing only once that grace has
passed since the request's body was sent in full, and two list reads at least :data:`AGREE_AFTER`
apart agree (:func:`agree_after`); until then the job stays ``submitting`` and, for a provider reconciled serially,
nothing new is sent to it.
"""

from __future__ import annotations

import logging

from ..ledger import Job
from ..providers.base import Intent, Reconciled
from ..states import HoldReason, JobState
from .context import ProviderState, Work
from .disposition import UNEXPECTED_WAIT, Hold, Pause, Retry, Step, decide, foreseen

log = logging.getLogger("ugcwatchd.lifecycle")
AGREE_AFTER = 30.0  # two reads that find nothing, at least this far apart


def agree_after(grace: float) -> float:
    """The gap between the two agreeing reads: 30 s, or a quarter of a grace set below 2 minutes."""
    return min(AGREE_AFTER, grace / 4)


class Reconcile:
    """Asks the provider what an interrupted submission became, and acts on the answer."""

    def __init__(self, work: Work) -> None:
        self.work = work

    async def __call__(self, ps: ProviderState, job: Job) -> None:
        w = self.work
        now = w.clock()
        grace = ps.settings.settle_after
        if grace > 0 and job.detail.body_sent_at is None and job.detail.reconcile_from is None:
            # Whether the body ever arrived is unknown: the grace counts from now, the first look.
            job = w.note(job, reconcile_from=now)
        owned = w.ledger.remote_ids(ps.name) - ({job.remote_id} if job.remote_id else set())
        try:
            found = await ps.provider.reconcile(self._intent(ps, job, now, grace), owned)
        except Exception as exc:
            self._settle(ps, job, exc)
            return
        if found.outcome == "adopt" and found.remote_id:
            self._adopt(ps, job, found.remote_id)
        elif found.outcome == "none":
            self._nothing(ps, job, now, grace)
        else:
            self._ambiguous(ps, job, found)

    def _intent(self, ps: ProviderState, job: Job, now: float, grace: float) -> Intent:
        until = None
        if grace > 0:
            # The latest moment a job of ours can have been created: the body's end plus the grace,
            # or, with the body's end unknown, anything up to now.
            sent = job.detail.body_sent_at
            until = sent + grace if sent is not None else now
        return Intent(self.work.spec(ps, job), job.sent_at or now, job.stage or "create", job.remote_id, until)

    def _settle(self, ps: ProviderState, job: Job, exc: Exception) -> None:
        w = self.work
        if not foreseen(exc):
            log.error("%s: %s: unexpected error while reconciling", ps.name, job.name, exc_info=exc)
        disposition = decide(exc, Step.RECONCILE, max(1, job.attempts))
        if isinstance(disposition, Pause):
            w.pause(ps, str(exc))
        elif isinstance(disposition, Hold):
            w.hold(job, disposition, str(exc))
        else:  # a Retry, or a Fail nothing here can cause: asking again later is always safe
            wait = disposition.after if isinstance(disposition, Retry) else UNEXPECTED_WAIT
            w.retry_later(job, wait)
            log.warning("%s: %s: cannot reconcile yet: %s", ps.name, job.name, exc)

    def _adopt(self, ps: ProviderState, job: Job, remote_id: str) -> None:
        w = self.work
        detail = job.detail.but(adopted=True, retry_at=None, none_seen_at=None)
        w.ledger.move_job(job.id, JobState.SUBMITTED, expect=JobState.SUBMITTING, remote_id=remote_id, detail=detail)
        w.item_running(job.item_id)
        log.info("%s: %s: found the job it had started: %s", ps.name, job.name, remote_id)

    def _nothing(self, ps: ProviderState, job: Job, now: float, grace: float) -> None:
        w = self.work
        if grace > 0:
            reference = job.detail.body_sent_at or job.detail.reconcile_from or now
            settled = reference + grace
            if now < settled:
                w.note(job, retry_at=settled, none_seen_at=None)
                log.info(
                    "%s: %s: no job yet; %s may still create it, looking again in %.0f s",
                    ps.name,
                    job.name,
                    ps.name,
                    settled - now,
                )
                return
            first = job.detail.none_seen_at
            gap = agree_after(grace)
            if first is None or now - first < gap:
                first = first if first is not None else now
                w.note(job, none_seen_at=first, retry_at=first + gap)
                return
        detail = job.detail.but(retry_at=None, body_sent_at=None, reconcile_from=None, none_seen_at=None)
        w.ledger.move_job(job.id, JobState.QUEUED, expect=JobState.SUBMITTING, detail=detail)
        log.info("%s: %s: the interrupted submission never arrived; it will be sent again", ps.name, job.name)

    def _ambiguous(self, ps: ProviderState, job: Job, found: Reconciled) -> None:
        detail = self.work.ledger.job(job.id).detail.but(candidates=tuple(found.candidates), held=HoldReason.AMBIGUOUS)
        self.work.ledger.move_job(job.id, JobState.AMBIGUOUS, expect=JobState.SUBMITTING, detail=detail)
        log.error(
            "%s: %s: cannot tell which remote job is ours (%s); held for the operator",
            ps.name,
            job.name,
            ", ".join(found.candidates) or "list too short",
        )
