"""The web console's reads of the ledger: bounded searches that page on, spend per day, observed job times."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.ledgers import MakeLedger
from tests.support import ManualClock
from ugcwatchd.ledger import InputFile, JobDetail, Ledger, PlannedJob
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import ItemState, JobState


def add(ledger: Ledger, name: str, *, rule: str = "faces", client: str = "acme") -> int:
    item = ledger.add_item(
        rule=rule,
        provider="facedub",
        inbox=f"/srv/{client}/in",
        outbox=f"/srv/{client}/out",
        key=name,
        inputs=[InputFile("photo", f"/srv/{client}/in/{name}.jpg", f"{name}.jpg", "ab" * 32, 1, 1)],
        jobs=[PlannedJob(f"{name}.facedub", f"k-{name.encode(errors='surrogateescape').hex()}-{client}-{rule}", {}, 1)],
        parts={"client": client},
    )
    return item.id


def deliver(ledger: Ledger, job_id: int, sent: float, done: float, credits: int) -> None:
    job = ledger.job(job_id)
    ledger.move_job(job_id, JobState.SUBMITTING, sent_at=sent)
    ledger.move_job(job_id, JobState.SUBMITTED, remote_id=f"r{job_id}")
    remote = RemoteState(f"r{job_id}", "completed", credits_charged=credits)
    ledger.move_job(job_id, JobState.REMOTE_DONE, detail=job.detail.but(remote=remote, completed_at=done))
    ledger.move_job(job_id, JobState.DELIVERED, detail=ledger.job(job_id).detail)


def test_ledger_search_by_file_name_part_any_case_with_wildcards_taken_literally(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    ids = {n: add(ledger, n) for n in ("Alice_1", "alice-2", "bob", "100%real", "caf\udce9")}
    assert [i.id for i in ledger.search_items(name="ALICE").items] == [ids["alice-2"], ids["Alice_1"]]
    assert [i.id for i in ledger.search_items(name="e_1").items] == [ids["Alice_1"]]  # _ is no wildcard
    assert [i.id for i in ledger.search_items(name="0%r").items] == [ids["100%real"]]
    assert [i.id for i in ledger.search_items(name="caf\udce9").items] == [ids["caf\udce9"]]
    assert ledger.search_items(name="nobody").items == []


def test_ledger_search_by_client_rule_and_state(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    a = add(ledger, "a", client="acme")
    b = add(ledger, "b", client="bravo", rule="dub")
    c = add(ledger, "c", client="bravo")
    ledger.move_item(c, ItemState.FAILED)
    assert [i.id for i in ledger.search_items(client="BRAVO").items] == [c, b]
    assert [i.id for i in ledger.search_items(rule="faces").items] == [c, a]
    assert [i.id for i in ledger.search_items(state="failed").items] == [c]
    assert [i.id for i in ledger.search_items(client="bravo", rule="faces", state="failed", name="c").items] == [c]


def test_ledger_search_pages_newest_first_and_goes_on_where_a_window_ended(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    ids = [add(ledger, f"{'match' if n % 10 == 0 else 'other'}{n}") for n in range(40)]
    page = ledger.search_items(limit=15)
    assert [i.id for i in page.items] == ids[::-1][:15] and page.older == ids[25]
    assert [i.id for i in ledger.search_items(limit=15, before=page.older).items] == ids[::-1][15:30]
    # A rare term: each request looks at 12 items at most and says where to go on.
    found, before, requests = [], None, 0
    while True:
        page = ledger.search_items(name="match", before=before, window=12)
        found += [i.id for i in page.items]
        requests += 1
        assert page.looked_at <= 12
        if page.older is None:
            break
        before = page.older
    assert found == [ids[n] for n in (30, 20, 10, 0)] and requests == 4


def test_ledger_spend_by_day_sums_charges_per_provider_and_client(make_ledger: MakeLedger) -> None:
    clock = ManualClock()
    ledger = make_ledger(clock)
    yesterday = (datetime.now() - timedelta(days=1)).replace(hour=12, minute=0).timestamp()
    for name, client, credits, at in (("a", "acme", 2, yesterday), ("b", "acme", 3, yesterday),
                                      ("c", "bravo", 4, yesterday + 86400)):  # fmt: skip
        job = ledger.jobs_of(add(ledger, name, client=client))[0]
        deliver(ledger, job.id, at - 10, at, credits)
    day = datetime.fromtimestamp(yesterday).date()
    rows = sorted(ledger.spend_by_day(yesterday - 86400))
    assert rows == [
        (day.isoformat(), "facedub", {"client": "acme"}, 5.0),
        ((day + timedelta(days=1)).isoformat(), "facedub", {"client": "bravo"}, 4.0),
    ]
    assert ledger.spend_by_day(yesterday + 3600) == [rows[1]]
    assert ledger.charged_totals() == (("facedub", 9.0),)


def test_ledger_finished_recently_gives_observed_job_times_newest_first(make_ledger: MakeLedger) -> None:
    clock = ManualClock(1000.0)
    ledger = make_ledger(clock)
    for n in range(3):
        job = ledger.jobs_of(add(ledger, f"j{n}"))[0]
        deliver(ledger, job.id, 1000.0 + n, 1010.0 + 2 * n, 1)
        clock.advance(5)
    add(ledger, "never-sent")
    times = ledger.finished_recently("facedub", limit=2)
    assert [(f.sent_at, f.completed_at, f.estimate) for f in times] == [(1002.0, 1014.0, 1), (1001.0, 1012.0, 1)]
    assert ledger.finished_recently("dublab") == []


def test_ledger_console_act_is_an_event_naming_the_console(make_ledger: MakeLedger) -> None:
    ledger = make_ledger()
    item = add(ledger, "a")
    job = ledger.jobs_of(item)[0]
    ledger.record_console_act(item, job.id, "adopt", {"remote_id": "r9"})
    last = ledger.timeline(item)[-1]
    assert (last.kind, last.job_id, last.detail) == ("console: adopt", job.id, {"by": "console", "remote_id": "r9"})
    assert ledger.job_owning("facedub", "r9") is None
    ledger.move_job(job.id, JobState.SUBMITTING)
    ledger.move_job(job.id, JobState.SUBMITTED, remote_id="r9", detail=JobDetail())
    owner = ledger.job_owning("facedub", "r9")
    assert owner is not None and owner.id == job.id
