"""What the lifecycle's stages share: the providers' live state, the ledger, and the few acts every
stage performs on a job (note a retry, fail it, pause its provider), each decided in one place."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ProviderError
from ..hooks import Hooks
from ..ledger import Failure, Item, Job, Ledger
from ..providers.base import Fingerprint, InputRef, JobSpec, Provider, RemoteState
from ..rules import Budget, Config, ProviderSettings, ResolvedRule
from ..states import ErrorCode, FailStage, ItemState, JobState
from .disposition import AUTH_RECHECK, Disposition, Hold, Pause, Retry, Step, decide

log = logging.getLogger("ugcwatchd.lifecycle")
ACCOUNT_EVERY = 30.0  # credits are read this often, and on every poll while work waits for them
CLOCK_MARGIN = 60.0  # seconds the clocks of hosts sharing a ledger may disagree by, for reservations


@dataclass
class ProviderState:
    """What the daemon knows of one provider right now."""

    name: str
    provider: Provider
    settings: ProviderSettings
    paused: str | None = None
    paused_since: float = 0.0
    remaining: int | None = None  # credits (FaceDub) or seconds (DubLab) at the last check
    # Submissions started whose intent is not committed yet, with their estimates: counted against
    # credits and budgets from the moment they pass the check, so two cannot pass one that fits one.
    claims: dict[int, int] = field(default_factory=dict)
    said: str | None = None  # the last trouble logged about it: the same one is not logged again

    def tell(self, what: str) -> None:
        """Log a passing trouble once (then at debug level) until it changes or things work again."""
        if what != self.said:
            log.warning("%s: %s", self.name, what)
            self.said = what
        else:
            log.debug("%s: %s", self.name, what)

    last_poll_ok: float | None = None
    account_checked: float = 0.0
    submitting: set[int] = field(default_factory=set)

    def recheck_due(self, now: float) -> bool:
        return self.paused is not None and now - self.paused_since >= AUTH_RECHECK


class Work:
    """The ledger, the rules and the providers, as every stage sees them."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        providers: dict[str, ProviderState],
        *,
        clock: Callable[[], float] = time.time,
        hooks: Hooks | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.providers = providers
        self.clock = clock
        self.hooks = hooks or Hooks()
        self._budgets: tuple[Config, dict[str, Budget]] | None = None

    def rule(self, name: str) -> ResolvedRule | None:
        return next((r for r in self.config.rules if r.name == name), None)

    @property
    def budgets(self) -> dict[str, Budget]:
        """The budgets per concrete inbox by rule name, in the configuration as it is now (a reload
        replaces ``config``); a rule without one, or gone, is not there."""
        if self._budgets is None or self._budgets[0] is not self.config:
            self._budgets = (self.config, {r.name: r.budget for r in self.config.rules if r.budget is not None})
        return self._budgets[1]

    def spec(self, ps: ProviderState, job: Job) -> JobSpec:
        """What the provider needs to submit ``job``: built by the provider from the recorded inputs,
        each bound to the exact bytes that were taken."""
        taken = [
            InputRef(i.role, i.name, Path(i.path), Fingerprint(i.bytes, i.mtime_ns, i.inode, i.sha256))
            for i in self.ledger.inputs_of(job.item_id)
        ]
        return ps.provider.job_spec(job.token, taken, job.params)

    def reserved(self, ps: ProviderState) -> int:
        """What the account's last reading does not show yet, plus the submissions now passing checks."""
        # Other hosts stamp their jobs by their own clocks: a minute's disagreement errs on the safe side.
        since = ps.account_checked - (CLOCK_MARGIN if self.ledger.shared else 0.0)
        on_completion = ps.provider.bills_on_completion
        mine = self.ledger.reserved(ps.name, since, on_completion=on_completion) + sum(ps.claims.values())
        return mine + self.ledger.reserved_elsewhere(ps.name)

    def forget_reservation(self, job_id: int) -> None:
        """A submission that ended before its intent: what it set aside is free again (a failure to say so
        is harmless: the next lease renewal clears reservations of jobs no longer queued)."""
        try:
            self.ledger.unreserve(job_id)
        except Exception:
            log.debug("cannot clear the reservation of job %d now", job_id, exc_info=True)

    def estimate(self, ps: ProviderState, job: Job) -> int:
        return job.estimate if job.estimate is not None else ps.provider.estimate(self.spec(ps, job))

    # -- acts on a job ----------------------------------------------------------------------------

    def due(self, job: Job) -> bool:
        return (job.detail.retry_at or 0.0) <= self.clock()

    def note(self, job: Job, **changes: object) -> Job:
        """Record ``changes`` to the job's detail without moving it."""
        return self.ledger.annotate_job(job.id, job.detail.but(**changes))

    def retry_later(self, job: Job, seconds: float) -> Job:
        return self.note(job, retry_at=self.clock() + seconds)

    def back_to_queue(self, job: Job, wait: float) -> None:
        """An attempt that certainly created nothing: the job is queued again, not before ``wait``."""
        if job.state == JobState.SUBMITTING:
            detail = job.detail.but(retry_at=self.clock() + wait)
            self.ledger.move_job(job.id, JobState.QUEUED, expect=JobState.SUBMITTING, detail=detail)
        else:
            self.retry_later(job, wait)

    def hold(self, job: Job, hold: Hold, message: str) -> None:
        log.info("%s: held: %s", job.name, message)
        expect = (JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED)
        self.ledger.move_job(job.id, JobState.HELD, expect=expect, detail=job.detail.but(held=hold.reason))

    def fail(
        self,
        job: Job,
        stage: FailStage,
        code: ErrorCode,
        message: str,
        *,
        exc: ProviderError | None = None,
        provider_error: str | None = None,
        http_status: int | None = None,
        retryable: bool = False,
        remote: RemoteState | None = None,
    ) -> None:
        """Fail the job; ``remote``: the provider's last word on it (what it charged), kept with the failure."""
        failure = Failure(
            stage,
            code,
            message,
            retryable,
            exc.status if exc else http_status,
            exc.provider_error if exc else provider_error,
        )
        current = self.ledger.job(job.id)
        detail = current.detail.but(failure=failure, remote=remote or current.detail.remote)
        self.ledger.move_job(job.id, JobState.FAILED, expect=current.state, detail=detail)
        log.warning("%s: %s failed at %s: %s", job.provider, job.name, stage, message)

    def item_running(self, item_id: int) -> None:
        if self.ledger.item(item_id).state == ItemState.PLANNED:
            self.ledger.move_item(item_id, ItemState.RUNNING)

    # -- the provider -----------------------------------------------------------------------------

    def pause(self, ps: ProviderState, why: str) -> None:
        if not ps.paused:
            log.error("%s: paused, all its work held: %s", ps.name, why)
        ps.paused, ps.paused_since = why, self.clock()

    async def refresh_account(self, ps: ProviderState) -> None:
        """Credits left; a refused key pauses the provider, a good one resumes it."""
        # The reading shows what was created before it was asked for, not before its answer arrived.
        asked = self.clock()
        try:
            account = await ps.provider.account()
        except Exception as exc:
            if isinstance(self.settle_provider(ps, exc, Step.ACCOUNT), Retry):
                ps.tell(f"cannot read the credits now: {exc}")
            return
        ps.said = None
        if ps.paused:
            log.info("%s: the key is accepted again; resuming", ps.name)
        ps.paused = None
        ps.remaining, ps.account_checked = account.remaining, asked

    def settle_provider(self, ps: ProviderState, exc: BaseException, step: Step) -> Disposition:
        """An error that concerns no single job: pause the provider, or wait for the next time."""
        disposition = decide(exc, step)
        if isinstance(disposition, Pause):
            self.pause(ps, str(exc))
        elif not isinstance(exc, ProviderError):
            log.error("%s: unexpected error at %s", ps.name, step, exc_info=exc)
        return disposition

    def notify(self, item: Item, sidecar: Path, document: dict[str, object]) -> None:
        rule = self.rule(item.rule)
        self.hooks.fire(rule.notify if rule else self.config.notify, sidecar, document)
