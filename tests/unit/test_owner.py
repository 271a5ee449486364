"""One owner: the state folder lock, and inbox claims judged with clocks the test moves."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ManualClock
from ugcwatchd.errors import AlreadyRunning, ExitCode
from ugcwatchd.inbox.ingest import InboxIngest
from ugcwatchd.inbox.scan import Scanner
from ugcwatchd.ledger import Ledger
from ugcwatchd.owner import CLAIM_NAME, STALE_AFTER, Claimant, InboxClaim, StateLock
from ugcwatchd.plan import plan
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()

# -- the state folder lock ------------------------------------------------------------------------


def test_lock_taken_twice_in_one_process_names_the_pid(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = StateLock(state).acquire()
    # flock belongs to the open file description: a second open in the same process conflicts.
    with pytest.raises(AlreadyRunning) as refused:
        StateLock(state).acquire()
    assert str(refused.value) == f"another ugcwatchd (pid {os.getpid()}) is already running on {state}"
    assert refused.value.exit_code == ExitCode.RUNTIME == 1
    assert (state / "daemon.lock").read_text() == f"{os.getpid()}\n"
    first.release()
    with StateLock(state) as again:  # released: the next one takes it
        assert again.state_id == first.state_id  # the id is made once
    assert (state / "daemon.lock").read_text() == ""  # the file stays; the pid goes


def test_state_ids_tell_state_folders_apart(tmp_path: Path) -> None:
    with StateLock(tmp_path / "a") as a, StateLock(tmp_path / "b") as b:
        assert a.state_id != b.state_id and len(a.state_id) == 16
        assert (tmp_path / "a" / "id").read_text().strip() == a.state_id
        assert a.claimant() == Claimant(HOST, os.getpid(), a.state_id)
    with pytest.raises(RuntimeError):
        a.claimant()


def test_lock_held_by_another_process_is_freed_by_kill_9(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from ugcwatchd.owner import StateLock; "
            "StateLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)",
            str(state),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(AlreadyRunning, match=rf"^another ugcwatchd \(pid {holder.pid}\) is already running on "):
            StateLock(state).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    # The kernel dropped the lock with the process: the stale file (still naming it) blocks nothing.
    assert (state / "daemon.lock").read_text() == f"{holder.pid}\n"
    with StateLock(state):
        assert (state / "daemon.lock").read_text() == f"{os.getpid()}\n"


# -- inbox claims ---------------------------------------------------------------------------------


class Clocks:
    """One host's clocks: a wall clock (possibly wrong) and a monotonic one, moved by the test."""

    def __init__(self, skew: float = 0.0) -> None:
        self.wall = ManualClock(1_800_000_000.0 + skew)
        self.mono = ManualClock(5_000.0)

    def advance(self, seconds: float) -> None:
        self.wall.advance(seconds)
        self.mono.advance(seconds)


class Host:
    """A daemon's claim on the inbox, on a host with its own clocks."""

    def __init__(self, inbox: Path, name: str, pid: int, clocks: Clocks) -> None:
        self.me = Claimant(name, pid, f"{pid:016x}")
        self.clocks = clocks
        self.claim = InboxClaim(inbox, self.me, wall=clocks.wall, clock=clocks.mono)

    def look(self) -> str | None:
        """A refresh (the 2 s job), then a tick's check."""
        self.claim.refresh()
        return self.claim.check()


def claim_file(inbox: Path) -> dict[str, object] | None:
    try:
        document: dict[str, object] = json.loads((inbox / CLAIM_NAME).read_text())
    except FileNotFoundError:
        return None
    return document


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


def settle(*hosts: Host) -> None:
    """Let a second pass, so that a claim just written is confirmed."""
    for host in hosts:
        host.clocks.advance(1.0)
        host.claim.check()


def test_free_inbox_is_claimed_then_confirmed(inbox: Path) -> None:
    clocks = Clocks()
    a = Host(inbox, "nas-a", 101, clocks)
    assert a.look() is None and not a.claim.held  # written, not yet read back
    assert claim_file(inbox) == {
        "host": "nas-a",
        "pid": 101,
        "state_id": a.me.state_id,
        "claimed_at": "2027-01-15T08:00:00Z",
        "refreshed_at": "2027-01-15T08:00:00Z",
    }
    settle(a)
    assert a.claim.held and a.claim.check() is None


def test_fresh_foreign_claim_pauses_naming_the_holder(inbox: Path) -> None:
    clocks = Clocks()
    a, b = Host(inbox, "nas-a", 101, clocks), Host(inbox, "nas-b", 202, Clocks())
    a.look()
    settle(a)
    before = (inbox / CLAIM_NAME).read_bytes()
    reason = b.look()
    assert reason == f"inbox {inbox} is claimed by nas-a:101 (state {a.me.state_id}) since 2027-01-15T08:00:00Z"
    assert not b.claim.held and (inbox / CLAIM_NAME).read_bytes() == before  # b wrote nothing
    for _ in range(12):  # two minutes of a refreshing every 10 s: b keeps checking, and waits
        clocks.advance(10)
        b.clocks.advance(10)
        a.look()
        assert b.look() == reason and not b.claim.held
    assert a.claim.held and claim_file(inbox)["pid"] == 101  # type: ignore[index]


