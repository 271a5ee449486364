"""The daemon on the ledger that ``ledger:`` names, a real PostgreSQL database: its metrics and its console
read it through handles of their own, and the password (the credential's) is never in the URL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from prometheus_client import generate_latest
from pydantic import SecretStr

from tests.pg import PgServer
from ugcwatchd.daemon import Daemon
from ugcwatchd.errors import ConfigError, ExitCode, UgcwatchdError
from ugcwatchd.ledger import InputFile, Ledger, PlannedJob
from ugcwatchd.ledger_location import open_ledger
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings

from .conftest import FD_KEY


def test_daemon_ledger_key_opens_postgresql_with_the_credential_for_metrics_and_console_too(
    tmp_path: Path, pg_server: PgServer, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "ledger_password").write_text(pg_server.password)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"ledger: postgresql://postgres@127.0.0.1:{pg_server.port}/{dbname}\nmetrics_listen: 127.0.0.1:1\n"
        f"rules:\n  - {{name: faces, inbox: {tmp_path}/in, facedub: {{}}}}\n"
    )
    settings = Settings(state_dir=tmp_path / "state", facedub_api_key=SecretStr(FD_KEY))
    daemon = Daemon(load_rules(rules, {}), settings)
    try:
        assert daemon.ledger.dialect.name == "postgresql"
        assert pg_server.password not in str(daemon.ledger.where)
        assert not (tmp_path / "state" / "ledger.sqlite3").exists()
        other = Ledger(pg_url)  # another host's daemon, writing to the same database
        other.add_item(
            rule="faces",
            provider="facedub",
            inbox=str(tmp_path / "in"),
            outbox=str(tmp_path / "out"),
            key="clip",
            inputs=[InputFile("media", f"{tmp_path}/in/a.mp4", "a.mp4", "ab" * 32, 10, 1, "video/mp4", 3.5, 7)],
            jobs=[PlannedJob("a.facedub", "k-a", {"duration": 4}, 4)],
        )
        other.close()
        assert daemon.metrics is not None
        scrape = generate_latest(daemon.metrics.registry).decode()
        assert 'ugcwatchd_items{state="planned"} 1.0' in scrape
        assert asyncio.run(daemon.console.ledger_work(lambda ledger: ledger.counts())) == {"planned": 1}
    finally:
        asyncio.run(daemon.console.stop())
        if daemon.metrics is not None:
            daemon.metrics.close()
        daemon.ledger.close()
        daemon.state_lock.release()


def test_open_ledger_for_the_daemon_unknown_database_or_closed_port_is_one_sentence_without_the_password(
    tmp_path: Path, pg_server: PgServer
) -> None:
    secret = pg_server.password
    config_url = f"postgresql://postgres:{quote(secret, safe='')}@127.0.0.1:{pg_server.port}/no_such_db"
    with pytest.raises(ConfigError) as missing:
        open_ledger(Settings(ledger=SecretStr(config_url)), None, create=True)
    assert str(missing.value).startswith(
        f"the database of postgresql://postgres@127.0.0.1:{pg_server.port}/no_such_db does not exist"
    )
    with pytest.raises(UgcwatchdError) as closed:
        open_ledger(
            Settings(ledger=SecretStr(f"postgresql://postgres:{quote(secret, safe='')}@127.0.0.1:1/x")),
            None,
            create=True,
        )
    assert closed.value.exit_code == ExitCode.RUNTIME  # systemd starts it again: the server may come back
    assert "cannot reach the PostgreSQL server at postgresql://postgres@127.0.0.1:1/x" in str(closed.value)
    said = str(missing.value) + str(closed.value)
    assert secret not in said and quote(secret, safe="") not in said
