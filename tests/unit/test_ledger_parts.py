"""An item's named parts (its client folder) on both backends: a folder name that is not UTF-8, or 250 bytes
long, reads back exactly, is one client in the charges, the tallies, the statement, the metrics and the
console, and is stored as every other name is (valid UTF-8, so PostgreSQL's jsonb takes it)."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from tests.ledgers import MakeLedger, metrics_scrape
from ugcwatchd import statement
from ugcwatchd.console.chart import Series, bar_chart, legend
from ugcwatchd.ledger import SCHEMA_VERSION, Ledger
from ugcwatchd.ledger.records import parts_from_db, parts_to_db
from ugcwatchd.metrics import parts_label

from .test_ledger_charges import T0, Clock, add, deliver, fail_charged, send

ODD = os.fsdecode(b"caf\xe9")  # the byte 0xE9 is not UTF-8: an SMB share from an old Windows gives it so
# 250 bytes: 100 two-byte characters, then 50 bytes that are not UTF-8
LONG = os.fsdecode("é".encode() * 100 + b"\xe9" * 50)
ODD_SHOWN, LONG_SHOWN = "caf\\xe9", "é" * 100 + "\\xe9" * 50


def _key(parts: dict[str, str]) -> str:
    """The tally key of these parts: their stored text."""
    return parts_to_db(parts) or ""


def _charged_by(ledger: Ledger) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in ledger._db.execute("SELECT parts, credits FROM charged_by")}


def _two_clients_charged(ledger: Ledger) -> None:
    """Per client folder (ODD, LONG): a delivered job and one that failed after it was charged."""
    for n, client in enumerate((ODD, LONG)):
        inbox = f"/srv/{client}/faces/inbox"
        done = add(ledger, f"{n}a", inbox=inbox, parts={"client": client})
        failed = add(ledger, f"{n}b", inbox=inbox, parts={"client": client})
        send(ledger, done, T0, f"r{n}a")
        send(ledger, failed, T0, f"r{n}b")
        deliver(ledger, done, 2 + n)
        fail_charged(ledger, failed, 1)


def test_ledger_parts_folder_not_utf8_or_250_bytes_reads_back_exactly_and_is_stored_as_utf8(
    make_ledger: MakeLedger,
) -> None:
    assert len(os.fsencode(LONG)) == 250
    ledger = make_ledger(Clock())
    parts = [{"client": ODD}, {"client": LONG, "site": ODD}, {"client": "café \U0001f4a9 \\udce9"}]
    ids = [ledger.job(add(ledger, f"k{n}", parts=p)).item_id for n, p in enumerate(parts)]
    assert [ledger.item(i).parts for i in ids] == parts
    stored = [r[0] for r in ledger._db.execute("SELECT parts FROM items ORDER BY id")]
    assert stored == [parts_to_db(p) for p in parts]
    assert stored[0] == '{"client": "caf\\uf7e9"}'  # the same text, so the same tally key, on both backends
    for text in stored:
        text.encode("utf-8")  # no lone surrogate: PostgreSQL takes it as text and as jsonb
    reopened = make_ledger(Clock())
    assert [reopened.item(i).parts for i in ids] == parts


def test_ledger_parts_written_the_old_way_read_back_the_same() -> None:
    old = json.dumps({"client": ODD, "site": LONG}, sort_keys=True)  # lone surrogates as JSON escapes
    assert parts_from_db(old) == {"client": ODD, "site": LONG}
    assert parts_from_db(parts_to_db({"client": ODD, "site": LONG})) == {"client": ODD, "site": LONG}
    assert parts_from_db(None) == parts_from_db("") == {} and parts_to_db({}) is None


def test_ledger_charges_and_tallies_of_folders_not_utf8_group_each_under_one_client(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    _two_clients_charged(ledger)
    charges = ledger.charges_between(0, T0 + 1e6)
    assert sorted((c.remote_id, c.parts["client"], c.credits) for c in charges) == [
        ("r0a", ODD, 2),
        ("r0b", ODD, 1),
        ("r1a", LONG, 3),
        ("r1b", LONG, 1),
    ]
    assert _charged_by(ledger) == {parts_to_db({"client": ODD}): 3, parts_to_db({"client": LONG}): 4}
    # the metrics' label of each tally row: the folder's bad bytes as \xNN, never a failed scrape
    labels = {parts_label(key): credits for key, credits in _charged_by(ledger).items()}
    assert labels == {f"client={ODD_SHOWN}": 3, f"client={LONG_SHOWN}": 4}
    scrape = metrics_scrape(ledger)
    for shown_client, credits in ((ODD_SHOWN, 3), (LONG_SHOWN, 4)):
        label = f"client={shown_client}".replace("\\", "\\\\")  # Prometheus escapes a backslash
        assert f'{{parts="{label}",provider="facedub",rule="faces"}} {credits}.0' in scrape


def test_statement_of_folders_not_utf8_totals_each_client_once_with_its_bytes_shown(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    _two_clients_charged(ledger)
    document = statement.build(ledger.charges_between(0, T0 + 1e6), "2027-01")
    groups = {g["client"]: g["credits_charged"] for g in document["totals"]["groups"]}
    assert groups == {f"client={ODD_SHOWN}": 3, f"client={LONG_SHOWN}": 4}
    assert {line["parts"]["client"] for line in document["lines"]} == {ODD_SHOWN, LONG_SHOWN}
    out = statement.to_csv(document)
    out.encode("utf-8")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["client"] for r in rows if r["kind"] == "line"} == {f"client={ODD_SHOWN}", f"client={LONG_SHOWN}"}
    statement.to_json(document).encode("utf-8")


def test_ledger_search_by_client_folder_not_utf8_or_long_finds_its_items(make_ledger: MakeLedger) -> None:
    ledger = make_ledger(Clock())
    _two_clients_charged(ledger)
    acme = ledger.job(add(ledger, "plain")).item_id
    odd = [i.id for i in ledger.search_items(client=ODD).items]
    long = [i.id for i in ledger.search_items(client=LONG).items]
    assert len(odd) == len(long) == 2 and not set(odd) & set(long)
    assert all(ledger.item(i).parts == {"client": ODD} for i in odd)
    assert all(ledger.item(i).parts == {"client": LONG} for i in long)
    assert [i.id for i in ledger.search_items(client="ACME").items] == [acme]  # a search reads every row's parts
    assert ledger.search_items(client="caf").items == []


def test_console_spend_chart_of_a_folder_not_utf8_is_one_series_drawn_with_its_bytes_shown(
    make_ledger: MakeLedger,
) -> None:
    ledger = make_ledger(Clock())
    _two_clients_charged(ledger)
    spent: dict[str, float] = {}
    for _day, provider, parts, credits in ledger.spend_by_day(0):
        assert provider == "facedub"
        spent[parts["client"]] = spent.get(parts["client"], 0.0) + credits
    assert spent == {ODD: 3, LONG: 4}
    day = datetime.fromtimestamp(T0).date()
    series = [Series(ODD, (3.0,)), Series(LONG, (4.0,), "#ee6677")]
    html = bar_chart([day], series, "credits", "spend") + legend(series, "credits")
    html.encode("utf-8")  # a lone surrogate would fail the page
    assert f"{ODD_SHOWN} 3" in html and f"{LONG_SHOWN} 4" in html and f"{ODD_SHOWN} <span" in html


def _old_way(path: Path) -> None:
    """Rewrite a current ledger's parts and tallies as version 6 wrote them, and mark it version 6."""
    db = sqlite3.connect(path, isolation_level=None)
    for table in ("items", "charged_by"):
        for (text,) in db.execute(f"SELECT DISTINCT parts FROM {table} WHERE parts <> ''").fetchall():  # noqa: S608
            old = json.dumps(parts_from_db(text), sort_keys=True)
            db.execute(f"UPDATE {table} SET parts = ? WHERE parts = ?", (old, text))  # noqa: S608
    db.execute("PRAGMA user_version=6")
    db.close()


