"""Settings from the environment, the state folder, and where API keys come from."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd.errors import ConfigProblems
from ugcwatchd.settings import DEFAULT_RULES, Settings, api_key


def test_settings_defaults_without_environment() -> None:
    s = Settings.from_env()
    assert (s.log_level, s.log_format, s.config, s.facedub_api_key) == ("info", "auto", None, None)
    assert s.rules_path(None) == DEFAULT_RULES


def test_settings_read_ugcwatchd_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UGCWATCHD_CONFIG", "/srv/rules.yaml")
    monkeypatch.setenv("UGCWATCHD_LOG_FORMAT", "json")
    monkeypatch.setenv("UGCWATCHD_FACEDUB_API_KEY", "fdb_from_env")
    s = Settings.from_env()
    assert s.rules_path(None) == Path("/srv/rules.yaml")
    assert s.rules_path("given.yaml") == Path("given.yaml")
    assert s.log_format == "json"
    assert "fdb_from_env" not in repr(s) and "fdb_from_env" not in str(s)


def test_settings_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UGCWATCHD_LOG_LEVEL", "loud")
    with pytest.raises(ConfigProblems) as caught:
        Settings.from_env()
    assert "UGCWATCHD_LOG_LEVEL" in str(caught.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"UGCWATCHD_STATE_DIR": "/var/x", "STATE_DIRECTORY": "/var/lib/ugcwatchd"}, "/var/x"),
        ({"STATE_DIRECTORY": "/var/lib/ugcwatchd:/var/lib/other"}, "/var/lib/ugcwatchd"),
        ({"XDG_STATE_HOME": "/home/u/.st", "HOME": "/home/u"}, "/home/u/.st/ugcwatchd"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/home/u"}, "/home/u/.local/state/ugcwatchd"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/ugcwatchd"),
    ],
)
def test_settings_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    if "UGCWATCHD_STATE_DIR" in env:
        monkeypatch.setenv("UGCWATCHD_STATE_DIR", env["UGCWATCHD_STATE_DIR"])
    assert Settings.from_env().resolved_state_dir(env) == Path(expected)


def test_settings_api_key_precedence_rules_then_env_then_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "facedub_api_key").write_text("fdb_from_credential\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    monkeypatch.setenv("UGCWATCHD_FACEDUB_API_KEY", "fdb_from_env")
    s = Settings.from_env()
    from_rules = api_key("facedub", SecretStr("fdb_from_rules"), s, env)
    assert from_rules.value is not None and from_rules.value.get_secret_value() == "fdb_from_rules"
    from_env = api_key("facedub", None, s, env)
    assert from_env.value is not None and from_env.value.get_secret_value() == "fdb_from_env"
    assert from_env.origin == "UGCWATCHD_FACEDUB_API_KEY"
    monkeypatch.delenv("UGCWATCHD_FACEDUB_API_KEY")
    from_credential = api_key("facedub", None, Settings.from_env(), env)
    assert from_credential.value is not None and from_credential.value.get_secret_value() == "fdb_from_credential"
    assert from_credential.origin == "systemd credential facedub_api_key"
    missing = api_key("dublab", None, Settings.from_env(), env)
    assert not missing.present and missing.origin == "not set"
