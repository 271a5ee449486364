"""A long history costs nothing per tick: every per-tick question is an index range, counts are tallies."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.ledgers import MakeLedger, metrics_scrape, sqlite_only
from ugcwatchd.ledger import SCHEMA_VERSION, InputFile, JobDetail, Ledger, PlannedJob
from ugcwatchd.ledger.backend import Connection
from ugcwatchd.ledger.schema import SCHEMA, statements
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import (
    OPEN_ITEM_STATES,
    RUNNING_JOB_STATES,
    WAITING_JOB_STATES,
    ItemState,
    JobState,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def add(
    ledger: Ledger, key: str, *, provider: str = "dublab", outbox: str = "/out", names: tuple[str, ...] = ()
) -> int:
    names = names or (f"{key}.de", f"{key}.es")
    item = ledger.add_item(
        rule="dub",
        provider=provider,
        inbox="/in",
        outbox=outbox,
        key=key,
        inputs=[InputFile("media", f"/in/{key}.mp4", f"{key}.mp4", "ab" * 32, 1234, 1, "video/mp4", 3.0, 7)],
        jobs=[PlannedJob(name, f"k-{name}-{outbox}", {"to": name[-2:]}, 3) for name in names],
    )
    return item.id


def deliver(ledger: Ledger, job_id: int, charged: int, remote_id: str) -> None:
    ledger.move_job(job_id, JobState.SUBMITTING, sent_at=ledger._clock(), estimate=3)
    ledger.move_job(job_id, JobState.SUBMITTED, remote_id=remote_id)
    remote = RemoteState(remote_id, "completed", credits_charged=charged)
    ledger.move_job(job_id, JobState.REMOTE_DONE, detail=JobDetail(remote=remote))
    ledger.move_job(job_id, JobState.DELIVERED, detail=JobDetail(remote=remote, sidecar="result"))


def counted(db: Connection, query: str) -> dict[tuple[str, ...], int]:
    return {tuple(r[:-1]): r[-1] for r in db.execute(query)}


def test_ledger_tallies_after_every_kind_of_change_equal_the_counted_rows(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    rng = random.Random(3)
    for n in range(12):
        item_id = add(ledger, f"clip{n}", provider=("dublab", "facedub")[n % 2])
        first, second = ledger.jobs_of(item_id)
        if n % 3 == 0:
            deliver(ledger, first.id, 2, f"r{n}")
            ledger.move_job(second.id, JobState.FAILED, expect=JobState.QUEUED)
            ledger.move_item(item_id, ItemState.FAILED)
            if rng.random() < 0.5:  # an operator's retry
                ledger.requeue(second.id)
                ledger.move_item(item_id, ItemState.PLANNED)
        elif n % 3 == 1:
            ledger.move_job(first.id, JobState.HELD, detail=JobDetail())
            ledger.move_item(item_id, ItemState.RUNNING)
    db = ledger._db
    items = counted(db, "SELECT state, COUNT(*) FROM items GROUP BY state")
    assert ledger.counts() == {state: n for (state,), n in items.items()}
    jobs = counted(db, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
    assert ledger.job_counts() == {state: n for (state,), n in jobs.items()}
    by_provider = counted(db, "SELECT provider, state, COUNT(*) FROM jobs GROUP BY provider, state")
    assert counted(db, "SELECT provider, state, n FROM job_tally WHERE n > 0") == by_provider
    assert ledger.job_counts("facedub") == {s: n for (p, s), n in by_provider.items() if p == "facedub"}


def test_ledger_charged_total_counts_each_delivered_job_once(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    a, b = ledger.jobs_of(add(ledger, "a"))
    deliver(ledger, a.id, 4, "r1")
    deliver(ledger, b.id, 3, "r2")
    ledger.annotate_job(a.id, JobDetail(sidecar="result"))  # a later note never counts it again
    (c,) = ledger.jobs_of(add(ledger, "c", provider="facedub", names=("c.facedub",)))
    deliver(ledger, c.id, 1, "r3")
    scrape = metrics_scrape(ledger)
    assert 'ugcwatchd_credits_charged_total{provider="dublab"} 7.0' in scrape
    assert 'ugcwatchd_credits_charged_total{provider="facedub"} 1.0' in scrape
    assert 'ugcwatchd_jobs{provider="dublab",state="delivered"} 2.0' in scrape
    assert 'ugcwatchd_items{state="planned"} 2.0' in scrape


def test_ledger_migration_to_version_3_fills_outboxes_and_tallies_from_history(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for script in SCHEMA[:2]:
        for statement in statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version=2")
    for n, (state, outbox) in enumerate([("delivered", "/a"), ("delivered", "/b"), ("failed", "/a")], 1):
        db.execute(
            "INSERT INTO items (id, rule, provider, inbox, outbox, key, state, created_at, updated_at)"
            " VALUES (?, 'dub', 'dublab', '/in', ?, ?, ?, 1, 1)",
            (n, outbox, f"k{n}", state),
        )
        detail = json.dumps({"remote": {"remote_id": f"r{n}", "state": "completed", "credits_charged": n}})
        db.execute(
            "INSERT INTO jobs (item_id, token, name, provider, dedupe_key, params, estimate, state, detail,"
            " created_at, updated_at) VALUES (?, ?, ?, 'dublab', ?, '{}', 1, ?, ?, 1, 1)",
            (n, f"t{n}", f"clip{n}.de", f"d{n}", state, detail),
        )
    db.execute("UPDATE jobs SET detail = 'not json' WHERE id = 2")  # an unreadable detail charges nothing
    db.close()
    ledger = Ledger(path)
    assert ledger.counts() == {"delivered": 2, "failed": 1}
    assert ledger.job_names_in("/a") == {"clip1.de", "clip3.de"}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT provider, credits FROM charged").fetchall() == [("dublab", 1.0)]


def test_ledger_job_names_in_with_stems_returns_the_names_of_those_stems_only(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    for stem in ("clip", "clip-2", "clipper", "clio", "cliq", "Clip", "sub/clip", "é"):
        add(ledger, stem)
    add(ledger, "clip", outbox="/elsewhere")
    assert ledger.job_names_in("/out", {"clip"}) == {"clip.de", "clip.es", "clip-2.de", "clip-2.es"} | {
        "clipper.de",
        "clipper.es",
    }
    assert ledger.job_names_in("/out", {"é", "sub/clip"}) == {"é.de", "é.es", "sub/clip.de", "sub/clip.es"}
    assert ledger.job_names_in("/out", {"nothing"}) == set()
    assert len(ledger.job_names_in("/out")) == 16 and len(ledger.job_names_in("/out", {""})) == 16


def test_ledger_remote_ids_view_answers_membership_without_reading_them_all(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    a, b = ledger.jobs_of(add(ledger, "a"))
    deliver(ledger, a.id, 1, "r1")
    deliver(ledger, b.id, 1, "r2")
    owned = ledger.remote_ids("dublab")
    assert "r1" in owned and "r3" not in owned and "r1" not in ledger.remote_ids("facedub")
    assert owned == {"r1", "r2"} and len(owned) == 2
    without = owned - {"r1"}
    assert "r1" not in without and "r2" in without and set(without) == {"r2"}


PATHS = {
    "queued": (),
    "submitting": (JobState.SUBMITTING,),
    "submitted": (JobState.SUBMITTING, JobState.SUBMITTED),
    "remote_done": (JobState.SUBMITTING, JobState.SUBMITTED, JobState.REMOTE_DONE),
    "delivered": (JobState.SUBMITTING, JobState.SUBMITTED, JobState.REMOTE_DONE, JobState.DELIVERED),
    "failed": (JobState.SUBMITTING, JobState.FAILED),
}


def test_ledger_reserved_equals_its_definition_over_random_jobs(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = make_ledger(clock)
    rng = random.Random(11)
    for n in range(60):
        (job,) = ledger.jobs_of(add(ledger, f"c{n}", names=(f"c{n}.de",)))
        for step in PATHS[rng.choice(sorted(PATHS))]:
            fields: dict[str, object] = {}
            if step == JobState.SUBMITTING:
                fields = {"sent_at": clock(), "estimate": rng.randint(1, 9)}
            elif step == JobState.SUBMITTED:
                fields = {"remote_id": f"r{n}"}
            ledger.move_job(job.id, step, **fields)
    rows = ledger._db.execute("SELECT state, sent_at, updated_at, COALESCE(estimate, 0) FROM jobs").fetchall()
    sent_states = ("submitted", "remote_done", "delivered")
    for since in (clock.now - 300, clock.now - 60, clock.now - 10):
        at_creation = sum(e for s, t, _, e in rows if s == "submitting" or (s in sent_states and t >= since))
        on_completion = sum(e for s, _, u, e in rows if s in RUNNING_JOB_STATES or (s == "delivered" and u >= since))
        assert ledger.reserved("dublab", since, on_completion=False) == at_creation
        assert ledger.reserved("dublab", since, on_completion=True) == on_completion


def _full_scans(ledger: Ledger, call: object) -> list[str]:
    """Run ``call`` and return every plan step that reads a whole table of the ledger."""
    executed: list[str] = []
    sqlite_only(ledger, "it reads SQLite's query plans")
    db = ledger._db
    assert isinstance(db, sqlite3.Connection)
    db.set_trace_callback(executed.append)
    try:
        assert callable(call)
        call()
    finally:
        db.set_trace_callback(None)
    scans = []
    for sql in executed:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            for row in ledger._db.execute("EXPLAIN QUERY PLAN " + sql):
                detail = row[3]
                if detail.startswith("SCAN") and detail.split()[1] in ("items", "jobs", "inputs", "events"):
                    scans.append(f"{detail}  <-  {sql[:120]}")
    return scans


def test_ledger_per_tick_questions_read_no_whole_table(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = make_ledger(clock)
    for n in range(30):
        item_id = add(ledger, f"c{n}")
        if n % 2:
            for job in ledger.jobs_of(item_id):
                deliver(ledger, job.id, 1, f"r{job.id}")
            ledger.move_item(item_id, ItemState.DELIVERED)
    open_item = ledger.items_in(ItemState.PLANNED)[0]
    job = ledger.jobs_of(open_item.id)[0]
    questions = {
        "items_in": lambda: ledger.items_in(*OPEN_ITEM_STATES),
        "jobs_in": lambda: ledger.jobs_in(JobState.HELD, provider="dublab"),
        "jobs_in all providers": lambda: ledger.jobs_in(*RUNNING_JOB_STATES, *WAITING_JOB_STATES),
        "jobs_of": lambda: ledger.jobs_of(open_item.id),
        "inputs_of": lambda: ledger.inputs_of(open_item.id),
        "item, job": lambda: (ledger.item(open_item.id), ledger.job(job.id), ledger.job_created(job.id)),
        "failed_jobs_of_open_items": ledger.failed_jobs_of_open_items,
        "estimated_since": lambda: ledger.estimated_since("dublab", clock.now - 86400),
        "reserved at creation": lambda: ledger.reserved("dublab", clock.now - 30, on_completion=False),
        "reserved on completion": lambda: ledger.reserved("dublab", clock.now - 30, on_completion=True),
        "sent_since": lambda: ledger.sent_since("dublab", clock.now - 60),
        "open_item_with_input": lambda: ledger.open_item_with_input("/in/c0.mp4"),
        "last_use_of": lambda: ledger.last_use_of("/in/c0.mp4"),
        "job_names_in": lambda: ledger.job_names_in("/out", {"c1", "c2"}),
        "delivered_job": lambda: ledger.delivered_job("k-c1.de-/out"),
        "remote_ids": lambda: "r3" in ledger.remote_ids("dublab") - {"r4"},
        "recent_failures": ledger.recent_failures,
        "counts": lambda: (ledger.counts(), ledger.job_counts(), ledger.job_counts("dublab")),
        "jobs_with_items": lambda: ledger.jobs_with_items(*RUNNING_JOB_STATES),
    }
    scans = {name: found for name, call in questions.items() if (found := _full_scans(ledger, call))}
    assert scans == {}


@pytest.mark.parametrize("state", [None, JobState.DELIVERED])
def test_ledger_all_jobs_pairs_each_job_with_its_item(make_ledger: MakeLedger, state: JobState | None) -> None:
    ledger = make_ledger(Clock())
    a = add(ledger, "a")
    b = add(ledger, "b", provider="facedub")
    deliver(ledger, ledger.jobs_of(b)[0].id, 1, "r1")
    rows = ledger.all_jobs(state)
    expected = [(a, "a.de"), (a, "a.es"), (b, "b.de"), (b, "b.es")] if state is None else [(b, "b.de")]
    assert [(item.id, job.name) for item, job in rows] == expected
    assert all(item == ledger.item(item.id) and job == ledger.job(job.id) for item, job in rows)
    assert Counter(job.item_id for _, job in rows) == Counter(item.id for item, _ in rows)
