"""Dispatch: start the submissions and reconciliations that are due, hold what may not go yet.

The intent is committed right before every paid request (the provider calls back through
:class:`_Intents`); an answer that leaves the outcome unknown is reconciled (:mod:`.reconcile`)
before anything is sent again. What each error means is decided by the disposition table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import LeaseLost, LedgerError, ProviderError
from ..ledger import Job, Ledger
from ..providers.base import RemoteState
from ..providers.transfer import check_unchanged
from ..states import RELEASABLE_HOLDS, FailStage, HoldReason, JobState
from .budgets import ClientBudgets, period_starts
from .context import ProviderState, Work
from .disposition import Fail, Hold, Pause, Retry, Step, decide, foreseen
from .reconcile import Reconcile

log = logging.getLogger("ugcwatchd.lifecycle")
# The provider's request stages, as an error sidecar names them.
FAIL_STAGES = {
    "create": FailStage.SUBMIT,
    "init": FailStage.SUBMIT,
    "upload": FailStage.UPLOAD,
    "start": FailStage.START,
}


class _Intents:
    """Commits the intent to the ledger right before each paid request."""

    def __init__(self, ledger: Ledger, job: Job, clock: Callable[[], float], estimate: int, ps: ProviderState) -> None:
        self.ledger = ledger
        self.job = job
        self.clock = clock
        self.estimate = estimate
        self.ps = ps
        self.stage: str | None = None
        self.remote: RemoteState | None = None  # what the creating answer said beyond the id

    async def submitting(self, stage: str, remote_id: str | None) -> None:
        first = self.stage is None
        self.stage = stage
        fields: dict[str, object] = {
            "stage": stage,
            "sent_at": self.clock(),
            "detail": self.job.detail.but(body_sent_at=None),
        }
        if remote_id is not None:
            fields["remote_id"] = remote_id
        if first:
            # The estimate goes with the intent: daily budgets add up what was sent, not what was planned.
            fields["attempts"] = self.job.attempts + 1
            fields["estimate"] = self.estimate
        expect = (JobState.QUEUED, JobState.SUBMITTING)
        self.job = self.ledger.move_job(self.job.id, JobState.SUBMITTING, expect=expect, **fields)
        # From here the ledger counts the estimate; the claim that held its place is no longer needed.
        self.ps.claims.pop(self.job.id, None)

    async def sent(self) -> None:
        self.job = self.ledger.annotate_job(self.job.id, self.job.detail.but(body_sent_at=self.clock()))

    async def created(self, state: RemoteState) -> None:
        self.remote = state  # its charge and overage are recorded with the move to submitted
        # The remote id at once, before the provider's submission lock is let go: a reconciliation (of
        # this daemon or another) must find the new job owned, never take it for an interrupted one's.
        self.job = self.ledger.move_job(
            self.job.id, JobState.SUBMITTING, expect=JobState.SUBMITTING, remote_id=state.remote_id
        )

    @property
    def fail_stage(self) -> FailStage:
        return FAIL_STAGES.get(self.stage or "", FailStage.SUBMIT)


class Dispatch:
    """Moves queued jobs to submitted, and interrupted submissions to an answer."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.reconcile = Reconcile(work)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self) -> None:
        """Start submissions and reconciliations that are due; release held work that may go."""
        w = self.work
        for ps in w.providers.values():
            if ps.paused:
                if ps.recheck_due(w.clock()):
                    ps.paused_since = w.clock()
                    await w.refresh_account(ps)
                continue
            budgets = ClientBudgets(w, ps)
            self._release_held(ps, budgets)
            unresolved = [
                j for j in w.ledger.jobs_in(JobState.SUBMITTING, provider=ps.name) if j.id not in ps.submitting
            ]
            for job in unresolved:
                if w.due(job):
                    self._start(ps, job, self.reconcile(ps, job))
            if unresolved and ps.provider.reconcile_serially:
                # Such a provider is reconciled by time and content alone: a second unknown outcome beside
                # the first could make both ambiguous. Resolve it before anything new is sent.
                continue
            self._submit_queued(ps, budgets)

    def _submit_queued(self, ps: ProviderState, budgets: ClientBudgets) -> None:
        w = self.work
        for job in w.ledger.jobs_in(JobState.QUEUED, provider=ps.name):
            if len(ps.submitting) >= ps.provider.submissions_at_once:
                break
            if job.id in ps.submitting or not w.due(job):
                continue
            # The check and the claim are one step: the next job's check already counts this one, and on a
            # shared ledger so does every other daemon's (one writer at a time: checks never interleave).
            with w.ledger.checking():
                reason = self.hold_reason(ps, job, budgets)
                if reason is None:
                    ps.claims[job.id] = w.estimate(ps, job)
                    w.ledger.reserve(job.id, ps.name, ps.claims[job.id])
            if reason is not None:
                w.ledger.move_job(job.id, JobState.HELD, expect=JobState.QUEUED, detail=job.detail.but(held=reason))
                log.info("%s: held %s: %s", ps.name, job.name, reason)
                continue
            self._start(ps, job, self._submit(ps, job))

    def hold_reason(self, ps: ProviderState, job: Job, budgets: ClientBudgets | None = None) -> HoldReason | None:
        """Why ``job`` must wait for credits, the provider's daily budget or its client's budget, or None."""
        estimate = self.work.estimate(ps, job)
        reason = self._account_hold(ps, estimate)
        if reason is None and (budgets or ClientBudgets(self.work, ps)).over(job, estimate):
            return HoldReason.CLIENT_BUDGET
        return reason

    def _account_hold(self, ps: ProviderState, estimate: int, pending: int = 0) -> HoldReason | None:
        """What the whole account says of a job costing ``estimate``, beside ``pending`` already let go."""
        budget = ps.settings.daily_budget
        claimed = sum(ps.claims.values()) + pending + self.work.ledger.reserved_elsewhere(ps.name)
        if budget is not None and self._spent_today(ps.name) + claimed + estimate > budget:
            return HoldReason.BUDGET
        overage = ps.settings.allows_overage
        if not overage and ps.remaining is not None and ps.remaining - self.work.reserved(ps) - pending < estimate:
            return HoldReason.CREDITS
        return None

    def _spent_today(self, provider: str) -> int:
        midnight, _ = period_starts(self.work.clock())
        return self.work.ledger.estimated_since(provider, midnight)

    def _release_held(self, ps: ProviderState, budgets: ClientBudgets) -> None:
        w = self.work
        pending = 0  # let go in this pass and not yet claimed: the next check counts them
        # Cheapest first: credits and the provider's budget refuse a larger estimate no later than a smaller
        # one, so once the cheapest job waiting for them cannot go, no dearer one can: a tick reads one held
        # job, not all. A client's budget says nothing of another client's jobs: those are looked at on.
        for job in w.ledger.held_cheapest_first(ps.name):
            if job.held not in RELEASABLE_HOLDS:
                continue
            estimate = w.estimate(ps, job)
            if self._account_hold(ps, estimate, pending) is not None:
                if job.estimate is None:
                    continue  # its estimate comes from its inputs, not from the order: it tells nothing of the rest
                break
            if budgets.over(job, estimate):
                if job.held != HoldReason.CLIENT_BUDGET:  # the account would let it go now: say what holds it
                    w.note(job, held=HoldReason.CLIENT_BUDGET)
                continue
            w.ledger.move_job(job.id, JobState.QUEUED, expect=JobState.HELD, detail=job.detail.but(held=None))
            pending += estimate
            budgets.release(job, estimate)
            log.info("%s: %s may go again", ps.name, job.name)
        budgets.pending.clear()  # from here on the jobs let go count as claims, once they pass their check

    def _start(self, ps: ProviderState, job: Job, work: Awaitable[None]) -> None:
        ps.submitting.add(job.id)

        async def run() -> None:
            try:
                await work
            except LeaseLost as lost:
                # This daemon stalled past its lease and another took the item over: it is theirs now.
                log.warning("%s: %s: left to the daemon that took it over (%s)", ps.name, job.name, lost)
            except LedgerError as exc:
                # Whatever was committed stands: an intent without its answer is reconciled once the ledger is back.
                log.warning("%s: %s: stopped, the ledger cannot be reached (%s)", ps.name, job.name, exc)
            except Exception as exc:
                # The stage's own handling let it through: one job's surprise never stops the others.
                log.exception("%s: %s: unexpected error; it is tried again later", ps.name, job.name)
                disposition = decide(exc, Step.SUBMIT)
                if isinstance(disposition, Retry):
                    self.work.retry_later(self.work.ledger.job(job.id), disposition.after)
            finally:
                ps.submitting.discard(job.id)
                if ps.claims.pop(job.id, None) is not None:
                    self.work.forget_reservation(job.id)

        task = asyncio.create_task(run(), name=f"{ps.name}:{job.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, within: float) -> None:
        """Let submissions under way finish; whatever is cut off is reconciled at the next start."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)

    # -- submitting -------------------------------------------------------------------------------

    async def _submit(self, ps: ProviderState, job: Job) -> None:
        w = self.work
        estimate = w.estimate(ps, job)
        intents = _Intents(w.ledger, job, w.clock, estimate, ps)
        spec = w.spec(ps, job)
        try:
            for path in spec.inputs:
                # Before anything is sent: the file must still be the one that was taken.
                expect = spec.expect(path)
                if expect is not None:
                    await asyncio.to_thread(check_unchanged, path, expect)
            remote_id = await ps.provider.submit(spec, intents)
        except (LeaseLost, LedgerError):
            raise  # nothing can be recorded about this attempt now: the caller says why
        except Exception as exc:
            self._settle_submit(ps, intents, exc)
            return
        detail = intents.job.detail.but(submitted_at=w.clock(), remote=intents.remote or intents.job.detail.remote)
        w.ledger.move_job(job.id, JobState.SUBMITTED, expect=JobState.SUBMITTING, remote_id=remote_id, detail=detail)
        w.item_running(job.item_id)
        log.info("%s: submitted %s as %s", ps.name, job.name, remote_id)

    def _settle_submit(self, ps: ProviderState, intents: _Intents, exc: Exception) -> None:
        w, job = self.work, intents.job
        if not foreseen(exc):
            log.error("%s: %s: unexpected error; it is tried again later", ps.name, job.name, exc_info=exc)
        disposition = decide(exc, Step.SUBMIT, max(1, job.attempts))
        if isinstance(disposition, Fail):
            stage = disposition.stage or intents.fail_stage
            error = exc if isinstance(exc, ProviderError) else None
            w.fail(job, stage, disposition.code, str(exc), exc=error, retryable=disposition.retryable)
        elif isinstance(disposition, Pause):
            w.pause(ps, str(exc))
            w.back_to_queue(job, 0.0)
        elif isinstance(disposition, Hold):
            w.hold(job, disposition, str(exc))
        elif disposition.reconcile and job.state == JobState.SUBMITTING:
            log.warning(
                "%s: %s: outcome unknown (%s); reconciling before anything is sent again", ps.name, job.name, exc
            )
            w.retry_later(job, disposition.after)
        else:
            # Nothing was created (or it costs nothing, like an unstarted DubLab record): sent again later.
            log.info("%s: %s: not sent this time (%s); again in %.0f s", ps.name, job.name, exc, disposition.after)
            w.back_to_queue(job, disposition.after)
