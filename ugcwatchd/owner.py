"""One owner: one daemon per state folder, and one daemon per inbox across hosts and state folders.

:class:`StateLock` is an exclusive ``flock`` on ``<state_dir>/daemon.lock``, held for the daemon's
lifetime; the kernel drops it however the process ends, so a stale file never blocks a restart.

:class:`InboxClaim` is a small JSON file, ``.ugcwatchd-claim``, that a daemon keeps fresh in each inbox
it takes from. A daemon that finds a fresh claim that is not its own leaves that inbox alone. Freshness
is judged twice, so that a wrong clock on either host cannot make a live claim look dead: by the
claim's own ``refreshed_at``, and by whether the file changed within the last minute of our own
monotonic clock (a claim seen for the first time counts as just changed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from .errors import AlreadyRunning, UgcwatchdError, map_os_errors
from .outbox.files import fsync_dir, write_atomic

log = logging.getLogger(__name__)

LOCK_NAME = "daemon.lock"
ID_NAME = "id"
CLAIM_NAME = ".ugcwatchd-claim"  # hidden: the scanner never takes it as input
REFRESH_EVERY = 10.0  # our claims are rewritten this often
CHECK_EVERY = 2.0  # every claim, ours or not, is looked at this often
STALE_AFTER = 60.0  # a claim that has not changed for this long may be taken over
CONFIRM_AFTER = 1.0  # a claim just written is read back after this, before anything is taken
_ID = re.compile(r"[0-9a-f]{8,64}")


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _timestamp(value: object) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(str(value)).timestamp()
    return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


SHARED_HOST = "shared-ledger"  # the claimant of the daemons that share one PostgreSQL ledger


@dataclass(frozen=True)
class Claimant:
    """Who claims: a daemon is its host, its pid and its state folder's id; the daemons of one shared
    ledger claim together, as one claimant named after the ledger (:meth:`shared`)."""

    host: str
    pid: int
    state_id: str

    @classmethod
    def shared(cls, ledger_id: str) -> Claimant:
        """Every daemon of this ledger: each keeps the claim fresh, none pauses for another."""
        return cls(SHARED_HOST, 0, f"ledger {ledger_id}")

    def __str__(self) -> str:
        if self.host == SHARED_HOST:
            return f"the daemons sharing {self.state_id}"
        return f"{self.host}:{self.pid} (state {self.state_id})"


class StateLock:
    """An exclusive lock on a state folder, with the holder's pid in the lock file."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self.state_id = ""
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock, or raise :class:`AlreadyRunning` naming the pid that holds it."""
        with map_os_errors(f"lock the state folder {self.state_dir}"):
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder(fd)
            os.close(fd)
            who = "another ugcwatchd" if pid is None else f"another ugcwatchd (pid {pid})"
            raise AlreadyRunning(f"{who} is already running on {self.state_dir}") from None
        except OSError as exc:
            os.close(fd)
            raise UgcwatchdError(
                f"cannot lock the state folder {self.state_dir}: {exc.strerror}",
                remedy="put the state folder on a filesystem that supports locks",
            ) from None
        try:
            with map_os_errors(f"write to the state folder {self.state_dir}"):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.state_id = _state_id(self.state_dir)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> int | None:
        """The pid in the lock file; the holder writes it right after locking, so allow it a moment."""
        for _ in range(20):
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            if text.isdigit():
                return int(text)
            time.sleep(0.025)
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # the file stays (unlinking a lock file races); the pid goes
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def claimant(self) -> Claimant:
        """This daemon, as its inbox claims name it (the lock must be held)."""
        if self._fd is None:
            raise RuntimeError("the state folder is not locked")
        return Claimant(socket.gethostname(), os.getpid(), self.state_id)

    def __enter__(self) -> StateLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _state_id(state_dir: Path) -> str:
    """The state folder's random id, made once (call with the lock held)."""
    path = state_dir / ID_NAME
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        text = ""
    if _ID.fullmatch(text):
        return text
    new = secrets.token_hex(8)
    write_atomic(path, f"{new}\n".encode(), mode=0o644)
    return new


