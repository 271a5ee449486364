"""Facts a provider told, cached with the time they were read: DubLab's language list.

The daemon and ``check`` write them; every command that loads the rules reads the language list first
(:func:`read_languages`, read-only, never creating a ledger and never failing).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from .backend import Connection, is_url

LANGUAGES = "languages"
PG_TIMEOUT = 3  # seconds to reach the database: a language list is never worth waiting long for
_UPSERT = (
    "INSERT INTO facts (provider, name, value, at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (provider, name) DO UPDATE SET value = excluded.value, at = excluded.at"
)


def _codes(value: str) -> frozenset[str] | None:
    """The codes of a stored language list; None when the value is not one (written by hand, or damaged)."""
    try:
        codes = json.loads(value)
    except ValueError:
        return None
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) and c for c in codes):
        return None
    return frozenset(codes)


class Facts:
    """Writes and reads the ``facts`` table, over the ledger's transactions."""

    _db: Connection
    _clock: Callable[[], float]

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def put_fact(self, provider: str, name: str, value: Any) -> None:
        """Store ``value`` (as JSON) as what ``provider`` says of ``name`` now."""
        with self.transaction() as db:
            db.execute(_UPSERT, (provider, name, json.dumps(value, sort_keys=True), self._clock()))

    def fact(self, provider: str, name: str) -> tuple[str, float] | None:
        """The stored JSON text of a fact and when it was read, or None."""
        row = self._db.execute("SELECT value, at FROM facts WHERE provider = ? AND name = ?", (provider, name))
        found = row.fetchone()
        return (str(found[0]), float(found[1])) if found else None

    def put_languages(self, provider: str, codes: Collection[str]) -> None:
        """The language codes ``provider`` accepts now."""
        self.put_fact(provider, LANGUAGES, sorted(codes))

    def cached_languages(self, provider: str) -> tuple[frozenset[str], float] | None:
        """The language codes ``provider`` last said it accepts, and when that was read."""
        found = self.fact(provider, LANGUAGES)
        codes = _codes(found[0]) if found else None
        return (codes, found[1]) if found and codes else None


def read_languages(
    ledger: Path | str, provider: str = "dublab", *, password: str | None = None
) -> frozenset[str] | None:
    """The cached language list in the ledger at ``ledger`` (the SQLite file, or a PostgreSQL URL), read-only;
    None when there is none.

    Never raises: a missing, unreadable, older or locked ledger, or a database that cannot be reached now,
    only means the built-in list is used.
    """
    if isinstance(ledger, str) and is_url(ledger):
        return _pg_read(ledger, password, provider)
    try:
        if not Path(ledger).is_file():
            return None
        db = sqlite3.connect(f"{Path(ledger).resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)
    except (sqlite3.Error, OSError, ValueError):
        return None
    try:
        row = db.execute("SELECT value FROM facts WHERE provider = ? AND name = ?", (provider, LANGUAGES)).fetchone()
    except sqlite3.Error:
        return None  # a ledger from before the facts table, or one that cannot be read now
    finally:
        db.close()
    return _codes(str(row[0])) if row else None


def write_languages(
    ledger: Path | str, provider: str, codes: Collection[str], at: float, *, password: str | None = None
) -> bool:
    """Cache ``codes`` in the existing ledger at ``ledger`` (``check`` does, the daemon's may be running).

    Never creates a ledger and never migrates one (a daemon of another version may own it): False when
    there is none, it is older, or it cannot be written by this user (or reached now).
    """
    value = json.dumps(sorted(codes))
    if isinstance(ledger, str) and is_url(ledger):
        return _pg_write(ledger, password, (provider, LANGUAGES, value, at))
    try:
        if not Path(ledger).is_file():
            return False
        db = sqlite3.connect(f"{Path(ledger).resolve().as_uri()}?mode=rw", uri=True, timeout=5.0, isolation_level=None)
    except (sqlite3.Error, OSError, ValueError):
        return False
    try:
        db.execute(_UPSERT, (provider, LANGUAGES, value, at))
    except sqlite3.Error:
        return False
    finally:
        db.close()
    return True


# PostgreSQL: a plain connection of its own, not a Ledger, since opening a Ledger brings the schema to this
# version, and these run before the rules are loaded, from commands (`check`) that must change no schema.


def _pg_read(url: str, password: str | None, provider: str) -> frozenset[str] | None:
    import psycopg

    try:
        with psycopg.connect(url, password=password, connect_timeout=PG_TIMEOUT, autocommit=True) as db:
            row = db.execute("SELECT value FROM facts WHERE provider = %s AND name = %s", (provider, LANGUAGES))
            found = row.fetchone()
    except (psycopg.Error, ValueError):
        return None
    return _codes(str(found[0])) if found else None


def _pg_write(url: str, password: str | None, values: tuple[str, str, str, float]) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, password=password, connect_timeout=PG_TIMEOUT, autocommit=True) as db:
            db.execute(_UPSERT.replace("?", "%s"), values)
    except (psycopg.Error, ValueError):
        return False
    return True