def test_ledger_migration_to_version_7_rewrites_old_parts_and_their_tallies_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path, clock=Clock())
    _two_clients_charged(ledger)
    kept = {"client": "café \U0001f4a9 \\udce9 \\\\udcff"}  # a pair whose low half is \udca9, and backslashes
    job = add(ledger, "kept", inbox="/srv/kept/faces/inbox", parts=kept)
    send(ledger, job, T0, "r-kept")
    deliver(ledger, job, 5)
    want = (sorted((c.remote_id, c.parts) for c in ledger.charges_between(0, T0 + 1e6)), _charged_by(ledger))
    ledger.close()
    _old_way(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM items WHERE parts LIKE '%\\udc%'").fetchone()[0] == 5
    assert json.dumps({"client": ODD}, sort_keys=True) in {r[0] for r in db.execute("SELECT parts FROM charged_by")}
    db.close()

    ledger = Ledger(path, clock=Clock())
    assert (sorted((c.remote_id, c.parts) for c in ledger.charges_between(0, T0 + 1e6)), _charged_by(ledger)) == want
    assert _charged_by(ledger)[_key(kept)] == 5
    assert [r[0] for r in ledger._db.execute("SELECT parts FROM items ORDER BY id")] == [
        parts_to_db(ledger.item(n).parts) for n in range(1, 6)
    ]
    # a charge after the migration joins its client's tally: one key per folder
    more = add(ledger, "more", inbox=f"/srv/{ODD}/faces/inbox", parts={"client": ODD})
    send(ledger, more, T0, "r-more")
    deliver(ledger, more, 4)
    assert _charged_by(ledger)[_key({"client": ODD})] == 3 + 4
    assert ledger._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    ledger.close()
