"""What the ledger's mixins need of a database: a connection that runs ``?``-placeholder SQL, and a dialect.

The SQL is written once, in SQLite's spelling. On SQLite, ``Ledger._db`` is the ``sqlite3.Connection``
itself: no wrapper on the hot path, the same code and speed as before there were two backends. On
PostgreSQL it is a :class:`~ugcwatchd.ledger.pg.PgConnection` with the same small surface (``execute``,
``executemany``, rows read by name or position), which translates each statement once (placeholders, the
``+column`` index hints, ``CROSS JOIN … ON``). The few pieces that cannot be translated by spelling (JSON
extraction, a local date, NULL ordering) are asked of the :class:`Dialect`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Row(Protocol):
    """A result row: ``row["col"]`` or ``row[0]``, and unpacking."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` the ledger uses; :class:`~ugcwatchd.ledger.pg.PgConnection` has it too."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class PgIntegrityError(Exception):
    """PostgreSQL refused a row for a constraint (psycopg's IntegrityError, renamed so that psycopg, 20 MiB and
    0.2 s to import, is loaded only by a PostgreSQL ledger)."""


# A unique index refused a row (a remote id owned twice): the same meaning on both backends.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, PgIntegrityError)


@dataclass(frozen=True)
class Dialect:
    """The SQL pieces that differ by more than spelling."""

    name: str
    nulls_first: str  # appended to an ascending ORDER BY key: NULLs first, as SQLite always sorts them

    def json_text(self, column: str, key: str) -> str:
        """The text of the top-level ``key`` of the JSON in ``column`` (NULL when absent)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"({column}::jsonb ->> '{key}')"

    def json_number(self, column: str, key: str) -> str:
        """The number at the top-level ``key`` of the JSON in ``column`` (NULL when absent)."""
        if self.name == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"(({column}::jsonb ->> '{key}')::float8)"

    def json_has_value(self, column: str) -> str:
        """A condition: some value of the JSON object in ``column`` equals the parameter, ignoring case."""
        if self.name == "sqlite":
            return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE lower(json_each.value) = lower(?))"  # noqa: S608
        return f"EXISTS (SELECT 1 FROM jsonb_each_text({column}::jsonb) AS e WHERE lower(e.value) = lower(?))"  # noqa: S608

    def local_day(self, seconds: str) -> str:
        """The local date (YYYY-MM-DD) of a Unix time; PostgreSQL's session time zone is set to ours."""
        if self.name == "sqlite":
            return f"date({seconds}, 'unixepoch', 'localtime')"
        return f"to_char(to_timestamp({seconds}), 'YYYY-MM-DD')"


SQLITE = Dialect("sqlite", nulls_first="")
POSTGRESQL = Dialect("postgresql", nulls_first=" NULLS FIRST")


def is_url(where: object) -> bool:
    """Whether ``where`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))
