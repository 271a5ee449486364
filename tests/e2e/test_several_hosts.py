"""Several daemons (one state folder each) on one share and one PostgreSQL ledger: real processes, kill -9.

Each daemon is the real ``ugcwatchd run`` with a state folder of its own; they share the rules' inbox and
outbox folders, the sandbox's two accounts and one database. What must hold, whoever dies when: every
file taken by exactly one daemon, every job paid exactly once, no 429 caused, and the work of a daemon
that dies finished by another once its lease has run out.

The sandbox's account is read (``GET /jobs``) only once the daemons have stopped: that request counts in
the account's window, which the daemons share through the ledger and the test would otherwise steal from.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import wait_for
from ugcwatchd.sandbox.media import make_photo

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess

LEASE_TTL = 10.0
LANGS = ("de", "es")
OPEN = ("planned", "running")
CLAIM = ".ugcwatchd-claim"
DUBLAB_UPLOADING = 1  # a record's externalStatusId until its upload is done and the dub started


class Share:
    """The one folder every daemon's rules point at: FaceDub's and DubLab's inboxes and outboxes."""

    def __init__(self, root: Path, media: dict[str, Path]) -> None:
        self.root, self.media = root, media
        self.faces_in, self.faces_out = root / "faces" / "inbox", root / "faces" / "outbox"
        self.dub_in, self.dub_out = root / "dub" / "inbox", root / "dub" / "outbox"
        for folder in (self.faces_in, self.faces_out, self.dub_in, self.dub_out):
            folder.mkdir(parents=True)
        self.jobs: list[tuple[Path, str]] = []  # (outbox, job name) of every job planned
        self.inputs = 0  # files dropped

    def rules(self, sb: SandboxProcess, ledger: str) -> str:
        return f"""\
ledger: "{ledger}"
lease_ttl: {LEASE_TTL:.0f}s
providers:
  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s, reconcile_grace: 4s}}
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}
defaults: {{stable_after: 0.3s, rescan_every: 1s}}
rules:
  - {{name: faces, inbox: {self.faces_in}, outbox: {self.faces_out}, facedub: {{}}}}
  - {{name: dub, inbox: {self.dub_in}, outbox: {self.dub_out}, dublab: {{to: [{", ".join(LANGS)}]}}}}
"""

    def _place(self, source: Path | None, inbox: Path, name: str, photo_width: int = 0) -> None:
        """Written hidden, then renamed in: each file appears complete at once."""
        hidden = self.root / f".{name}"
        if source is None:
            make_photo(hidden, size=(photo_width, 400))  # a photo of its own: identical pairs are duplicates
        else:
            shutil.copy(source, hidden)
        os.replace(hidden, inbox / name)

    def pairs(self, count: int) -> list[str]:
        stems = [f"p{n:02d}" for n in range(count)]
        for n, stem in enumerate(stems):
            self._place(None, self.faces_in, f"{stem}.jpg", photo_width=300 + n)
            self._place(self.media["video.mp4"], self.faces_in, f"{stem}.mp4")
            self.jobs.append((self.faces_out, f"{stem}.facedub"))
        self.inputs += 2 * count
        return stems

    def clips(self, count: int) -> list[str]:
        stems = [f"c{n:02d}" for n in range(count)]
        for stem in stems:
            self._place(self.media["video.mp4"], self.dub_in, f"{stem}.mp4")
            self.jobs.extend((self.dub_out, f"{stem}.{lang}") for lang in LANGS)
        self.inputs += count
        return stems

    def terminal(self, outbox: Path, job: str) -> list[str]:
        return [kind for kind in ("result", "error") if (outbox / f"{job}.{kind}.json").exists()]

    def all_terminal(self) -> bool:
        return all(self.terminal(outbox, job) for outbox, job in self.jobs)

    def left_in_inboxes(self) -> list[str]:
        """What is still in an inbox, but the claim the shared ledger keeps there for daemons on SQLite."""
        return [p.name for inbox in (self.faces_in, self.dub_in) for p in inbox.iterdir() if p.name != CLAIM]


