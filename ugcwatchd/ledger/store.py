"""The ledger: one SQLite file in the state folder (the default), or a PostgreSQL database, committed
before every side effect.

Items are groups of inputs under one rule; jobs are one remote job each; events are an append-only
log of every transition. Every state change goes through :meth:`Ledger.move_job` or
:meth:`Ledger.move_item`, which refuse a transition the state machine does not allow or one from a
state the row is no longer in. The SQL is written once (SQLite's spelling); backend.py says how it runs
on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LedgerError, StaleTransition
from ..names import to_db
from ..states import TERMINAL_JOB_STATES, ItemState, JobState
from .approvals import Approvals
from .backend import POSTGRESQL, SQLITE, Connection, Dialect, is_url
from .charges import Charges
from .console import ConsoleQueries
from .facts import Facts
from .inputs import Inputs
from .leases import Leases
from .queries import Queries
from .records import InputFile, Item, ItemSettings, Job, JobDetail, PlannedJob, new_token
from .schema import FILE_NAME, ITEM_MOVES, JOB_MOVES
from .sqlite import open_sqlite

if TYPE_CHECKING:
    from .pg import PgConnection

JOB_FIELDS = frozenset({"stage", "remote_id", "sent_at", "attempts", "detail", "token", "estimate"})


class Ledger(Queries, Inputs, Charges, Facts, Approvals, ConsoleQueries, Leases):
    """The ledger on one backend; every method commits before it returns.

    ``where``: the SQLite file's path, or a ``postgresql://`` URL.
    """

    def __init__(
        self, where: Path | str, clock: Callable[[], float] = time.time, *, password: str | None = None
    ) -> None:
        self._clock = clock
        self._where, self._password = where, password  # the password goes to the driver, never into a URL
        self._pg: PgConnection | None = None
        self._path: Path | None = None
        self._db: Connection
        self._dialect: Dialect
        if is_url(where):
            from .pg import PgConnection

            self._pg = PgConnection(str(where), password=password)
            self._db, self._dialect = self._pg, POSTGRESQL
        else:
            self._path = Path(where)
            self._db, self._dialect = open_sqlite(self._path), SQLITE

    @classmethod
    def open(cls, where: Path | str, *, password: str | None = None) -> Ledger:
        """The ledger of a state folder (SQLite), or of the database a ``postgresql://`` URL names."""
        return cls(where, password=password) if is_url(where) else cls(Path(where) / FILE_NAME)

    @property
    def where(self) -> Path | str:
        """The SQLite file, or the PostgreSQL URL (it may hold a password: never show it)."""
        return self._where

    def reopen(self) -> Ledger:
        """A second, independent handle on the same ledger (its own connections), for another thread."""
        return Ledger(self._where, self._clock, password=self._password)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def path(self) -> Path:
        """The SQLite file (the metrics and the console read it directly)."""
        if self._path is None:
            raise LedgerError("a PostgreSQL ledger has no file", remedy="use the SQLite ledger for this command")
        return self._path

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
        else:
            self._db.close()  # type: ignore[attr-defined]

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """All or nothing, and durable when it returns; one writer at a time (BEGIN IMMEDIATE on SQLite)."""
        if self._pg is not None:
            with self._pg.transaction():
                yield self._db
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _event(self, item_id: int | None, job_id: int | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        self._db.execute(
            "INSERT INTO events (at, item_id, job_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
            (self._clock(), item_id, job_id, kind, json.dumps(detail, sort_keys=True) if detail else None),
        )

    # -- creating items ---------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock()

    def add_item(
        self,
        *,
        rule: str,
        provider: str,
        inbox: str,
        outbox: str,
        key: str,
        inputs: Sequence[InputFile],
        jobs: Sequence[PlannedJob],
        state: ItemState = ItemState.PLANNED,
        reason: str | None = None,
        settings: ItemSettings | None = None,
        parts: dict[str, str] | None = None,
    ) -> Item:
        """Record an item with its inputs and jobs in one transaction."""
        now = self._clock()
        with self.transaction() as db:
            self._claim_inputs(db, inputs, now)
            row = db.execute(
                "INSERT INTO items (rule, provider, inbox, outbox, key, state, reason, settings, parts, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    rule,
                    provider,
                    to_db(inbox),
                    to_db(outbox),
                    to_db(key),
                    state,
                    reason,
                    settings.dumps() if settings else None,
                    json.dumps({to_db(k): to_db(v) for k, v in parts.items()}, sort_keys=True) if parts else None,
                    now,
                    now,
                ),
            ).fetchone()
            item_id = int(row[0])
            self._own(db, item_id)
            db.executemany(
                "INSERT INTO inputs (item_id, role, path, name, sha256, bytes, mtime_ns, mime, seconds, inode)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item_id,
                        i.role,
                        to_db(i.path),
                        to_db(i.name),
                        i.sha256,
                        i.bytes,
                        i.mtime_ns,
                        i.mime,
                        i.seconds,
                        i.inode,
                    )
                    for i in inputs
                ],
            )
            db.executemany(
                "INSERT INTO jobs (item_id, token, name, outbox, provider, dedupe_key, params, estimate, state,"
                " detail, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        item_id,
                        new_token(),
                        to_db(job.name),
                        to_db(outbox),
                        provider,
                        job.dedupe_key,
                        json.dumps(job.params, sort_keys=True),
                        job.estimate,
                        job.state,
                        job.detail.dumps(),
                        now,
                        now,
                    )
                    for job in jobs
                ],
            )
            self._event(
                item_id,
                None,
                f"item {state}",
                {"rule": rule, "key": key, "reason": reason} if reason else {"rule": rule, "key": key},
            )
        return self.item(item_id)

    # -- transitions ------------------------------------------------------------------------------

    def move_job(
        self, job_id: int, to: JobState, *, expect: JobState | Sequence[JobState] | None = None, **fields: Any
    ) -> Job:
        """Move a job to ``to`` (and set ``fields``), committed before the caller acts on it."""
        unknown = set(fields) - JOB_FIELDS
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        with self.transaction() as db:
            row = db.execute("SELECT state, item_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"job {job_id} does not exist")
            self._fence(db, row["item_id"])
            current = JobState(row["state"])
            expected = (expect,) if isinstance(expect, str) else tuple(expect or (current,))
            if current not in expected:
                raise StaleTransition(f"job {job_id} is {current}, not {' or '.join(expected)}")
            if to not in JOB_MOVES[current]:
                raise StaleTransition(f"job {job_id} cannot go from {current} to {to}")
            values = {k: v.dumps() if isinstance(v, JobDetail) else v for k, v in fields.items()}
            sets = ", ".join(f"{k} = ?" for k in ("state", "updated_at", *values))
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (to, self._clock(), *values.values(), job_id))  # noqa: S608
            logged = {k: v.to_json() if isinstance(v, JobDetail) else v for k, v in fields.items()}
            self._event(row["item_id"], job_id, f"job {current} -> {to}", logged or None)
            if to in TERMINAL_JOB_STATES:
                self._charge(db, job_id, to)
            if to != JobState.QUEUED:
                self._release_reservation(db, job_id)
        return self.job(job_id)

    def annotate_job(self, job_id: int, detail: JobDetail) -> Job:
        """Replace a job's detail without changing its state (retry times, progress, sidecar written)."""
        with self.transaction() as db:
            row = db.execute("SELECT item_id, detail FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"job {job_id} does not exist")
            self._fence(db, row["item_id"])
            text = detail.dumps()
            if text != row["detail"]:
                db.execute("UPDATE jobs SET detail = ?, updated_at = ? WHERE id = ?", (text, self._clock(), job_id))
                self._event(row["item_id"], job_id, "job noted", detail.to_json())
        return self.job(job_id)

    def move_item(self, item_id: int, to: ItemState, *, reason: str | None = None) -> Item:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"item {item_id} does not exist")
            self._fence(db, item_id)
            current = ItemState(row["state"])
            if to != current and to not in ITEM_MOVES[current]:
                raise StaleTransition(f"item {item_id} cannot go from {current} to {to}")
            db.execute(
                "UPDATE items SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                (to, reason, self._clock(), item_id),
            )
            self._event(item_id, None, f"item {current} -> {to}", {"reason": reason} if reason else None)
        return self.item(item_id)

    def redownload(self, job_id: int) -> Job:
        """An operator's retry of a job whose remote result exists: fetch it again, never resubmit it."""
        job = self.job(job_id)
        detail = job.detail.cleared().but(remote=job.detail.remote, completed_at=job.detail.completed_at)
        return self.move_job(job_id, JobState.REMOTE_DONE, expect=JobState.FAILED, detail=detail)

    def requeue(self, job_id: int) -> Job:
        """An operator's retry: a failed or ambiguous job starts again from queued, its error cleared."""
        job = self.job(job_id)
        # A new token: the old one names the remote record that failed, which must not be found again.
        return self.move_job(
            job_id,
            JobState.QUEUED,
            expect=(JobState.FAILED, JobState.AMBIGUOUS),
            remote_id=None,
            stage=None,
            detail=job.detail.cleared(),
            token=new_token(),
        )
