"""``ugcwatchd migrate --to postgresql://…``: copy the state folder's SQLite ledger into PostgreSQL.

The SQLite file is only read (one read transaction: a consistent snapshot), under the state folder's lock,
so no daemon writes to it meanwhile. Everything on the PostgreSQL side happens in one transaction: the
schema is created or migrated, every row is copied with its id, the identity sequences are moved past the
copied ids, and the row counts, the credits charged and the tallies (kept by the schema's triggers as the
rows arrive) are checked against the SQLite snapshot; any failure leaves the database as it was.

Running it again copies only rows the database lacks. A database that holds a row differing from the
ledger's row with the same key, or rows the ledger does not have, is not a copy of this ledger: refused.
Facts are a cache of what providers said, so a differing fact is no conflict: the newer one is kept.

The password comes from the URL, else from the credential ``ledger_password``; it is never printed, and no
library error text reaches a person without it being removed.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ExitCode, LedgerError, UgcwatchdError

if TYPE_CHECKING:
    import psycopg

    from .ledger_location import Target

# Parents before children: the foreign keys and the charges' tally (it reads the item) need them first.
KEYS: dict[str, tuple[str, ...]] = {
    "items": ("id",),
    "inputs": ("item_id", "path"),
    "jobs": ("id",),
    "events": ("id",),
    "charges": ("id",),
    "facts": ("provider", "name"),
}
IDENTITIES = ("items", "jobs", "events", "charges")
CONNECT_TIMEOUT = 10
SHOWN_KEYS = 3  # differing keys named in a refusal


class Refused(ConfigError):
    """The database is not an empty one nor a copy of this ledger: nothing was changed."""


def _url(text: str) -> str:
    if not text.startswith(("postgresql://", "postgres://")):
        raise argparse.ArgumentTypeError("--to must be a postgresql:// URL, e.g. postgresql://ugcwatchd@db/ugcwatchd")
    return text


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ugcwatchd migrate`` on the command line."""
    p = commands.add_parser(
        "migrate",
        help="copy the SQLite ledger into PostgreSQL (stop the daemon first)",
        description="Copy the state folder's SQLite ledger (only read, never created) into the PostgreSQL "
        "database of URL, keeping every id, in one transaction, and check the counts. Running it again copies "
        "nothing twice. The password comes from the URL or the credential ledger_password.",
    )
    p.add_argument("--to", type=_url, required=True, metavar="URL", help="postgresql://USER@HOST[:PORT]/DATABASE")
    p.set_defaults(handler=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from .errors import AlreadyRunning
    from .ledger.schema import FILE_NAME
    from .ledger_location import Target
    from .owner import StateLock
    from .settings import Settings

    settings = Settings.from_env()
    state_dir = settings.existing_state_dir()
    target = Target.parse(args.to, settings)
    try:
        lock = StateLock(state_dir).acquire()
    except AlreadyRunning as exc:
        raise UgcwatchdError(
            f"{exc.message}: it keeps writing to the SQLite ledger, so it cannot be copied now",
            remedy="stop the daemon (systemctl stop ugcwatchd), migrate, then start it with the new ledger",
        ) from None
    try:
        for line in migrate(state_dir / FILE_NAME, target):
            print(line, flush=True)
    finally:
        lock.release()
    return ExitCode.OK


# -- the copy -------------------------------------------------------------------------------------


def _source(path: Path) -> sqlite3.Connection:
    """The ledger file, read only, at this version's schema."""
    from .ledger.schema import SCHEMA_VERSION

    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        db.row_factory = sqlite3.Row
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {path}: {exc}") from None
    if version != SCHEMA_VERSION:
        db.close()
        raise ConfigError(
            f"the ledger {path} is at schema {version}, this ugcwatchd's is {SCHEMA_VERSION}",
            remedy="run this version's `ugcwatchd status` once to upgrade it, then migrate"
            if version < SCHEMA_VERSION
            else "migrate with the ugcwatchd that wrote it",
        )
    return db


def migrate(ledger: Path, target: Target) -> list[str]:
    """Copy ``ledger`` (a SQLite file) into ``target``; the lines to print."""
    import psycopg

    source = _source(ledger)
    try:
        conn = psycopg.connect(target.url, password=target.password, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
    except psycopg.Error as exc:
        source.close()
        raise _connect_error(exc, target) from None
    try:
        source.execute("BEGIN")  # one snapshot for every table
        return _copy_all(source, conn, ledger, target)
    except (Refused, LedgerError):
        raise
    except psycopg.Error as exc:
        raise (
            _connect_error(exc, target)
            if isinstance(exc, psycopg.OperationalError)
            else LedgerError(
                f"PostgreSQL refused the copy into {target.shown}: {target.redact(str(exc))}; nothing was changed"
            )
        ) from None
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot read the ledger {ledger}: {exc}; nothing was changed") from None
    finally:
        source.close()
        conn.close()


def _copy_all(source: sqlite3.Connection, conn: psycopg.Connection[Any], ledger: Path, target: Target) -> list[str]:
    from .ledger.pg import WRITE_LOCK, _migrate

    lines = [f"copying {ledger} into {target.shown}"]
    copied = 0
    with conn.transaction():
        _migrate(conn)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        for table, key in KEYS.items():
            new, had = _copy_table(source, conn, table, key)
            copied += new
            total = int(source.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
            there = int(row[0]) if row else -1
            if there != total and table != "facts":
                raise LedgerError(
                    f"{table}: {total} rows in the ledger but {there} in the database after the copy; "
                    "nothing was changed"
                )
            lines.append(f"{table}: {total} in the ledger, {there} in the database ({new} copied, {had} already there)")
        for table in IDENTITIES:
            # Past the copied ids, never back: the sequence may be ahead already.
            conn.execute(
                f"SELECT setval(s, GREATEST(m, COALESCE((SELECT last_value FROM pg_sequences"  # noqa: S608
                f" WHERE schemaname || '.' || sequencename = s), 0))) FROM (SELECT max(id) AS m,"
                f" pg_get_serial_sequence('{table}', 'id') AS s FROM {table}) t WHERE m IS NOT NULL"
            )
        lines.extend(_verify(source, conn))
    lines.append(
        f"ok: copied {copied} rows; the database holds the ledger"
        if copied
        else "ok: nothing to copy, the database already holds this ledger"
    )
    return lines


def _copy_table(
    source: sqlite3.Connection, conn: psycopg.Connection[Any], table: str, key: tuple[str, ...]
) -> tuple[int, int]:
    """Copy the rows the database lacks; (copied, already there). Refuses a conflicting database."""
    columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    at = [columns.index(k) for k in key]
    there = {tuple(r[i] for i in at): tuple(r) for r in conn.execute(f"SELECT {names} FROM {table}")}  # noqa: S608
    differ: list[tuple[Any, ...]] = []
    newer: list[tuple[Any, ...]] = []  # facts the ledger read later than the database did
    copied = same = 0
    # Streamed: a year of events need not fit in memory. A refusal found on the way rolls the copy back.
    with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        for row in source.execute(f"SELECT {names} FROM {table} ORDER BY {', '.join(key)}"):  # noqa: S608
            k = tuple(row[i] for i in at)
            theirs = there.pop(k, None)
            if theirs is None:
                copy.write_row(tuple(row))
                copied += 1
            elif theirs == tuple(row):
                same += 1
            elif table == "facts":
                if row["at"] > theirs[columns.index("at")]:
                    newer.append((row["value"], row["at"], *k))
            else:
                differ.append(k)
    if differ:
        raise Refused(
            f"the database already holds different {table} under the same keys ({_keys(differ)}): it is not "
            "a copy of this ledger; nothing was changed",
            remedy="copy into an empty database",
        )
    if there and table != "facts":
        raise Refused(
            f"the database holds {len(there)} {table} the ledger does not have ({_keys(list(there))}): it is in "
            "use by another ledger; nothing was changed",
            remedy="copy into an empty database",
        )
    for values in newer:
        conn.execute("UPDATE facts SET value = %s, at = %s WHERE provider = %s AND name = %s", values)
    return copied, same


def _keys(keys: list[tuple[Any, ...]]) -> str:
    shown = ", ".join("/".join(map(str, k)) for k in keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


# Each tally as the database keeps it, and as the ledger's rows say it must be (same columns, same order).
_TALLIES = {
    "items by state": (
        "SELECT state, n FROM item_tally WHERE n <> 0",
        "SELECT state, count(*) FROM items GROUP BY state",
    ),
    "jobs by provider and state": (
        "SELECT provider, state, n FROM job_tally WHERE n <> 0",
        "SELECT provider, state, count(*) FROM jobs GROUP BY provider, state",
    ),
    "credits charged by provider": (
        "SELECT provider, credits FROM charged WHERE credits <> 0",
        "SELECT provider, total(credits) FROM charges GROUP BY provider HAVING total(credits) <> 0",
    ),
    "credits charged by rule and client": (
        "SELECT provider, rule, parts, credits FROM charged_by WHERE credits <> 0",
        "SELECT c.provider, i.rule, COALESCE(i.parts, ''), total(c.credits) FROM charges c JOIN items i"
        " ON i.id = c.item_id GROUP BY c.provider, i.rule, COALESCE(i.parts, '') HAVING total(c.credits) <> 0",
    ),
}


def _verify(source: sqlite3.Connection, conn: psycopg.Connection[Any]) -> list[str]:
    """The database's tallies against the ledger's rows; raises (the transaction rolls back) on a difference."""
    lines = []
    for name, (theirs, ours) in _TALLIES.items():
        have = {tuple(r[:-1]): r[-1] for r in conn.execute(theirs)}
        want = {tuple(r)[:-1]: r[-1] for r in source.execute(ours)}
        if have.keys() != want.keys() or any(not math.isclose(have[k], v, rel_tol=1e-9) for k, v in want.items()):
            raise LedgerError(f"after the copy, the database's {name} differ from the ledger's; nothing was changed")
        if name == "credits charged by provider":
            spent = ", ".join(f"{p[0]} {_number(v)}" for p, v in sorted(want.items())) or "none"
            lines.append(f"charged: {spent} (the sum of the charges, in each provider's unit)")
    lines.append("tallies: items by state, jobs by provider and state, credits charged: the same as the ledger's")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _connect_error(exc: Exception, target: Target) -> UgcwatchdError:
    from .ledger_location import connect_error

    return connect_error(exc, target)
