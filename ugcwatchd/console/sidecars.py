"""An item's sidecars as its page shows them, read from an outbox that other people can write to.

The outbox is a shared folder: whoever can drop files there can also leave a FIFO, a symlink to the
daemon's credentials, or a file of gigabytes under a sidecar's name, and a share can hang. So only a
regular file of a sidecar's size is read, never through a symlink, and opening never waits; the read
runs in a thread of its own that the daemon neither shares nor waits for at exit (not the default
executor, whose few threads the transfers and the scans use), and at most a few such threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..outbox.sidecars import sidecar_path

KINDS = ("status", "quote", "result", "error")
SIZE_MAX = 256 * 1024  # bytes; a bigger file is not one of ours
READERS = 4  # reads under way at once; more than that means the share hangs, and more threads would not help


@dataclass(frozen=True)
class Unshown:
    """A file with a sidecar's name that is not shown, and why."""

    why: str


Sidecar = str | Unshown | None  # its text, why it is not shown, or None: there is none
Found = dict[int, dict[str, Sidecar]]  # job id -> kind -> sidecar
_readers = threading.BoundedSemaphore(READERS)


def read_one(path: Path) -> Sidecar:
    """The text of the sidecar at ``path``; an :class:`Unshown` for anything but a regular file of ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Unshown("not shown: a symbolic link")
        return Unshown(f"not shown: {exc.strerror or exc}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Unshown("not shown: not a regular file")
        if st.st_size > SIZE_MAX:
            return Unshown(f"not shown: {st.st_size} bytes, more than a sidecar has")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(SIZE_MAX).decode("utf-8", "replace")
    except OSError as exc:
        return Unshown(f"not shown: {exc.strerror or exc}")
    finally:
        os.close(fd)


def read_sidecars(outbox: str, jobs: Sequence[tuple[int, str]]) -> Found:
    """Each job's sidecars (None where there is none)."""
    return {job_id: {kind: read_one(sidecar_path(Path(outbox), name, kind)) for kind in KINDS} for job_id, name in jobs}


async def read_within(outbox: str, jobs: Sequence[tuple[int, str]], wait: float) -> Found | None:
    """:func:`read_sidecars` in a daemon thread; None when it takes longer than ``wait`` seconds (a hung
    share: the thread is left to it) or when earlier reads still hang."""
    if not _readers.acquire(blocking=False):
        return None
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Found | None] = loop.create_future()

    def deliver(found: Found | None) -> None:
        if not done.done():  # not given up on
            done.set_result(found)

    def work() -> None:
        found: Found | None = None
        try:
            found = read_sidecars(outbox, jobs)
        except OSError:
            pass  # the outbox went away or cannot be listed: shown as unreadable
        finally:
            _readers.release()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(deliver, found)

    threading.Thread(target=work, name="console-sidecars", daemon=True).start()
    try:
        return await asyncio.wait_for(done, wait)
    except TimeoutError:
        return None
