"""What an error means for a job: the one table every stage asks, instead of its own except-ladder.

Each error class maps, per step of the lifecycle, to one of four dispositions:

- :class:`Pause`: the provider refuses the account; all its work waits, nothing fails.
- :class:`Hold`: the job waits for a reason that lifts by itself (credits, a budget).
- :class:`Retry`: try again after a wait; with ``reconcile`` the request may have taken effect, so the
  provider is asked what became of it before anything is sent again.
- :class:`Fail`: the job ends with an error sidecar carrying ``code``.

The lookup walks the error's class hierarchy, most specific first; within a class a rule for the
step wins over one for every step (:data:`ANY`). ``Exception`` closes the table, so every error has
an answer and one job's surprise never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..errors import (
    AuthRejected,
    DownloadFailed,
    LeaseLost,
    OddAnswer,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
    UploadRefused,
)
from ..providers.http import backoff
from ..providers.transfer import FileChanged
from ..states import ErrorCode, FailStage, HoldReason


class Step(StrEnum):
    """Where in the lifecycle an error happened."""

    ACCOUNT = "account"  # reading credits / checking the key
    SUBMIT = "submit"  # every request of a submission (create, init, upload, start)
    RECONCILE = "reconcile"  # asking the provider what an interrupted submission became
    POLL = "poll"  # refreshing submitted jobs
    DOWNLOAD = "download"  # fetching a finished job's output
    DELIVER = "deliver"  # writing sidecars and moving inputs in the outbox


ANY = None  # a rule for every step of one error class

# -- waits and limits, named once -------------------------------------------------------------------

AUTH_RECHECK = 300.0  # a paused provider's key is re-checked every 5 minutes
RATE_LIMIT_WAIT = 10.0  # a 429 without Retry-After
SUBMIT_BACKOFF = 2.0  # base of the backoff between submission attempts
RECONCILE_BACKOFF = 5.0  # base of the backoff between reconciliation attempts
DOWNLOAD_BACKOFF = 2.0
DOWNLOAD_TRIES = 8  # then the job fails with download_failed (retryable)
UPLOAD_TRIES = 5  # submissions whose fresh upload URL the upload host refused; then the job fails rejected
DELIVER_BACKOFF = 5.0  # a local write that failed (full disk, vanished share)
UNEXPECTED_WAIT = 60.0  # an error nothing here foresaw: logged with its trace, tried again


@dataclass(frozen=True)
class Pause:
    """Pause the provider: its key or plan is refused."""


@dataclass(frozen=True)
class Hold:
    reason: HoldReason


@dataclass(frozen=True)
class Retry:
    after: float  # seconds
    reconcile: bool = False  # the request may have taken effect: reconcile before sending again


@dataclass(frozen=True)
class Fail:
    code: ErrorCode
    retryable: bool = False
    stage: FailStage | None = None  # where the sidecar says it failed, when not the step's own stage


Disposition = Pause | Hold | Retry | Fail
# A rule is a fixed disposition, or one computed from the error and the job's attempt count.
Rule = Disposition | Callable[[BaseException, int], Disposition]


def _backoff(base: float) -> Callable[[BaseException, int], Disposition]:
    def rule(exc: BaseException, attempts: int) -> Disposition:
        unknown = isinstance(exc, ProviderError) and exc.outcome_unknown
        return Retry(backoff(max(1, attempts), base=base), reconcile=unknown)

    return rule


def _server_wait(exc: BaseException, attempts: int) -> Disposition:
    wait = exc.retry_after if isinstance(exc, ProviderError) else None
    return Retry(wait or RATE_LIMIT_WAIT)


def _download_again(exc: BaseException, attempts: int) -> Disposition:
    """A finished job's output is fetched again a few times before the job is given up."""
    if attempts >= DOWNLOAD_TRIES:
        return Fail(ErrorCode.DOWNLOAD_FAILED, retryable=True)
    return Retry(backoff(attempts, base=DOWNLOAD_BACKOFF))


def _upload_again(exc: BaseException, attempts: int) -> Disposition:
    """A refused upload URL is redone with a fresh one (a new init-dub costs nothing), a few times."""
    if attempts >= UPLOAD_TRIES:
        return Fail(ErrorCode.REJECTED, stage=FailStage.UPLOAD)
    return Retry(backoff(attempts, base=SUBMIT_BACKOFF))


NEXT_TIME = Retry(0.0)  # nothing to record: the next tick or poll simply tries again

TABLE: Mapping[type[BaseException], Mapping[Step | None, Rule]] = {
    # Another daemon took the item over: nothing to record, it is no longer this daemon's to list.
    LeaseLost: {ANY: NEXT_TIME},
    FileChanged: {ANY: Fail(ErrorCode.INPUT_CHANGED, retryable=True, stage=FailStage.UPLOAD)},
    AuthRejected: {ANY: Pause()},
    OutOfCredits: {
        Step.SUBMIT: Hold(HoldReason.CREDITS),
        Step.RECONCILE: Hold(HoldReason.CREDITS),
    },
    RateLimited: {Step.SUBMIT: _server_wait},
    # A 2xx the document does not describe: like a 5xx; after a paid request its outcome is unknown.
    OddAnswer: {Step.SUBMIT: _backoff(SUBMIT_BACKOFF), Step.RECONCILE: _backoff(RECONCILE_BACKOFF)},
    # Too large, too slow, not 200, not the media it claims to be: fetched again, never resubmitted.
    DownloadFailed: {Step.DOWNLOAD: _download_again},
    # The upload host refused the URL (expired, signature): back to the queue for a fresh one; no pause.
    UploadRefused: {Step.SUBMIT: _upload_again},
    Transient: {Step.SUBMIT: _backoff(SUBMIT_BACKOFF)},
    Rejected: {
        Step.SUBMIT: Fail(ErrorCode.REJECTED),
        Step.DOWNLOAD: Fail(ErrorCode.DOWNLOAD_REFUSED),
    },
    ProviderError: {
        Step.ACCOUNT: NEXT_TIME,
        Step.SUBMIT: Fail(ErrorCode.REFUSED),
        Step.RECONCILE: _backoff(RECONCILE_BACKOFF),
        Step.POLL: NEXT_TIME,
        Step.DOWNLOAD: _download_again,
        Step.DELIVER: _backoff(DELIVER_BACKOFF),
    },
    # A local write that failed (full disk, vanished share); elsewhere an OSError is a surprise.
    OSError: {Step.DELIVER: _backoff(DELIVER_BACKOFF)},
    # Unforeseen: if a request may be out, ask the provider before sending again.
    Exception: {ANY: Retry(UNEXPECTED_WAIT, reconcile=True)},
}


def rule_for(exc_type: type[BaseException], step: Step) -> Rule:
    """The table's rule for an error class at ``step``."""
    for cls in exc_type.__mro__:
        rules = TABLE.get(cls)
        if rules is None:
            continue
        if step in rules:
            return rules[step]
        if ANY in rules:
            return rules[ANY]
    raise LookupError(f"no disposition for {exc_type.__name__} at {step}")  # only for BaseException outside Exception


def decide(exc: BaseException, step: Step, attempts: int = 1) -> Disposition:
    """What ``exc`` at ``step`` means for the job (``attempts``: how often this step was tried)."""
    rule = rule_for(type(exc), step)
    return rule(exc, attempts) if callable(rule) else rule


def foreseen(exc: BaseException) -> bool:
    """Whether the table names ``exc``'s kind, rather than catching it as a surprise (worth a trace)."""
    return any(cls in TABLE for cls in type(exc).__mro__ if cls is not Exception)
