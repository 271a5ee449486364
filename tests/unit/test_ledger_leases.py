"""Leases on a real PostgreSQL ledger shared by several daemons: ownership, takeover, fencing, file claims,
reservations, and the account's shared windows and mutex (ugcwatchd/ledger/leases.py, ugcwatchd/hosts.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for
from ugcwatchd.errors import InputTaken, LeaseLost
from ugcwatchd.hosts import SharedAccount, lock_key
from ugcwatchd.ledger import InputFile, Ledger, PlannedJob
from ugcwatchd.ledger.leases import new_owner
from ugcwatchd.states import ItemState, JobState


@pytest.fixture
def ledgers(pg_url: str) -> Iterator[list[Ledger]]:
    """Three handles on one database, as three daemons on three hosts would hold."""
    opened = [Ledger(pg_url) for _ in range(3)]
    yield opened
    for ledger in opened:
        ledger.close()


def clip(name: str, *, sha: str = "ab" * 32, mtime_ns: int = 1, inode: int = 7) -> InputFile:
    return InputFile("media", f"/share/in/{name}.mp4", f"{name}.mp4", sha, 1234, mtime_ns, "video/mp4", 3.0, inode)


def add(ledger: Ledger, name: str, **kwargs: object) -> int:
    item = ledger.add_item(
        rule="dub",
        provider="dublab",
        inbox="/share/in",
        outbox="/share/out",
        key=name,
        inputs=[clip(name, **kwargs)],  # type: ignore[arg-type]
        jobs=[PlannedJob(f"{name}.de", f"k-{name}", {"to": "de"}, 4)],
    )
    return item.id


def owner_of(ledger: Ledger, item_id: int) -> str | None:
    row = ledger._db.execute("SELECT owner FROM items WHERE id = ?", (item_id,)).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_leases_items_are_worked_only_by_their_owner(ledgers: list[Ledger]) -> None:
    a, b, operator = ledgers
    a.join("host-a:1:s1:aa", 30)
    b.join("host-b:2:s2:bb", 30)
    mine, theirs = add(a, "one"), add(b, "two")
    assert [j.item_id for j in a.jobs_in(JobState.QUEUED)] == [mine]
    assert [j.item_id for j in b.jobs_in(JobState.QUEUED)] == [theirs]
    # A command (no owner) sees every daemon's work.
    assert {j.item_id for j in operator.jobs_in(JobState.QUEUED)} == {mine, theirs}
    assert b.renew().taken == ()  # a live lease is never taken


def test_leases_expired_lease_is_taken_over_and_the_old_owner_is_fenced(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 1.0)  # a daemon that then stops renewing: dead, or cut off
    b.join("host-b:2:s2:bb", 30)
    item_id = add(a, "one")
    job = a.jobs_of(item_id)[0]
    taken: list[int] = []
    wait_for(lambda: bool(taken.extend(b.renew().taken) or taken), timeout=10, what="the takeover")
    assert taken == [item_id]
    assert owner_of(b, item_id) == "host-b:2:s2:bb"
    # The old owner wakes up: no write of its own on the item goes through, and nothing changed.
    with pytest.raises(LeaseLost):
        a.move_job(job.id, JobState.SUBMITTING, expect=JobState.QUEUED, stage="create")
    with pytest.raises(LeaseLost):
        a.move_item(item_id, ItemState.RUNNING)
    assert b.job(job.id).state == JobState.QUEUED
    assert [e for e, _ in b.events(item_id)][-1] == "item taken over"
    assert a.jobs_in(JobState.QUEUED) == []


def test_leases_two_takers_never_take_the_same_item(ledgers: list[Ledger]) -> None:
    a, b, c = ledgers
    a.join("host-a:1:s1:aa", 1.0)
    for n in range(40):
        add(a, f"clip{n}")
    b.join("host-b:2:s2:bb", 30)
    c.join("host-c:3:s3:cc", 30)
    results: dict[str, list[int]] = {"b": [], "c": []}

    def take(name: str, ledger: Ledger) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(results["b"]) + len(results["c"]) < 40:
            results[name] += ledger.renew(take_over=3).taken

    threads = [threading.Thread(target=take, args=pair) for pair in (("b", b), ("c", c))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results["b"] + results["c"]) == sorted(set(results["b"]) | set(results["c"]))
    assert len(results["b"]) + len(results["c"]) == 40


def test_leases_release_lets_another_daemon_resume_at_once(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 600)
    item_id = add(a, "one")
    b.join("host-b:2:s2:bb", 30)
    a.release()
    assert b.renew().taken == (item_id,)
    assert b.daemons()[0][0] == "host-b:2:s2:bb"


def test_leases_restart_of_the_same_state_folder_resumes_its_items_at_once(ledgers: list[Ledger]) -> None:
    a, again, other = ledgers
    first = new_owner("5eed5eed5eed5eed")
    a.join(first, 600)
    item_id = add(a, "one")
    other.join(new_owner("0ther0ther0ther0"), 600)  # same host, another state folder: not an earlier run
    mine = add(other, "two")
    again.join(new_owner("5eed5eed5eed5eed"), 600)  # the next run of the first (its state folder's lock held)
    assert [j.item_id for j in again.jobs_in(JobState.QUEUED)] == [item_id]
    assert owner_of(again, mine) == other.owner
    # The earlier run is no longer counted among the daemons sharing the ledger.
    assert sorted(name for name, _ in again.daemons()) == sorted([again.owner or "", other.owner or ""])


def test_leases_the_same_file_is_recorded_by_one_daemon_only(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 30)
    b.join("host-b:2:s2:bb", 30)
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def record(ledger: Ledger) -> None:
        start.wait()
        try:
            add(ledger, "same")
            outcomes.append("recorded")
        except InputTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=record, args=(ledger,)) for ledger in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["recorded", "taken"]
    rows = a._db.execute("SELECT count(*) FROM inputs WHERE path = ?", ("/share/in/same.mp4",)).fetchone()
    assert rows is not None and rows[0] == 1


def test_leases_a_file_just_delivered_is_not_taken_again_but_a_new_drop_is(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 30)
    b.join("host-b:2:s2:bb", 30)
    item_id = add(a, "clip")
    a.move_item(item_id, ItemState.FAILED, reason="bad_media")  # closed, its file moved a moment ago
    with pytest.raises(InputTaken):
        add(b, "clip")  # b's scan saw the very same file before it moved
    assert add(b, "clip", mtime_ns=2, inode=8) > item_id  # the same name dropped again is new work


def test_leases_reservations_count_for_the_other_daemons_until_the_intent(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 30)
    b.join("host-b:2:s2:bb", 30)
    job = a.jobs_of(add(a, "one"))[0]
    with a.checking():
        a.reserve(job.id, "dublab", 4)
    assert b.reserved_elsewhere("dublab") == 4
    assert a.reserved_elsewhere("dublab") == 0  # its own are counted by the daemon itself
    a.move_job(job.id, JobState.SUBMITTING, expect=JobState.QUEUED, stage="init", estimate=4)
    assert b.reserved_elsewhere("dublab") == 0  # the intent counts it now (Ledger.reserved)


def test_leases_reservations_of_a_dead_daemon_count_for_nothing(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    a.join("host-a:1:s1:aa", 1.0)
    b.join("host-b:2:s2:bb", 30)
    job = a.jobs_of(add(a, "one"))[0]
    a.reserve(job.id, "dublab", 4)
    assert b.reserved_elsewhere("dublab") == 4
    wait_for(lambda: b.reserved_elsewhere("dublab") == 0, timeout=10, what="the dead daemon's lease to end")


def test_shared_windows_never_let_more_than_the_window_through_across_daemons(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    windows = [SharedAccount(ledger, "facedub").windows({"POST /jobs": 3}) for ledger in (a, b)]
    for w in windows:  # a short window keeps the test short; the mechanism is the same
        w._items = {k: type(v)(v.amount, 2) for k, v in w._items.items()}

    async def burst() -> list[float]:
        stamps: list[float] = []

        async def one(w: object) -> None:
            await w.acquire("POST /jobs")  # type: ignore[attr-defined]
            stamps.append(time.monotonic())

        await asyncio.gather(*(one(windows[n % 2]) for n in range(7)))
        return sorted(stamps)

    stamps = asyncio.run(burst())
    # Any 3 + 1 consecutive requests span at least the window: never 4 inside 2 s.
    assert all(stamps[n + 3] - stamps[n] >= 2 - 0.05 for n in range(len(stamps) - 3))
    rows = a._db.execute("SELECT count(*) FROM rate_hits WHERE provider = 'facedub'").fetchone()
    assert rows is not None and rows[0] == 7


def test_shared_mutex_one_holder_across_daemons_and_a_dead_holder_frees_it(ledgers: list[Ledger]) -> None:
    a, b, _ = ledgers
    mutexes = [SharedAccount(ledger, "facedub").mutex("submit") for ledger in (a, b)]
    inside: list[int] = []
    most = 0

    async def hold(n: int) -> None:
        nonlocal most
        async with mutexes[n % 2]:
            inside.append(n)
            most = max(most, len(inside))
            await asyncio.sleep(0.02)
            inside.remove(n)

    async def run() -> None:
        await asyncio.gather(*(hold(n) for n in range(8)))

    asyncio.run(run())
    assert most == 1
    # A holder whose connection ends (a daemon killed): the database drops its lock.
    lock = a.session_lock(lock_key("facedub:submit"))
    assert lock.try_acquire()
    other = b.session_lock(lock_key("facedub:submit"))
    assert not other.try_acquire()
    lock._conn.close()  # type: ignore[union-attr]
    wait_for(other.try_acquire, timeout=5, what="the lock of a closed session to be free")
    other.release()


def test_leases_sqlite_ledger_has_one_daemon_and_nothing_to_lease(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.join("host:1:s:aa", 30)
    assert ledger.owner is None and not ledger.shared
    item_id = add(ledger, "one")
    assert ledger.renew().taken == ()
    assert [j.item_id for j in ledger.jobs_in(JobState.QUEUED)] == [item_id]
    ledger.close()


def test_leases_status_names_the_daemons_sharing_the_ledger(ledgers: list[Ledger]) -> None:
    from ugcwatchd.ops import status

    a, b, operator = ledgers
    a.join("host-a:1:s1:aa", 30)
    b.join("host-b:2:s2:bb", 30)
    b.release()  # stopped cleanly: no longer listed
    assert [d["name"] for d in status(operator)["daemons"]] == ["host-a:1:s1:aa"]
    assert 0 < status(operator)["daemons"][0]["lease_left"] <= 30
