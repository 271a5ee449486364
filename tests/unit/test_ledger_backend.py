"""The ledger's two backends: which one a location picks, PostgreSQL's schema versions, and the SQL translation."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from tests.ledgers import MakeLedger
from tests.pg import PgServer
from ugcwatchd.ledger import FILE_NAME, Ledger, LedgerError
from ugcwatchd.ledger.pg import translate
from ugcwatchd.ledger.pg_schema import PG_SCHEMA_VERSION


def test_ledger_open_picks_sqlite_for_a_folder_and_postgresql_for_a_url(tmp_path: Path, pg_url: str) -> None:
    on_file, on_server = Ledger.open(tmp_path), Ledger.open(pg_url)
    try:
        assert (on_file.dialect.name, on_file.path) == ("sqlite", tmp_path / FILE_NAME)
        assert on_server.dialect.name == "postgresql"
        with pytest.raises(LedgerError, match="a PostgreSQL ledger has no file"):
            _ = on_server.path
    finally:
        on_file.close()
        on_server.close()


def test_pg_ledger_new_database_records_its_schema_version_once(pg_url: str) -> None:
    Ledger.open(pg_url).close()
    Ledger.open(pg_url).close()  # the second opener has nothing to migrate
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(PG_SCHEMA_VERSION,)]


def test_pg_ledger_newer_schema_is_refused(pg_url: str) -> None:
    Ledger.open(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE schema_version SET version = %s", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer ugcwatchd") as caught:
        Ledger.open(pg_url)
    assert caught.value.remedy == "upgrade ugcwatchd on every host that shares the database"


def test_pg_ledger_hosts_opening_a_new_database_at_once_migrate_it_once(pg_url: str) -> None:
    barrier, opened, failed = threading.Barrier(4), [], []

    def open_one() -> None:
        barrier.wait(timeout=10)
        try:
            opened.append(Ledger.open(pg_url))
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for ledger in opened:
        ledger.close()
    assert failed == [] and len(opened) == 4
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(PG_SCHEMA_VERSION,)]


def test_pg_ledger_unreachable_server_is_a_clear_error(pg_server: PgServer) -> None:
    url = pg_server.url("no_such_database")
    with pytest.raises(LedgerError, match="cannot open the PostgreSQL ledger") as caught:
        Ledger.open(url)
    assert caught.value.remedy == "check that the database is reachable"


def test_ledger_write_rolled_back_on_either_backend_leaves_nothing(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    with pytest.raises(RuntimeError), ledger.transaction() as db:
        db.execute(
            "INSERT INTO facts (provider, name, value, at) VALUES (?, ?, ?, ?)", ("dublab", "languages", "[]", 1)
        )
        assert ledger.fact("dublab", "languages") == ("[]", 1.0)  # the transaction reads its own write
        raise RuntimeError("boom")
    assert ledger.fact("dublab", "languages") is None


def test_translate_placeholders_hints_and_joins_but_never_inside_strings() -> None:
    assert translate("SELECT * FROM jobs WHERE id = ? AND name LIKE '%?%' ESCAPE '\\'") == (
        "SELECT * FROM jobs WHERE id = %s AND name ILIKE '%?%' ESCAPE '\\'"
    )
    assert translate("SELECT a FROM x CROSS JOIN y ON y.id = x.id WHERE (+state IN (?) OR +state = ?)") == (
        "SELECT a FROM x JOIN y ON y.id = x.id WHERE (state IN (%s) OR state = %s)"
    )
    assert translate("SELECT (SELECT 1) + (SELECT 2), 5 % 2, 'it''s ?'") == (
        "SELECT (SELECT 1) + (SELECT 2), 5 %% 2, 'it''s ?'"
    )
