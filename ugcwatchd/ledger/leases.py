"""Several daemons on one PostgreSQL ledger: who works which item, and what they count together.

Each daemon :meth:`~Leases.join`\\ s the ledger under a name of its own (host, pid, state folder, a random
tag) and from then on works only the items it owns. It owns what it records, and what it takes over:
an open item whose lease (``items.lease_until``, in the database's clock) has run out, because its owner
died or lost the database. :meth:`~Leases.renew` (every few seconds) extends the leases of its own
items and takes over the expired ones in one transaction, the rows claimed with ``FOR UPDATE SKIP
LOCKED`` so two daemons never take the same item. A daemon that stops releases its items at once.

Every write to an item or its jobs (``Ledger.move_job``, ``annotate_job``, ``move_item``) checks, in its
transaction, that the item is still this daemon's; one taken over meanwhile raises :class:`LeaseLost`,
so a daemon that stalled past its lease cannot act on work that another one resumed. The one who takes
over resumes through the reconcile rule, never by sending again blindly.

The SQLite ledger has one daemon (the state folder's lock): nothing here applies, every item is its own.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InputTaken, LeaseLost, LedgerError
from ..names import to_db
from ..states import OPEN_ITEM_STATES, JobState
from .backend import Connection
from .records import InputFile

if TYPE_CHECKING:
    from .pg import PgConnection, SessionLock

log = logging.getLogger("ugcwatchd.ledger")
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"  # one clock for every host: the database's
RECENTLY_CLOSED = 120.0  # seconds: another host's scan may have seen a file this long before it moved
_OPEN = tuple(OPEN_ITEM_STATES)
_OPEN_MARKS = ", ".join("?" for _ in _OPEN)


def mine(owner: str | None, column: str = "item_id") -> tuple[str, tuple[object, ...]]:
    """A condition keeping the rows of ``owner``'s items (nothing without an owner), and its argument."""
    if owner is None:
        return "", ()
    if column == "id":
        return " AND owner = ?", (owner,)
    return f" AND {column} IN (SELECT id FROM items WHERE owner = ?)", (owner,)  # noqa: S608


@dataclass(frozen=True)
class Renewal:
    """What a renewal did: items kept, items taken over from a daemon whose lease ran out."""

    kept: int
    taken: tuple[int, ...]


def new_owner(state_id: str) -> str:
    """This run's name in the ledger: readable, and never the name of an earlier run."""
    return f"{socket.gethostname()}:{os.getpid()}:{state_id}:{secrets.token_hex(3)}"