@dataclass(frozen=True)
class _Found:
    """A claim file as read: its holder (None when unreadable) and what tells one version from the next."""

    holder: Claimant | None
    claimed_at: float | None
    refreshed_at: float | None
    signature: tuple[int, int, bytes]

    def __str__(self) -> str:
        if self.holder is None:
            return "an unknown daemon (its claim file is unreadable)"
        since = f" since {_iso(self.claimed_at)}" if self.claimed_at is not None else ""
        return f"{self.holder}{since}"


class InboxClaim:
    """This daemon's claim on one inbox folder.

    ``refresh()`` (every :data:`CHECK_EVERY`, in a worker thread) looks at the claim file: it rewrites
    ours every :data:`REFRESH_EVERY`, takes a free or stale one, and notes a fresh foreign one.
    ``check()`` (every tick, cheap) says why the inbox is not ours, and ``held`` whether it is ours to
    take from now: a claim just taken is read back after :data:`CONFIRM_AFTER` first, so that of two
    daemons claiming at the same moment only the last writer goes on. ``release()`` deletes our claim.
    """

    def __init__(
        self,
        folder: Path,
        me: Claimant,
        *,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        confirm_after: float = CONFIRM_AFTER,
    ) -> None:
        self.folder = folder
        self.path = folder / CLAIM_NAME
        self.me = me
        self.wall = wall
        self.clock = clock
        self.confirm_after = confirm_after
        self._lock = threading.Lock()
        self._written_at: float | None = None  # our clock, when we last wrote our claim; None: not ours
        self._claimed_at = 0.0
        self._confirmed = False
        self._foreign: _Found | None = None  # the fresh claim of another daemon, last time we looked
        self._observed: tuple[tuple[int, int, bytes], float] | None = None  # a foreign claim, first seen when
        self._problem: str | None = None
        self._released = False

    # -- the file ---------------------------------------------------------------------------------

    def _read(self) -> _Found | None:
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())  # of the file opened: fresh on NFS (close-to-open)
                data = f.read(65536)
        except FileNotFoundError:
            return None
        signature = (st.st_ino, st.st_mtime_ns, data)
        try:
            doc = json.loads(data)
            holder = Claimant(str(doc["host"]), int(doc["pid"]), str(doc["state_id"]))
        except (ValueError, TypeError, KeyError):
            return _Found(None, None, None, signature)
        return _Found(holder, _timestamp(doc.get("claimed_at")), _timestamp(doc.get("refreshed_at")), signature)

    def _write(self, now: float) -> None:
        me, wall = self.me, self.wall()
        stamps = {"claimed_at": _iso(self._claimed_at or wall), "refreshed_at": _iso(wall)}
        document = {"host": me.host, "pid": me.pid, "state_id": me.state_id, **stamps}
        # Readable by the daemons of other hosts and users, whatever our umask.
        write_atomic(self.path, (json.dumps(document) + "\n").encode(), mode=0o644)
        self._written_at = now

    # -- refresh ----------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Look at the claim file: keep ours fresh, take a free or stale one, note a foreign one."""
        with self._lock:
            if self._released:
                return
            try:
                self._refresh(self.clock())
            except OSError as exc:
                gone = exc.errno in (errno.ENOENT, errno.ENOTDIR) and not self.folder.is_dir()
                # A missing inbox pauses its rule by itself; anything else is this claim's trouble.
                self._problem = None if gone else f"its claim {self.path} cannot be kept ({exc.strerror})"
            else:
                self._problem = None

    def _refresh(self, now: float) -> None:
        found = self._read()
        if found is not None and found.holder == self.me:
            if self._written_at is None or now - self._written_at >= REFRESH_EVERY - CHECK_EVERY / 2:
                if self._written_at is None:  # ours, from another claim of this process (a reload)
                    self._claimed_at = found.claimed_at or self.wall()
                    self._confirmed = True
                self._write(now)
            self._foreign = None
            return
        if found is not None and not self._takeable(found, now):
            self._foreign, self._written_at, self._confirmed = found, None, False
            return
        if found is not None and self._earlier_run(found):
            log.info("inbox %s: taking over the claim left by this daemon's earlier run", self.folder)
        elif found is not None:
            refreshed = _iso(found.refreshed_at) if found.refreshed_at is not None else "at an unknown time"
            why = f"last refreshed {refreshed}, unchanged for over {STALE_AFTER:.0f} s"
            log.warning("inbox %s: taking over the claim of %s: %s", self.folder, found, why)
        self._foreign, self._observed, self._confirmed = None, None, False
        self._claimed_at = self.wall()
        self._write(now)

    def _takeable(self, found: _Found, now: float) -> bool:
        """A foreign claim may be taken over when it is stale by its own stamp *and* by our observation."""
        if self._earlier_run(found):
            return True
        if self._observed is None or self._observed[0] != found.signature:
            self._observed = (found.signature, now)  # first seen, or changed: fresh for a minute
        fresh_here = now - self._observed[1] < STALE_AFTER
        stamp = found.refreshed_at
        fresh_there = stamp is not None and abs(self.wall() - stamp) < STALE_AFTER
        return not (fresh_here or fresh_there)

    def _earlier_run(self, found: _Found) -> bool:
        """Our host and state folder (so our lock) but a dead pid: left by a crash of ours. A live pid
        (a state folder copied with its id) is judged like any other claim."""
        holder, me = found.holder, self.me
        return (
            holder is not None and (holder.host, holder.state_id) == (me.host, me.state_id) and not _alive(holder.pid)
        )

    # -- check ------------------------------------------------------------------------------------

    def check(self) -> str | None:
        """Why this inbox is not ours (a sentence for the log), or None."""
        if self._lock.acquire(blocking=False):  # a refresh under way: judge by what is known
            try:
                self._confirm()
            finally:
                self._lock.release()
        if self._problem is not None:
            return f"inbox {self.folder}: {self._problem}"
        if self._foreign is not None:
            return f"inbox {self.folder} is claimed by {self._foreign}"
        if self._written_at is not None and self.clock() - self._written_at > STALE_AFTER / 2:
            return f"our claim on inbox {self.folder} has not been refreshed for over {STALE_AFTER / 2:.0f} s"
        return None

    @property
    def held(self) -> bool:
        """Ours, confirmed, and recently refreshed: files may be taken from this inbox now."""
        written = self._written_at
        return (
            not self._released
            and self._confirmed
            and self._problem is None
            and written is not None
            and self.clock() - written <= STALE_AFTER / 2
        )

    def _confirm(self) -> None:
        if self._released or self._confirmed or self._written_at is None:
            return
        now = self.clock()
        if now - self._written_at < self.confirm_after:
            return
        try:
            found = self._read()
        except OSError:
            return  # the next tick tries again; the refresh reports lasting trouble
        if found is not None and found.holder == self.me:
            self._confirmed = True
            log.debug("inbox %s: claimed by %s", self.folder, self.me)
            return
        self._written_at = None  # another daemon wrote after us: its claim stands
        if found is not None:
            self._foreign, self._observed = found, (found.signature, now)

    # -- release ----------------------------------------------------------------------------------

    def release(self) -> None:
        """Delete our claim (at shutdown); a claim that is not ours is left alone."""
        self._released = True
        if not self._lock.acquire(timeout=5):
            log.warning("inbox %s: its claim could not be released (a refresh is stuck)", self.folder)
            return
        try:
            if self._written_at is None or self.me.host == SHARED_HOST:
                return  # a shared claim stays for the daemons still running; alone, it goes stale in a minute
            found = self._read()
            if found is not None and found.holder == self.me:
                self.path.unlink(missing_ok=True)
                fsync_dir(self.folder)
        except OSError as exc:
            log.warning("inbox %s: cannot remove its claim (%s); it goes stale in a minute", self.folder, exc.strerror)
        finally:
            self._written_at = None
            self._lock.release()