class Host:
    """One daemon's place: its own rules copy, log and state folder; started again on the same folder."""

    def __init__(self, root: Path, name: str, rules: str) -> None:
        self.name = name
        folder = root / name
        folder.mkdir()
        self.rules = folder / "rules.yaml"
        self.rules.write_text(rules)
        self.state = folder / "state"
        self.daemon: DaemonProcess | None = None

    def start(self) -> None:
        self.daemon = DaemonProcess(self.rules, self.state)

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.proc.pid

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.proc.poll() is None

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(10)

    def stop(self) -> int | None:
        return self.daemon.stop() if self.alive() and self.daemon is not None else None

    def log(self) -> str:
        path = self.rules.parent / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_hosts(tmp_path: Path, rules: str, count: int) -> list[Host]:
    hosts = [Host(tmp_path, f"host{n}", rules) for n in range(count)]
    for host in hosts:
        host.start()
    wait_for(lambda: all("ugcwatchd running" in host.log() for host in hosts), timeout=30, what="the daemons")
    return hosts


def stop_and_show(hosts: list[Host]) -> dict[str, int | None]:
    """Stop every daemon still running; print each log's tail (pytest shows it when the test fails)."""
    codes = {host.name: host.stop() for host in hosts}
    for host in hosts:
        print(f"---- {host.name} (exit {codes[host.name]}) log tail ----\n{host.log()[-5000:]}")
    return codes


def tell_what_happened(url: str, hosts: list[Host]) -> None:
    """The evidence of a run with kills: takeovers in the ledger, reconciliations in the logs."""
    kinds = rows(url, "SELECT kind, count(*) FROM events WHERE kind LIKE 'item taken%%' GROUP BY kind")
    said = Counter(
        phrase
        for host in hosts
        for line in host.log().splitlines()
        for phrase in ("found the job it had started", "never arrived", "resuming", "WARNING", "ERROR")
        if phrase in line
    )
    print(f"ledger events: {dict(kinds)}; logs: {dict(said)}")


