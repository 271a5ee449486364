"""The ledger's read-only questions; each reads only what it needs, through an index."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..errors import StaleTransition
from ..states import OPEN_ITEM_STATES, RUNNING_JOB_STATES, SPENDING_JOB_STATES, ItemState, JobState
from .records import InputFile, Item, Job, input_from_row, item_from_row, job_from_row


def _marks(values: tuple[object, ...] | frozenset[Any]) -> str:
    return ", ".join("?" for _ in values)


class Queries:
    """Reads over the ledger's connection ``_db``."""

    _db: sqlite3.Connection

    def _one(self, query: str, args: tuple[object, ...]) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(query, args).fetchone()
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
        query = f"SELECT * FROM jobs WHERE state IN ({_marks(states)})"  # noqa: S608
        args: tuple[object, ...] = states
        if provider is not None:
            query, args = query + " AND provider = ?", (*states, provider)
        return [job_from_row(r) for r in self._db.execute(query + " ORDER BY id", args)]

    def failed_jobs_of_open_items(self) -> list[Job]:
        """Failed jobs whose item is still open: only these may still lack their error sidecar.

        A closed item had every sidecar written, so months of history are never read again here.
        """
        open_states = tuple(OPEN_ITEM_STATES)
        rows = self._db.execute(
            "SELECT jobs.* FROM jobs JOIN items ON items.id = jobs.item_id"  # noqa: S608
            f" WHERE jobs.state = ? AND items.state IN ({_marks(open_states)}) ORDER BY jobs.id",
            (JobState.FAILED, *open_states),
        )
        return [job_from_row(r) for r in rows]

    def estimated_since(self, provider: str, since: float) -> int:
        """The estimates of the jobs of ``provider`` sent at or after ``since`` (for daily budgets)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND sent_at >= ?"  # noqa: S608
            f" AND state IN ({_marks(SPENDING_JOB_STATES)})",
            (provider, since, *SPENDING_JOB_STATES),
        ).fetchone()
        return int(row[0])

    def reserved(self, provider: str, since: float, *, on_completion: bool) -> int:
        """Estimates of jobs that may cost money the account did not yet show when read at ``since``.

        Billed at creation: every intent whose outcome is unknown, and everything sent since the read.
        Billed on completion: everything started and not yet finished, and what finished since the read.
        """
        if on_completion:
            query = (
                "SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND"
                " (state IN (?, ?, ?) OR (state = ? AND updated_at >= ?))"
            )
            args: tuple[object, ...] = (provider, *RUNNING_JOB_STATES, JobState.DELIVERED, since)
        else:
            query = (
                "SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND"  # noqa: S608
                f" (state = ? OR (state IN ({_marks(SPENDING_JOB_STATES)}) AND sent_at >= ?))"
            )
            args = (provider, JobState.SUBMITTING, *SPENDING_JOB_STATES, since)
        return int(self._db.execute(query, args).fetchone()[0])

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
            (path, *open_states),
        ).fetchone()
        return item_from_row(row) if row else None

    def last_use_of(self, path: str) -> tuple[Item, str] | None:
        """The newest item that took the file at ``path``, with the content hash it took."""
        row = self._db.execute(
            "SELECT items.*, inputs.sha256 AS taken FROM items JOIN inputs ON inputs.item_id = items.id"
            " WHERE inputs.path = ? ORDER BY items.id DESC LIMIT 1",
            (path,),
        ).fetchone()
        return (item_from_row(row), row["taken"]) if row else None

    def job_names_in(self, outbox: str) -> set[str]:
        """Job names already used in ``outbox``: a new job never takes one of them."""
        rows = self._db.execute(
            "SELECT jobs.name FROM jobs JOIN items ON items.id = jobs.item_id WHERE items.outbox = ?", (outbox,)
        )
        return {r[0] for r in rows}

    def delivered_job(self, dedupe_key: str) -> Job | None:
        """The earliest delivered job with this content and settings: a re-drop of it is a duplicate."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE dedupe_key = ? AND state = ? ORDER BY id LIMIT 1",
            (dedupe_key, JobState.DELIVERED),
        ).fetchone()
        return job_from_row(row) if row else None

    def remote_ids(self, provider: str) -> set[str]:
        """Every remote id some ledger job owns: reconciliation never adopts one of these."""
        rows = self._db.execute("SELECT remote_id FROM jobs WHERE provider = ? AND remote_id IS NOT NULL", (provider,))
        return {r[0] for r in rows}

    def events(self, item_id: int) -> list[tuple[str, dict[str, Any] | None]]:
        rows = self._db.execute("SELECT kind, detail FROM events WHERE item_id = ? ORDER BY id", (item_id,))
        return [(r["kind"], json.loads(r["detail"]) if r["detail"] else None) for r in rows]

    def all_jobs(self, state: JobState | None = None) -> list[tuple[Item, Job]]:
        if state:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY id", (state,))
        else:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY id")
        items: dict[int, Item] = {}
        out = []
        for row in rows:
            job = job_from_row(row)
            if job.item_id not in items:
                items[job.item_id] = self.item(job.item_id)
            out.append((items[job.item_id], job))
        return out

    def recent_failures(self, limit: int = 10) -> list[tuple[Item, Job]]:
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE state = ? ORDER BY updated_at DESC LIMIT ?", (JobState.FAILED, limit)
        )
        return [(self.item(job.item_id), job) for job in map(job_from_row, rows)]

    def job_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state")}
