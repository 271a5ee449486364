"""The language list: cached in the ledger's facts, read back without ever failing, used by the rules loader."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledgers import MakeLedger
from tests.support import ManualClock
from ugcwatchd import languages
from ugcwatchd.errors import ConfigProblems
from ugcwatchd.ledger import FILE_NAME, Ledger
from ugcwatchd.ledger.facts import read_languages, write_languages
from ugcwatchd.live_languages import use_cached
from ugcwatchd.rules import load_rules

NEW = "qx"  # a code DubLab might add; not in the built-in list


@pytest.fixture(autouse=True)
def built_in_languages() -> Iterator[None]:
    languages.use(None)
    yield
    languages.use(None)


def rules_with(tmp_path: Path, dublab: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - inbox: {tmp_path}/in\n    dublab: {dublab}\n")
    return path


def test_ledger_languages_round_trip_with_the_time_read(make_ledger: MakeLedger) -> None:
    clock = ManualClock(1_800_000_000.0)
    ledger = make_ledger(clock)
    assert ledger.cached_languages("dublab") is None
    ledger.put_languages("dublab", {"de", "es"})
    clock.advance(60)
    ledger.put_languages("dublab", {"de", "es", NEW})  # read again: replaced, not added
    assert ledger.cached_languages("dublab") == (frozenset({"de", "es", NEW}), 1_800_000_060.0)
    assert ledger.fact("dublab", "languages") == ('["de", "es", "qx"]', 1_800_000_060.0)
    ledger.close()
    assert read_languages(ledger.where) == frozenset({"de", "es", NEW})
    assert write_languages(ledger.where, "dublab", {"fr"}, 1_800_000_120.0) is True
    assert read_languages(ledger.where) == frozenset({"fr"})


def test_read_languages_without_a_usable_ledger_is_none_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "state" / FILE_NAME
    assert read_languages(missing) is None
    assert write_languages(missing, "dublab", {"de"}, 0.0) is False
    assert not (tmp_path / "state").exists()
    garbage = tmp_path / "garbage" / FILE_NAME
    garbage.parent.mkdir()
    garbage.write_bytes(b"this is no database" * 100)
    assert read_languages(garbage) is None and write_languages(garbage, "dublab", {"de"}, 0.0) is False
    older = tmp_path / "older" / FILE_NAME  # a ledger from before the facts table
    older.parent.mkdir()
    sqlite3.connect(older).execute("CREATE TABLE items (id INTEGER PRIMARY KEY)").connection.close()
    assert read_languages(older) is None and write_languages(older, "dublab", {"de"}, 0.0) is False


def test_read_languages_ignores_a_stored_value_that_is_no_list(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    for value in ({"de": "German"}, [], ["de", 3], "de"):
        ledger.put_fact("dublab", "languages", value)
        assert ledger.cached_languages("dublab") is None
        assert read_languages(tmp_path / FILE_NAME) is None
    ledger.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_use_cached_unreadable_ledger_falls_back_to_the_built_in_list(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    ledger.put_languages("dublab", {"de", NEW})
    ledger.close()
    (tmp_path / FILE_NAME).chmod(0)
    try:
        use_cached(tmp_path)
    finally:
        (tmp_path / FILE_NAME).chmod(0o600)
    assert not languages.live() and languages.known() == languages.BUILT_IN


def test_write_languages_into_an_existing_ledger_is_what_the_daemon_reads(tmp_path: Path) -> None:
    Ledger(tmp_path / FILE_NAME).close()
    assert write_languages(tmp_path / FILE_NAME, "dublab", {"de", NEW}, 1_800_000_000.0) is True
    ledger = Ledger(tmp_path / FILE_NAME)
    assert ledger.cached_languages("dublab") == (frozenset({"de", NEW}), 1_800_000_000.0)
    ledger.close()


def test_load_rules_accepts_a_language_of_the_cached_list_only(tmp_path: Path) -> None:
    path = rules_with(tmp_path, f"{{to: [de, {NEW}], studio_quality: [{NEW}]}}")
    with pytest.raises(ConfigProblems, match=f"'{NEW}' is not a supported language"):
        load_rules(path, {})  # the built-in list: no ledger has a cached one
    ledger = Ledger(tmp_path / "state" / FILE_NAME)
    ledger.put_languages("dublab", {*languages.BUILT_IN, NEW})
    ledger.close()
    use_cached(tmp_path / "state")
    assert languages.live()
    config = load_rules(path, {})
    (rule,) = config.rules
    assert rule.action.to == ["de", NEW]  # type: ignore[union-attr]


def test_load_rules_hint_comes_from_the_list_in_use(tmp_path: Path) -> None:
    languages.use({"de", "es", "fr"})
    with pytest.raises(ConfigProblems) as refused:
        load_rules(rules_with(tmp_path, "{to: [it]}"), {})  # Italian is built in, but not in DubLab's list now
    assert "rules[0].dublab.to[0]: 'it' is not a supported language" in str(refused.value)
    with pytest.raises(ConfigProblems, match=r"'German' is not a supported language \(did you mean 'de'\?\)"):
        load_rules(rules_with(tmp_path, "{to: [German]}"), {})
