"""What the web console reads from the ledger, and the event that records an operator's act there.

Every question is bounded, however long the history: searches walk a window of the newest items by
primary key (or by the state index) and page on from where they stopped; counts come from the tallies;
finished jobs, charges and failures are index ranges; lists of open work are cut at a limit.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ..names import to_db
from ..states import JobState
from .backend import Connection, Dialect
from .queries import _ITEM_COLUMNS, _item_of
from .records import Item, Job, item_from_row, job_from_row, parts_from_db

SEARCH_WINDOW = 5000  # items looked at per search page at most: a rare term pages on, it never scans a year


class Tallies(NamedTuple):
    """Items by state, jobs by provider and state, credits charged by provider and by rule and parts."""

    items: list[tuple[str, int]]
    jobs: list[tuple[str, str, int]]
    charged: list[tuple[str, float]]
    charged_by: list[tuple[str, str, str, float]]  # provider, rule, parts as stored (JSON or ""), credits


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = to_db(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class SearchPage:
    """One page of items, newest first, and where the next page starts (None: nothing older)."""

    items: list[Item]
    older: int | None  # pass as ``before`` for the next page
    looked_at: int  # items examined for this page


@dataclass(frozen=True)
class Finished:
    """When a delivered job's last paid request went, when its completion was seen, when it was delivered."""

    sent_at: float
    completed_at: float
    delivered_at: float
    estimate: int | None


@dataclass(frozen=True)
class Event:
    at: float
    job_id: int | None
    kind: str
    detail: dict[str, Any] | None