def test_stale_foreign_claim_is_taken_over_after_a_minute(inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    clocks = Clocks()
    a, b = Host(inbox, "nas-a", 101, clocks), Host(inbox, "nas-b", 202, clocks)
    a.look()
    settle(a)  # then a dies without a word: its claim is never refreshed again
    assert b.look() is not None
    clocks.advance(STALE_AFTER - 2)
    assert b.look() is not None and claim_file(inbox)["pid"] == 101  # type: ignore[index]
    clocks.advance(3)
    with caplog.at_level(logging.WARNING, logger="ugcwatchd.owner"):
        assert b.look() is None
    assert f"inbox {inbox}: taking over the claim of nas-a:101" in caplog.text
    assert "last refreshed 2027-01-15T08:00:00Z, unchanged for over 60 s" in caplog.text
    settle(b)
    assert b.claim.held and claim_file(inbox)["pid"] == 202  # type: ignore[index]
    # a comes back: b's claim is fresh, so a pauses instead of taking it back.
    assert a.look() == f"inbox {inbox} is claimed by nas-b:202 (state {b.me.state_id}) since 2027-01-15T08:01:02Z"
    assert not a.claim.held


def test_live_claim_from_a_host_with_a_wrong_clock_stays_fresh(inbox: Path) -> None:
    # a's clock is ten minutes slow: by its stamps its claim always looks ten minutes old to b.
    a, b = Host(inbox, "nas-a", 101, Clocks(skew=-600)), Host(inbox, "nas-b", 202, Clocks())
    a.look()
    settle(a)
    for _ in range(30):  # five minutes
        for host in (a, b):
            host.clocks.advance(10)
        a.look()
        assert b.look() is not None and not b.claim.held  # it changes: it is alive
    assert a.claim.held
    for _ in range(7):  # a stops; after a minute of no change by b's own clock, b may take it
        b.clocks.advance(10)
        b.look()
    assert claim_file(inbox)["pid"] == 202  # type: ignore[index]


def test_own_claim_is_refreshed_every_10_s(inbox: Path) -> None:
    clocks = Clocks()
    a = Host(inbox, "nas-a", 101, clocks)
    a.look()
    settle(a)
    first = claim_file(inbox)
    clocks.advance(4)
    a.look()
    assert claim_file(inbox) == first  # not due yet
    clocks.advance(6)
    a.look()
    again = claim_file(inbox)
    assert again is not None and first is not None
    assert again["claimed_at"] == first["claimed_at"] and again["refreshed_at"] == "2027-01-15T08:00:11Z"
    clocks.advance(STALE_AFTER)  # the refresh job stalled: our own claim lapses before anyone may take it
    assert not a.claim.held and "has not been refreshed for over 30 s" in str(a.claim.check())


def test_simultaneous_claims_only_the_last_writer_goes_on(inbox: Path) -> None:
    clocks = Clocks()
    a, b = Host(inbox, "nas-a", 101, clocks), Host(inbox, "nas-b", 202, clocks)
    a.look()
    (inbox / CLAIM_NAME).unlink()  # b read the folder before a's rename landed
    b.look()
    clocks.advance(1.0)
    assert (
        a.claim.check() == f"inbox {inbox} is claimed by nas-b:202 (state {b.me.state_id}) since 2027-01-15T08:00:00Z"
    )
    assert b.claim.check() is None
    assert b.claim.held and not a.claim.held


def test_claim_left_by_our_earlier_run_is_taken_at_once(inbox: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    clocks = Clocks()
    earlier = Host(inbox, HOST, dead_pid, clocks)
    earlier.look()  # then killed -9
    now = InboxClaim(inbox, Claimant(HOST, os.getpid(), earlier.me.state_id), wall=clocks.wall, clock=clocks.mono)
    with caplog.at_level(logging.INFO, logger="ugcwatchd.owner"):
        now.refresh()
    assert "taking over the claim left by this daemon's earlier run" in caplog.text
    assert claim_file(inbox)["pid"] == os.getpid()  # type: ignore[index]


def test_unreadable_claim_is_judged_by_observation(inbox: Path) -> None:
    (inbox / CLAIM_NAME).write_text("{half a")
    a = Host(inbox, "nas-a", 101, Clocks())
    assert a.look() == f"inbox {inbox} is claimed by an unknown daemon (its claim file is unreadable)"
    a.clocks.advance(STALE_AFTER + 1)
    assert a.look() is None and claim_file(inbox)["pid"] == 101  # type: ignore[index]


def test_release_deletes_only_our_own_claim(inbox: Path) -> None:
    clocks = Clocks()
    a, b = Host(inbox, "nas-a", 101, clocks), Host(inbox, "nas-b", 202, clocks)
    a.look()
    b.look()
    b.claim.release()
    assert claim_file(inbox) is not None  # b held nothing: a's claim stays
    a.claim.release()
    assert claim_file(inbox) is None and not a.claim.held
    a.claim.refresh()  # a refresh after the release writes nothing
    assert claim_file(inbox) is None


def test_writes_are_atomic_and_leave_no_temporary_files(inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    a = Host(inbox, "nas-a", 101, clocks)
    for _ in range(5):
        a.look()
        clocks.advance(10)
    assert [p.name for p in inbox.iterdir()] == [CLAIM_NAME]
    before = (inbox / CLAIM_NAME).read_bytes()

    def crash(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    assert a.look() == f"inbox {inbox}: its claim {inbox / CLAIM_NAME} cannot be kept (No space left on device)"
    assert [p.name for p in inbox.iterdir()] == [CLAIM_NAME] and (inbox / CLAIM_NAME).read_bytes() == before
    assert not a.claim.held


def test_missing_inbox_is_not_created_by_a_claim(tmp_path: Path) -> None:
    a = Host(tmp_path / "share" / "inbox", "nas-a", 101, Clocks())
    assert a.look() is None and not a.claim.held  # the rule pauses for the folder itself
    assert not (tmp_path / "share").exists()


# -- claims in ingestion --------------------------------------------------------------------------


def test_claim_files_are_never_input_even_with_an_empty_ignore_list(inbox: Path) -> None:
    Host(inbox, "nas-a", 101, Clocks()).look()
    (inbox / f"{CLAIM_NAME}.1a2b3c4d.tmp").write_text("{}")  # a write cut short
    scanner = Scanner(inbox, ignore=[], match=None, depth=1)
    assert scanner.scan() == {} and scanner.ignored(CLAIM_NAME)


def test_foreign_claim_pauses_the_rule_once_and_takes_nothing(
    tmp_path: Path, inbox: Path, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"defaults: {{stable_after: 0s, ignore: []}}\n"
        f"rules:\n  - {{name: dub, inbox: {inbox}, outbox: {tmp_path}/out, dublab: {{to: [de]}}}}\n"
    )
    config = load_rules(rules, {})
    shutil.copy(media["video.mp4"], inbox / "clip.mp4")
    clocks = Clocks()
    other = Host(inbox, "nas-a", 101, clocks)
    other.look()
    (target,) = config.rules[0].inboxes()
    ledger = Ledger.open(tmp_path / "state")
    mine = Host(inbox, "nas-b", 202, clocks)
    ingest = InboxIngest(target, ledger, poll=True, clock=clocks.mono, claim=mine.claim)

    async def ticks(n: int) -> int:
        return sum([await ingest.tick() for _ in range(n)])

    with caplog.at_level(logging.INFO, logger="ugcwatchd.inbox.ingest"):
        mine.look()
        assert asyncio.run(ticks(3)) == 0 and ledger.counts() == {}
        pauses = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
        assert pauses == [
            f"rule dub: paused: inbox {inbox} is claimed by nas-a:101 (state {other.me.state_id}) "
            "since 2027-01-15T08:00:00Z; nothing is taken from it"
        ]
        other.claim.release()  # a clean shutdown over there
        mine.look()
        clocks.advance(1.0)
        assert asyncio.run(ticks(3)) == 1  # confirmed, then taken
    assert f"rule dub: resumed: {inbox} is ours now" in caplog.text
    ledger.close()


def test_plan_never_writes_or_needs_a_claim(tmp_path: Path, inbox: Path, media: dict[str, Path]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {inbox}, outbox: {tmp_path}/out, dublab: {{to: [de]}}}}\n")
    shutil.copy(media["video.mp4"], inbox / "clip.mp4")
    Host(inbox, "nas-a", 101, Clocks()).look()  # another daemon holds the inbox: plan still looks
    before = (inbox / CLAIM_NAME).read_bytes()
    lines = plan(load_rules(rules, {}), Settings(state_dir=tmp_path / "state"))
    assert any("clip.de <- clip.mp4" in line for line in lines), lines
    assert (inbox / CLAIM_NAME).read_bytes() == before
    assert sorted(p.name for p in inbox.iterdir()) == [CLAIM_NAME, "clip.mp4"]


def test_shared_ledger_claim_is_held_by_all_its_daemons_and_keeps_other_ledgers_out(inbox: Path) -> None:
    clocks = Clocks()
    shared = Claimant.shared("0123abcd0123abcd")
    first = InboxClaim(inbox, shared, wall=clocks.wall, clock=clocks.mono)
    second = InboxClaim(inbox, shared, wall=clocks.wall, clock=clocks.mono)  # another host, same ledger
    first.refresh()
    second.refresh()
    clocks.advance(1.0)
    assert first.check() is None and second.check() is None
    assert first.held and second.held  # neither pauses for the other
    lone = Host(inbox, "nas-c", 303, clocks)  # a daemon with a ledger of its own
    assert (
        lone.look()
        == f"inbox {inbox} is claimed by the daemons sharing ledger 0123abcd0123abcd since 2027-01-15T08:00:00Z"
    )
    second.release()  # one of them stops: the claim stays for the other
    assert claim_file(inbox) is not None and first.held
