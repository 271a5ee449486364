"""Attacks on several daemons sharing one PostgreSQL ledger, as the world would make them: a daemon that
stalls (SIGSTOP: a paused VM, a swap storm) while a paid request is on its way, a database that drops every
connection, commands run against the ledger while daemons work it.

Each daemon is the real ``ugcwatchd run`` (its own state folder and rules file), against the real sandbox
and a throwaway PostgreSQL. Where a request must be caught in flight, the daemon reaches FaceDub through
:class:`GateProxy`, a loopback TCP relay that can hold a request (a slow network) and tells the test when
that request passed it: the adversary's timing is then a condition, not a guess.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess

LEASE_TTL = 10
FACEDUB_KEY = "fdb_sandbox"


class GateProxy:
    """A loopback TCP relay to ``target``; a client request whose head contains ``trigger`` is held (with
    everything after it on that connection) until :meth:`release`, after ``on_hold`` ran once."""

    def __init__(
        self, target: str, trigger: bytes, on_hold: Callable[[], None] = lambda: None, *, armed: bool = True
    ) -> None:
        host, port = target.removeprefix("http://").rstrip("/").split(":")
        self.target = (host, int(port))
        self.trigger, self.on_hold = trigger, on_hold
        self.held = threading.Event()  # a request with the trigger arrived (and is held)
        self.released = threading.Event()
        self.armed = armed
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> socket.socket:
        """A connection to the target, its answers relayed to ``client``."""
        upstream = socket.create_connection(self.target)
        self._sockets.append(upstream)
        threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()
        return upstream

    def _serve(self, client: socket.socket) -> None:
        """The client's bytes, relayed; the target's connection is opened when needed and again after a
        hold (the target closes a connection idle that long, which the client would take for a drop)."""
        upstream: socket.socket | None = None
        try:
            while data := client.recv(65536):
                if self.armed and self.trigger in data:
                    self.armed = False
                    self.on_hold()
                    self.held.set()
                    self.released.wait()
                    if upstream is not None:
                        upstream.close()
                        upstream = None
                if upstream is None:
                    upstream = self._connect(client)
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _shut(client)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass


def _shut(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)


class Host:
    """One daemon's place: its own rules file, log and state folder."""

    def __init__(self, root: Path, name: str, rules: str) -> None:
        self.name = name
        self.folder = root / name
        self.folder.mkdir()
        self.rules = self.folder / "rules.yaml"
        self.rules.write_text(rules)
        self.state = self.folder / "state"
        self.daemon: DaemonProcess | None = None

    def start(self) -> Host:
        self.daemon = DaemonProcess(self.rules, self.state)
        wait_for(lambda: "ugcwatchd running" in self.log(), timeout=30, what=f"{self.name} to start")
        return self

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(sig)

    def stop(self) -> int | None:
        if self.daemon is None:
            return None
        if self.alive():
            self.signal(signal.SIGCONT)  # a stopped process would never read its SIGTERM
        return self.daemon.stop()

    def log(self) -> str:
        path = self.folder / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        code = host.stop()
        print(f"---- {host.name} (exit {code}) log tail ----\n{host.log()[-6000:]}")


def rules_text(
    *, facedub: str, dublab: str, ledger: str, inboxes: dict[str, tuple[Path, Path, str]], extra: str = ""
) -> str:
    lines = [
        f'ledger: "{ledger}"',
        f"lease_ttl: {LEASE_TTL}s",
        "providers:",
        f'  facedub: {{base_url: "{facedub}", poll_every: 1s, reconcile_grace: 2s{extra}}}',
        f'  dublab: {{base_url: "{dublab}", poll_every: 1s}}',
        "defaults: {stable_after: 0.3s, rescan_every: 1s}",
        "rules:",
    ]
    for name, (inbox, outbox, action) in inboxes.items():
        lines.append(f"  - {{name: {name}, inbox: {inbox}, outbox: {outbox}, {action}}}")
    return "\n".join(lines) + "\n"


