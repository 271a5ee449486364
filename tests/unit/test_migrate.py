"""Where ``migrate`` takes the PostgreSQL password from, and that it never shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugcwatchd.errors import ConfigError
from ugcwatchd.ledger_location import Target
from ugcwatchd.settings import Settings, ledger_password


def _settings(tmp_path: Path) -> Settings:
    return Settings(system_credentials_dir=tmp_path / "etc")


def test_ledger_password_systemd_credential_is_read_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "ledger_password").write_text("  s3cret\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    assert ledger_password(_settings(tmp_path), env) == "s3cret"


def test_ledger_password_outside_the_unit_reads_the_service_file_or_none(tmp_path: Path) -> None:
    assert ledger_password(_settings(tmp_path), {}) is None
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ledger_password").write_text("from-etc\n")
    assert ledger_password(_settings(tmp_path), {}) == "from-etc"


def test_ledger_password_with_a_control_character_is_refused_without_showing_it(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ledger_password").write_text("ab\x07cd")
    with pytest.raises(ConfigError, match="control character") as caught:
        ledger_password(_settings(tmp_path), {})
    assert "ab" not in str(caught.value).replace("ledger_password", "")


def test_target_url_password_wins_and_is_never_shown(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ledger_password").write_text("from-etc")
    target = Target.parse("postgresql://u:p%40ss@db.example:5433/ledger", _settings(tmp_path), {})
    assert target.password is None  # the URL's own is used
    assert target.shown == "postgresql://u@db.example:5433/ledger"
    assert target.redact("failed for p@ss and p%40ss") == "failed for *** and ***"
    plain = Target.parse("postgresql://u@db/ledger", _settings(tmp_path), {})
    assert plain.password == "from-etc"
    assert plain.redact("said from-etc") == "said ***"


def test_target_garbled_url_is_a_configuration_error_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Target.parse("postgresql://u:hunter2@db/x?sslmode", _settings(tmp_path), {})
    assert "hunter2" not in str(caught.value)
