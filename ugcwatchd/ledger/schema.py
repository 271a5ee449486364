"""The ledger's SQLite schema, one script per version, and the legal state transitions."""

from __future__ import annotations

import sqlite3
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
    # version 3: a year of history costs nothing per tick. Each job carries its outbox (a new job's name
    # is a range read of one outbox's names); an item's jobs, the newest failures, a day's spend and
    # what finished since a credit reading are index ranges; counts by state and the credits charged are
    # tallies that triggers keep in the same transaction, so `status` and the metrics never count rows.
    """
    ALTER TABLE jobs ADD COLUMN outbox TEXT;
    UPDATE jobs SET outbox = (SELECT outbox FROM items WHERE items.id = jobs.item_id);
    CREATE INDEX jobs_item ON jobs(item_id);
    CREATE INDEX jobs_outbox_name ON jobs(outbox, name);
    DROP INDEX jobs_state;
    CREATE INDEX jobs_state ON jobs(state, updated_at);
    DROP INDEX jobs_provider_sent;
    CREATE INDEX jobs_provider_sent ON jobs(provider, sent_at, state, estimate);
    DROP INDEX jobs_provider_state;
    CREATE INDEX jobs_provider_state ON jobs(provider, state, updated_at, estimate);

    CREATE TABLE item_tally (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE job_tally (
        provider TEXT NOT NULL,
        state TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (provider, state)
    ) WITHOUT ROWID;
    -- credits: what the provider said it charged (detail.remote.credits_charged) for each delivered job
    CREATE TABLE charged (provider TEXT PRIMARY KEY, credits REAL NOT NULL) WITHOUT ROWID;
    CREATE VIEW job_charges AS
        SELECT id, provider, state,
               CAST(COALESCE(CASE WHEN json_valid(detail) THEN json_extract(detail, '$.remote.credits_charged') END, 0)
                    AS REAL) AS credits
        FROM jobs;
    INSERT INTO item_tally SELECT state, COUNT(*) FROM items GROUP BY state;
    INSERT INTO job_tally SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state;
    INSERT INTO charged SELECT provider, SUM(credits) FROM job_charges WHERE state = 'delivered' GROUP BY provider;

    CREATE TRIGGER items_tally_insert AFTER INSERT ON items BEGIN
        INSERT INTO item_tally VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER items_tally_update AFTER UPDATE OF state ON items WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE item_tally SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO item_tally VALUES (NEW.state, 1) ON CONFLICT (state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER items_tally_delete AFTER DELETE ON items BEGIN
        UPDATE item_tally SET n = n - 1 WHERE state = OLD.state;
    END;
    CREATE TRIGGER jobs_tally_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_tally VALUES (NEW.provider, NEW.state, 1)
            ON CONFLICT (provider, state) DO UPDATE SET n = n + 1;
        INSERT INTO charged SELECT provider, credits FROM job_charges WHERE id = NEW.id AND state = 'delivered'
            ON CONFLICT (provider) DO UPDATE SET credits = credits + excluded.credits;
    END;
    CREATE TRIGGER jobs_tally_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE job_tally SET n = n - 1 WHERE provider = OLD.provider AND state = OLD.state;
        INSERT INTO job_tally VALUES (NEW.provider, NEW.state, 1)
            ON CONFLICT (provider, state) DO UPDATE SET n = n + 1;
        -- delivered is final: a job's credits are added once, when it gets there
        INSERT INTO charged SELECT provider, credits FROM job_charges WHERE id = NEW.id AND state = 'delivered'
            ON CONFLICT (provider) DO UPDATE SET credits = credits + excluded.credits;
    END;
    -- a job deleted (no version deletes any) leaves the counts; the credits it was charged stay charged
    CREATE TRIGGER jobs_tally_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_tally SET n = n - 1 WHERE provider = OLD.provider AND state = OLD.state;
    END;
    """,
    # version 4: agencies. An item carries the named parts of its inbox (`{"client": "acme"}`); every paid
    # remote job is one row of `charges` (delivered, or failed after the provider charged for it), which
    # statements read and whose insert keeps the `charged` tally; facts a provider told (its language
    # list) are cached with the time they were read.
    """
    ALTER TABLE items ADD COLUMN parts TEXT;
    CREATE INDEX items_rule_inbox ON items(rule, inbox, state);
    CREATE TABLE charges (
        id INTEGER PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        item_id INTEGER NOT NULL REFERENCES items(id),
        provider TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        credits REAL NOT NULL,
        billed_seconds REAL,
        overage INTEGER,
        state TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE UNIQUE INDEX charges_remote ON charges(provider, remote_id);
    CREATE INDEX charges_at ON charges(at);
    CREATE INDEX charges_item ON charges(item_id);
    INSERT INTO charges (job_id, item_id, provider, remote_id, credits, billed_seconds, overage, state, at)
        SELECT j.id, j.item_id, j.provider, j.remote_id, c.credits,
               CASE WHEN json_valid(j.detail) THEN json_extract(j.detail, '$.remote.billed_seconds') END,
               NULL, j.state, COALESCE(CASE WHEN json_valid(j.detail) THEN json_extract(j.detail, '$.completed_at') END,
                                       j.updated_at)
        FROM jobs j JOIN job_charges c ON c.id = j.id
        WHERE j.state = 'delivered' AND c.credits > 0 AND j.remote_id IS NOT NULL;
    DROP TRIGGER jobs_tally_insert;
    DROP TRIGGER jobs_tally_update;
    CREATE TRIGGER jobs_tally_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_tally VALUES (NEW.provider, NEW.state, 1)
            ON CONFLICT (provider, state) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER jobs_tally_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state BEGIN
        UPDATE job_tally SET n = n - 1 WHERE provider = OLD.provider AND state = OLD.state;
        INSERT INTO job_tally VALUES (NEW.provider, NEW.state, 1)
            ON CONFLICT (provider, state) DO UPDATE SET n = n + 1;
    END;
    -- a charge is recorded once per remote job (charges_remote): the tally adds it once
    CREATE TRIGGER charges_tally AFTER INSERT ON charges BEGIN
        INSERT INTO charged VALUES (NEW.provider, NEW.credits)
            ON CONFLICT (provider) DO UPDATE SET credits = credits + excluded.credits;
    END;
    CREATE TABLE facts (
        provider TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (provider, name)
    ) WITHOUT ROWID;
    """,
    # version 5: money per client. What one rule's concrete inbox (one client) spent in a day or a month is
    # one range of the provider's sends, read from the index alone up to each job's item; what was charged
    # per provider, rule and parts is a tally the charges' insert keeps, so metrics never read charges.
    """
    DROP INDEX jobs_provider_sent;
    CREATE INDEX jobs_provider_sent ON jobs(provider, sent_at, state, estimate, item_id);
    CREATE TABLE charged_by (
        provider TEXT NOT NULL,
        rule TEXT NOT NULL,
        parts TEXT NOT NULL,
        credits REAL NOT NULL,
        PRIMARY KEY (provider, rule, parts)
    ) WITHOUT ROWID;
    INSERT INTO charged_by
        SELECT c.provider, i.rule, COALESCE(i.parts, ''), SUM(c.credits)
        FROM charges c JOIN items i ON i.id = c.item_id GROUP BY c.provider, i.rule, COALESCE(i.parts, '');
    CREATE TRIGGER charges_by_tally AFTER INSERT ON charges BEGIN
        INSERT INTO charged_by SELECT NEW.provider, rule, COALESCE(parts, ''), NEW.credits FROM items
            WHERE id = NEW.item_id
            ON CONFLICT (provider, rule, parts) DO UPDATE SET credits = credits + excluded.credits;
    END;
    """,
    # version 6: an item's timeline (the console's item page, `events`) is one index range, not a read of
    # every event the ledger ever logged.
    """
    CREATE INDEX events_item ON events(item_id, id);
    """,
    # version 7: an item's named parts store a folder name that is not UTF-8 as every other name is (names.py:
    # its bytes as U+F780-U+F7FF, not JSON escapes of lone surrogates, which PostgreSQL's jsonb refuses), so
    # the tally per client has one key per folder. Parts written before are rewritten, escape by escape: a
    # lone \udcXX (XX from 80) becomes \uf7XX; an escaped backslash and a surrogate pair stay as they are.
    r"""
    CREATE TEMP TABLE parts_moved AS
        WITH RECURSIVE walk(old, rest, done) AS (
            SELECT DISTINCT parts, parts, '' FROM items WHERE parts LIKE '%\udc%'
            UNION ALL
            SELECT old,
                CASE WHEN substr(rest, 1, 1) = '\' THEN substr(rest, 1 + CASE
                        WHEN substr(rest, 2, 1) <> 'u' THEN 2
                        WHEN lower(substr(rest, 3, 2)) IN ('d8', 'd9', 'da', 'db') THEN 12
                        ELSE 6 END)
                    WHEN instr(rest, '\') = 0 THEN ''
                    ELSE substr(rest, instr(rest, '\')) END,
                done || CASE
                    WHEN substr(rest, 1, 1) <> '\' THEN substr(rest, 1, instr(rest || '\', '\') - 1)
                    WHEN lower(substr(rest, 1, 4)) = '\udc' AND lower(substr(rest, 5, 1)) IN
                        ('8', '9', 'a', 'b', 'c', 'd', 'e', 'f') THEN '\uf7' || lower(substr(rest, 5, 2))
                    WHEN substr(rest, 2, 1) <> 'u' THEN substr(rest, 1, 2)
                    WHEN lower(substr(rest, 3, 2)) IN ('d8', 'd9', 'da', 'db') THEN substr(rest, 1, 12)
                    ELSE substr(rest, 1, 6) END
            FROM walk WHERE rest <> ''
        )
        SELECT old, done AS new FROM walk WHERE rest = '' AND done <> old;
    UPDATE items SET parts = (SELECT new FROM parts_moved WHERE old = items.parts)
        WHERE parts IN (SELECT old FROM parts_moved);
    INSERT INTO charged_by SELECT b.provider, b.rule, m.new, b.credits FROM charged_by b
        JOIN parts_moved m ON m.old = b.parts
        WHERE true ON CONFLICT (provider, rule, parts) DO UPDATE SET credits = credits + excluded.credits;
    DELETE FROM charged_by WHERE parts IN (SELECT old FROM parts_moved);
    DROP TABLE parts_moved;
    """,
)
SCHEMA_VERSION = len(SCHEMA)


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, one by one: a ``;`` inside a string or a trigger body does not split.

    ``executescript`` would commit whatever transaction is open first; a migration runs each statement
    inside its own transaction instead.
    """
    out, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip() != ";":
                out.append(pending.strip())
            pending = ""
    if pending[:-1].strip():
        raise ValueError(f"an incomplete SQL statement: {pending[:-1].strip()[:60]!r}")
    return out


# Kept for the operator commands and older importers: the states as plain tuples.
ITEM_STATES = tuple(s.value for s in ItemState)
JOB_STATES = tuple(s.value for s in JobState)
