"""The ledger on real SQLite: schema, transitions, atomicity, and what survives reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.ledgers import MakeLedger
from ugcwatchd.ledger import (
    SCHEMA_VERSION,
    Failure,
    InputFile,
    JobDetail,
    Ledger,
    LedgerError,
    PlannedJob,
    StaleTransition,
)
from ugcwatchd.ledger.backend import INTEGRITY_ERRORS
from ugcwatchd.states import ErrorCode, FailStage


def add(ledger: Ledger, *, key: str = "clip", jobs: tuple[str, ...] = ("clip.de", "clip.es")) -> int:
    item = ledger.add_item(
        rule="dub",
        provider="dublab",
        inbox="/in",
        outbox="/out",
        key=key,
        inputs=[InputFile("media", f"/in/{key}.mp4", f"{key}.mp4", "ab" * 32, 1234, 1, "video/mp4", 3.2)],
        jobs=[PlannedJob(name, f"k-{name}", {"to": name[-2:]}, 4) for name in jobs],
    )
    return item.id


def test_ledger_new_file_has_current_schema_and_wal(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "state")
    db = sqlite3.connect(tmp_path / "state" / "ledger.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.close()


def test_ledger_newer_schema_is_refused(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer ugcwatchd"):
        Ledger.open(tmp_path)


def test_ledger_item_with_inputs_and_jobs_survives_reopening(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    item_id = add(ledger)
    ledger.close()
    again = make_ledger()
    item = again.item(item_id)
    jobs = again.jobs_of(item_id)
    assert (item.state, item.rule, item.key) == ("planned", "dub", "clip")
    assert [j.name for j in jobs] == ["clip.de", "clip.es"] and {j.state for j in jobs} == {"queued"}
    assert all(j.token.startswith("ugc-") for j in jobs) and len({j.token for j in jobs}) == 2
    assert again.inputs_of(item_id)[0].seconds == 3.2
    assert again.events(item_id)[0][0] == "item planned"


def test_ledger_job_moves_along_the_state_machine_with_events(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    job = ledger.jobs_of(add(ledger))[0]
    ledger.move_job(job.id, "submitting", expect="queued", stage="init", sent_at=100.0)
    moved = ledger.move_job(
        job.id, "submitted", expect="submitting", remote_id="r-1", detail=JobDetail(submitted_at=101.0)
    )
    assert (moved.state, moved.remote_id, moved.stage, moved.sent_at, moved.detail) == (
        "submitted",
        "r-1",
        "init",
        100.0,
        JobDetail(submitted_at=101.0),
    )
    kinds = [kind for kind, _ in ledger.events(job.item_id)]
    assert kinds == ["item planned", "job queued -> submitting", "job submitting -> submitted"]


def test_ledger_illegal_or_stale_transition_is_refused_and_changes_nothing(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    job = ledger.jobs_of(add(ledger))[0]
    with pytest.raises(StaleTransition, match="cannot go from queued to delivered"):
        ledger.move_job(job.id, "delivered")
    ledger.move_job(job.id, "submitting", expect="queued")
    with pytest.raises(StaleTransition, match="is submitting, not queued"):
        ledger.move_job(job.id, "submitting", expect="queued")  # two dispatchers racing: only one wins
    assert ledger.job(job.id).state == "submitting"
    assert len(ledger.events(job.item_id)) == 2


def test_ledger_one_remote_job_is_never_owned_twice(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    first, second = ledger.jobs_of(add(ledger))
    for job in (first, second):
        ledger.move_job(job.id, "submitting")
    ledger.move_job(first.id, "submitted", remote_id="same")
    with pytest.raises(INTEGRITY_ERRORS):
        ledger.move_job(second.id, "submitted", remote_id="same")
    assert ledger.job(second.id).state == "submitting"  # the failed move was rolled back whole
    assert ledger.remote_ids("dublab") == {"same"}


def test_ledger_delivered_job_is_found_by_dedupe_key(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    job = ledger.jobs_of(add(ledger))[0]
    assert ledger.delivered_job(job.dedupe_key) is None
    ledger.move_job(job.id, "submitting")
    ledger.move_job(job.id, "submitted", remote_id="r-9")
    ledger.move_job(job.id, "remote_done")
    ledger.move_job(job.id, "delivered")
    found = ledger.delivered_job(job.dedupe_key)
    assert found is not None and found.id == job.id and found.remote_id == "r-9"


def test_ledger_open_item_with_input_ignores_finished_items(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    item_id = add(ledger)
    assert ledger.open_item_with_input("/in/clip.mp4") == ledger.item(item_id)
    ledger.move_item(item_id, "failed", reason="invalid")
    assert ledger.open_item_with_input("/in/clip.mp4") is None
    assert ledger.counts() == {"failed": 1}


def test_ledger_unreadable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LedgerError, match="state folder"):
        Ledger.open(blocker / "state")


def test_ledger_failed_jobs_of_closed_items_are_not_read_again(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    open_item, closed_item = add(ledger, key="open"), add(ledger, key="closed")
    for item_id in (open_item, closed_item):
        for job in ledger.jobs_of(item_id):
            ledger.move_job(job.id, "failed")
    ledger.move_item(closed_item, "failed")
    assert {j.item_id for j in ledger.failed_jobs_of_open_items()} == {open_item}


def test_ledger_estimates_sent_since_add_up_for_budgets(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    first, second = ledger.jobs_of(add(ledger))
    ledger.move_job(first.id, "submitting", sent_at=100.0, estimate=4)
    ledger.move_job(second.id, "submitting", sent_at=50.0, estimate=7)
    assert ledger.estimated_since("dublab", 60.0) == 4
    assert ledger.estimated_since("dublab", 0.0) == 11
    assert ledger.estimated_since("facedub", 0.0) == 0


def test_ledger_job_detail_reads_the_flat_format_of_earlier_ledgers() -> None:
    """A state folder written by the first release reads unchanged: the detail is still one flat object."""
    legacy = {
        "stage": "duplicate",
        "code": "duplicate",
        "message": "already processed",
        "retryable": False,
        "earlier_job": "clip.de",
        "earlier_sidecar": "/out/clip.de.result.json",
        "earlier_remote_id": "r-1",
        "sidecar": "error",
        "remote": {"remote_id": "r-2", "state": "completed", "output_url": None, "credits_charged": 3},
        "missing": [1.0, 2.0],
        "retry_at": 5.0,
        "held": "credits",
    }
    detail = JobDetail.from_json(legacy)
    assert detail.failure is not None and detail.failure.code == "duplicate"
    assert detail.failure.earlier is not None and detail.failure.earlier.remote_id == "r-1"
    assert detail.remote is not None and detail.remote.credits_charged == 3
    assert (detail.held, detail.missing, detail.retry_at, detail.sidecar) == ("credits", (1.0, 2.0), 5.0, "error")
    again = detail.to_json()
    assert JobDetail.from_json(again) == detail
    assert {k: again[k] for k in ("stage", "code", "earlier_sidecar", "held", "sidecar")} == {
        k: legacy[k] for k in ("stage", "code", "earlier_sidecar", "held", "sidecar")
    }


def test_ledger_requeue_keeps_nothing_of_the_error(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    job = ledger.jobs_of(add(ledger))[0]
    ledger.move_job(job.id, "submitting")
    failure = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, "it broke", retryable=True)
    failed = ledger.move_job(job.id, "failed", detail=JobDetail(failure=failure, sidecar="error", retry_at=9.0))
    again = ledger.requeue(failed.id)
    assert (again.state, again.detail, again.remote_id) == ("queued", JobDetail(), None)
    assert again.token != failed.token
