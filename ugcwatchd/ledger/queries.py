"""The ledger's read-only questions; each reads only what it needs, through an index."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any

from ..errors import StaleTransition
from ..names import from_db, to_db
from ..states import (
    OPEN_ITEM_STATES,
    OPEN_JOB_STATES,
    RUNNING_JOB_STATES,
    SPENDING_JOB_STATES,
    ItemState,
    JobState,
)
from .backend import Connection, Dialect, Row
from .leases import mine
from .records import InputFile, Item, Job, input_from_row, item_from_row, job_from_row


def _marks(values: tuple[object, ...] | frozenset[Any]) -> str:
    return ", ".join("?" for _ in values)


def _after(prefix: str) -> str:
    """The least string above every string that starts with ``prefix`` (SQLite compares UTF-8 bytes,
    which sort as code points do): ``name >= prefix AND name < _after(prefix)`` is a prefix match."""
    for n in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[n]) + 1
        code = 0xE000 if 0xD800 <= code <= 0xDFFF else code  # surrogates are no characters of UTF-8
        if code <= 0x10FFFF:
            return prefix[:n] + chr(code)
    return "\U0010ffff" * (len(prefix) + 1)


# An item's columns renamed, beside a job's in one row (both tables have id, provider, outbox and state).
_ITEM_FIELDS = ("id", "rule", "provider", "inbox", "outbox", "key", "state", "reason", "settings", "parts")
_ITEM_COLUMNS = ", ".join(f"items.{c} AS item__{c}" for c in _ITEM_FIELDS)


def _item_of(row: Row) -> Item:
    # item_from_row reads columns by name, which a dict of the renamed ones serves as well as a Row.
    return item_from_row({c: row[f"item__{c}"] for c in _ITEM_FIELDS})


class RemoteIds(AbstractSet[str]):
    """The remote ids the ledger's jobs of one provider own, read through the unique index on demand."""

    def __init__(self, db: Connection, provider: str, without: frozenset[str] = frozenset()) -> None:
        self._db, self._provider, self._without = db, provider, without

    def __contains__(self, remote_id: object) -> bool:
        if not isinstance(remote_id, str) or remote_id in self._without:
            return False
        query = "SELECT 1 FROM jobs WHERE provider = ? AND remote_id = ?"
        return self._db.execute(query, (self._provider, remote_id)).fetchone() is not None

    def _all(self) -> set[str]:
        query = "SELECT remote_id FROM jobs WHERE provider = ? AND remote_id IS NOT NULL"
        return {r[0] for r in self._db.execute(query, (self._provider,))} - self._without

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __sub__(self, other: AbstractSet[object]) -> RemoteIds:
        """Without ``other``: still a view (reconciliation takes out the job's own id)."""
        return RemoteIds(self._db, self._provider, self._without | {x for x in other if isinstance(x, str)})