def rows(url: str, query: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        return db.execute(query, args).fetchall()


def pid_of(owner: str | None) -> int | None:
    """The pid in a ledger owner name, host:pid:state_id:tag."""
    return int(owner.split(":")[1]) if owner else None


def sandbox_stats(sb: SandboxProcess, service: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{sb.urls[service]}/sandbox/stats", timeout=5).json()
    return answer


def answered_429(sb: SandboxProcess) -> dict[str, int]:
    """Every 429 either sandbox service answered, by service and route."""
    found = {}
    for service in ("facedub", "dublab"):
        for route, by_status in sandbox_stats(sb, service)["answers"].items():
            if by_status.get("429"):
                found[f"{service} {route}"] = by_status["429"]
    return found


def facedub_jobs(sb: SandboxProcess) -> list[dict[str, Any]]:
    answer = httpx.get(f"{sb.urls['facedub']}/jobs", headers={"Authorization": "Bearer fdb_sandbox"}, timeout=5)
    answer.raise_for_status()
    listed: list[dict[str, Any]] = answer.json()
    return listed


def dublab_records(sb: SandboxProcess) -> list[dict[str, Any]]:
    answer = httpx.get(f"{sb.urls['dublab']}/api/v1/dubs", headers={"apikey": "dl_sandbox"}, timeout=5)
    answer.raise_for_status()
    listed: list[dict[str, Any]] = answer.json()
    return listed


def assert_paid_once(sb: SandboxProcess, url: str, share: Share) -> None:
    """Remote jobs == jobs planned, each remote job the ledger's one job, and no 429 answered."""
    planned_faces = sum(1 for outbox, _ in share.jobs if outbox == share.faces_out)
    planned_dubs = len(share.jobs) - planned_faces
    ledger = rows(url, "SELECT provider, token, remote_id FROM jobs")
    listed = facedub_jobs(sb)
    assert len(listed) == planned_faces == sandbox_stats(sb, "facedub")["jobs_created"], listed
    ours = Counter(str(remote) for provider, _, remote in ledger if provider == "facedub")
    assert ours == Counter(str(job["id"]) for job in listed), (ours, listed)
    # DubLab charges at start-dub: a record never started (an upload cut by a kill) costs nothing and is
    # left behind by design; each job must have exactly one started record, and no started record is nobody's.
    started = [r for r in dublab_records(sb) if r["externalStatusId"] != DUBLAB_UPLOADING]
    assert sandbox_stats(sb, "dublab")["files_started"] == planned_dubs == len(started), started
    tokens = {token for provider, token, _ in ledger if provider == "dublab"}
    per_token = Counter(token for r in started for token in tokens if token in str(r["name"]))
    assert per_token == Counter(dict.fromkeys(tokens, 1)), (per_token, [r["name"] for r in started])
    assert answered_429(sb) == {}


def assert_each_file_once(url: str, share: Share) -> None:
    """Each input path in exactly one item, and nothing left open."""
    counted = rows(url, "SELECT path, count(*) FROM inputs GROUP BY path")
    assert len(counted) == share.inputs and all(n == 1 for _, n in counted), counted
    assert rows(url, "SELECT id, state, owner FROM items WHERE state IN (%s, %s)", OPEN) == []


def assert_one_terminal_each(share: Share) -> None:
    sidecars = {job: share.terminal(outbox, job) for outbox, job in share.jobs}
    wrong = {job: kinds for job, kinds in sidecars.items() if kinds != ["result"]}
    assert not wrong, wrong  # exactly one terminal sidecar each, and a result: nothing lost


def finished(url: str, share: Share) -> bool:
    """Every job has its terminal sidecar; a job held for the operator fails the test at once (it never will)."""
    stuck = rows(url, "SELECT name, state, detail FROM jobs WHERE state IN ('held', 'ambiguous')")
    assert not stuck, f"held for the operator: {stuck}"
    return share.all_terminal()


def in_submission(url: str, hosts: list[Host], within: float) -> Host | None:
    """The adversary's aim: a live daemon with a request in flight (a job ``submitting``), if one shows."""
    query = "SELECT items.owner FROM jobs JOIN items ON items.id = jobs.item_id WHERE jobs.state = 'submitting'"
    until = time.monotonic() + within
    while time.monotonic() < until:
        pids = {pid_of(owner) for (owner,) in rows(url, query)}
        live = [host for host in hosts if host.alive() and host.pid in pids]
        if live:
            return live[0]
        time.sleep(0.05)
    return None


def strike(rng: random.Random, hosts: list[Host], url: str, started: float) -> str:
    """Kill -9 one daemon (at a random moment, or inside a submission) and start it again on its state
    folder, at once or once its lease has run out (then another daemon has taken its work over)."""
    # Every draw is made up front, so a seed replays the same draws whatever the daemons did meanwhile.
    pause, aim, anyone = rng.uniform(2.0, 12.0), rng.random() < 0.5, rng.choice(hosts)
    down = rng.uniform(0.0, 2.0) if rng.random() < 0.5 else LEASE_TTL + rng.uniform(2.0, 5.0)
    time.sleep(pause)  # the adversary's timing, not a wait for the daemons
    aimed = in_submission(url, hosts, within=8.0) if aim else None
    victim = aimed or anyone
    victim.kill()
    said = f"{time.monotonic() - started:.1f}s {victim.name} pid {victim.pid} {'mid-submission' if aimed else ''}"
    time.sleep(down)
    victim.start()
    return f"{said} down {down:.1f}s"


@pytest.mark.slow
def test_several_hosts_kill_9_at_random_pays_once_and_finishes_everything(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path], pg_url: str
) -> None:
    """Three daemons, 30 pairs and 10 clips into 2 languages, daemons killed -9 and restarted at random.

    FaceDub allows 10 POST /jobs a minute: 30 pairs take two minutes whatever happens, so this runs ~2.5 min.
    """
    seed = int(os.environ.get("UGCWATCHD_CHAOS_SEED", str(time.time_ns() % 2**31)))
    print(f"chaos seed {seed} (UGCWATCHD_CHAOS_SEED={seed} repeats the adversary's choices)")
    rng = random.Random(seed)
    # Paid requests are answered 1 s after they take effect: a kill then leaves a job nobody recorded.
    sb = sandbox_process("--port", "0", "--job-seconds", "1.5", "--answer-delay", "1")
    share = Share(tmp_path / "share", media)
    hosts = start_hosts(tmp_path, share.rules(sb, pg_url), 3)
    started = time.monotonic()
    kills: list[str] = []
    try:
        share.pairs(30)
        share.clips(10)
        while len(kills) < 6 and not share.all_terminal():
            kills.append(strike(rng, hosts, pg_url, started))
        print("kills:", kills)
        wait_for(lambda: finished(pg_url, share), timeout=240, interval=0.5, what="a terminal sidecar for every job")
        wait_for(lambda: not share.left_in_inboxes(), timeout=30, interval=0.5, what="the inboxes to empty")
        print(f"finished in {time.monotonic() - started:.1f} s")
    finally:
        codes = stop_and_show(hosts)
        tell_what_happened(pg_url, hosts)
    assert len(kills) >= 3, f"only {len(kills)} kills before the work finished: the run proves little"
    assert codes == {host.name: 0 for host in hosts}
    assert_one_terminal_each(share)
    assert_paid_once(sb, pg_url, share)
    assert_each_file_once(pg_url, share)
    assert not any("Traceback" in host.log() for host in hosts)


@pytest.mark.slow
def test_several_hosts_survivor_finishes_a_dead_daemons_items_within_the_lease(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path], pg_url: str
) -> None:
    # A light batch: what is measured is how soon the work is taken over and resumed, not FaceDub's
    # two slots working through a queue the dead daemon never started.
    sb = sandbox_process("--port", "0", "--job-seconds", "2")
    share = Share(tmp_path / "share", media)
    hosts = start_hosts(tmp_path, share.rules(sb, pg_url), 2)
    try:
        share.pairs(2)
        share.clips(4)
        sent_by = (
            "SELECT DISTINCT items.owner FROM items JOIN jobs ON jobs.item_id = items.id"
            " WHERE items.state IN (%s, %s) AND jobs.state IN ('submitted', 'remote_done')"
        )
        busy = wait_for(lambda: rows(pg_url, sent_by, OPEN), timeout=30, what="a submitted job")
        victim = next(host for host in hosts if host.pid == pid_of(busy[0][0]))
        survivor = next(host for host in hosts if host is not victim)
        victim.kill()
        killed_at = time.monotonic()
        owned = rows(pg_url, "SELECT id, owner FROM items WHERE state IN (%s, %s)", OPEN)
        dead = [item for item, owner in owned if pid_of(owner) == victim.pid]
        assert dead, owned
        marks = ", ".join(str(item) for item in dead)
        still_open = f"SELECT id FROM items WHERE id IN ({marks}) AND state IN (%s, %s)"  # noqa: S608
        wait_for(lambda: not rows(pg_url, still_open, OPEN), timeout=LEASE_TTL + 60, interval=0.2, what="takeover")
        took = time.monotonic() - killed_at
        print(f"{victim.name}'s {len(dead)} open item(s) finished by {survivor.name} {took:.1f} s after the kill")
        wait_for(lambda: finished(pg_url, share), timeout=60, interval=0.5, what="a terminal sidecar for every job")
        wait_for(lambda: not share.left_in_inboxes(), timeout=20, interval=0.5, what="the inboxes to empty")
    finally:
        codes = stop_and_show(hosts)
    assert took <= LEASE_TTL + 15, f"the survivor took {took:.1f} s"
    assert codes == {victim.name: None, survivor.name: 0}
    moved = rows(pg_url, f"SELECT item_id, detail FROM events WHERE kind = 'item taken over' AND item_id IN ({marks})")  # noqa: S608
    assert sorted(item for item, _ in moved) == sorted(dead), moved
    assert all(f":{survivor.pid}:" in detail for _, detail in moved), moved
    assert_one_terminal_each(share)
    assert_paid_once(sb, pg_url, share)
    assert_each_file_once(pg_url, share)


def test_several_hosts_two_daemons_one_share_take_each_file_once(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path], pg_url: str
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    share = Share(tmp_path / "share", media)
    hosts = start_hosts(tmp_path, share.rules(sb, pg_url), 2)
    try:
        share.pairs(3)
        share.clips(4)
        wait_for(share.all_terminal, timeout=45, interval=0.3, what="a terminal sidecar for every job")
        wait_for(lambda: not share.left_in_inboxes(), timeout=20, interval=0.3, what="the inboxes to empty")
    finally:
        codes = stop_and_show(hosts)
    assert codes == {"host0": 0, "host1": 0}
    owners = rows(pg_url, "SELECT owner FROM items")
    assert len(owners) == 3 + 4 and {pid_of(o) for (o,) in owners} <= {h.pid for h in hosts}, owners
    assert_one_terminal_each(share)
    assert_each_file_once(pg_url, share)
    assert_paid_once(sb, pg_url, share)
    assert len(dublab_records(sb)) == 4 * 2  # without kills not even an unstarted record is left behind
    assert not any("Traceback" in host.log() for host in hosts)
