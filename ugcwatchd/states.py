"""The daemon's vocabulary: item and job states, hold reasons and error codes, with their groups.

Every module that names a state or a sidecar ``code`` takes it from here, so a group ("active",
"terminal", "not worth retrying") is decided once. The values are the strings stored in the ledger
and written into sidecars; they never change meaning between versions.
"""

from __future__ import annotations

from enum import StrEnum


class ItemState(StrEnum):
    """An item: a group of inputs taken under one rule."""

    PLANNED = "planned"  # recorded with its jobs; nothing sent yet
    RUNNING = "running"  # at least one job was sent
    DELIVERED = "delivered"  # every job delivered, inputs disposed of
    FAILED = "failed"  # every job final, at least one failed, inputs disposed of


class JobState(StrEnum):
    """A job: one remote job of one provider."""

    QUEUED = "queued"
    SUBMITTING = "submitting"  # the intent is committed; the outcome of the request may be unknown
    SUBMITTED = "submitted"  # the provider has it (remote id known)
    REMOTE_DONE = "remote_done"  # the provider finished it; the result is not delivered yet
    DELIVERED = "delivered"
    FAILED = "failed"
    HELD = "held"  # waits for credits or a budget
    AMBIGUOUS = "ambiguous"  # an interrupted submission matches several remote jobs: for the operator


class HoldReason(StrEnum):
    """Why a job waits instead of going."""

    CREDITS = "credits"
    BUDGET = "budget"
    AMBIGUOUS = "ambiguous"
    PAUSED = "paused"  # shown in status sidecars while its provider is paused; never stored on a job
    APPROVAL = "awaiting approval"  # the drop's estimate passed the rule's approve_above: an operator decides
    CLIENT_BUDGET = "client budget"  # the rule's budget for this concrete inbox (this client) is spent


class ErrorCode(StrEnum):
    """The ``code`` of an error sidecar; each is explained in docs/errors.md."""

    INVALID = "invalid"
    UNPAIRED = "unpaired"
    AMBIGUOUS_PAIR = "ambiguous_pair"
    TOO_MANY_JOBS = "too_many_jobs"
    DUPLICATE = "duplicate"
    INPUT_CHANGED = "input_changed"
    REJECTED = "rejected"
    REFUSED = "refused"
    REMOTE_FAILED = "remote_failed"
    LOST_REMOTELY = "lost_remotely"
    DOWNLOAD_REFUSED = "download_refused"
    DOWNLOAD_FAILED = "download_failed"
    BAD_FOLDER_OPTIONS = "bad_folder_options"
    REJECTED_BY_OPERATOR = "rejected_by_operator"


class FailStage(StrEnum):
    """Where a job failed, as its error sidecar's ``stage`` says."""

    VALIDATE = "validate"
    PAIR = "pair"
    DUPLICATE = "duplicate"
    SUBMIT = "submit"
    UPLOAD = "upload"
    START = "start"
    POLL = "poll"
    DOWNLOAD = "download"
    OPTIONS = "options"  # the folder's name does not spell valid options
    APPROVAL = "approval"  # an operator refused the quote


# -- groups, named once -----------------------------------------------------------------------------

OPEN_ITEM_STATES = frozenset({ItemState.PLANNED, ItemState.RUNNING})
TERMINAL_ITEM_STATES = frozenset({ItemState.DELIVERED, ItemState.FAILED})

TERMINAL_JOB_STATES = frozenset({JobState.DELIVERED, JobState.FAILED})
# Not final and not waiting on anyone: the daemon itself moves these along.
ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.SUBMITTING, JobState.SUBMITTED, JobState.REMOTE_DONE)
# A request may have reached the provider: with a remote id, or an intent whose outcome is unknown.
RUNNING_JOB_STATES = (JobState.SUBMITTING, JobState.SUBMITTED, JobState.REMOTE_DONE)
# Waiting for credits, a budget or an operator.
WAITING_JOB_STATES = (JobState.HELD, JobState.AMBIGUOUS)
# Not final: every one of these has a status sidecar in its outbox.
OPEN_JOB_STATES = (*ACTIVE_JOB_STATES, *WAITING_JOB_STATES)
# Everything that may have been sent at some point: these seed the rate windows after a restart.
SENT_JOB_STATES = (*RUNNING_JOB_STATES, JobState.DELIVERED, JobState.FAILED, *WAITING_JOB_STATES)
# Counted against a daily budget: sent and not (yet) failed.
SPENDING_JOB_STATES = (*RUNNING_JOB_STATES, JobState.DELIVERED)

# Holds the daemon lifts by itself once credits or the budget allow.
RELEASABLE_HOLDS = frozenset({HoldReason.CREDITS, HoldReason.BUDGET, HoldReason.CLIENT_BUDGET})

# Refused before anything was sent, at planning or by an operator's reject: `retry` cannot help, a new
# drop can (a rejected drop dropped again gets a new quote).
PLANNING_CODES = frozenset(
    {
        ErrorCode.INVALID,
        ErrorCode.UNPAIRED,
        ErrorCode.AMBIGUOUS_PAIR,
        ErrorCode.TOO_MANY_JOBS,
        ErrorCode.DUPLICATE,
        ErrorCode.BAD_FOLDER_OPTIONS,
        ErrorCode.REJECTED_BY_OPERATOR,
    }
)