class Leases:
    """Mixin of :class:`~ugcwatchd.ledger.Ledger`: ownership of items by lease, on PostgreSQL."""

    _db: Connection
    _pg: PgConnection | None
    _owner: str | None = None
    _lease_ttl: float = 30.0

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _event(self, item_id: int | None, job_id: int | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    @property
    def owner(self) -> str | None:
        """This daemon's name in a shared ledger, or None (SQLite, or a command that owns nothing)."""
        return self._owner

    @property
    def shared(self) -> bool:
        """Whether several daemons may work this ledger (PostgreSQL)."""
        return self._pg is not None

    def session_lock(self, key: int) -> SessionLock:
        """A lock shared by every daemon of a PostgreSQL ledger (see :class:`~.pg.SessionLock`)."""
        if self._pg is None:
            raise LedgerError("a SQLite ledger has one daemon: it shares no locks")
        return self._pg.session_lock(key)

    def join(self, owner: str, lease_ttl: float) -> None:
        """Work this shared ledger as ``owner``: from now on only owned items are worked and written."""
        if not self.shared:
            return
        self._owner, self._lease_ttl = owner, lease_ttl
        host, pid = socket.gethostname(), os.getpid()
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO daemons (owner, host, pid, started_at, lease_until) VALUES (?, ?, ?, {NOW}, {NOW} + ?)",  # noqa: S608
                (owner, host, pid, lease_ttl),
            )
            # Daemons long gone: their rows tell nobody anything.
            db.execute(f"DELETE FROM daemons WHERE lease_until < {NOW} - 86400")  # noqa: S608
            db.execute(
                f"DELETE FROM reservations WHERE owner NOT IN (SELECT owner FROM daemons WHERE lease_until >= {NOW})"  # noqa: S608
            )
            # This state folder's earlier runs on this host are dead (its lock is ours): resume their items now.
            earlier_run = "owner <> ? AND split_part(owner, ':', 1) = ? AND split_part(owner, ':', 3) = ?"
            db.execute(f"DELETE FROM daemons WHERE {earlier_run}", (owner, host, owner.split(":")[2]))  # noqa: S608
            earlier = db.execute(
                f"UPDATE items SET owner = ?, lease_until = {NOW} + ? WHERE state IN ({_OPEN_MARKS})"  # noqa: S608
                " AND owner <> ? AND split_part(owner, ':', 1) = ? AND split_part(owner, ':', 3) = ? RETURNING id",
                (owner, lease_ttl, *_OPEN, owner, host, owner.split(":")[2]),
            ).fetchall()
        if earlier:
            log.info("resuming %d open item(s) of this state folder's earlier run", len(earlier))

    def renew(self, take_over: int = 100) -> Renewal:
        """Extend this daemon's leases, and take over up to ``take_over`` open items whose lease ran out."""
        owner = self._owner
        if owner is None:
            return Renewal(0, ())
        ttl = self._lease_ttl
        with self.transaction() as db:
            db.execute(f"UPDATE daemons SET lease_until = {NOW} + ? WHERE owner = ?", (ttl, owner))  # noqa: S608
            # A reservation outlives its submission only when clearing it failed: the job's state counts now.
            db.execute(
                "DELETE FROM reservations WHERE owner = ? AND job_id NOT IN (SELECT id FROM jobs WHERE state = ?)",
                (owner, JobState.QUEUED),
            )
            kept = db.execute(
                f"UPDATE items SET lease_until = {NOW} + ? WHERE owner = ? AND state IN ({_OPEN_MARKS})"  # noqa: S608
                " RETURNING id",
                (ttl, owner, *_OPEN),
            ).fetchall()
            rows = db.execute(
                f"SELECT id, owner FROM items WHERE state IN ({_OPEN_MARKS})"  # noqa: S608
                f" AND (owner IS NULL OR lease_until IS NULL OR lease_until < {NOW})"
                " ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED",
                (*_OPEN, take_over),
            ).fetchall()
            taken = tuple(int(r[0]) for r in rows)
            if taken:
                marks = ", ".join("?" for _ in taken)
                db.execute(
                    f"UPDATE items SET owner = ?, lease_until = {NOW} + ? WHERE id IN ({marks})",  # noqa: S608
                    (owner, ttl, *taken),
                )
                for item_id, before in ((int(r[0]), r[1]) for r in rows):
                    self._event(item_id, None, "item taken over", {"from": before, "by": owner})
        if taken:
            log.warning("took over %d item(s) whose daemon stopped renewing its lease: %s", len(taken), list(taken))
        return Renewal(len(kept), taken)

    def release(self) -> None:
        """Give up this daemon's items at once (a clean stop): the others need not wait out the lease."""
        owner = self._owner
        if owner is None:
            return
        with self.transaction() as db:
            db.execute(f"UPDATE items SET lease_until = {NOW} - 1 WHERE owner = ?", (owner,))  # noqa: S608
            db.execute("DELETE FROM reservations WHERE owner = ?", (owner,))
            db.execute("DELETE FROM daemons WHERE owner = ?", (owner,))
        self._owner = None

    def _claim_inputs(self, db: Connection, inputs: Sequence[InputFile], now: float) -> None:
        """Inside ``add_item``'s transaction: no other item holds these files (the inbox claim, as rows).

        Taken: a file of an open item; or the very same file (content, size, time, inode) of an item that
        closed moments ago, which another daemon's scan may still have seen in the inbox before it moved.
        """
        if self._owner is None:
            return
        for i in inputs:
            row = db.execute(
                "SELECT items.id FROM inputs JOIN items ON items.id = inputs.item_id"  # noqa: S608
                f" WHERE inputs.path = ? AND (items.state IN ({_OPEN_MARKS}) OR (items.updated_at >= ?"
                " AND inputs.sha256 = ? AND inputs.bytes = ? AND inputs.mtime_ns = ?"
                " AND inputs.inode IS NOT DISTINCT FROM ?)) LIMIT 1",
                (to_db(i.path), *_OPEN, now - RECENTLY_CLOSED, i.sha256, i.bytes, i.mtime_ns, i.inode),
            ).fetchone()
            if row is not None:
                raise InputTaken(f"{i.path} is already taken by item {row[0]}")

    def _own(self, db: Connection, item_id: int) -> None:
        """Inside ``add_item``'s transaction: the new item is this daemon's."""
        if self._owner is not None:
            db.execute(
                f"UPDATE items SET owner = ?, lease_until = {NOW} + ? WHERE id = ?",  # noqa: S608
                (self._owner, self._lease_ttl, item_id),
            )

    def _fence(self, db: Connection, item_id: int) -> None:
        """Inside a write transaction: the item must still be this daemon's (see the module's docstring)."""
        if self._owner is None:
            return
        row = db.execute("SELECT owner FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is not None and row[0] != self._owner:
            raise LeaseLost(f"item {item_id} is now worked by {row[0] or 'another daemon'}")

    # -- what the daemons count together ----------------------------------------------------------

    def checking(self) -> AbstractContextManager[object]:
        """Around a submission's checks and its reservation: on a shared ledger one daemon at a time, so
        two daemons never both pass a check that only one of them fits (a no-op with one daemon)."""
        return self.transaction() if self._owner is not None else nullcontext()

    def reserve(self, job_id: int, provider: str, estimate: int) -> None:
        """Set ``estimate`` aside for a submission that passed its checks (shared ledgers only)."""
        if self._owner is None:
            return
        self._db.execute(
            "INSERT INTO reservations (job_id, provider, estimate, owner) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET estimate = excluded.estimate, owner = excluded.owner",
            (job_id, provider, estimate, self._owner),
        )

    def unreserve(self, job_id: int) -> None:
        if self._owner is None:
            return
        self._db.execute("DELETE FROM reservations WHERE job_id = ?", (job_id,))

    def _release_reservation(self, db: Connection, job_id: int) -> None:
        """Inside a job's move: what its reservation set aside, the job's state now counts."""
        if self._owner is not None:
            db.execute("DELETE FROM reservations WHERE job_id = ?", (job_id,))

    def reserved_elsewhere(self, provider: str) -> int:
        """What the other live daemons set aside for submissions of ``provider`` not yet intended."""
        if self._owner is None:
            return 0
        row = self._db.execute(
            "SELECT COALESCE(SUM(r.estimate), 0) FROM reservations r JOIN daemons d ON d.owner = r.owner"  # noqa: S608
            f" WHERE r.provider = ? AND r.owner <> ? AND d.lease_until >= {NOW}",
            (provider, self._owner),
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def ledger_id(self) -> str:
        """This shared ledger's random identity (made with its schema); "" on SQLite."""
        if not self.shared:
            return ""
        row = self._db.execute("SELECT id FROM ledger_info").fetchone()
        return str(row[0]) if row is not None else ""

    def daemons(self) -> list[tuple[str, float]]:
        """The daemons sharing this ledger now, with the seconds their lease has left."""
        if not self.shared:
            return []
        rows = self._db.execute(
            f"SELECT owner, lease_until - {NOW} FROM daemons WHERE lease_until >= {NOW} ORDER BY owner"  # noqa: S608
        ).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]