def folders(root: Path, *names: str) -> dict[str, Path]:
    made = {}
    for name in names:
        made[name] = root / name
        made[name].mkdir(parents=True)
    return made


def place(source: Path, inbox: Path, name: str) -> None:
    """Written hidden beside the inbox, then renamed in: the file appears complete at once."""
    hidden = inbox.parent / f".{name}"
    shutil.copy(source, hidden)
    os.replace(hidden, inbox / name)


def rows(url: str, query: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        return db.execute(query, args).fetchall()


def facedub_stats(sb: SandboxProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{sb.urls['facedub']}/sandbox/stats", timeout=5).json()
    return stats


def facedub_jobs(sb: SandboxProcess) -> list[dict[str, Any]]:
    answer = httpx.get(f"{sb.urls['facedub']}/jobs", headers={"Authorization": f"Bearer {FACEDUB_KEY}"}, timeout=5)
    answer.raise_for_status()
    listed: list[dict[str, Any]] = answer.json()
    return listed


# -- 1. a daemon that stalls with its FaceDub POST on the way ------------------------------------------


@pytest.mark.slow
def test_facedub_submission_stalled_past_its_lease_is_paid_once(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],
) -> None:
    """Daemon A commits its intent and sends POST /jobs; the request is slow on the network and A stalls
    (SIGSTOP) right then. B takes the item over once A's lease has run out, but must not conclude that
    nothing was created while A may still send: A holds the account's submission lock. A wakes up, its
    request arrives, its own record of it is refused; B adopts that job. One item, one job paid."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    share = folders(tmp_path / "share", "inbox", "outbox")
    a_pid: list[int] = []
    proxy = GateProxy(sb.urls["facedub"], b"POST /jobs", on_hold=lambda: os.kill(a_pid[0], signal.SIGSTOP))
    try:
        inboxes = {"faces": (share["inbox"], share["outbox"], "facedub: {}")}
        a = Host(tmp_path, "a", rules_text(facedub=proxy.url, dublab=sb.urls["dublab"], ledger=pg_url, inboxes=inboxes))
        hosts.append(a)
        a.start()
        a_pid.append(a.pid)
        place(media["jpeg"], share["inbox"], "alice.jpg")
        place(media["video.mp4"], share["inbox"], "alice.mp4")
        assert proxy.held.wait(30), "A never sent its POST /jobs"
        intent = rows(pg_url, "SELECT state, stage FROM jobs")
        assert intent == [("submitting", "create")], intent  # the intent is committed; A is stopped
        rules_b = rules_text(facedub=sb.urls["facedub"], dublab=sb.urls["dublab"], ledger=pg_url, inboxes=inboxes)
        b = Host(tmp_path, "b", rules_b)
        hosts.append(b)
        b.start()
        wait_for(lambda: "took over 1 item" in b.log(), timeout=LEASE_TTL + 20, interval=0.2, what="B's takeover")
        # Well past the grace: B waits for the submission lock A holds, and sends nothing.
        resent = happens_within(lambda: "never arrived" in b.log() or facedub_stats(sb)["jobs_created"] > 0, seconds=8)
        assert not resent, "B concluded nothing was created while A's request could still arrive"
        a.signal(signal.SIGCONT)
        proxy.release()
        result = share["outbox"] / "alice.facedub.result.json"
        wait_for(result.exists, timeout=40, interval=0.3, what="a result")
        wait_for(lambda: "left to the daemon that took it over" in a.log(), timeout=20, what="A to yield")
    finally:
        for host in hosts:
            host.stop()
        proxy.close()
    created = facedub_jobs(sb)
    ledger = rows(pg_url, "SELECT token, state, remote_id FROM jobs")
    print("sandbox jobs:", [(j["id"], j["duration_seconds"], j["credits_charged"]) for j in created], "ledger:", ledger)
    assert len(ledger) == 1
    assert len(created) == 1, f"one item, {len(created)} FaceDub jobs paid: {created}"
    assert ledger[0][2] == created[0]["id"]  # B adopted the job A's request made


@pytest.mark.slow
def test_facedub_submit_lock_of_a_stalled_daemon_is_freed_when_the_watchdog_kills_it(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],
) -> None:
    """A stalls (SIGSTOP) in the middle of its POST /jobs, holding the account's submission lock: the others
    wait (safety first: A's request may still arrive). systemd's watchdog kills a daemon that stops
    answering; then the database drops A's lock, and B resumes A's item and submits its own, paying once."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    share = folders(tmp_path / "share", "inbox", "outbox", "inbox_b", "outbox_b")
    a_pid: list[int] = []
    proxy = GateProxy(sb.urls["facedub"], b"POST /jobs", on_hold=lambda: os.kill(a_pid[0], signal.SIGSTOP))
    try:
        a_rules = {"faces": (share["inbox"], share["outbox"], "facedub: {}")}
        a = Host(tmp_path, "a", rules_text(facedub=proxy.url, dublab=sb.urls["dublab"], ledger=pg_url, inboxes=a_rules))
        hosts.append(a)
        a.start()
        a_pid.append(a.pid)
        place(media["jpeg"], share["inbox"], "alice.jpg")
        place(media["video.mp4"], share["inbox"], "alice.mp4")
        assert proxy.held.wait(30), "A never sent its POST /jobs"
        b_rules = {"faces_b": (share["inbox_b"], share["outbox_b"], "facedub: {}")}
        b = Host(
            tmp_path,
            "b",
            rules_text(facedub=sb.urls["facedub"], dublab=sb.urls["dublab"], ledger=pg_url, inboxes=b_rules),
        )
        hosts.append(b)
        b.start()
        place(media["jpeg"], share["inbox_b"], "bob.jpg")
        place(media["video.mp4"], share["inbox_b"], "bob.mp4")
        wait_for(lambda: "took over 1 item" in b.log(), timeout=LEASE_TTL + 20, interval=0.2, what="B's takeover")
        assert not happens_within(lambda: facedub_stats(sb)["jobs_created"] > 0, seconds=3)
        a.signal(signal.SIGKILL)  # what WatchdogSec= does to a daemon whose loop stopped
        proxy.release()
        results = [share["outbox"] / "alice.facedub.result.json", share["outbox_b"] / "bob.facedub.result.json"]
        wait_for(lambda: all(r.exists() for r in results), timeout=60, interval=0.3, what="both results")
    finally:
        for host in hosts:
            host.stop()
        proxy.close()
    created = facedub_jobs(sb)
    owned = rows(pg_url, "SELECT remote_id FROM jobs WHERE remote_id IS NOT NULL")
    assert len(created) == 2 and {r[0] for r in owned} == {j["id"] for j in created}, (created, owned)


# -- 4. the database goes away for longer than a lease, and comes back --------------------------------


def dublab_stats(sb: SandboxProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{sb.urls['dublab']}/sandbox/stats", timeout=5).json()
    return stats


def cut_off(url: str, dbname: str, refuse: bool) -> None:
    """Refuse (or allow again) every new connection to ``dbname``, and end those open now."""
    with psycopg.connect(url.replace(f"/{dbname}?", "/postgres?"), autocommit=True, connect_timeout=5) as db:
        db.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
        if refuse:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )


@pytest.mark.slow
def test_several_hosts_database_gone_past_the_lease_resume_and_pay_once(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],
) -> None:
    """Two daemons dubbing clips; the database refuses every connection for 1.5 leases, then returns.
    The daemons must neither exit nor wedge, and every clip is dubbed once, its input moved once."""
    sb = sandbox_process("--port", "0", "--job-seconds", "4")
    share = folders(tmp_path / "share", "inbox", "outbox")
    inboxes = {"dub": (share["inbox"], share["outbox"], "dublab: {to: [de]}")}
    text = rules_text(facedub=sb.urls["facedub"], dublab=sb.urls["dublab"], ledger=pg_url, inboxes=inboxes)
    dbname = pg_url.split("/")[3].split("?")[0]
    for name in ("a", "b"):
        hosts.append(Host(tmp_path, name, text).start())
    clips = [f"c{n:02d}" for n in range(8)]
    for stem in clips:
        place(media["video.mp4"], share["inbox"], f"{stem}.mp4")
    wait_for(lambda: dublab_stats(sb)["files_started"] >= 3, timeout=30, interval=0.2, what="dubs under way")
    cut_off(pg_url, dbname, refuse=True)
    cut = time.monotonic()
    try:
        # The outage lasts one and a half leases: every daemon's leases run out meanwhile.
        wait_for(
            lambda: time.monotonic() - cut > LEASE_TTL * 1.5 and all("cannot be reached" in h.log() for h in hosts),
            timeout=LEASE_TTL * 3,
            interval=0.5,
            what="the outage to outlast the leases",
        )
        assert all(h.alive() for h in hosts), "a daemon exited while the database was away"
    finally:
        cut_off(pg_url, dbname, refuse=False)
    results = [share["outbox"] / f"{stem}.de.result.json" for stem in clips]
    wait_for(lambda: all(p.exists() for p in results), timeout=60, interval=0.5, what="every clip dubbed")
    wait_for(lambda: not list(share["inbox"].glob("*.mp4")), timeout=20, interval=0.3, what="the inbox to empty")
    assert all(h.alive() for h in hosts), "a daemon exited after the database came back"
    stats = dublab_stats(sb)
    ledger = rows(pg_url, "SELECT count(*), count(DISTINCT remote_id) FROM jobs")
    print("dublab:", stats, "ledger:", ledger)
    assert stats["files_started"] == len(clips) == ledger[0][0] == ledger[0][1]
    assert rows(pg_url, "SELECT path, count(*) FROM inputs GROUP BY path HAVING count(*) > 1") == []
    assert len(list((share["outbox"] / "originals").glob("*.mp4"))) == len(clips)
    for stem in clips:
        assert len(list(share["outbox"].glob(f"{stem}.de.*.json"))) == 1, list(share["outbox"].glob(f"{stem}*"))


# -- 2. credits, read by one daemon while another's paid request is on its way --------------------------


def happens_within(probe: Callable[[], bool], seconds: float) -> bool:
    """Whether ``probe`` becomes true within ``seconds`` (for what must not happen: its deadline is the test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.2)
    return probe()


def usage_reads(sb: SandboxProcess) -> int:
    return sum(facedub_stats(sb)["answers"].get("GET /usage", {}).values())


def test_facedub_credits_read_during_another_daemons_upload_never_overspend(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],
) -> None:
    """One credit left, overage not allowed. A's POST /jobs is slow on the wire (a large upload). B, whose
    own pair waits for credits, reads the balance meanwhile (the job does not exist yet: 1 left), and its
    next reading is slow too. Once A's job exists, B must not spend the credit A's job took."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2", "--facedub-credits", "1")
    share = folders(tmp_path / "share", "inbox_a", "outbox_a", "inbox_b", "outbox_b")
    to_a = GateProxy(sb.urls["facedub"], b"POST /jobs")
    to_b = GateProxy(sb.urls["facedub"], b"GET /usage", armed=False)
    try:
        for name, proxy in (("a", to_a), ("b", to_b)):
            folder = {"faces": (share[f"inbox_{name}"], share[f"outbox_{name}"], "facedub: {}")}
            text = rules_text(facedub=proxy.url, dublab=sb.urls["dublab"], ledger=pg_url, inboxes=folder)
            hosts.append(Host(tmp_path, name, text).start())
        place(media["jpeg"], share["inbox_a"], "alice.jpg")
        place(media["video.mp4"], share["inbox_a"], "alice.mp4")
        assert to_a.held.wait(30), "A never sent its POST /jobs"
        place(media["jpeg"], share["inbox_b"], "bob.jpg")
        place(media["video.mp4"], share["inbox_b"], "bob.mp4")
        wait_for(lambda: rows(pg_url, "SELECT 1 FROM jobs WHERE state = 'held'"), timeout=20, what="B's job held")
        # B reads the balance while A's job does not exist yet; then B's next reading is slow.
        seen = usage_reads(sb)
        wait_for(lambda: usage_reads(sb) >= seen + 2, timeout=20, interval=0.2, what="B's readings")
        to_b.armed = True
        assert to_b.held.wait(20), "B read the balance no more"
        to_a.release()
        wait_for(
            lambda: rows(pg_url, "SELECT 1 FROM jobs WHERE state IN ('submitted', 'remote_done', 'delivered')"),
            timeout=20,
            what="A's job submitted",
        )
        # B's reading is older than A's job now: B must keep holding. Its dispatch runs twice a second,
        # so a few seconds is many chances to get it wrong.
        overspent = happens_within(lambda: facedub_stats(sb)["jobs_created"] >= 2, seconds=5)
    finally:
        to_b.release()
        for host in hosts:
            host.stop()
        to_a.close()
        to_b.close()
    usage = httpx.get(f"{sb.urls['facedub']}/usage", headers={"Authorization": f"Bearer {FACEDUB_KEY}"}, timeout=5)
    print("usage after:", usage.json(), "jobs:", [(j["id"], j["credits_charged"]) for j in facedub_jobs(sb)])
    account = usage.json()
    assert not overspent, f"one credit, {facedub_stats(sb)['jobs_created']} jobs created: {account}"
    assert account["credits_used"] <= account["credits_limit"] + account["bonus_credits"], account


