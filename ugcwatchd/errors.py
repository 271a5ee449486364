"""The project's exit codes and exceptions, and the one place library errors become ours."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; 78 is EX_CONFIG, which the unit file tells systemd not to restart on."""

    OK = 0
    RUNTIME = 1  # e.g. a provider unreachable
    USAGE = 2  # command-line misuse
    CONFIG = 78  # EX_CONFIG, a rejected API key included; systemd does not restart on it


class UgcwatchdError(Exception):
    """Base of every error we report to a person: one sentence, an exit code, and what to do."""

    exit_code: ExitCode = ExitCode.RUNTIME

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message} ({self.remedy})" if self.remedy else self.message


class UsageError(UgcwatchdError):
    exit_code = ExitCode.USAGE


class ConfigError(UgcwatchdError):
    exit_code = ExitCode.CONFIG


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, located as precisely as we can."""

    file: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str  # e.g. ``rules[1].dublab.to[0]``; empty for the whole file
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigProblems(ConfigError):
    """Every problem found in a configuration, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0, p.path))
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{len(self.problems)} configuration {noun}:\n" + "\n".join(map(str, self.problems)))

    def __str__(self) -> str:
        return self.message


class MissingExtraError(UgcwatchdError):
    """An optional part is not installed."""

    def __init__(self, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra, which is not installed",
            remedy=f"pip install 'ugcwatchd[{extra}]'",
        )


class LedgerError(UgcwatchdError):
    """The ledger cannot be opened or used."""


class AlreadyRunning(UgcwatchdError):
    """Another daemon holds the state folder's lock: one state folder, one daemon."""


class StaleTransition(UgcwatchdError):
    """A row was not in the state a transition expected: someone else moved it first."""


class InputTaken(StaleTransition):
    """Another daemon recorded an item with this file first (several hosts on one share)."""


class LeaseLost(StaleTransition):
    """Another daemon took this item over (ours stopped renewing its lease in time): it is theirs now."""


class ProviderError(UgcwatchdError):
    """A provider's answer (or its absence), classified for the daemon to act on.

    What each class means for a job is decided in one table, ``ugcwatchd.lifecycle.disposition``.
    ``message`` is one sentence for a person; ``provider_error`` keeps the provider's own words.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        provider_error: str | None = None,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        remedy: str | None = None,
    ) -> None:
        super().__init__(message, remedy=remedy)
        self.provider = provider
        self.status = status
        self.provider_error = provider_error
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown


class Rejected(ProviderError):
    """400 or a validation error: the job fails with the provider's message."""


class AuthRejected(ProviderError):
    """401/403 for the account: the provider is paused, nothing fails."""

    exit_code = ExitCode.CONFIG


class Forbidden(ProviderError):
    """403 about one resource (DubLab: the file belongs to another user)."""


class OutOfCredits(ProviderError):
    """402, or too few credits for the estimate: work is held until credits return."""


class NotFound(ProviderError):
    """404: the job or file does not exist, or is not ours."""


class Conflict(ProviderError):
    """409: DubLab says the dub already started."""


class NotUploaded(ProviderError):
    """412: DubLab has no upload for the file yet."""


class RateLimited(ProviderError):
    """429: wait ``retry_after`` seconds (on FaceDub's POST /jobs it may mean no free job slot)."""


class Transient(ProviderError):
    """5xx, timeouts, connection errors: retry with backoff.

    With ``outcome_unknown`` the request may have taken effect: reconcile before sending it again.
    """


class OddAnswer(Transient):
    """A 2xx whose body is not what the API document describes (an HTML page, a missing field, a
    field of the wrong type): a provider fault like a 5xx, retried, never a crash.

    After a paid request (``outcome_unknown``) the request did take effect, but its answer cannot be
    read: reconcile before sending it again.
    """


class DownloadFailed(Transient):
    """A result that could not be fetched whole and as what it claims to be: an answer other than 200
    (a redirect without a usable ``Location`` included), too large, too slow, cut short, or not the
    media its name says. Retried as a download; the job is never resubmitted for it."""


class UploadRefused(ProviderError):
    """The presigned upload host refused the PUT (400, 401 or 403: an expired URL, a signature that
    does not match). About that one URL, never the account: the submission is redone with a fresh
    upload URL and the provider is not paused."""


@contextmanager
def map_os_errors(what: str, *, in_use: str = "pick another --port") -> Iterator[None]:
    """Turn an OSError while doing ``what`` into one of ours, without the library traceback.

    ``in_use`` is the remedy for an address already taken: where the address was chosen.
    """
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UgcwatchdError(f"cannot {what}: the address is already in use", remedy=in_use) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UgcwatchdError(f"cannot {what}: permission denied", remedy="check the owner and mode") from None
        raise UgcwatchdError(f"cannot {what}: {exc.strerror or exc}") from None
