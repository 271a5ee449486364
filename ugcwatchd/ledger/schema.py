"""The ledger's SQLite schema, one script per version, and the legal state transitions."""

from __future__ import annotations

from collections.abc import Sequence

from ..states import ItemState, JobState

FILE_NAME = "ledger.sqlite3"

J, It = JobState, ItemState
# Which job transitions are legal. "held" and "ambiguous" wait for credits or an operator, then resume.
JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    J.QUEUED: frozenset({J.SUBMITTING, J.HELD, J.FAILED}),
    J.SUBMITTING: frozenset({J.SUBMITTING, J.SUBMITTED, J.QUEUED, J.HELD, J.FAILED, J.AMBIGUOUS}),
    J.SUBMITTED: frozenset({J.REMOTE_DONE, J.FAILED, J.HELD}),
    J.REMOTE_DONE: frozenset({J.DELIVERED, J.FAILED}),
    J.HELD: frozenset({J.QUEUED, J.SUBMITTING, J.SUBMITTED, J.FAILED}),
    J.AMBIGUOUS: frozenset({J.QUEUED, J.SUBMITTED, J.FAILED}),
    J.DELIVERED: frozenset(),
    J.FAILED: frozenset({J.QUEUED, J.REMOTE_DONE}),  # only by an operator's `retry`
}
ITEM_MOVES: dict[ItemState, frozenset[ItemState]] = {
    It.PLANNED: frozenset({It.RUNNING, It.DELIVERED, It.FAILED}),
    It.RUNNING: frozenset({It.DELIVERED, It.FAILED, It.PLANNED}),
    It.DELIVERED: frozenset(),
    It.FAILED: frozenset({It.PLANNED}),  # only by an operator's `retry`
}

SCHEMA: Sequence[str] = (
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
    # version 2: jobs bound to the exact file (inode), where each input went (retry restores exactly
    # that file), the settings an item was planned with (a renamed rule never re-plans it), and an
    # index so a day's spend is one range read however long the history.
    """
    ALTER TABLE inputs ADD COLUMN inode INTEGER;
    ALTER TABLE inputs ADD COLUMN parked TEXT;
    ALTER TABLE items ADD COLUMN settings TEXT;
    CREATE INDEX jobs_provider_sent ON jobs(provider, sent_at);
    CREATE INDEX jobs_provider_state ON jobs(provider, state);
    """,
)
SCHEMA_VERSION = len(SCHEMA)

# Kept for the operator commands and older importers: the states as plain tuples.
ITEM_STATES = tuple(s.value for s in ItemState)
JOB_STATES = tuple(s.value for s in JobState)
