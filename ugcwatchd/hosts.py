"""Several hosts on one PostgreSQL ledger: this daemon's membership, and a provider account's limits
counted in the database instead of in one process.

- :class:`Membership` joins the ledger under a name of its own, renews its leases every few seconds (in
  a worker thread: a slow database never stalls the loop) and releases them at a clean stop.
- :class:`SharedWindows` is :class:`~ugcwatchd.providers.limits.RateWindows` with its count in the
  ``rate_hits`` table, in the database's clock: N daemons together stay inside the documented windows.
- :class:`SharedMutex` is a lock every daemon of the database takes around what must happen one at a
  time for the whole account (FaceDub: count the job slots, then create a job).

With the SQLite ledger there is one daemon and none of this is used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from limits import RateLimitItemPerSecond

from .errors import LedgerError
from .ledger import Ledger
from .ledger.leases import NOW, new_owner
from .ledger.pg import SessionLock
from .providers.limits import SAFETY_MARGIN, RateWindows

log = logging.getLogger("ugcwatchd.hosts")
RENEWALS_PER_TTL = 6  # a lease of 30 s is renewed every 5 s: a renewal or two may fail without losing it
LOCK_WAIT = 0.1  # seconds between two tries of a shared mutex another daemon holds


def lock_key(name: str) -> int:
    """A stable advisory-lock key for ``name`` (a signed 64-bit integer, as PostgreSQL takes)."""
    return int.from_bytes(hashlib.sha256(f"ugcwatchd:{name}".encode()).digest()[:8], "big", signed=True)


class Membership:
    """This daemon among the daemons of one shared ledger."""

    def __init__(self, ledger: Ledger, state_id: str, lease_ttl: float) -> None:
        self.ledger = ledger
        self.owner = new_owner(state_id)
        self.lease_ttl = lease_ttl
        self.every = max(1.0, lease_ttl / RENEWALS_PER_TTL)
        self._failing_since: float | None = None
        self._said_late = False

    def join(self) -> None:
        """Join the ledger, waiting out (up to twice the lease) a daemon that stalled holding its write lock:
        the server ends such a session within seconds."""
        deadline = time.monotonic() + 2 * self.lease_ttl
        while True:
            try:
                self.ledger.join(self.owner, self.lease_ttl)
                break
            except LedgerError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("cannot join the ledger yet (%s); trying again", exc)
                time.sleep(1.0)
        others = [name for name, _ in self.ledger.daemons() if name != self.owner]
        log.info("sharing the ledger as %s with %d other daemon(s)%s", self.owner, len(others), _listed(others))

    async def renew(self) -> None:
        """Keep this daemon's leases, and take over the items of a daemon that stopped renewing its own."""
        try:
            await asyncio.to_thread(self.ledger.renew)
        except Exception as exc:
            now = time.monotonic()
            first = self._failing_since is None
            if self._failing_since is None:
                self._failing_since = now
            # Past the lease, the others may take this daemon's items over: its writes are refused then.
            late = now - self._failing_since + self.every > self.lease_ttl
            if first:
                log.warning("cannot renew the leases on the ledger: %s", exc)
            elif late and not self._said_late:
                self._said_late = True
                log.error("leases not renewed for %.0f s: other daemons may take this one's work over", self.lease_ttl)
            return
        if self._failing_since is not None:
            log.info("leases renewed again")
            self._failing_since, self._said_late = None, False

    def leave(self) -> None:
        """At a clean stop: the other daemons may resume this one's open items at once."""
        try:
            self.ledger.release()
        except Exception as exc:
            log.warning("cannot release the leases (%s); the others resume after %.0f s", exc, self.lease_ttl)


def _listed(names: list[str]) -> str:
    return f": {', '.join(names)}" if names else ""


class SharedWindows(RateWindows):
    """The documented windows of one account, counted in the shared ledger for every daemon at once."""

    def __init__(self, per_window: Mapping[str, int], ledger: Ledger, provider: str, window_seconds: int = 60) -> None:
        super().__init__(per_window, window_seconds)
        self.ledger = ledger
        self.provider = provider
        self._hits = 0

    async def _count(self, item: RateLimitItemPerSecond, endpoint_class: str) -> None:
        while (wait := await asyncio.to_thread(self._hit, endpoint_class, item.amount, item.get_expiry())) > 0:
            self.waited += wait
            await asyncio.sleep(wait)

    def _hit(self, endpoint_class: str, amount: int, window: float) -> float:
        """Count one request if the window has room (0.0), else the seconds until it has."""
        key = (self.provider, endpoint_class)
        # One writer at a time across the database: the count and the hit are one step for every daemon.
        with self.ledger.transaction() as db:
            now = float(db.execute(f"SELECT {NOW}").fetchone()[0])
            rows = db.execute(
                "SELECT at FROM rate_hits WHERE provider = ? AND endpoint = ? AND at > ? ORDER BY at DESC LIMIT ?",
                (*key, now - window, amount),
            ).fetchall()
            if len(rows) >= amount:
                return float(rows[-1][0]) + window - now + SAFETY_MARGIN
            db.execute("INSERT INTO rate_hits (provider, endpoint, at) VALUES (?, ?, ?)", (*key, now))
            self._hits += 1
            if self._hits % 50 == 0:  # hits older than the window count for nothing
                db.execute("DELETE FROM rate_hits WHERE provider = ? AND endpoint = ? AND at < ?", (*key, now - window))
        return 0.0

    async def seed(self, endpoint_class: str, sent: list[float], now: float | None = None) -> None:
        """Nothing to do: the database remembers the requests of every daemon, before a restart too."""


class SharedMutex:
    """``async with``: one daemon of the database at a time, and one task of this daemon."""

    def __init__(self, lock: SessionLock) -> None:
        self._lock = lock
        self._local = asyncio.Lock()

    async def __aenter__(self) -> SharedMutex:
        await self._local.acquire()
        try:
            # Held by another process: nothing here can signal its release, so look again shortly.
            while not await asyncio.to_thread(self._lock.try_acquire):  # noqa: ASYNC110
                await asyncio.sleep(LOCK_WAIT)
        except BaseException:
            self._local.release()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await asyncio.to_thread(self._lock.release)
        finally:
            self._local.release()


class SharedAccount:
    """What a provider's adapter counts together with the other daemons of the ledger (its ``share``)."""

    def __init__(self, ledger: Ledger, provider: str) -> None:
        self.ledger = ledger
        self.provider = provider

    def windows(self, per_window: Mapping[str, int]) -> RateWindows:
        return SharedWindows(per_window, self.ledger, self.provider)

    def mutex(self, purpose: str) -> SharedMutex:
        return SharedMutex(self.ledger.session_lock(lock_key(f"{self.provider}:{purpose}")))

    def recent(self, name: str, max_age: float) -> Any:
        row = self.ledger._db.execute(
            f"SELECT value FROM shared_answers WHERE provider = ? AND name = ? AND at >= {NOW} - ?",  # noqa: S608
            (self.provider, name, max_age),
        ).fetchone()
        return json.loads(row[0]) if row is not None else None

    def keep(self, name: str, value: Any) -> None:
        self.ledger._db.execute(
            f"INSERT INTO shared_answers (provider, name, value, at) VALUES (?, ?, ?, {NOW})"  # noqa: S608
            " ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value, at = excluded.at",
            (self.provider, name, json.dumps(value)),
        )
