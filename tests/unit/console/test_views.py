"""What the console's pages read: held work in words, running work with its forecast, spend per client."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from tests.console_history import seed_ledger
from tests.ledgers import MakeLedger, sqlite_only
from ugcwatchd.console.views import Filters, ProviderView, hold_words, item_view, items, overview, spend
from ugcwatchd.ledger import Ledger
from ugcwatchd.states import HoldReason, JobState

FACEDUB = ProviderView("facedub", "credits", None, 1, 2, 40, False, None)
DUBLAB = ProviderView("dublab", "seconds", "the key was refused", 600, None, None, False, None)


def _ledger(make_ledger: MakeLedger, tmp_path: Path, finished: int = 60, open_items: int = 15) -> Ledger:
    ledger = make_ledger()
    seed_ledger(ledger, tmp_path, items=finished, now=time.time(), open_items=open_items)
    return ledger


def test_views_held_work_is_said_in_words(make_ledger: MakeLedger, tmp_path: Path) -> None:
    ledger = _ledger(make_ledger, tmp_path)
    o = overview(ledger, [FACEDUB, DUBLAB])
    words = {(g.item.provider, g.reason): g.words for g in o.held}
    credits = words[("facedub", HoldReason.CREDITS)]
    assert credits.startswith("needs ") and credits.endswith(" credits, 1 left")
    assert words[("dublab", HoldReason.APPROVAL)].startswith("awaiting approval: about ")
    assert words[("facedub", None)].startswith("submission outcome unclear: 2 candidate remote jobs")
    assert o.held_total == sum(o.jobs.get(s, 0) for s in (JobState.HELD, JobState.AMBIGUOUS))


def test_views_budget_and_client_budget_holds_say_what_is_spent(make_ledger: MakeLedger, tmp_path: Path) -> None:
    ledger = _ledger(make_ledger, tmp_path, open_items=0)
    job = ledger.jobs_in(JobState.DELIVERED, provider="facedub")[0]
    budget = hold_words(ledger, [job], HoldReason.BUDGET, FACEDUB)
    assert budget.startswith(f"needs {job.estimate} credits; daily budget: ")
    assert budget.endswith("of 40 credits spent today")
    assert hold_words(ledger, [job], HoldReason.CLIENT_BUDGET, FACEDUB).startswith("client budget: needs")


def test_views_running_jobs_get_progress_and_a_forecast_from_observed_times(
    make_ledger: MakeLedger, tmp_path: Path
) -> None:
    ledger = _ledger(make_ledger, tmp_path)
    o = overview(ledger, [FACEDUB, DUBLAB])
    running = {r.job.provider: r for r in o.running}
    assert running["dublab"].progress == 40.0 and not running["dublab"].estimated  # the provider's own
    assert running["facedub"].estimated and running["facedub"].progress is not None  # FaceDub tells stages only
    assert all(r.eta is not None for r in o.running)
    facedub = next(p for p in o.providers if p.view.name == "facedub")
    assert facedub.times is not None and 6 <= facedub.times.run <= 10 and facedub.forecast.done_in is not None


def test_views_spend_per_day_adds_up_to_what_was_charged(make_ledger: MakeLedger, tmp_path: Path) -> None:
    ledger = _ledger(make_ledger, tmp_path, open_items=0)
    charts = {s.provider: s for s in spend(ledger, ["facedub", "dublab"])}
    since = datetime.combine(charts["facedub"].days[0], datetime.min.time()).timestamp()
    query = "SELECT provider, SUM(credits) FROM charges WHERE at >= ? GROUP BY provider"
    charged = {r[0]: r[1] for r in ledger._db.execute(query, (since,)).fetchall()}
    assert {name: chart.total for name, chart in charts.items()} == charged
    assert {s.label for s in charts["facedub"].series} == {"acme", "bravo", "corto"}
    assert len(charts["facedub"].days) == 30


def test_views_items_page_lists_inputs_and_jobs_of_each_match(make_ledger: MakeLedger, tmp_path: Path) -> None:
    ledger = _ledger(make_ledger, tmp_path, finished=30, open_items=0)
    page = items(ledger, Filters(client="acme"), limit=4)
    assert len(page.rows) == 4 and page.page.older is not None
    assert all(r.item.parts == {"client": "acme"} and r.inputs and r.jobs for r in page.rows)


def test_views_every_page_reads_index_ranges_never_a_whole_table(make_ledger: MakeLedger, tmp_path: Path) -> None:
    ledger = _ledger(make_ledger, tmp_path, finished=300, open_items=200)
    sqlite_only(ledger, "it reads SQLite's query plans")
    db = ledger._db
    assert isinstance(db, sqlite3.Connection)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    o = overview(ledger, [FACEDUB, DUBLAB])
    spend(ledger, ["facedub", "dublab"])
    for filters in (Filters(), Filters(name="clip", client="acme", rule="faces", state="failed"), Filters(before=99)):
        items(ledger, filters)
    item_view(ledger, o.held[0].item.id)
    db.set_trace_callback(None)
    held_ids = [job.id for group in o.held for job in group.jobs]
    assert held_ids == sorted(held_ids) and [r.job.id for r in o.running] == sorted(r.job.id for r in o.running)
    plans = {
        sql: [row[3] for row in ledger._db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for sql in dict.fromkeys(statements)
        if sql.lstrip().upper().startswith("SELECT")
    }
    assert len(plans) > 10
    big = re.compile(r"^SCAN (items|jobs|inputs|events|charges)\b")  # the whole table, however long the history
    for sql, plan in plans.items():
        assert not [step for step in plan if big.match(step)], (sql, plan)
        if "JOIN items ON items.id = jobs.item_id" in sql:  # open work: rows read by id, picked from an index
            assert "SEARCH jobs USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
            assert any(step.startswith("SEARCH jobs USING COVERING INDEX") for step in plan), plan
