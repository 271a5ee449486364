"""``ugcwatchd statement``: lines and totals per client, rule or provider, in CSV and JSON, per month."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from ugcwatchd.cli import main
from ugcwatchd.ledger import InputFile, Ledger, PlannedJob
from ugcwatchd.ledger.charges import Charge
from ugcwatchd.statement import COLUMNS, build, month_range, parse_month, to_csv
from ugcwatchd.states import JobState

from .test_ledger_charges import add, deliver, fail_charged, send

AT = datetime(2026, 11, 22, 10, 0).timestamp()


def charge(
    job: str,
    provider: str,
    credits: float,
    client: str | None,
    rule: str = "faces",
    *,
    billed_seconds: float | None = None,
    overage: bool | None = None,
    state: JobState = JobState.DELIVERED,
) -> Charge:
    parts = {"client": client} if client else {}
    return Charge(AT, provider, f"r-{job}", credits, billed_seconds, overage, state, rule, job, 1, parts)


CHARGES = [
    charge("a1.facedub", "facedub", 2, "acme", overage=False),
    charge("a2.facedub", "facedub", 1, "acme", state=JobState.FAILED, overage=True),
    charge("a.de", "dublab", 8, "acme", rule="dub", billed_seconds=4),
    charge("g1.facedub", "facedub", 3, "globex", overage=False),
    charge("g.es", "dublab", 3, "globex", rule="dub", billed_seconds=2.5),
    charge("old.facedub", "facedub", 1, None),
]


def test_statement_by_client_totals_each_client_per_provider_never_across_units() -> None:
    document = build(CHARGES, "2026-11")
    groups = {
        (g["client"], g["provider"]): (g["jobs"], g["credits_charged"], g["unit"]) for g in document["totals"]["groups"]
    }
    assert groups == {
        ("client=acme", "facedub"): (2, 3, "credits"),
        ("client=acme", "dublab"): (1, 8, "seconds"),
        ("client=globex", "facedub"): (1, 3, "credits"),
        ("client=globex", "dublab"): (1, 3, "seconds"),
        ("", "facedub"): (1, 1, "credits"),
    }
    providers = {
        p["provider"]: (p["jobs"], p["credits_charged"], p["billed_seconds"]) for p in document["totals"]["providers"]
    }
    assert providers == {"facedub": (4, 7, None), "dublab": (2, 11, 6.5)}
    first = document["lines"][1]
    assert first == {
        "date": "2026-11-22",
        "parts": {"client": "acme"},
        "rule": "faces",
        "job": "a2.facedub",
        "provider": "facedub",
        "remote_id": "r-a2.facedub",
        "credits_charged": 1,
        "unit": "credits",
        "billed_seconds": None,
        "overage": True,
        "state": "failed",
    }


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("rule", {("faces", "facedub"): 7, ("dub", "dublab"): 11}),
        ("provider", {("facedub", "facedub"): 7, ("dublab", "dublab"): 11}),
    ],
)
def test_statement_by_rule_or_provider_groups_the_totals_so(by: str, expected: dict[tuple[str, str], int]) -> None:
    document = build(CHARGES, "2026-11", by)
    assert {(g[by], g["provider"]): g["credits_charged"] for g in document["totals"]["groups"]} == expected
    assert document["by"] == by and len(document["lines"]) == len(CHARGES)


def test_statement_csv_has_a_header_lines_and_totals_marked_by_kind() -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(build(CHARGES, "2026-11")))))
    lines = [r for r in rows if r["kind"] == "line"]
    assert [r["job"] for r in lines] == [c.job for c in CHARGES]
    assert lines[1] == {
        "kind": "line",
        "date": "2026-11-22",
        "client": "client=acme",
        "rule": "faces",
        "job": "a2.facedub",
        "provider": "facedub",
        "remote_id": "r-a2.facedub",
        "credits_charged": "1",
        "unit": "credits",
        "billed_seconds": "",
        "overage": "yes",
        "state": "failed",
    }
    totals = [(r["client"], r["provider"], r["credits_charged"]) for r in rows if r["kind"] == "total"]
    assert ("client=acme", "dublab", "8") in totals and len(totals) == 5
    overall = {r["provider"]: (r["credits_charged"], r["unit"]) for r in rows if r["kind"] == "provider total"}
    assert overall == {"dublab": ("11", "seconds"), "facedub": ("7", "credits")}


def test_statement_month_is_local_and_refuses_anything_but_year_month() -> None:
    start, end = month_range(2026, 12)
    assert (datetime.fromtimestamp(start), datetime.fromtimestamp(end)) == (datetime(2026, 12, 1), datetime(2027, 1, 1))
    assert parse_month("2026-02") == (2026, 2)
    for wrong in ("2026-13", "26-01", "2026/01", "January"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_month(wrong)


def test_statement_command_prints_only_the_month_asked_from_the_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [datetime(2026, 10, 31, 23, 0).timestamp()]
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite3", clock=lambda: clock[0])
    october, november = (
        add(ledger, "oct"),
        add(ledger, "nov", inbox="/srv/globex/faces/inbox", parts={"client": "globex"}),
    )
    send(ledger, october, clock[0], "r1")
    deliver(ledger, october, 2)
    send(ledger, november, clock[0], "r2")
    clock[0] = datetime(2026, 11, 1, 1, 0).timestamp()  # failed after the month turned: November's
    fail_charged(ledger, november, 3, overage=True)
    ledger.close()
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "state"))
    assert main(["statement", "--month", "2026-11", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(line["job"], line["state"], line["parts"]) for line in document["lines"]] == [
        ("nov.facedub", "failed", {"client": "globex"})
    ]
    assert document["month"] == "2026-11"
    assert main(["statement", "--month", "2026-10", "--by", "provider"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["kind"], r["job"], r["credits_charged"]) for r in rows] == [
        ("line", "oct.facedub", "2"),
        ("total", "", "2"),
        ("provider total", "", "2"),
    ]


def test_statement_command_without_a_ledger_creates_none_and_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "state"))
    assert main(["statement"]) == 78
    assert not (tmp_path / "state").exists()
    assert "no ledger found" in capsys.readouterr().err


def test_statement_command_bad_month_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["statement", "--month", "2026-13"])
    assert exit_.value.code == 2 and "YYYY-MM" in capsys.readouterr().err


def _odd_ledger(tmp_path: Path) -> Path:
    """A ledger whose one paid job has a name and a client folder with commas, quotes, a newline and bytes
    that are not UTF-8, as an SMB share gives them."""
    state = tmp_path / "state"
    clock = [datetime(2026, 11, 5, 12, 0).timestamp()]
    ledger = Ledger(state / "ledger.sqlite3", clock=lambda: clock[0])
    client, stem = os.fsdecode(b'ac\xffme, "inc"\nltd'), os.fsdecode(b'caf\xe9, "x"')
    inbox = f"/srv/{client}/faces/inbox"
    item = ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=inbox,
        outbox=inbox.replace("inbox", "outbox"),
        key=stem,
        inputs=[InputFile("video", f"{inbox}/{stem}.mp4", f"{stem}.mp4", "ab" * 32, 10, 1, "video/mp4", 3.0, 7)],
        jobs=[PlannedJob(f"{stem}.facedub", "k-odd", {"duration": 10}, 2)],
        parts={"client": client},
    )
    job = ledger.jobs_of(item.id)[0].id
    send(ledger, job, clock[0], "r-odd")
    deliver(ledger, job, 2)
    ledger.close()
    return state


def test_statement_odd_names_come_out_as_utf8_with_bad_bytes_shown_and_csv_quoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(_odd_ledger(tmp_path)))
    assert main(["statement", "--month", "2026-11"]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")  # a lone surrogate (a raw byte on the terminal) would make this fail
    (line, total, _) = list(csv.DictReader(io.StringIO(out)))
    assert (line["job"], line["client"]) == ('caf\\xe9, "x".facedub', 'client=ac\\xffme, "inc"\nltd')
    assert total["client"] == line["client"] and total["credits_charged"] == "2"
    assert main(["statement", "--month", "2026-11", "--format", "json"]) == 0
    out = capsys.readouterr().out
    out.encode("utf-8")
    document = json.loads(out)
    assert document["lines"][0]["parts"] == {"client": 'ac\\xffme, "inc"\nltd'}
    assert document["lines"][0]["job"] == 'caf\\xe9, "x".facedub'


def test_statement_month_without_charges_is_a_header_and_no_totals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(_odd_ledger(tmp_path)))
    assert main(["statement", "--month", "2026-10"]) == 0
    assert capsys.readouterr().out == ",".join(COLUMNS) + "\n"
    assert main(["statement", "--month", "2026-12", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["lines"], document["totals"]) == ([], {"groups": [], "providers": []})


def test_statement_month_of_a_long_history_is_one_range_of_the_charges(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    for n in range(40):  # one paid job every ten days: more than a year
        job = add(ledger, f"j{n}")
        send(ledger, job, AT - n * 10 * 86400, f"r{n}")
        ledger._db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (AT - n * 10 * 86400, job))
        deliver(ledger, job, 1)
        ledger._db.execute("UPDATE charges SET at = ? WHERE job_id = ?", (AT - n * 10 * 86400, job))
    start, end = month_range(2026, 11)
    executed: list[str] = []
    ledger._db.set_trace_callback(executed.append)
    charges = ledger.charges_between(start, end)
    ledger._db.set_trace_callback(None)
    assert [c.remote_id for c in charges] == ["r2", "r1", "r0"]
    (sql,) = executed
    plan = [row[3] for row in ledger._db.execute("EXPLAIN QUERY PLAN " + sql)]
    assert [step for step in plan if step.startswith("SCAN")] == [], plan
    assert any("USING INDEX charges_at" in step for step in plan), plan


def test_statement_csv_name_that_looks_like_a_formula_comes_out_as_text() -> None:
    """A file named `=HYPERLINK(…)` must not become a live formula when the agency opens the CSV."""
    evil = [charge('=HYPERLINK("http://x")', "facedub", 2, "+acme"), charge("@sum.facedub", "facedub", 1, "-g")]
    rows = [r for r in csv.DictReader(io.StringIO(to_csv(build(evil, "2026-11")))) if r["kind"] == "line"]
    assert [r["job"] for r in rows] == ['\'=HYPERLINK("http://x")', "'@sum.facedub"]
    assert all(not r["client"].startswith(("=", "+", "-", "@")) for r in rows)
    assert [r["credits_charged"] for r in rows] == ["2", "1"]  # numbers stay numbers
