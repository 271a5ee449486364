"""The ledger (DESIGN §6): the single source of truth, in SQLite, committed before every side effect.

Items are groups of inputs under one rule; jobs are one remote job each; events are an append-only
log of every transition. The ledger is plain data: it knows nothing of folders or providers, and
every state change goes through :meth:`Ledger.move_job` / :meth:`Ledger.move_item`, which refuse a
transition the state machine does not allow or one from a state the row is no longer in.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UgcwatchdError

FILE_NAME = "ledger.sqlite3"

ITEM_STATES = ("waiting", "planned", "running", "delivered", "failed", "held")
JOB_STATES = ("queued", "submitting", "submitted", "remote_done", "delivered", "failed", "held", "ambiguous")
TERMINAL_JOB_STATES = frozenset({"delivered", "failed"})
TERMINAL_ITEM_STATES = frozenset({"delivered", "failed"})

# Which job transitions are legal. "held" and "ambiguous" wait for credits or an operator, then resume.
JOB_MOVES: dict[str, frozenset[str]] = {
    "queued": frozenset({"submitting", "held", "failed"}),
    "submitting": frozenset({"submitting", "submitted", "queued", "held", "failed", "ambiguous"}),
    "submitted": frozenset({"remote_done", "failed", "held"}),
    "remote_done": frozenset({"delivered", "failed"}),
    "held": frozenset({"queued", "submitting", "submitted", "failed"}),
    "ambiguous": frozenset({"queued", "submitted", "failed"}),
    "delivered": frozenset(),
    "failed": frozenset({"queued"}),  # only by an operator's `retry`
}
ITEM_MOVES: dict[str, frozenset[str]] = {
    "waiting": frozenset({"planned", "failed"}),
    "planned": frozenset({"running", "held", "delivered", "failed"}),
    "running": frozenset({"delivered", "failed", "held", "planned"}),
    "held": frozenset({"planned", "running", "failed", "delivered"}),
    "delivered": frozenset(),
    "failed": frozenset({"planned"}),
}

_SCHEMA: Sequence[str] = (
    # version 1
    """
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        provider TEXT NOT NULL,
        inbox TEXT NOT NULL,
        outbox TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX items_state ON items(state);
    CREATE TABLE inputs (
        item_id INTEGER NOT NULL REFERENCES items(id),
        role TEXT NOT NULL,
        path TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        mime TEXT,
        seconds REAL,
        PRIMARY KEY (item_id, path)
    );
    CREATE INDEX inputs_path ON inputs(path);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id),
        token TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        provider TEXT NOT NULL,
        dedupe_key TEXT NOT NULL,
        params TEXT NOT NULL,
        estimate INTEGER,
        state TEXT NOT NULL,
        stage TEXT,
        remote_id TEXT,
        sent_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        detail TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_dedupe ON jobs(dedupe_key, state);
    CREATE UNIQUE INDEX jobs_remote ON jobs(provider, remote_id) WHERE remote_id IS NOT NULL;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        item_id INTEGER,
        job_id INTEGER,
        kind TEXT NOT NULL,
        detail TEXT
    );
    """,
)
SCHEMA_VERSION = len(_SCHEMA)


class LedgerError(UgcwatchdError):
    """The ledger cannot be opened or used."""


class StaleTransition(UgcwatchdError):
    """A row was not in the state a transition expected: someone else moved it first."""


@dataclass(frozen=True)
class InputFile:
    role: str  # photo | video | media
    path: str
    name: str
    sha256: str
    bytes: int
    mtime_ns: int
    mime: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class PlannedJob:
    name: str  # e.g. "clip.de" or "alice.facedub"
    dedupe_key: str
    params: dict[str, Any]
    estimate: int | None = None
    state: str = "queued"  # "failed" for a job refused at planning (invalid, unpaired, duplicate)
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    id: int
    item_id: int
    token: str
    name: str
    provider: str
    dedupe_key: str
    params: dict[str, Any]
    estimate: int | None
    state: str
    stage: str | None
    remote_id: str | None
    sent_at: float | None
    attempts: int
    detail: dict[str, Any]


@dataclass(frozen=True)
class Item:
    id: int
    rule: str
    provider: str
    inbox: str
    outbox: str
    key: str
    state: str
    reason: str | None


_ERROR_KEYS = frozenset(
    {
        "stage",
        "code",
        "message",
        "http_status",
        "provider_error",
        "retryable",
        "sidecar",
        "held",
        "candidates",
        "retry_at",
        "missing",
        "remote",
    }
)


def new_token() -> str:
    """A job's ledger token: short, unique, safe in a file name (DubLab's record name carries it)."""
    return "ugc-" + secrets.token_hex(6)


class Ledger:
    """One SQLite file in the state folder; every method commits before it returns."""

    def __init__(self, path: Path, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
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

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"the ledger {self.path} was written by a newer ugcwatchd "
                f"(schema {version}; this one knows {SCHEMA_VERSION})",
                remedy="upgrade ugcwatchd, or restore the older state folder",
            )
        for number in range(version, SCHEMA_VERSION):
            # executescript commits whatever is open first, so each step carries its own transaction:
            # a crash mid-migration leaves the previous version whole.
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA[number]}\nPRAGMA user_version={number + 1};\nCOMMIT;")

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
        state: str = "planned",
        reason: str | None = None,
    ) -> Item:
        """Record an item with its inputs and jobs in one transaction."""
        now = self._clock()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO items (rule, provider, inbox, outbox, key, state, reason, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (rule, provider, inbox, outbox, key, state, reason, now, now),
            )
            item_id = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO inputs (item_id, role, path, name, sha256, bytes, mtime_ns, mime, seconds)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(item_id, i.role, i.path, i.name, i.sha256, i.bytes, i.mtime_ns, i.mime, i.seconds) for i in inputs],
            )
            for job in jobs:
                cur = db.execute(
                    "INSERT INTO jobs (item_id, token, name, provider, dedupe_key, params, estimate, state, detail,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item_id,
                        new_token(),
                        job.name,
                        provider,
                        job.dedupe_key,
                        json.dumps(job.params, sort_keys=True),
                        job.estimate,
                        job.state,
                        json.dumps(job.detail, sort_keys=True) if job.detail else None,
                        now,
                        now,
                    ),
                )
            self._event(
                item_id,
                None,
                f"item {state}",
                {"rule": rule, "key": key, "reason": reason} if reason else {"rule": rule, "key": key},
            )
        return self.item(item_id)

    # -- transitions ------------------------------------------------------------------------------

    def move_job(self, job_id: int, to: str, *, expect: str | Sequence[str] | None = None, **fields: Any) -> Job:
        """Move a job to ``to`` (and set ``fields``), committed before the caller acts on it."""
        allowed = {"stage", "remote_id", "sent_at", "attempts", "detail", "token", "estimate"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        with self.transaction() as db:
            row = db.execute("SELECT state, item_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"job {job_id} does not exist")
            current = row["state"]
            expected = (expect,) if isinstance(expect, str) else tuple(expect or (current,))
            if current not in expected:
                raise StaleTransition(f"job {job_id} is {current}, not {' or '.join(expected)}")
            if to not in JOB_MOVES[current]:
                raise StaleTransition(f"job {job_id} cannot go from {current} to {to}")
            values = {k: json.dumps(v, sort_keys=True) if k == "detail" else v for k, v in fields.items()}
            sets = ", ".join(f"{k} = ?" for k in ("state", "updated_at", *values))
            db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (to, self._clock(), *values.values(), job_id))  # noqa: S608
            self._event(row["item_id"], job_id, f"job {current} -> {to}", fields or None)
        return self.job(job_id)

    def annotate_job(self, job_id: int, detail: dict[str, Any]) -> Job:
        """Replace a job's detail without changing its state (retry times, progress, sidecar written)."""
        with self.transaction() as db:
            row = db.execute("SELECT item_id, detail FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"job {job_id} does not exist")
            text = json.dumps(detail, sort_keys=True)
            if text != row["detail"]:
                db.execute("UPDATE jobs SET detail = ?, updated_at = ? WHERE id = ?", (text, self._clock(), job_id))
                self._event(row["item_id"], job_id, "job noted", detail)
        return self.job(job_id)

    def job_created(self, job_id: int) -> float:
        return float(self._db.execute("SELECT created_at FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])

    def move_item(self, item_id: int, to: str, *, reason: str | None = None) -> Item:
        with self.transaction() as db:
            row = db.execute("SELECT state FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise StaleTransition(f"item {item_id} does not exist")
            if to != row["state"] and to not in ITEM_MOVES[row["state"]]:
                raise StaleTransition(f"item {item_id} cannot go from {row['state']} to {to}")
            db.execute(
                "UPDATE items SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                (to, reason, self._clock(), item_id),
            )
            self._event(item_id, None, f"item {row['state']} -> {to}", {"reason": reason} if reason else None)
        return self.item(item_id)

    # -- reading ----------------------------------------------------------------------------------

    def item(self, item_id: int) -> Item:
        row = self._db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row)

    def job(self, job_id: int) -> Job:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row)

    def jobs_of(self, item_id: int) -> list[Job]:
        return [_job(r) for r in self._db.execute("SELECT * FROM jobs WHERE item_id = ? ORDER BY id", (item_id,))]

    def inputs_of(self, item_id: int) -> list[InputFile]:
        rows = self._db.execute("SELECT * FROM inputs WHERE item_id = ? ORDER BY role, path", (item_id,))
        return [
            InputFile(r["role"], r["path"], r["name"], r["sha256"], r["bytes"], r["mtime_ns"], r["mime"], r["seconds"])
            for r in rows
        ]

    def items_in(self, *states: str) -> list[Item]:
        marks = ", ".join("?" for _ in states)
        return [_item(r) for r in self._db.execute(f"SELECT * FROM items WHERE state IN ({marks}) ORDER BY id", states)]  # noqa: S608

    def jobs_in(self, *states: str, provider: str | None = None) -> list[Job]:
        marks = ", ".join("?" for _ in states)
        query = f"SELECT * FROM jobs WHERE state IN ({marks})"  # noqa: S608
        args: tuple[Any, ...] = states
        if provider is not None:
            query, args = query + " AND provider = ?", (*states, provider)
        return [_job(r) for r in self._db.execute(query + " ORDER BY id", args)]

    def failed_jobs_of_open_items(self) -> list[Job]:
        """Failed jobs whose item is still open: only these may still lack their error sidecar.

        A closed item had every sidecar written, so months of history are never read again here.
        """
        rows = self._db.execute(
            "SELECT jobs.* FROM jobs JOIN items ON items.id = jobs.item_id"
            " WHERE jobs.state = 'failed' AND items.state NOT IN ('delivered', 'failed') ORDER BY jobs.id"
        )
        return [_job(r) for r in rows]

    def estimated_since(self, provider: str, since: float) -> int:
        """The estimates of the jobs of ``provider`` sent at or after ``since`` (for daily budgets)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(estimate), 0) FROM jobs WHERE provider = ? AND sent_at >= ?"
            " AND state IN ('submitting', 'submitted', 'remote_done', 'delivered')",
            (provider, since),
        ).fetchone()
        return int(row[0])

    def open_item_with_input(self, path: str) -> Item | None:
        """The unfinished item that already holds the file at ``path``, if any."""
        row = self._db.execute(
            "SELECT items.* FROM items JOIN inputs ON inputs.item_id = items.id"
            " WHERE inputs.path = ? AND items.state NOT IN ('delivered', 'failed') ORDER BY items.id DESC LIMIT 1",
            (path,),
        ).fetchone()
        return _item(row) if row else None

    def last_use_of(self, path: str) -> tuple[Item, str] | None:
        """The newest item that took the file at ``path``, with the content hash it took."""
        row = self._db.execute(
            "SELECT items.*, inputs.sha256 AS taken FROM items JOIN inputs ON inputs.item_id = items.id"
            " WHERE inputs.path = ? ORDER BY items.id DESC LIMIT 1",
            (path,),
        ).fetchone()
        return (_item(row), row["taken"]) if row else None

    def job_names_in(self, outbox: str) -> set[str]:
        """Job names already used in ``outbox``: a new job never takes one of them."""
        rows = self._db.execute(
            "SELECT jobs.name FROM jobs JOIN items ON items.id = jobs.item_id WHERE items.outbox = ?", (outbox,)
        )
        return {r[0] for r in rows}

    def delivered_job(self, dedupe_key: str) -> Job | None:
        """The earliest delivered job with this content and settings: a re-drop of it is a duplicate."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE dedupe_key = ? AND state = 'delivered' ORDER BY id LIMIT 1", (dedupe_key,)
        ).fetchone()
        return _job(row) if row else None

    def remote_ids(self, provider: str) -> set[str]:
        """Every remote id some ledger job owns: reconciliation never adopts one of these."""
        rows = self._db.execute("SELECT remote_id FROM jobs WHERE provider = ? AND remote_id IS NOT NULL", (provider,))
        return {r[0] for r in rows}

    def events(self, item_id: int) -> list[tuple[str, dict[str, Any] | None]]:
        rows = self._db.execute("SELECT kind, detail FROM events WHERE item_id = ? ORDER BY id", (item_id,))
        return [(r["kind"], json.loads(r["detail"]) if r["detail"] else None) for r in rows]

    def all_jobs(self, state: str | None = None) -> list[tuple[Item, Job]]:
        if state:
            rows = self._db.execute("SELECT * FROM jobs WHERE state = ? ORDER BY id", (state,))
        else:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY id")
        items: dict[int, Item] = {}
        out = []
        for row in rows:
            job = _job(row)
            if job.item_id not in items:
                items[job.item_id] = self.item(job.item_id)
            out.append((items[job.item_id], job))
        return out

    def recent_failures(self, limit: int = 10) -> list[tuple[Item, Job]]:
        rows = self._db.execute("SELECT * FROM jobs WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?", (limit,))
        return [(self.item(job.item_id), job) for job in map(_job, rows)]

    def job_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def requeue(self, job_id: int) -> Job:
        """An operator's retry: a failed or ambiguous job starts again from queued, its error cleared."""
        job = self.job(job_id)
        keep = {k: v for k, v in job.detail.items() if k not in _ERROR_KEYS}
        # A new token: the old one names the remote record that failed, which must not be found again.
        return self.move_job(
            job_id, "queued", expect=("failed", "ambiguous"), remote_id=None, stage=None, detail=keep, token=new_token()
        )

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state")
        return {r[0]: r[1] for r in rows}


def _item(row: sqlite3.Row | None) -> Item:
    if row is None:
        raise StaleTransition("no such item")
    return Item(
        row["id"], row["rule"], row["provider"], row["inbox"], row["outbox"], row["key"], row["state"], row["reason"]
    )


def _job(row: sqlite3.Row | None) -> Job:
    if row is None:
        raise StaleTransition("no such job")
    return Job(
        row["id"],
        row["item_id"],
        row["token"],
        row["name"],
        row["provider"],
        row["dedupe_key"],
        json.loads(row["params"]),
        row["estimate"],
        row["state"],
        row["stage"],
        row["remote_id"],
        row["sent_at"],
        row["attempts"],
        json.loads(row["detail"]) if row["detail"] else {},
    )
