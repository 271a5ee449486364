"""The throwaway PostgreSQL server of tests/pg.py: every test gets an empty database of its own."""

from __future__ import annotations

import psycopg
import pytest

from tests.pg import PgServer

USER_TABLES = "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"


def _user_tables(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(USER_TABLES).fetchone()
    assert row is not None
    return int(row[0])


# Run twice: whichever instance comes second (on the same worker, or with -n 0) would find the first one's
# table if databases were reused or the template were written to.
@pytest.mark.parametrize("turn", ["first", "second"])
def test_pg_url_each_test_starts_empty_and_keeps_what_it_writes(pg_url: str, turn: str) -> None:
    assert _user_tables(pg_url) == 0
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE marker (id integer PRIMARY KEY, note text NOT NULL)")
        conn.execute("INSERT INTO marker VALUES (1, %s)", (turn,))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT id, note FROM marker").fetchall() == [(1, turn)]
        assert conn.info.parameter_status("server_encoding") == "UTF8"


def test_pg_url_two_databases_same_table_keep_their_own_rows(pg_url: str, pg_server: PgServer) -> None:
    other = pg_server.create_database("other")
    try:
        other_url = pg_server.url(other)
        for url, note in ((pg_url, "mine"), (other_url, "theirs")):
            with psycopg.connect(url) as conn:
                conn.execute("CREATE TABLE marker (note text)")
                conn.execute("INSERT INTO marker VALUES (%s)", (note,))
        for url, note in ((pg_url, "mine"), (other_url, "theirs")):
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT note FROM marker").fetchall() == [(note,)]
    finally:
        pg_server.drop_database(other)


def test_pg_server_tcp_with_password_reaches_the_database_and_a_wrong_one_is_refused(
    pg_url: str, pg_server: PgServer
) -> None:
    with psycopg.connect(pg_url) as conn:
        dbname = conn.info.dbname
        conn.execute("CREATE TABLE marker (note text)")
    with psycopg.connect(pg_server.tcp_url(dbname)) as conn:
        assert conn.info.host == "127.0.0.1"
        assert conn.execute("SELECT count(*) FROM marker").fetchone() == (0,)
    wrong = pg_server.tcp_url(dbname).replace(pg_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_pg_server_drop_database_with_a_connection_still_open_removes_it(pg_server: PgServer) -> None:
    name = pg_server.create_database("left_open")
    leaked = psycopg.connect(pg_server.url(name))
    try:
        pg_server.drop_database(name)
        with pg_server.connect() as admin:
            assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)
        with pytest.raises(psycopg.OperationalError):
            leaked.execute("SELECT 1")
    finally:
        leaked.close()