# -- 1b. a daemon that stalls inside a ledger transaction -----------------------------------------------

WRITE_LOCK_HELD = (
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s AND objsubid = 1"
)


def stop_inside_a_transaction(url: str, host: Host, within: float) -> bool:
    """SIGSTOP ``host`` while it holds the ledger's write lock (its only user then); True once it does."""
    from ugcwatchd.ledger.pg import WRITE_LOCK

    key = (WRITE_LOCK >> 32, WRITE_LOCK & 0xFFFFFFFF)
    deadline = time.monotonic() + within
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        while time.monotonic() < deadline:
            if db.execute(WRITE_LOCK_HELD, key).fetchone():
                host.signal(signal.SIGSTOP)
                if db.execute(WRITE_LOCK_HELD, key).fetchone():
                    return True
                host.signal(signal.SIGCONT)  # it committed before it stopped: aim again
    return False


@pytest.mark.slow
def test_several_hosts_daemon_stalled_inside_a_transaction_leaves_the_others_working(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    pg_url: str,
    hosts: list[Host],
) -> None:
    """A stalls (SIGSTOP: a paused VM) in the middle of one of its ledger transactions. The other daemon
    must go on working, and take A's work over once A's lease has run out."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    share = folders(tmp_path / "share", "inbox", "outbox")
    inboxes = {"dub": (share["inbox"], share["outbox"], "dublab: {to: [de]}")}
    text = rules_text(facedub=sb.urls["facedub"], dublab=sb.urls["dublab"], ledger=pg_url, inboxes=inboxes)
    a = Host(tmp_path, "a", text).start()
    hosts.append(a)
    for n in range(4):
        place(media["video.mp4"], share["inbox"], f"c{n}.mp4")
    wait_for(lambda: rows(pg_url, "SELECT 1 FROM jobs"), timeout=20, what="A to plan")
    assert stop_inside_a_transaction(pg_url, a, within=20), "A was never caught inside a transaction"
    b = Host(tmp_path, "b", text)
    hosts.append(b)
    b.daemon = DaemonProcess(b.rules, b.state)
    place(media["video.mp4"], share["inbox"], "late.mp4")
    results = [share["outbox"] / f"{stem}.de.result.json" for stem in ("c0", "c1", "c2", "c3", "late")]
    done = happens_within(lambda: all(p.exists() for p in results), seconds=LEASE_TTL + 25)
    print("B's log while A was stalled:", b.log()[-3000:])
    assert done, "with A stalled inside a transaction, B finished nothing"
