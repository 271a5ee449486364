"""The ledger on PostgreSQL: a pool of psycopg 3 connections behind the small surface the mixins use.

Synchronous, on purpose: the ledger is called inline from the event loop, and every call commits before
the caller acts (an intent is durable before the paid request goes out), exactly as SQLite's fsync'd
commits are today. An async API would put an ``await`` in front of every ledger call of every state
machine for no gain in one daemon, whose ledger calls are short and ordered; the leases and shared
limits of several hosts are database transactions, not concurrency inside one process. So this uses
``psycopg_pool.ConnectionPool`` (sync): a connection per call outside a transaction, and one pinned to
the thread for the length of a :meth:`PgConnection.transaction`, so the mixins' reads inside a
transaction (``self._db.execute``) see its own writes.

Write transactions are serialized per database by a transaction-scoped advisory lock: the same
one-writer-at-a-time meaning as SQLite's ``BEGIN IMMEDIATE``, so ``move_job``'s read-check-write needs no
retry loop. Leases (several daemons) will narrow this to per-row locks.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Buffer, Loader
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import LedgerError
from .backend import PgIntegrityError
from .pg_schema import PG_SCHEMA, PG_SCHEMA_VERSION

WRITE_LOCK = 0x7567_6377_0001  # pg_advisory_xact_lock key: one writer at a time, like BEGIN IMMEDIATE
MIGRATE_LOCK = 0x7567_6377_0002  # two hosts migrating a new database at once: the second waits, then has nothing to do
CONNECT_TIMEOUT = 10.0
POOL_WAIT = 3.0

_STRING = re.compile(r"('(?:[^']|'')*')")
_HINT = re.compile(r"(?<=[\s(])\+(?=[A-Za-z_])")  # SQLite's "+column": use no index for this term


@lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """SQLite's spelling as psycopg's: ``?`` → ``%s`` (a literal ``%`` doubled), no ``+column`` hints,
    ``CROSS JOIN … ON`` (SQLite's way to fix the join order) as a plain ``JOIN``, ``LIKE`` as ``ILIKE``
    (SQLite's LIKE ignores case); quoted strings untouched."""
    parts = _STRING.split(sql)
    for n in range(0, len(parts), 2):
        code = parts[n].replace("%", "%%").replace("?", "%s").replace("CROSS JOIN", "JOIN").replace(" LIKE ", " ILIKE ")
        parts[n] = _HINT.sub("", code)
    return "".join(parts)


class PgRow:
    """A row read by name or by position, as ``sqlite3.Row`` is."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values, self._index = values, index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._index[key]] if isinstance(key, str) else self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = [c.name for c in cursor.description or ()]
    index = {name: n for n, name in reversed(list(enumerate(names)))}  # a repeated name: the first, as SQLite
    return lambda values: PgRow(values, index)


class _Number(Loader):
    """numeric (what SUM of integers gives) as int when whole, else float: the types SQLite returns."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data).decode()
        return float(text) if any(c in text for c in ".eEN") else int(text)


class Result:
    """The rows of one statement, read already (the connection went back to the pool)."""

    def __init__(self, rows: list[PgRow]) -> None:
        self._rows = rows

    def fetchone(self) -> PgRow | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[PgRow]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[PgRow]:
        return iter(self.fetchall())


def _local_zone() -> str | None:
    """This host's IANA time zone, so PostgreSQL's local dates are the ones SQLite's ``localtime`` gives."""
    if os.environ.get("TZ"):
        return os.environ["TZ"].lstrip(":")
    try:
        target = str(Path("/etc/localtime").resolve())
    except OSError:
        return None
    return target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else None


# A daemon frozen (SIGSTOP, a hung share) inside a transaction holds the write lock: the server ends its
# session after this, so the other daemons go on (its commit then fails, which loses nothing). A call
# waiting for a lock gives up after LOCK_WAIT, so no daemon's loop stands still behind another's.
IDLE_IN_TRANSACTION = "10s"
LOCK_WAIT = "5s"


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _Number)
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)", (IDLE_IN_TRANSACTION,))
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (LOCK_WAIT,))
    zone = _local_zone()
    if zone:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))


