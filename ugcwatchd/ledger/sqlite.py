"""The ledger on SQLite (the default): one file in the state folder, opened in WAL mode and migrated.

``Ledger._db`` is the ``sqlite3.Connection`` itself, so this backend runs the mixins' SQL with no wrapper.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..errors import LedgerError
from .schema import SCHEMA, SCHEMA_VERSION, statements

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another connection's write transaction


def open_sqlite(path: Path) -> sqlite3.Connection:
    """The ledger file at ``path``, created and migrated to the current schema when needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT)
        db.row_factory = sqlite3.Row
        _use_wal(db)
        # FULL: a commit reported is a commit on disk, even across power loss; intents depend on it.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        _migrate(db, path)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger {path}: {exc}", remedy="check the state folder") from None
    except OSError as exc:
        raise LedgerError(f"cannot create the state folder {path.parent}: {exc.strerror}") from None
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """``journal_mode=WAL``, waiting out another opener's migration: SQLite does not wait here itself."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _version(db: sqlite3.Connection, path: Path) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"the ledger {path} was written by a newer ugcwatchd (schema {version}; this one knows {SCHEMA_VERSION})",
            remedy="upgrade ugcwatchd, or restore the older state folder",
        )
    return version


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to the current version: read and migrate in one write transaction.

    Two processes opening a new ledger at once: the second waits for the first's transaction, then
    reads the version it wrote and has nothing left to do. The statements run one by one inside the
    transaction (``executescript`` would commit first), so a crash or an error at any point leaves
    the previous version whole.
    """
    if _version(db, path) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for number in range(_version(db, path), SCHEMA_VERSION):
            for statement in statements(SCHEMA[number]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={number + 1}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