class Queries:
    """Reads over the ledger's connection ``_db``."""

    _db: Connection
    _dialect: Dialect
    _owner: str | None = None  # this daemon's name on a shared ledger: only its items are worked

    def _one(self, query: str, args: tuple[object, ...]) -> Row:
        row: Row | None = self._db.execute(query, args).fetchone()
        if row is None:
            raise StaleTransition(f"no such row: {query.split(' WHERE ')[0].split()[-1]} {args[0]}")
        return row

    def item(self, item_id: int) -> Item:
        return item_from_row(self._one("SELECT * FROM items WHERE id = ?", (item_id,)))

    def job(self, job_id: int) -> Job:
        return job_from_row(self._one("SELECT * FROM jobs WHERE id = ?", (job_id,)))

    def job_created(self, job_id: int) -> float:
        return float(self._one("SELECT created_at FROM jobs WHERE id = ?", (job_id,))[0])

    def jobs_of(self, item_id: int) -> list[Job]:
        rows = self._db.execute("SELECT * FROM jobs WHERE item_id = ? ORDER BY id", (item_id,))
        return [job_from_row(r) for r in rows]

    def inputs_of(self, item_id: int) -> list[InputFile]:
        rows = self._db.execute("SELECT * FROM inputs WHERE item_id = ? ORDER BY role, path", (item_id,))
        return [input_from_row(r) for r in rows]

    def items_in(self, *states: ItemState) -> list[Item]:
        query = f"SELECT * FROM items WHERE state IN ({_marks(states)}) ORDER BY id"  # noqa: S608
        return [item_from_row(r) for r in self._db.execute(query, states)]

    def jobs_in(self, *states: JobState, provider: str | None = None) -> list[Job]:
        """The jobs in ``states`` (of this daemon's items, on a shared ledger)."""
        condition, owner = mine(self._owner)
        query = f"SELECT * FROM jobs WHERE state IN ({_marks(states)}){condition}"  # noqa: S608
        args: tuple[object, ...] = (*states, *owner)
        if provider is not None:
            query, args = query + " AND provider = ?", (*args, provider)
        return [job_from_row(r) for r in self._db.execute(query + " ORDER BY id", args)]

    def held_cheapest_first(self, provider: str) -> Iterator[Job]:
        """The held jobs of ``provider``, the smallest estimate first (unknown estimates before all).

        The order comes from the index in one read; each job is read only when the caller gets to it,
        so a caller that stops at the first job that cannot go reads one job, not every held one.
        """
        order = f"estimate{self._dialect.nulls_first}, id"
        condition, owner = mine(self._owner)
        query = f"SELECT id FROM jobs WHERE provider = ? AND state = ?{condition} ORDER BY {order}"  # noqa: S608
        for (job_id,) in self._db.execute(query, (provider, JobState.HELD, *owner)).fetchall():
            job = self.job(job_id)
            if job.state == JobState.HELD:
                yield job

    def finishable_items(self) -> list[Item]:
        """Open items none of whose jobs is still open: only these may be finished (inputs moved, closed)."""
        open_items, open_jobs = tuple(OPEN_ITEM_STATES), OPEN_JOB_STATES
        condition, owner = mine(self._owner, "id")
        query = (
            f"SELECT * FROM items WHERE state IN ({_marks(open_items)}){condition} AND NOT EXISTS"  # noqa: S608
            f" (SELECT 1 FROM jobs WHERE jobs.item_id = items.id AND jobs.state IN ({_marks(open_jobs)}))"
            " ORDER BY id"
        )
        return [item_from_row(r) for r in self._db.execute(query, (*open_items, *owner, *open_jobs))]

    def failed_jobs_of_open_items(self) -> list[Job]:
        """Failed jobs whose item is still open: only these may still lack their error sidecar.

        A closed item had every sidecar written, so months of history are never read again here.
        """
        open_states = tuple(OPEN_ITEM_STATES)
        condition, owner = mine(self._owner, "jobs.item_id")
        # CROSS JOIN keeps this order: the open items first (few), then their jobs; never every failed job.
        rows = self._db.execute(
            "SELECT jobs.* FROM items CROSS JOIN jobs ON jobs.item_id = items.id"  # noqa: S608
            f" WHERE items.state IN ({_marks(open_states)}) AND jobs.state = ?{condition} ORDER BY jobs.id",
            (*open_states, JobState.FAILED, *owner),
        )
        return [job_from_row(r) for r in rows]

    def estimated_since(self, provider: str, since: float) -> int:
        """The estimates of the jobs of ``provider`` sent at or after ``since`` (for daily budgets).

        One range of the covering index on (provider, sent_at, state, estimate): ``+state`` keeps SQLite
        from reading every delivered job of the provider through the index on states instead.
        """
        # A job that failed after the provider charged for it (FaceDub charges at creation) was spent too.
        row = self._db.execute(
            "SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND sent_at >= ?"  # noqa: S608
            f" AND (+state IN ({_marks(SPENDING_JOB_STATES)}) OR (+state = ? AND EXISTS (SELECT 1 FROM charges"
            " WHERE charges.provider = jobs.provider AND charges.remote_id = jobs.remote_id)))",
            (provider, since, *SPENDING_JOB_STATES, JobState.FAILED),
        ).fetchone()
        return int(row[0])

    def reserved(self, provider: str, since: float, *, on_completion: bool) -> int:
        """Estimates of jobs that may cost money the account did not yet show when read at ``since``.

        Billed at creation: every intent whose outcome is unknown, everything sent since the read, and
        what was sent before it but answered after it (a long upload: created after the read too).
        Billed on completion: everything started and not yet finished, and what finished since the read.
        """
        # Disjoint sums, each one index range or a few: an OR across them would read every job of the provider.
        parts: list[tuple[str, tuple[object, ...]]]
        if on_completion:
            parts = [
                (f"state IN ({_marks(RUNNING_JOB_STATES)})", RUNNING_JOB_STATES),
                ("state = ? AND updated_at >= ?", (JobState.DELIVERED, since)),  # jobs_provider_state
            ]
        else:
            sent = tuple(s for s in SPENDING_JOB_STATES if s != JobState.SUBMITTING)
            parts = [
                ("state = ?", (JobState.SUBMITTING,)),
                (f"sent_at >= ? AND +state IN ({_marks(sent)})", (since, *sent)),  # jobs_provider_sent
                # A job's last change is no earlier than its answer (jobs_provider_state, a range per state).
                (f"state IN ({_marks(sent)}) AND updated_at >= ? AND sent_at < ?", (*sent, since, since)),
            ]
        sums = " + ".join(
            f"(SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND {where})"  # noqa: S608
            for where, _ in parts
        )
        args = tuple(a for _, values in parts for a in (provider, *values))
        return int(self._db.execute(f"SELECT {sums}", args).fetchone()[0])

    def sent_since(self, provider: str, since: float) -> list[Job]:
        """The jobs of ``provider`` whose last paid request went out at or after ``since`` (an index range)."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE provider = ? AND sent_at >= ? ORDER BY sent_at", (provider, since)
        )
        return [job_from_row(r) for r in rows]

    def open_item_with_input(self, path: str) -> Item | None:
        """The unfinished item that already holds the file at ``path``, if any."""
        open_states = tuple(OPEN_ITEM_STATES)
        row = self._db.execute(
            "SELECT items.* FROM items JOIN inputs ON inputs.item_id = items.id"  # noqa: S608
            f" WHERE inputs.path = ? AND items.state IN ({_marks(open_states)})"
            " ORDER BY items.id DESC LIMIT 1",
            (to_db(path), *open_states),
        ).fetchone()
        return item_from_row(row) if row else None

    def last_use_of(self, path: str) -> tuple[Item, str] | None:
        """The newest item that took the file at ``path``, with the content hash it took."""
        row = self._db.execute(
            "SELECT items.*, inputs.sha256 AS taken FROM items JOIN inputs ON inputs.item_id = items.id"
            " WHERE inputs.path = ? ORDER BY items.id DESC LIMIT 1",
            (to_db(path),),
        ).fetchone()
        return (item_from_row(row), row["taken"]) if row else None

    def job_names_in(self, outbox: str, stems: Iterable[str] | None = None) -> set[str]:
        """Job names already used in ``outbox``: a new job never takes one of them.

        With ``stems``, only the names that start with one of them (a superset of ``{stem}.{tag}`` and
        ``{stem}-N.{tag}``): one index range each, however many jobs the outbox has had.
        """
        outbox = to_db(outbox)
        if stems is None:
            rows = self._db.execute("SELECT name FROM jobs WHERE outbox = ?", (outbox,))
            return {from_db(r[0]) for r in rows}
        names: set[str] = set()
        for stem in {to_db(s) for s in stems}:
            rows = self._db.execute(
                "SELECT name FROM jobs WHERE outbox = ? AND name >= ? AND name < ?", (outbox, stem, _after(stem))
            )
            names.update(from_db(r[0]) for r in rows)
        return names

    def delivered_job(self, dedupe_key: str, inbox: str | None = None) -> Job | None:
        """The earliest delivered job with this content and settings (taken from ``inbox``, when given):
        a re-drop of it is a duplicate."""
        # The key never names the inbox (older ledgers' keys must keep matching): the item's inbox filters.
        # A lookup by primary key per candidate job: never a scan of the items.
        mine = " AND EXISTS (SELECT 1 FROM items WHERE items.id = jobs.item_id AND items.inbox = ?)" if inbox else ""
        row = self._db.execute(
            f"SELECT * FROM jobs WHERE dedupe_key = ? AND state = ?{mine} ORDER BY id LIMIT 1",  # noqa: S608
            (dedupe_key, JobState.DELIVERED, *((to_db(inbox),) if inbox else ())),
        ).fetchone()
        return job_from_row(row) if row else None

    def remote_ids(self, provider: str) -> RemoteIds:
        """Every remote id some ledger job owns: reconciliation never adopts one of these.

        A view, not a copy: ``in`` is one lookup in the unique index, however long the history.
        """
        return RemoteIds(self._db, provider)

    def events(self, item_id: int) -> list[tuple[str, dict[str, Any] | None]]:
        rows = self._db.execute("SELECT kind, detail FROM events WHERE item_id = ? ORDER BY id", (item_id,))
        return [(r["kind"], json.loads(r["detail"]) if r["detail"] else None) for r in rows]

    def all_jobs(self, state: JobState | None = None) -> list[tuple[Item, Job]]:
        """Every job (in ``state``) with its item, oldest first: the whole history, for ``ugcwatchd jobs``."""
        return self.jobs_with_items(*([state] if state else []))

    def jobs_with_items(self, *states: JobState) -> list[tuple[Item, Job]]:
        """The jobs in ``states`` (every job without), each with its item, in one read."""
        where = f" WHERE jobs.state IN ({_marks(states)})" if states else ""
        rows = self._db.execute(
            f"SELECT {_ITEM_COLUMNS}, jobs.* FROM jobs JOIN items ON items.id = jobs.item_id{where}"  # noqa: S608
            " ORDER BY jobs.id",
            states,
        )
        return [(_item_of(r), job_from_row(r)) for r in rows]

    def recent_failures(self, limit: int = 10) -> list[tuple[Item, Job]]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY updated_at DESC LIMIT ?", (JobState.FAILED, limit)
        )
        return [(self.item(job.item_id), job) for job in map(job_from_row, rows)]

    def job_counts(self, provider: str | None = None) -> dict[str, int]:
        """Jobs by state (of ``provider``): the tally the triggers keep, never a count of rows."""
        where, args = ("WHERE provider = ?", (provider,)) if provider else ("", ())
        rows = self._db.execute(f"SELECT state, SUM(n) FROM job_tally {where} GROUP BY state", args)  # noqa: S608
        return {r[0]: r[1] for r in rows if r[1]}

    def counts(self) -> dict[str, int]:
        """Items by state: the tally the triggers keep."""
        return {r[0]: r[1] for r in self._db.execute("SELECT state, n FROM item_tally WHERE n > 0")}