class ConsoleQueries:
    """Reads for the web console over the ledger's connection ``_db``, and its one kind of write."""

    _db: Connection
    _dialect: Dialect

    if TYPE_CHECKING:

        def _event(
            self, item_id: int | None, job_id: int | None, kind: str, detail: dict[str, Any] | None = None
        ) -> None: ...

        def transaction(self) -> AbstractContextManager[Connection]: ...

    def search_items(
        self,
        *,
        name: str = "",
        client: str = "",
        rule: str = "",
        state: str = "",
        before: int | None = None,
        limit: int = 50,
        window: int = SEARCH_WINDOW,
    ) -> SearchPage:
        """Items matching every filter given (a file name part, a client, a rule, a state), newest first.

        At most ``window`` items older than ``before`` are examined (through the primary key, or the state
        index when a state is given); a page that is not full when the window ends says where to go on.
        """
        inner = "id < ?"
        inner_args: list[object] = [before if before is not None else 2**63 - 1]
        outer: list[str] = []
        outer_args: list[object] = []
        if state:
            inner, inner_args = inner + " AND state = ?", [*inner_args, state]
        if rule:
            outer.append("items.rule = ?")
            outer_args.append(rule)
        if client:
            outer.append(self._dialect.json_has_value("items.parts"))
            outer_args.append(to_db(client))  # as the parts store a folder name that is not UTF-8
        if name:
            outer.append(
                "EXISTS (SELECT 1 FROM inputs WHERE inputs.item_id = items.id AND inputs.name LIKE ? ESCAPE '\\')"
            )
            outer_args.append(_like(name))
        where = f"WHERE {' AND '.join(outer)}" if outer else ""
        scan = f"SELECT id FROM items WHERE {inner} ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = self._db.execute(
            f"SELECT items.* FROM ({scan}) AS w CROSS JOIN items ON items.id = w.id {where}"  # noqa: S608
            " ORDER BY items.id DESC LIMIT ?",
            (*inner_args, window, *outer_args, limit + 1),
        ).fetchall()
        items = [item_from_row(r) for r in rows[:limit]]
        if len(rows) > limit:
            return SearchPage(items, items[-1].id, window)
        lowest, looked = self._db.execute(
            f"SELECT MIN(id), COUNT(*) FROM ({scan}) AS w",  # noqa: S608
            (*inner_args, window),
        ).fetchone()
        return SearchPage(items, lowest if looked == window else None, int(looked))

    def jobs_in_with_items(self, *states: JobState, limit: int = 200) -> list[tuple[Item, Job]]:
        """Jobs in ``states`` with their items, oldest first, at most ``limit`` of them.

        The ids are picked from the state index alone, then only those rows are read: sorting every
        matching row with its item first took 300 ms with 100,000 jobs held.
        """
        marks = ", ".join("?" for _ in states)
        rows = self._db.execute(
            f"SELECT {_ITEM_COLUMNS}, jobs.* FROM jobs JOIN items ON items.id = jobs.item_id"  # noqa: S608
            f" WHERE jobs.id IN (SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY id LIMIT ?) ORDER BY jobs.id",
            (*states, limit),
        )
        return [(_item_of(r), job_from_row(r)) for r in rows]

    def queued_estimates(self, provider: str) -> list[int | None]:
        """The estimates of the provider's queued jobs, in the order they go (one covering index range)."""
        rows = self._db.execute(
            "SELECT estimate FROM jobs WHERE provider = ? AND state = ? ORDER BY id", (provider, JobState.QUEUED)
        )
        return [r[0] for r in rows]

    def finished_recently(self, provider: str, limit: int = 20) -> list[Finished]:
        """The provider's last delivered jobs that were sent and seen completing: observed job times."""
        completed = self._dialect.json_number("detail", "completed_at")
        rows = self._db.execute(
            f"SELECT sent_at, estimate, updated_at, {completed} AS completed_at"  # noqa: S608
            " FROM jobs WHERE provider = ? AND state = ? ORDER BY updated_at DESC LIMIT ?",
            (provider, JobState.DELIVERED, limit),
        )
        return [
            Finished(r["sent_at"], r["completed_at"], r["updated_at"], r["estimate"])
            for r in rows
            if r["sent_at"] is not None and r["completed_at"] is not None and r["sent_at"] <= r["completed_at"]
        ]

    def spend_by_day(self, since: float) -> list[tuple[str, str, dict[str, str], float]]:
        """What was charged since ``since``: (local date, provider, the item's parts, credits), summed."""
        rows = self._db.execute(
            f"SELECT {self._dialect.local_day('c.at')} AS day,"  # noqa: S608
            " c.provider, i.parts, SUM(c.credits)"
            " FROM charges c JOIN items i ON i.id = c.item_id WHERE c.at >= ?"
            " GROUP BY day, c.provider, i.parts",
            (since,),
        )
        return [(r[0], r[1], parts_from_db(r[2]), float(r[3])) for r in rows]

    def charged_totals(self) -> tuple[tuple[str, float], ...]:
        """Every provider's charged total (a tally): it changes whenever a charge is recorded."""
        return tuple((r[0], float(r[1])) for r in self._db.execute("SELECT provider, credits FROM charged ORDER BY 1"))

    def tallies(self) -> Tallies:
        """What the metrics show: the tallies the ledger's triggers keep (a few rows, however long the history)."""
        db = self._db
        return Tallies(
            [(r[0], int(r[1])) for r in db.execute("SELECT state, n FROM item_tally WHERE n > 0")],
            [(r[0], r[1], int(r[2])) for r in db.execute("SELECT provider, state, n FROM job_tally WHERE n > 0")],
            [(r[0], float(r[1])) for r in db.execute("SELECT provider, credits FROM charged")],
            [
                (r[0], r[1], r[2] or "", float(r[3]))
                for r in db.execute("SELECT provider, rule, parts, credits FROM charged_by")
            ],
        )

    def charges_of(self, item_id: int) -> dict[int, float]:
        """What each job of the item was charged."""
        rows = self._db.execute("SELECT job_id, credits FROM charges WHERE item_id = ?", (item_id,))
        return {r[0]: float(r[1]) for r in rows}

    def job_owning(self, provider: str, remote_id: str) -> Job | None:
        """The job that owns ``remote_id`` at ``provider`` (the unique index), if any."""
        row = self._db.execute("SELECT * FROM jobs WHERE provider = ? AND remote_id = ?", (provider, remote_id))
        found = row.fetchone()
        return job_from_row(found) if found else None

    def timeline(self, item_id: int, limit: int = 300) -> list[Event]:
        """The item's newest ``limit`` events, oldest first."""
        rows = self._db.execute(
            "SELECT at, job_id, kind, detail FROM events WHERE item_id = ? ORDER BY id DESC LIMIT ?",
            (item_id, limit),
        ).fetchall()
        return [Event(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None) for r in reversed(rows)]

    def record_console_act(self, item_id: int, job_id: int | None, act: str, detail: dict[str, Any]) -> None:
        """An operator's act in the web console, as an event of the item that names the console."""
        with self.transaction():
            self._event(item_id, job_id, f"console: {act}", {"by": "console", **detail})
