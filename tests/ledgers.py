"""Ledger fixtures over both backends: ``ledger_where`` (a SQLite file, or a fresh PostgreSQL database's URL)
and ``make_ledger`` (opens a :class:`Ledger` there, closed after the test).

A test that takes either runs twice, ``[sqlite]`` and ``[postgresql]``. Tests of SQLite's file itself
(PRAGMA, WAL, file modes, older file versions) open ``Ledger(tmp_path / ...)`` directly instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ugcwatchd.ledger import Ledger

BACKENDS = ("sqlite", "postgresql")
MakeLedger = Callable[..., Ledger]


@pytest.fixture(params=BACKENDS)
def ledger_where(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a ledger lives on this backend: a file in the test's folder, or a database of its own."""
    if request.param == "sqlite":
        return tmp_path / "ledger.sqlite3"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def make_ledger(ledger_where: Path | str) -> Iterator[MakeLedger]:
    """Open the test's ledger (again: a reopen sees what was committed), with an optional clock."""
    opened: list[Ledger] = []

    def make(clock: Callable[[], float] = time.time) -> Ledger:
        ledger = Ledger(ledger_where, clock=clock)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


def sqlite_only(ledger: Ledger, reason: str) -> None:
    """Skip the rest of this test on PostgreSQL: what follows is about SQLite's file or engine."""
    if ledger.dialect.name != "sqlite":
        pytest.skip(f"SQLite only: {reason}")


def metrics_scrape(ledger: Ledger) -> str:
    """A Prometheus scrape of ``ledger``'s tallies, through a handle of the metrics' own (as in the daemon)."""
    from prometheus_client import generate_latest

    from ugcwatchd.metrics import Metrics

    metrics = Metrics(ledger.reopen, dict)
    try:
        return generate_latest(metrics.registry).decode()
    finally:
        metrics.close()


def use_for_commands(ledger: Ledger, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make the CLI's commands open ``ledger``: its state folder (SQLite), or ``UGCWATCHD_LEDGER`` (PostgreSQL)."""
    monkeypatch.setenv("UGCWATCHD_CONFIG", str(tmp_path / "no-rules.yaml"))  # no `ledger:` from a real rules file
    if isinstance(ledger.where, str):
        monkeypatch.setenv("UGCWATCHD_LEDGER", ledger.where)
        monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "no-state"))
    else:
        monkeypatch.delenv("UGCWATCHD_LEDGER", raising=False)
        monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(ledger.where.parent))