class PgConnection:
    """A pool of connections to one database, used as the mixins use a ``sqlite3.Connection``."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self._local = threading.local()
        secret: dict[str, Any] = {"password": password} if password else {}  # a keyword, never spelled into a URL
        self._pool: ConnectionPool[psycopg.Connection[PgRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=4,
            # A call waits this long for a connection, then fails: with the database away, the daemon's
            # loop must not stand still for the pool's default 30 s on every call.
            timeout=POOL_WAIT,
            kwargs={"autocommit": True, "row_factory": _rows, "connect_timeout": int(CONNECT_TIMEOUT), **secret},
            configure=_configure,
            open=False,
        )
        try:
            # One connection first: a wrong URL fails at once with the server's reason (the pool would
            # retry it until its timeout and say only that it timed out).
            with psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), **secret) as conn:
                _migrate(conn)
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise LedgerError(
                f"cannot open the PostgreSQL ledger: {exc}", remedy="check that the database is reachable"
            ) from None
        except LedgerError:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def session_lock(self, key: int) -> SessionLock:
        return SessionLock(self, key)

    def _pinned(self) -> psycopg.Connection[PgRow] | None:
        conn: psycopg.Connection[PgRow] | None = getattr(self._local, "conn", None)
        return conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Result:
        with unreachable():
            return self._execute(sql, parameters)

    def _execute(self, sql: str, parameters: Sequence[Any]) -> Result:
        try:
            conn = self._pinned()
            if conn is not None:
                cur = conn.execute(translate(sql), parameters)
                return Result(cur.fetchall() if cur.description else [])
            with self._pool.connection() as conn:
                cur = conn.execute(translate(sql), parameters)
                return Result(cur.fetchall() if cur.description else [])
        except psycopg.IntegrityError as exc:
            raise PgIntegrityError(str(exc)) from exc

    def executemany(self, sql: str, parameters: Any, /) -> None:
        conn = self._pinned()
        if conn is None:
            with self.transaction():
                self.executemany(sql, parameters)
            return
        try:
            # One statement at a time, not psycopg's pipelined executemany: between pipelined statements
            # the server does not count the session idle, so a daemon frozen in the middle would hold
            # the write lock past idle_in_transaction_session_timeout. These are a few rows each.
            with conn.cursor() as cur:
                for row in parameters:
                    cur.execute(translate(sql), row)
        except psycopg.IntegrityError as exc:
            raise PgIntegrityError(str(exc)) from exc

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """One transaction on a connection pinned to this thread, writers one at a time."""
        if self._pinned() is not None:
            # Another connection would wait for this one's lock forever; SQLite refuses this too.
            raise LedgerError("cannot start a ledger transaction within a transaction")
        with unreachable(), self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._local.conn = conn
            try:
                yield self
            finally:
                self._local.conn = None


@contextmanager
def unreachable() -> Iterator[None]:
    """The database gone (a restart, the network, a killed connection): one error of ours, no driver trace.

    The pool replaces broken connections in the background; the next call tries again.
    """
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LedgerError(
            f"the PostgreSQL ledger cannot be reached: {first}", remedy="work waits until the database answers again"
        ) from None


class SessionLock:
    """A lock several hosts share, held on one pooled connection until released: the database drops it
    when that connection ends, so a daemon killed while holding it never blocks the others."""

    def __init__(self, pg: PgConnection, key: int) -> None:
        self._pg, self._key = pg, key
        self._conn: psycopg.Connection[PgRow] | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free (never waits): True when held now."""
        with unreachable():
            conn = self._pg._pool.getconn()
        try:
            with unreachable():
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except BaseException:
            self._pg._pool.putconn(conn)
            raise
        if row is not None and row[0]:
            self._conn = conn
            return True
        self._pg._pool.putconn(conn)
        return False

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
        except psycopg.Error:
            conn.close()  # the session ends, and the lock with it
        finally:
            self._pg._pool.putconn(conn)


def _migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the schema to the current version in one transaction, under an advisory lock.

    Hosts opening a new database at once: the others wait for the lock, then find the version written.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0]) if row is not None and row[0] is not None else 0
        if version > PG_SCHEMA_VERSION:
            raise LedgerError(
                f"the PostgreSQL ledger was written by a newer ugcwatchd "
                f"(schema {version}; this one knows {PG_SCHEMA_VERSION})",
                remedy="upgrade ugcwatchd on every host that shares the database",
            )
        for number in range(version, PG_SCHEMA_VERSION):
            conn.execute(PG_SCHEMA[number].encode())  # several statements: no parameters
        if version != PG_SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (PG_SCHEMA_VERSION,))
