"""Opening and migrating the ledger: at once from several processes, from every older version, atomically."""

from __future__ import annotations

import multiprocessing
import sqlite3
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from ugcwatchd.ledger import SCHEMA_VERSION, Ledger, LedgerError
from ugcwatchd.ledger.schema import SCHEMA, statements

OPENERS = 4
ROUNDS = 20


def _opener(paths: Queue[str | None], results: Queue[str], barrier: Barrier) -> None:
    """One process: for every path it is given, wait for the others, then open the ledger there."""
    while (path := paths.get()) is not None:
        barrier.wait(timeout=30)
        try:
            Ledger(Path(path)).close()
        except BaseException:
            results.put(traceback.format_exc())
        else:
            results.put("ok")


def test_ledger_fresh_file_opened_by_several_processes_at_once_never_fails(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(OPENERS)
    results: Queue[str] = ctx.Queue()
    inboxes: list[Queue[str | None]] = [ctx.Queue() for _ in range(OPENERS)]
    workers = [ctx.Process(target=_opener, args=(q, results, barrier), daemon=True) for q in inboxes]
    for w in workers:
        w.start()
    try:
        failures = []
        for n in range(ROUNDS):
            path = tmp_path / f"round{n}" / "ledger.sqlite3"
            for q in inboxes:
                q.put(str(path))
            outcomes = [results.get(timeout=60) for _ in workers]
            failures += [o for o in outcomes if o != "ok"]
            db = sqlite3.connect(path)
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            db.close()
        assert failures == []
    finally:
        for q in inboxes:
            q.put(None)
        for w in workers:
            w.join(10)


def test_ledger_migration_from_every_older_version_reaches_the_current_one(tmp_path: Path) -> None:
    for start in range(SCHEMA_VERSION):
        path = tmp_path / f"v{start}.sqlite3"
        db = sqlite3.connect(path, isolation_level=None)
        for script in SCHEMA[:start]:
            for statement in statements(script):
                db.execute(statement)
        db.execute(f"PRAGMA user_version={start}")
        db.close()
        Ledger(path).close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()


def test_ledger_migration_that_fails_midway_leaves_the_older_version_whole(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements(SCHEMA[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version=1")
    # Something the next version creates already exists: its migration fails part-way through.
    db.execute("CREATE INDEX jobs_provider_state ON jobs(provider, state)")
    db.close()
    with pytest.raises(LedgerError):
        Ledger(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    columns = {r[1] for r in db.execute("PRAGMA table_info(inputs)")}
    assert "inode" not in columns  # the step's earlier statements were rolled back with it
    db.close()


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("CREATE TABLE a (x);\nCREATE INDEX a_x ON a(x);", ["CREATE TABLE a (x);", "CREATE INDEX a_x ON a(x);"]),
        ("INSERT INTO a VALUES ('x;y');  ", ["INSERT INTO a VALUES ('x;y');"]),
        ("  \n", []),
    ],
)
def test_ledger_schema_statements_split_on_semicolons_outside_strings(script: str, expected: list[str]) -> None:
    assert statements(script) == expected
