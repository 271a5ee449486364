"""Logging: journald priorities under systemd, text on a terminal, JSON on request.

Every record passes a redaction filter that replaces each known secret with ``***``: keys never reach
a log line, whatever a library or a message puts in it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

# syslog priorities, which journald reads from a "<N>" prefix on each line (sd-daemon(3)).
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_NOISY = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "apscheduler": logging.WARNING}


def _not_overlap(record: logging.LogRecord) -> bool:
    """APScheduler warns when a step is still running at its next interval; each step runs one at a time
    on purpose (max_instances=1, coalesced), so a slow tick (a busy share, a distant database) is no news."""
    return "skipped: maximum number of running instances" not in str(record.msg)


def _forms(secret: str) -> set[str]:
    """``secret`` as it may appear in a message: itself, trimmed, and as ``repr``, bytes, JSON and URLs escape it.

    An exception's text often quotes a value with ``repr`` (``b'Bearer fdb_…\\n'``), which a plain
    search for the secret misses.
    """
    forms: set[str] = set()
    for text in {secret, secret.strip()}:
        forms |= {
            text,
            repr(text)[1:-1],
            text.encode("unicode_escape").decode("ascii"),
            json.dumps(text)[1:-1],
            json.dumps(text, ensure_ascii=False)[1:-1],
        }
        try:
            raw = text.encode("utf-8", "surrogateescape")  # as the environment gave it
        except UnicodeEncodeError:
            continue
        forms |= {repr(raw)[2:-1], quote(raw, safe="")}
    return {f for f in forms if len(f) >= 6}


class Redact(logging.Filter):
    """Replaces every registered secret in a record's final message with ``***``, in any escaping."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        forms: set[str] = set()
        for secret in secrets:
            if len(secret.strip()) >= 6:
                forms |= _forms(secret)
        # Longest first: an escaped form is masked whole before a shorter form inside it.
        self.secrets = sorted(forms, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in self.secrets:
            message = message.replace(secret, "***")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "***")
        record.msg, record.args = message, None
        return True


class JournalFormatter(logging.Formatter):
    """``<6>name: message``: journald adds the time and keeps the priority."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info or record.exc_text:
            text += "\n" + (record.exc_text or self.formatException(record.exc_info))  # type: ignore[arg-type]
        return "\n".join(prefix + line for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            document["traceback"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(document, ensure_ascii=False)


def _journal_is_stderr() -> bool:
    """True when stderr is connected to the journal (``JOURNAL_STREAM`` names its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def fatal(text: str) -> None:
    """A fatal error on stderr; under systemd each line carries priority 3 (err), like a logged error."""
    prefix = f"<{_PRIORITY[logging.ERROR]}>" if _journal_is_stderr() else ""
    print("\n".join(prefix + line for line in text.splitlines() or [""]), file=sys.stderr, flush=True)


def setup(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), *, debug: bool = False) -> None:
    """Configure the root logger once for the process."""
    if fmt == "auto":
        fmt = "journal" if _journal_is_stderr() else "text"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "journal":
        handler.setFormatter(JournalFormatter())
    elif fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    for name, floor in _NOISY.items():
        # httpx logs request URLs at INFO (presigned ones carry signatures); APScheduler every job run.
        logging.getLogger(name).setLevel(max(floor, root.level))
    scheduler = logging.getLogger("apscheduler.scheduler")
    if _not_overlap not in scheduler.filters:
        scheduler.addFilter(_not_overlap)
