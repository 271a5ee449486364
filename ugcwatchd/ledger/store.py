"""The ledger: one SQLite file in the state folder, committed before every side effect.

Items are groups of inputs under one rule; jobs are one remote job each; events are an append-only
log of every transition. Every state change goes through :meth:`Ledger.move_job` or
:meth:`Ledger.move_item`, which refuse a transition the state machine does not allow or one from a
state the row is no longer in.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import LedgerError, StaleTransition
from ..names import to_db
from ..states import TERMINAL_JOB_STATES, ItemState, JobState
from .approvals import Approvals
from .charges import Charges
from .console import ConsoleQueries
from .facts import Facts
from .inputs import Inputs
from .queries import Queries
from .records import InputFile, Item, ItemSettings, Job, JobDetail, PlannedJob, new_token
from .schema import FILE_NAME, ITEM_MOVES, JOB_MOVES, SCHEMA, SCHEMA_VERSION, statements

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's write transaction
JOB_FIELDS = frozenset({"stage", "remote_id", "sent_at", "attempts", "detail", "token", "estimate"})


class Ledger(Queries, Inputs, Charges, Facts, Approvals, ConsoleQueries):
    """One SQLite file in the state folder; every method commits before it returns."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
            self._db.row_factory = sqlite3.Row
            self._use_wal()
            # FULL: a commit reported is a commit on disk, even across power loss; intents depend on it.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}", remedy="check the state folder") from None
        except OSError as exc:
            raise LedgerError(f"cannot create the state folder {path.parent}: {exc.strerror}") from None

    @classmethod
    def open(cls, state_dir: Path) -> Ledger:
        return cls(state_dir / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    def _use_wal(self) -> None:
        """``journal_mode=WAL``, waiting out another opener's migration: SQLite does not wait here itself."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger {self.path} was written by a newer ugcwatchd "
                f"(schema {version}; this one knows {SCHEMA_VERSION})",
                remedy="upgrade ugcwatchd, or restore the older state folder",
            )
        return version

    def _migrate(self) -> None:
        """Bring the schema to the current version: read and migrate in one write transaction.

        Two processes opening a new ledger at once: the second waits for the first's transaction, then
        reads the version it wrote and has nothing left to do. The statements run one by one inside the
        transaction (``executescript`` would commit first), so a crash or an error at any point leaves
        the previous version whole.
        """
        if self._version() == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for number in range(self._version(), SCHEMA_VERSION):
                for statement in statements(SCHEMA[number]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={number + 1}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: all or nothing, and durable when it returns."""
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
            cur = db.execute(
                "INSERT INTO items (rule, provider, inbox, outbox, key, state, reason, settings, parts, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule,
                    provider,
                    to_db(inbox),
                    to_db(outbox),
                    to_db(key),
                    state,
                    reason,
                    settings.dumps() if settings else None,
                    json.dumps(parts, sort_keys=True) if parts else None,
                    now,
                    now,
                ),
            )
            item_id = int(cur.lastrowid or 0)
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
        return self.job(job_id)

    def annotate_job(self, job_id: int, detail: JobDetail) -> Job:
        """Replace a job's detail without changing its state (retry times, progress, sidecar written)."""
        with self.transaction() as db:
            row = db.execute("SELECT item_id, detail FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"job {job_id} does not exist")
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
