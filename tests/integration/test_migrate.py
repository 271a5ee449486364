"""``ugcwatchd migrate --to URL``: a SQLite ledger copied into a real PostgreSQL database (tests/pg.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.pg import PgServer
from ugcwatchd.cli import main
from ugcwatchd.ledger import Failure, InputFile, JobDetail, Ledger, PlannedJob
from ugcwatchd.owner import StateLock
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import ErrorCode, FailStage, HoldReason, ItemState, JobState

ODD = "caf\udce9"  # a folder name whose byte 0xE9 is not UTF-8, as SMB shares give them
TABLES = ("items", "inputs", "jobs", "events", "charges", "facts")


def _item(ledger: Ledger, key: str, client: str, jobs: int = 2) -> list[int]:
    inbox = f"/srv/{client}/dub/inbox"
    item = ledger.add_item(
        rule="dub",
        provider="facedub",
        inbox=inbox,
        outbox=f"/srv/{client}/dub/outbox",
        key=key,
        inputs=[InputFile("media", f"{inbox}/{key}.mp4", f"{key}.mp4", "ab" * 32, 10, 1, "video/mp4", 3.5, 7)],
        jobs=[PlannedJob(f"{key}.{n}", f"k-{len(key)}-{n}", {"n": n}, 2 + n) for n in range(jobs)],
        parts={"client": client},
    )
    return [job.id for job in ledger.jobs_of(item.id)]


def _send(ledger: Ledger, job: int, remote: str) -> None:
    ledger.move_job(job, JobState.SUBMITTING, sent_at=1_800_000_000.0)
    ledger.move_job(job, JobState.SUBMITTED, remote_id=remote)


def make_state(folder: Path) -> Path:
    """A state folder whose ledger has items and jobs in several states, events, charges and a fact."""
    ledger = Ledger.open(folder)
    try:
        done = _item(ledger, "clip", "acme")
        for n, job in enumerate(done):
            _send(ledger, job, f"r{n}")
            remote = RemoteState(f"r{n}", "completed", credits_charged=3 + n, billed_seconds=1.5)
            ledger.move_job(job, JobState.REMOTE_DONE, detail=JobDetail(remote=remote, completed_at=1.8e9))
            ledger.move_job(job, JobState.DELIVERED, detail=JobDetail(remote=remote, completed_at=1.8e9))
        ledger.move_item(ledger.job(done[0]).item_id, ItemState.RUNNING)
        ledger.move_item(ledger.job(done[0]).item_id, ItemState.DELIVERED)
        failed = _item(ledger, f"{ODD} ünï", ODD, jobs=1)[0]
        _send(ledger, failed, "r9")
        failure = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, "no face", True)
        remote = RemoteState("r9", "failed", credits_charged=1, is_overage=True)
        ledger.move_job(failed, JobState.FAILED, detail=JobDetail(remote=remote, failure=failure))
        held = _item(ledger, "held", "globex", jobs=1)[0]
        ledger.move_job(held, JobState.HELD, detail=JobDetail(held=HoldReason.APPROVAL))
        _item(ledger, "queued", "acme")
        ledger.put_languages("dublab", {"de", "fr"})
    finally:
        ledger.close()
    return folder


def snapshot(ledger: Ledger) -> tuple[object, ...]:
    """What the operator commands read: items, jobs, charges, tallies, timelines."""
    items = sorted(ledger.items_in(*ItemState), key=lambda i: i.id)
    return (
        items,
        [ledger.jobs_of(i.id) for i in items],
        ledger.charges_between(0, 4e9),
        ledger.counts(),
        ledger.job_counts(),
        ledger.charged_totals(),
        [ledger.timeline(i.id) for i in items],
        ledger.cached_languages("dublab"),
    )


def _rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]  # noqa: S608


def test_migrate_ledger_reads_the_same_on_postgresql_and_twice_copies_nothing(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = make_state(tmp_path / "state")
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(state))
    before = (state / "ledger.sqlite3").read_bytes()
    source = Ledger.open(state)
    want = snapshot(source)
    source.close()

    assert main(["migrate", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "items: 4 in the ledger, 4 in the database (4 copied, 0 already there)" in out
    assert "charges: 3 in the ledger, 3 in the database (3 copied" in out
    assert "charged: facedub 8 " in out
    copied = Ledger.open(pg_url)
    try:
        assert snapshot(copied) == want
        assert any(ODD in i.inbox for i in copied.items_in(*ItemState))
        new = _item(copied, "after", "acme", jobs=1)[0]
        assert copied.job(new).item_id == 5 and new == 7  # past the copied ids
    finally:
        copied.close()

    counts = _rows(pg_url)
    assert main(["migrate", "--to", pg_url]) == 78  # the database moved on: it holds an item the ledger lacks
    assert "the database holds 1 items the ledger does not have (5)" in capsys.readouterr().err
    assert _rows(pg_url) == counts
    assert (state / "ledger.sqlite3").read_bytes() == before  # the SQLite file was only read
    wal = state / "ledger.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_migrate_again_copies_nothing_and_a_changed_ledger_is_refused_unchanged(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = make_state(tmp_path / "state")
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(state))
    assert main(["migrate", "--to", pg_url]) == 0
    counts = _rows(pg_url)
    capsys.readouterr()

    assert main(["migrate", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "ok: nothing to copy, the database already holds this ledger" in out
    assert "jobs: 6 in the ledger, 6 in the database (0 copied, 6 already there)" in out
    assert _rows(pg_url) == counts

    ledger = Ledger.open(state)  # the SQLite daemon ran on: a job moved, an item arrived
    ledger.move_job(ledger.jobs_in(JobState.QUEUED)[0].id, JobState.FAILED)
    ledger.close()
    assert main(["migrate", "--to", pg_url]) == 78
    err = capsys.readouterr().err
    assert "the database already holds different jobs under the same keys (5)" in err
    assert "nothing was changed" in err
    assert _rows(pg_url) == counts


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "migrate", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_migrate_cli_credential_password_lock_and_bad_urls_say_one_sentence_without_the_password(
    tmp_path: Path, pg_url: str, pg_server: PgServer
) -> None:
    state = make_state(tmp_path / "state")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "ledger_password").write_text(pg_server.password + "\n")
    env = {**os.environ, "UGCWATCHD_STATE_DIR": str(state), "CREDENTIALS_DIRECTORY": str(credentials)}
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    tcp = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{dbname}"  # no password: the credential's

    lock = StateLock(state).acquire()  # what a running daemon holds
    try:
        held = _cli(env, "--to", tcp)
    finally:
        lock.release()
    assert held.returncode == 1
    assert "is already running on" in held.stderr and "stop the daemon" in held.stderr
    assert not _tables(pg_url)  # refused before anything was created

    wrong = f"postgresql://postgres:{quote('n0t-th3-p@ss', safe='')}@127.0.0.1:{pg_server.port}/{dbname}"
    refused = _cli(env, "--to", wrong)
    assert refused.returncode == 78
    assert "refused the login" in refused.stderr
    for secret in ("n0t-th3-p@ss", "n0t-th3-p%40ss", pg_server.password):
        assert secret not in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr

    closed = _cli(env, "--to", f"postgresql://postgres:s3cret-pw@127.0.0.1:1/{dbname}")
    assert closed.returncode == 1
    assert "cannot reach the PostgreSQL server at postgresql://postgres@127.0.0.1:1/" in closed.stderr
    assert "s3cret-pw" not in closed.stderr

    assert _cli(env, "--to", "mysql://root:s3cret-pw@db/x").returncode == 2
    garbled = _cli(env, "--to", "postgresql://postgres:s3cret-pw@127.0.0.1:notaport/x")
    assert garbled.returncode == 78 and "s3cret-pw" not in garbled.stderr

    done = _cli(env, "--to", tcp)
    assert done.returncode == 0, done.stderr
    assert "ok: copied" in done.stdout
    assert pg_server.password not in done.stdout + done.stderr
    assert _rows(pg_url)["jobs"] == 6


def _tables(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass('items') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_migrate_no_ledger_or_an_older_one_is_refused_and_nothing_is_created(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(empty))
    assert main(["migrate", "--to", pg_url]) == 78
    assert "no ledger found" in capsys.readouterr().err
    assert not empty.exists()

    state = make_state(tmp_path / "state")
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute("PRAGMA user_version=5")
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(state))
    assert main(["migrate", "--to", pg_url]) == 78
    assert "run this version's `ugcwatchd status` once to upgrade it" in capsys.readouterr().err
    assert not _tables(pg_url)


def test_migrate_ledger_whose_parts_were_written_before_version_7_copies_them_readable(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = make_state(tmp_path / "state")
    with sqlite3.connect(state / "ledger.sqlite3") as db:  # as version 6 stored a client folder not UTF-8
        for table in ("items", "charged_by"):
            db.execute(
                f"UPDATE {table} SET parts = ? WHERE parts = ?",  # noqa: S608
                ('{"client": "caf\\udce9"}', '{"client": "caf\\uf7e9"}'),
            )
        db.execute("PRAGMA user_version=6")
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(state))
    assert main(["migrate", "--to", pg_url]) == 78  # an older ledger is upgraded first, never copied as it is
    capsys.readouterr()
    source = Ledger.open(state)  # what `ugcwatchd status` does once: version 7 rewrites the old parts
    want = snapshot(source)
    source.close()

    assert main(["migrate", "--to", pg_url]) == 0, capsys.readouterr().err
    copied = Ledger.open(pg_url)
    try:
        assert snapshot(copied) == want
        found = copied.search_items(client=ODD).items  # PostgreSQL reads the parts as jsonb
        assert [i.parts for i in found] == [{"client": ODD}]
        by = {r[0]: r[1] for r in copied._db.execute("SELECT parts, credits FROM charged_by")}
        assert by['{"client": "caf\\uf7e9"}'] == 1
    finally:
        copied.close()
