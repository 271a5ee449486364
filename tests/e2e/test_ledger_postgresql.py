"""The commands with the ledger in PostgreSQL (``ledger:`` or ``UGCWATCHD_LEDGER``), as an operator runs them:
``check`` says whether the database is usable, ``status`` and ``statement`` read it, no password is shown."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.pg import PgServer
from ugcwatchd.ledger import InputFile, Ledger, PlannedJob
from ugcwatchd.ledger.pg_schema import PG_SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]
WRONG = "n0t-th3-p@ss"


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "UGCWATCHD_STATE_DIR": str(tmp_path / "state"),
        "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"),
        **(env or {}),
    }
    command = [sys.executable, "-m", "ugcwatchd", "-c", str(tmp_path / "rules.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=full)


def _world(tmp_path: Path, pg_server: PgServer, ledger: str | None) -> None:
    """Folders, a rules file (with ``ledger: URL`` unless None), and the password as the credential."""
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "creds").mkdir(exist_ok=True)
    (tmp_path / "creds" / "ledger_password").write_text(pg_server.password + "\n")
    top = f"ledger: '{ledger}'\n" if ledger else ""
    rules = f"{top}rules:\n  - {{name: faces, inbox: {tmp_path}/in, outbox: {tmp_path}/out, facedub: {{}}}}\n"
    (tmp_path / "rules.yaml").write_text(rules)


def _shown(result: subprocess.CompletedProcess[str], pg_server: PgServer) -> str:
    """Everything the command printed, checked to hold no password in any spelling."""
    text = result.stdout + result.stderr
    for secret in (pg_server.password, quote(pg_server.password, safe=""), WRONG, quote(WRONG, safe="")):
        assert secret not in text
    assert "Traceback" not in text
    return text


def test_cli_check_and_status_with_a_postgresql_ledger_report_its_schema_and_read_it(
    tmp_path: Path, pg_server: PgServer, pg_url: str
) -> None:
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    url = f"postgresql://postgres@127.0.0.1:{pg_server.port}/{dbname}"  # the password: the credential's
    _world(tmp_path, pg_server, url)
    empty = _run(tmp_path, "check", "--offline")
    assert empty.returncode == 0, empty.stderr
    assert f"ledger {url} (ledger: in {tmp_path}/rules.yaml): reachable, no ledger yet" in _shown(empty, pg_server)
    status = _run(tmp_path, "status")
    assert status.returncode == 78
    assert f"no ledger found: the PostgreSQL database {url}" in _shown(status, pg_server)

    ledger = Ledger(pg_url)  # what the daemon made there
    ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(tmp_path / "in"),
        outbox=str(tmp_path / "out"),
        key="clip",
        inputs=[InputFile("media", f"{tmp_path}/in/clip.mp4", "clip.mp4", "ab" * 32, 10, 1, "video/mp4", 3.5, 7)],
        jobs=[PlannedJob("clip.facedub", "k-clip", {"duration": 4}, 4)],
    )
    ledger.close()
    current = _run(tmp_path, "check", "--offline")
    assert current.returncode == 0, current.stderr
    assert f"schema {PG_SCHEMA_VERSION}, current" in _shown(current, pg_server)
    status = _run(tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    _shown(status, pg_server)
    assert json.loads(status.stdout)["items"] == {"planned": 1}

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (PG_SCHEMA_VERSION + 1,))
    newer = _run(tmp_path, "check", "--offline")
    assert newer.returncode == 78
    assert f"rules.yaml:1:9: ledger: the ledger in {url} is at schema {PG_SCHEMA_VERSION + 1}, newer" in _shown(
        newer, pg_server
    )


def test_cli_check_with_an_unusable_postgresql_ledger_says_why_in_one_sentence_without_the_password(
    tmp_path: Path, pg_server: PgServer, pg_url: str
) -> None:
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    _world(tmp_path, pg_server, f"postgresql://postgres:{quote(WRONG, safe='')}@127.0.0.1:{pg_server.port}/{dbname}")
    wrong = _run(tmp_path, "check", "--offline")
    assert wrong.returncode == 78
    said = _shown(wrong, pg_server)
    assert f"ledger: the PostgreSQL server at postgresql://postgres@127.0.0.1:{pg_server.port}/{dbname} refused" in said

    _world(tmp_path, pg_server, None)  # from the environment: no rules file line to point at
    closed = _run(
        tmp_path,
        "check",
        "--offline",
        env={"UGCWATCHD_LEDGER": f"postgresql://postgres:{quote(WRONG, safe='')}@127.0.0.1:1/x"},
    )
    assert closed.returncode == 1
    assert "cannot reach the PostgreSQL server at postgresql://postgres@127.0.0.1:1/x" in _shown(closed, pg_server)

    unknown = f"postgresql://postgres@127.0.0.1:{pg_server.port}/no_such_db"
    missing = _run(tmp_path, "check", "--offline", env={"UGCWATCHD_LEDGER": unknown})
    assert missing.returncode == 78
    assert f"UGCWATCHD_LEDGER: the database of {unknown} does not exist" in _shown(missing, pg_server)
    status = _run(tmp_path, "status", env={"UGCWATCHD_LEDGER": unknown})
    assert status.returncode == 78 and f"the database of {unknown} does not exist" in _shown(status, pg_server)


def test_cli_plan_with_a_postgresql_ledger_judges_against_it_and_changes_nothing(
    tmp_path: Path, pg_server: PgServer, pg_url: str, media: dict[str, Path]
) -> None:
    dbname = pg_url.split("?")[0].rsplit("/", 1)[1]
    _world(tmp_path, pg_server, f"postgresql://postgres@127.0.0.1:{pg_server.port}/{dbname}")
    shutil.copy(media["jpeg"], tmp_path / "in" / "alice.jpg")
    shutil.copy(media["long.mp4"], tmp_path / "in" / "alice.mp4")
    ledger = Ledger(pg_url)  # the daemon's history: alice.facedub is a name taken already
    ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(tmp_path / "in"),
        outbox=str(tmp_path / "out"),
        key="old",
        inputs=[InputFile("media", f"{tmp_path}/in/old.mp4", "old.mp4", "ab" * 32, 10, 1, "video/mp4", 3.5, 7)],
        jobs=[PlannedJob("alice.facedub", "k-old", {"duration": 4}, 4)],
    )
    ledger.close()
    planned = _run(tmp_path, "plan")
    assert planned.returncode == 0, planned.stderr
    lines = _shown(planned, pg_server).splitlines()
    assert any(line.startswith("  alice-2.facedub <- alice.jpg + alice.mp4: duration") for line in lines), lines
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    assert not (tmp_path / "state" / "ledger.sqlite3").exists()
