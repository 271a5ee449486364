"""Where the ledger is: ``ledger:`` and ``lease_ttl:`` in the rules file, ``UGCWATCHD_LEDGER``, the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.unit.test_rules import load, problems
from ugcwatchd.errors import ConfigError, ConfigProblems
from ugcwatchd.ledger_location import ledger_url, open_ledger, pg_target, rules_ledger
from ugcwatchd.reload import ReloadRefused, check_ledger_unchanged
from ugcwatchd.settings import Settings

SECRET = "s3cr3t-pw"
URL = f"postgresql://ugc:{SECRET}@db.example:5433/ugcwatchd"


def _rules(tmp_path: Path, top: str = "") -> str:
    (tmp_path / "in").mkdir(exist_ok=True)
    return f"{top}rules:\n  - {{name: faces, inbox: {tmp_path}/in, outbox: {tmp_path}/out, facedub: {{}}}}\n"


def test_rules_ledger_and_lease_ttl_default_to_sqlite_and_30_seconds(tmp_path: Path) -> None:
    config = load(tmp_path, _rules(tmp_path))
    assert config.ledger is None and config.lease_ttl == 30.0


def test_rules_ledger_url_and_lease_ttl_are_read_in_either_spelling(tmp_path: Path) -> None:
    config = load(tmp_path, _rules(tmp_path, f"ledger: {URL}\nlease_ttl: 2m\n"))
    assert config.ledger == URL and config.lease_ttl == 120.0
    assert load(tmp_path, _rules(tmp_path, "ledger: postgres://u@db/x\n")).ledger == "postgres://u@db/x"


def test_rules_ledger_not_postgresql_is_a_problem_at_its_line_without_the_password(tmp_path: Path) -> None:
    found = problems(tmp_path, _rules(tmp_path, f"lease_ttl: 10\nledger: mysql://root:{SECRET}@db/x\n"))
    assert found == [
        "rules.yaml:2:9: ledger: must be a postgresql:// URL, e.g. postgresql://ugcwatchd@db.example/ugcwatchd"
    ]
    garbled = problems(tmp_path, _rules(tmp_path, f"ledger: 'postgresql://u:{SECRET}@db/x?sslmode'\n"))
    assert len(garbled) == 1 and "is not a valid PostgreSQL URL" in garbled[0] and SECRET not in garbled[0]


def test_rules_lease_ttl_outside_10_to_600_seconds_is_a_problem(tmp_path: Path) -> None:
    assert problems(tmp_path, _rules(tmp_path, "lease_ttl: 5s\n")) == [
        "rules.yaml:1:12: lease_ttl: must be at least 10.0, got 5.0"
    ]
    assert problems(tmp_path, _rules(tmp_path, "lease_ttl: 11m\n")) == [
        "rules.yaml:1:12: lease_ttl: must be at most 600.0, got 660.0"
    ]


def test_ledger_url_rules_file_wins_over_the_environment_which_is_used_without_one(tmp_path: Path) -> None:
    settings = Settings(ledger=SecretStr("postgresql://env@db/one"))
    config = load(tmp_path, _rules(tmp_path, f"ledger: {URL}\n"))
    assert ledger_url(settings, config) == (URL, f"ledger: in {config.file}")
    plain = load(tmp_path, _rules(tmp_path))
    assert ledger_url(settings, plain) == ("postgresql://env@db/one", "UGCWATCHD_LEDGER")
    assert ledger_url(Settings(ledger=SecretStr("  ")), plain) is None
    assert ledger_url(Settings(), plain) is None


def test_ledger_url_environment_not_postgresql_is_a_configuration_error_without_it(tmp_path: Path) -> None:
    settings = Settings(ledger=SecretStr(f"mysql://root:{SECRET}@db/x"))
    with pytest.raises(ConfigError) as caught:
        ledger_url(settings, load(tmp_path, _rules(tmp_path)))
    assert "UGCWATCHD_LEDGER must be a postgresql:// URL" in str(caught.value) and SECRET not in str(caught.value)


def test_rules_ledger_of_the_file_alone_is_read_for_commands_that_load_no_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    assert rules_ledger(rules) is None  # no rules file: the state folder's SQLite ledger
    rules.write_text(f"ledger: {URL}\nrules: []\n")  # the rules themselves are not checked here
    assert rules_ledger(rules) == URL
    assert ledger_url(Settings(), None, rules) == (URL, f"ledger: in {rules}")
    rules.write_text(f"ledger: mysql://root:{SECRET}@db/x\n")
    with pytest.raises(ConfigProblems) as caught:
        rules_ledger(rules)
    assert "rules.yaml:1:9: ledger: must be a postgresql:// URL" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_pg_target_password_from_the_credential_when_the_url_has_none_and_shown_without_it(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "ledger_password").write_text(f"{SECRET}\n")
    settings = Settings(ledger=SecretStr("postgresql://ugc@db.example/ugcwatchd"))
    target = pg_target(settings, None, None, {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")})
    assert target is not None
    assert (target.password, target.shown, target.named) == (
        SECRET,
        "postgresql://ugc@db.example/ugcwatchd",
        "UGCWATCHD_LEDGER",
    )
    assert target.redact(f"failed for {SECRET}") == "failed for ***"


def test_open_ledger_for_a_command_never_creates_a_sqlite_ledger(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="no ledger found"):
        open_ledger(settings, None, create=False)
    assert not (tmp_path / "state").exists()
    open_ledger(settings, None, create=True).close()
    ledger = open_ledger(settings, None, create=False)
    assert ledger.where == tmp_path / "state" / "ledger.sqlite3"
    ledger.close()


def test_reload_that_moves_the_ledger_or_changes_lease_ttl_is_refused(tmp_path: Path) -> None:
    settings = Settings(ledger=SecretStr(URL))
    before = load(tmp_path, _rules(tmp_path))
    same = load(tmp_path, _rules(tmp_path, f"ledger: {URL}\n"))  # what the environment says already
    check_ledger_unchanged(before, same, settings)
    moved = load(tmp_path, _rules(tmp_path, "ledger: postgresql://ugc@other.example/ugcwatchd\n"))
    with pytest.raises(ReloadRefused) as caught:
        check_ledger_unchanged(before, moved, settings)
    assert "restart to move the ledger" in str(caught.value) and "other.example" not in str(caught.value)
    with pytest.raises(ReloadRefused, match=r"lease_ttl changed from 30s to 60s \(restart"):
        check_ledger_unchanged(before, load(tmp_path, _rules(tmp_path, "lease_ttl: 60\n")), settings)
