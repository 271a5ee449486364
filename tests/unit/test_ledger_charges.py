"""What was paid and what a client spent: charges rows, their tallies, and one inbox's spend per period."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from tests.ledgers import MakeLedger, metrics_scrape
from ugcwatchd.ledger import SCHEMA_VERSION, Failure, InputFile, JobDetail, Ledger, PlannedJob
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import ErrorCode, FailStage, JobState

from .test_ledger_history import _full_scans

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def add(
    ledger: Ledger,
    key: str,
    *,
    rule: str = "faces",
    inbox: str = "/srv/acme/faces/inbox",
    parts: dict[str, str] | None = None,
    provider: str = "facedub",
    estimate: int = 2,
) -> int:
    """An item of one job, as ingestion records it."""
    item = ledger.add_item(
        rule=rule,
        provider=provider,
        inbox=inbox,
        outbox=inbox.replace("inbox", "outbox"),
        key=key,
        inputs=[InputFile("media", f"{inbox}/{key}.mp4", f"{key}.mp4", "ab" * 32, 10, 1, "video/mp4", 3.0, 7)],
        jobs=[PlannedJob(f"{key}.{provider}", f"k-{key}", {"duration": 10}, estimate)],
        parts=parts if parts is not None else {"client": "acme"},
    )
    return ledger.jobs_of(item.id)[0].id


def send(ledger: Ledger, job_id: int, at: float, remote_id: str) -> None:
    ledger.move_job(job_id, JobState.SUBMITTING, sent_at=at, estimate=ledger.job(job_id).estimate)
    ledger.move_job(job_id, JobState.SUBMITTED, remote_id=remote_id)


def fail_charged(ledger: Ledger, job_id: int, charged: int, *, overage: bool | None = None) -> None:
    remote = ledger.job(job_id).remote_id or ""
    state = RemoteState(remote, "failed", credits_charged=charged, is_overage=overage)
    failure = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, "no face", True)
    ledger.move_job(job_id, JobState.FAILED, detail=JobDetail(remote=state, failure=failure))


def deliver(ledger: Ledger, job_id: int, charged: int, billed: float | None = None) -> None:
    remote = RemoteState(
        ledger.job(job_id).remote_id or "", "completed", credits_charged=charged, billed_seconds=billed
    )
    ledger.move_job(job_id, JobState.REMOTE_DONE, detail=JobDetail(remote=remote, completed_at=ledger._clock()))
    ledger.move_job(job_id, JobState.DELIVERED, detail=JobDetail(remote=remote, completed_at=ledger._clock()))


def test_ledger_scope_spent_counts_one_inbox_per_period_whatever_its_rule_name(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    day, month = T0 - 3600, T0 - 10 * 86400
    acme = [add(ledger, f"a{n}", estimate=n + 1) for n in range(5)]
    send(ledger, acme[0], T0 - 60, "r0")  # today: 1
    send(ledger, acme[1], T0 - 5 * 86400, "r1")  # this month, not today: 2
    send(ledger, acme[2], T0 - 40 * 86400, "r2")  # last month: 3
    send(ledger, acme[3], T0 - 30, "r3")  # today, failed without a charge: counts no more (4)
    ledger.move_job(
        acme[3], JobState.FAILED, detail=JobDetail(failure=Failure(FailStage.POLL, ErrorCode.LOST_REMOTELY, ""))
    )
    # acme[4] is queued: never sent (5)
    other_client = add(ledger, "g", inbox="/srv/globex/faces/inbox", parts={"client": "globex"}, estimate=7)
    send(ledger, other_client, T0 - 10, "r5")
    other_folder = add(ledger, "d", rule="dub", inbox="/srv/acme/dub/inbox", estimate=11)
    send(ledger, other_folder, T0 - 10, "r6")
    spent = ledger.scope_spent("facedub", "/srv/acme/faces/inbox", month_from=month, day_from=day)
    assert spent == (1, 1 + 2)
    assert ledger.scope_spent("facedub", "/srv/globex/faces/inbox", month_from=month, day_from=day) == (7, 7)
    assert ledger.scope_spent("dublab", "/srv/acme/faces/inbox", month_from=month, day_from=day) == (0, 0)
    deliver(ledger, acme[0], 1)  # delivered still counts
    assert ledger.scope_spent("facedub", "/srv/acme/faces/inbox", month_from=month, day_from=day) == spent
    charged = add(ledger, "c", estimate=13)  # failed after FaceDub charged it at creation: the money is gone
    send(ledger, charged, T0 - 20, "r7")
    fail_charged(ledger, charged, 3)
    renamed = add(ledger, "n", rule="acme-faces", estimate=17)  # the same folder's rule, renamed by a reload
    send(ledger, renamed, T0 - 20, "r8")
    assert ledger.scope_spent("facedub", "/srv/acme/faces/inbox", month_from=month, day_from=day) == (
        1 + 13 + 17,
        1 + 2 + 13 + 17,
    )


def test_ledger_scope_spent_reads_no_whole_table(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    for n in range(30):
        job = add(ledger, f"c{n}", inbox=f"/srv/c{n % 3}/faces/inbox")
        send(ledger, job, T0 - n * 3600, f"r{n}")

    def spent() -> tuple[int, int]:
        return ledger.scope_spent("facedub", "/srv/c1/faces/inbox", month_from=T0 - 9e5, day_from=T0 - 9e4)

    assert _full_scans(ledger, spent) == []


def test_ledger_charges_between_lists_delivered_and_failed_but_charged_jobs(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = make_ledger(clock)
    delivered, failed, free = add(ledger, "a"), add(ledger, "b", parts={}), add(ledger, "c")
    for n, job in enumerate((delivered, failed, free)):
        send(ledger, job, T0, f"r{n}")
    deliver(ledger, delivered, 2)
    clock.now += 10
    fail_charged(ledger, failed, 3, overage=True)
    ledger.move_job(
        free, JobState.FAILED, detail=JobDetail(failure=Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, ""))
    )
    charges = ledger.charges_between(T0, T0 + 60)
    assert [(c.job, c.state, c.credits, c.overage, c.parts, c.remote_id) for c in charges] == [
        ("a.facedub", JobState.DELIVERED, 2, None, {"client": "acme"}, "r0"),
        ("b.facedub", JobState.FAILED, 3, True, {}, "r1"),
    ]
    assert ledger.charges_between(T0 + 1, T0 + 60)[0].job == "b.facedub"
    assert ledger.charges_between(T0 + 60, T0 + 120) == []


def test_ledger_charge_tallies_count_failed_charges_per_rule_and_parts(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    a, b, c = add(ledger, "a"), add(ledger, "b"), add(ledger, "c", inbox="/srv/faces/inbox", parts={})
    for n, job in enumerate((a, b, c)):
        send(ledger, job, T0, f"r{n}")
    deliver(ledger, a, 2)
    fail_charged(ledger, b, 3)
    deliver(ledger, c, 1)
    scrape = metrics_scrape(ledger)
    assert 'ugcwatchd_credits_charged_total{provider="facedub"} 6.0' in scrape
    assert 'ugcwatchd_client_credits_charged_total{parts="client=acme",provider="facedub",rule="faces"} 5.0' in scrape
    assert 'ugcwatchd_client_credits_charged_total{parts="",provider="facedub",rule="faces"} 1.0' in scrape


def test_ledger_migration_to_version_5_fills_the_tally_per_client_from_charges(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, clock=Clock())
    a, b = add(ledger, "a"), add(ledger, "b", inbox="/srv/globex/faces/inbox", parts={"client": "globex"})
    send(ledger, a, T0, "r1")
    send(ledger, b, T0, "r2")
    deliver(ledger, a, 2)
    fail_charged(ledger, b, 3)
    ledger.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER charges_by_tally")
    db.execute("DROP TABLE charged_by")
    db.execute("DROP INDEX events_item")  # what later versions add
    db.execute("PRAGMA user_version=4")
    db.close()
    Ledger(path, clock=Clock()).close()
    db = sqlite3.connect(path)
    rows = sorted(db.execute("SELECT provider, rule, parts, credits FROM charged_by"))
    assert rows == [("facedub", "faces", '{"client": "acme"}', 2.0), ("facedub", "faces", '{"client": "globex"}', 3.0)]
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_metrics_client_folder_not_utf8_is_a_label_with_its_bytes_shown_never_a_failed_scrape(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger(Clock())
    job = add(ledger, "a", inbox="/srv/odd/faces/inbox", parts={"client": os.fsdecode(b'ac\xffme "x"')})
    send(ledger, job, T0, "r1")
    deliver(ledger, job, 2)
    scrape = metrics_scrape(ledger)
    assert (
        'ugcwatchd_client_credits_charged_total{parts="client=ac\\\\xffme \\"x\\"",provider="facedub",rule="faces"} 2.0'
        in scrape
    )


def test_ledger_charge_of_a_failed_download_retried_as_a_download_is_counted_once(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    job = add(ledger, "a")
    send(ledger, job, T0, "r1")
    remote = RemoteState("r1", "completed", credits_charged=2, is_overage=False)
    ledger.move_job(job, JobState.REMOTE_DONE, detail=JobDetail(remote=remote, completed_at=T0))
    failure = Failure(FailStage.DOWNLOAD, ErrorCode.DOWNLOAD_FAILED, "gone", True)
    ledger.move_job(job, JobState.FAILED, detail=JobDetail(remote=remote, completed_at=T0, failure=failure))
    assert [(c.state, c.credits) for c in ledger.charges_between(0, T0 + 1)] == [(JobState.FAILED, 2)]
    ledger.redownload(job)  # `retry`: the result exists, so it is fetched again, never paid again
    ledger.move_job(job, JobState.DELIVERED, detail=ledger.job(job).detail)
    assert [(c.state, c.credits, c.remote_id) for c in ledger.charges_between(0, T0 + 1)] == [
        (JobState.DELIVERED, 2, "r1")
    ]
    scrape = metrics_scrape(ledger)
    assert 'ugcwatchd_credits_charged_total{provider="facedub"} 2.0' in scrape
    assert 'ugcwatchd_client_credits_charged_total{parts="client=acme",provider="facedub",rule="faces"} 2.0' in scrape


def test_ledger_charge_of_a_failed_job_resubmitted_by_retry_shows_both_payments(make_ledger: MakeLedger) -> None:
    clock = Clock()
    ledger = make_ledger(clock)
    job = add(ledger, "a")
    send(ledger, job, T0, "r1")
    fail_charged(ledger, job, 2, overage=True)  # FaceDub charged at creation; the job failed
    ledger.requeue(job)  # `retry`: no result exists, so it is sent again, and paid again
    clock.now += 60
    send(ledger, job, clock.now, "r2")
    deliver(ledger, job, 2)
    charges = ledger.charges_between(0, clock.now + 1)
    assert [(c.remote_id, c.state, c.credits, c.overage, c.job) for c in charges] == [
        ("r1", JobState.FAILED, 2, True, "a.facedub"),
        ("r2", JobState.DELIVERED, 2, None, "a.facedub"),
    ]
    scrape = metrics_scrape(ledger)
    assert 'ugcwatchd_credits_charged_total{provider="facedub"} 4.0' in scrape


def _remote(remote_id: str, charged: int, state: str = "completed") -> dict[str, object]:
    return {"remote_id": remote_id, "state": state, "credits_charged": charged}


def test_ledger_migration_from_version_3_keeps_the_charged_totals_and_counts_each_job_once(tmp_path: Path) -> None:
    from ugcwatchd.ledger.schema import SCHEMA, statements

    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for script in SCHEMA[:3]:
        for statement in statements(script):
            db.execute(statement)
    db.execute("PRAGMA user_version=3")
    db.execute(
        "INSERT INTO items (id, rule, provider, inbox, outbox, key, state, created_at, updated_at)"
        " VALUES (1, 'faces', 'facedub', '/in', '/out', 'a', 'delivered', 0, 0)"
    )
    rows = [  # delivered and charged (twice), delivered for nothing, failed after a charge, still running
        (1, "t1", "delivered", "r1", {"remote": _remote("r1", 2), "completed_at": T0}),
        (2, "t2", "delivered", "r2", {"remote": _remote("r2", 3)}),
        (3, "t3", "delivered", "r3", {"remote": _remote("r3", 0)}),
        (4, "t4", "failed", "r4", {"remote": _remote("r4", 5)}),
        (5, "t5", "submitted", "r5", {"remote": _remote("r5", 7, "running")}),
    ]
    for job_id, token, state, remote, detail in rows:
        db.execute(
            "INSERT INTO jobs (id, item_id, token, name, provider, dedupe_key, params, estimate, state, remote_id,"
            " detail, created_at, updated_at, outbox)"
            " VALUES (?, 1, ?, ?, 'facedub', 'k', '{}', 1, ?, ?, ?, 0, ?, '/out')",
            (job_id, token, f"j{job_id}.facedub", state, remote, json.dumps(detail), T0 - 5),
        )
    before = db.execute("SELECT credits FROM charged WHERE provider = 'facedub'").fetchone()[0]
    db.close()
    assert before == 5  # version 3 counted delivered jobs only
    ledger = Ledger(path, clock=Clock())
    charged = {r[0]: r[1] for r in ledger._db.execute("SELECT provider, credits FROM charged")}
    by = list(ledger._db.execute("SELECT provider, rule, parts, credits FROM charged_by"))
    assert charged == {"facedub": 5} and [tuple(r) for r in by] == [("facedub", "faces", "", 5)]
    assert sorted((c.remote_id, c.credits) for c in ledger.charges_between(0, T0 + 1)) == [("r1", 2), ("r2", 3)]
    # After the migration each ending adds its charge once: the running job, and the old failure retried.
    deliver(ledger, 5, 7)
    ledger.redownload(4)
    ledger.move_job(4, JobState.DELIVERED, detail=ledger.job(4).detail)
    charged = {r[0]: r[1] for r in ledger._db.execute("SELECT provider, credits FROM charged")}
    assert charged == {"facedub": 5 + 7 + 5}
    assert sum(c.credits for c in ledger.charges_between(0, T0 + 1e6)) == 17


def test_ledger_estimated_since_counts_a_failed_job_the_provider_charged_but_not_an_uncharged_one(
    make_ledger: MakeLedger,
) -> None:
    """The provider's daily budget: a FaceDub job that failed after creation was paid for; one that
    failed before anything was charged was not."""
    ledger = make_ledger(Clock())
    charged, uncharged, running = (add(ledger, k, estimate=3) for k in ("a", "b", "c"))
    for n, job_id in enumerate((charged, uncharged, running)):
        send(ledger, job_id, T0 + n, f"r-{n}")
    fail_charged(ledger, charged, 3)
    ledger.move_job(uncharged, JobState.FAILED)
    assert ledger.estimated_since("facedub", T0) == 6  # the charged failure and the running job
    assert ledger.estimated_since("facedub", T0 + 1) == 3  # a range of send times
