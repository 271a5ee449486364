"""The project's exit codes and exceptions, and the one place library errors become ours."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (DESIGN §3)."""

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


class MissingExtraError(UgcwatchdError):
    """An optional part is not installed."""

    def __init__(self, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{extra}' extra, which is not installed",
            remedy=f"pip install 'ugcwatchd[{extra}]'",
        )


@contextmanager
def map_os_errors(what: str) -> Iterator[None]:
    """Turn an OSError while doing ``what`` into one of ours, without the library traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UgcwatchdError(
                f"cannot {what}: the address is already in use", remedy="pick another --port"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UgcwatchdError(f"cannot {what}: permission denied", remedy="check the owner and mode") from None
        raise UgcwatchdError(f"cannot {what}: {exc.strerror or exc}") from None
