"""A throwaway PostgreSQL server for the tests, from the distribution's ``postgresql`` package.

``pg_server`` (session): a cluster made with ``initdb`` in a temporary folder and started with ``pg_ctl``,
listening on a unix socket in that folder and on 127.0.0.1 at a free port (password only), with the
durability settings off. ``pg_url`` (per test): a fresh empty database, cloned from a template and dropped
after the test, as a ``postgresql://`` URL whose host is the socket folder.

Under pytest-xdist each worker starts a cluster of its own (about a second) the first time one of
its tests asks for it. Sharing one cluster between workers through a file lock would save that, but the last
worker out would have to stop it, which takes a reference count that a crashed worker leaves wrong; a cluster
per worker has no such state, and the per-test databases already keep tests apart. A cluster left running
by a killed test process is stopped and removed by the next session that starts one.

Without ``initdb``/``pg_ctl`` the tests that ask for it are skipped, saying why; under CI (``CI`` set) they
fail instead, because ``.ci/run`` installs the package.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

SUPERUSER = "postgres"
# initdb and the server refuse to run as root: as root, they run as the account the package makes.
SYSTEM_ACCOUNT = "postgres"
TEMPLATE = "ugcwatchd_template"
PREFIX = "ugcwatchd-pg-"
START_TIMEOUT = 30
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    # A test cluster never survives a crash, so nothing needs to reach the disk.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
# A unix socket's path (sun_path) holds 107 bytes; the server adds "/.s.PGSQL.NNNNN".
SOCKET_DIR_MAX = 90


def find_bindir() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/N/bin (Debian)."""
    found = shutil.which("initdb")
    if found and (Path(found).parent / "pg_ctl").is_file():
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.parent.name)),
    )
    for bindir in reversed(versions):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _environment(home: Path) -> dict[str, str]:
    """The caller's environment without libpq's PG* variables, in the C locale so the log reads the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", HOME=str(home))
    return env


def _account() -> pwd.struct_passwd | None:
    """The account the server runs as when the tests run as root (initdb and postgres refuse root)."""
    return pwd.getpwnam(SYSTEM_ACCOUNT) if os.geteuid() == 0 else None


def run_tool(bindir: Path, root: Path, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one of the server's programs, as the system account when we are root."""
    command = [str(bindir / tool), *args]
    account = _account()
    if account is not None:
        command = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--", *command]
    done = subprocess.run(
        command, cwd=root, env=_environment(root), capture_output=True, text=True, timeout=START_TIMEOUT * 2
    )
    if check and done.returncode != 0:
        pytest.fail(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


def stop_cluster(bindir: Path, root: Path) -> None:
    """Stop at once (nothing in it is worth a clean shutdown) and remove the folder."""
    if (root / "data" / "postmaster.pid").exists():
        run_tool(bindir, root, "pg_ctl", "stop", "-D", str(root / "data"), "-m", "immediate", "-w", check=False)
    shutil.rmtree(root, ignore_errors=True)


def reap_stale(bindir: Path) -> None:
    """Stop and remove the clusters of test processes that died before their teardown."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / "owner").read_text())
        except (OSError, ValueError):
            continue  # not made here, or being set up right now
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            stop_cluster(bindir, root)
        except PermissionError:
            pass  # alive, another user's


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PgServer:
    """One running cluster: URLs for its databases, and databases made and dropped."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.password = secrets.token_urlsafe(18)
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / "owner").write_text(str(os.getpid()))
        self.data = self.root / "data"
        self.socket_dir = self.root / "s"
        self.log = self.root / "server.log"
        self.port = 0
        self.started_in = 0.0
        self._names = itertools.count(1)
        self._account = _account()
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)

    def url(self, dbname: str) -> str:
        """The database over the unix socket (trusted: only this folder's owner reaches the socket)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir), safe='/')}&port={self.port}"

    def tcp_url(self, dbname: str) -> str:
        """The database over 127.0.0.1, which asks for the password."""
        return f"postgresql://{SUPERUSER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[TupleRow]:
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)

    def create_database(self, label: str = "db") -> str:
        """A new empty database, named after ``label`` for whoever reads the server log."""
        name = f"t{next(self._names)}_{re.sub(r'[^a-z0-9_]+', '_', label.lower())}"[:63]
        with self.connect() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop it even while a test's connections or pool still hold it open."""
        with self.connect() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def start(self) -> None:
        began = time.monotonic()
        if len(str(self.socket_dir)) > SOCKET_DIR_MAX:
            pytest.fail(f"{self.socket_dir} is too long for a unix socket's path: set TMPDIR to a shorter folder")
        self.socket_dir.mkdir()
        self._own(self.socket_dir)
        secret = self.root / "password"
        secret.write_text(self.password)
        self._own(secret)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(secret), "-E", "UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        secret.unlink()
        settings = {**SETTINGS, "unix_socket_directories": "'{}'".format(str(self.socket_dir).replace("'", "''"))}
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        started = None
        # The free port may be taken between the probe and the bind: try another.
        for _ in range(3):
            self.port = _free_port()
            started = self._run(
                "pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(START_TIMEOUT),
                "-o", f"-p {self.port}", check=False,
            )  # fmt: skip
            if started.returncode == 0 or "Address already in use" not in self._log_tail():
                break
        if started is None or started.returncode != 0:
            detail = started.stdout.strip() if started is not None else ""
            pytest.fail(f"PostgreSQL did not start ({detail}); its log ends:\n{self._log_tail()}")
        with self.connect() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(TEMPLATE)))
        self.started_in = time.monotonic() - began

    def stop(self) -> None:
        stop_cluster(self.bindir, self.root)

    def _own(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_tool(self.bindir, self.root, tool, *args, check=check)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL cluster for this test process (one per xdist worker), stopped and removed at the end."""
    bindir = find_bindir()
    missing = None
    if bindir is None:
        missing = "the PostgreSQL server programs (initdb, pg_ctl) are not installed"
    elif os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_ACCOUNT)
        except KeyError:
            missing = f"running as root, the server needs the {SYSTEM_ACCOUNT!r} account (the package makes it)"
        if shutil.which("setpriv") is None:
            missing = "running as root, setpriv (util-linux) is needed to start the server as another user"
    if missing is not None or bindir is None:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs the postgresql package")
        pytest.skip(f"{missing}: apt-get install postgresql to run the PostgreSQL tests")
    reap_stale(bindir)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh empty database of its own for this test, dropped after it."""
    name = pg_server.create_database(request.node.name)
    yield pg_server.url(name)
    pg_server.drop_database(name)
