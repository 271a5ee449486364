"""The console's configuration: ``console_listen`` in the rules file, and the token from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd.errors import ConfigError, ConfigProblems
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings, console_token

GOOD = "0123456789abcdef0123456789abcdef"


def _rules(tmp_path: Path, top: str) -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    path = tmp_path / "rules.yaml"
    path.write_text(f"{top}rules:\n  - {{inbox: {tmp_path}/in, facedub: {{}}}}\n")
    return path


def test_config_console_listen_is_off_by_default(tmp_path: Path) -> None:
    assert load_rules(_rules(tmp_path, ""), {}).console_listen is None


def test_config_console_listen_takes_host_and_port(tmp_path: Path) -> None:
    assert load_rules(_rules(tmp_path, "console_listen: 127.0.0.1:8790\n"), {}).console_listen == "127.0.0.1:8790"
    assert load_rules(_rules(tmp_path, "console_listen: '[::1]:8790'\n"), {}).console_listen == "[::1]:8790"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8790", "console_listen: expected text, got 8790"),
        ("localhost", "console_listen: 'localhost' is not host:port, e.g. 127.0.0.1:9464"),
        ("127.0.0.1:99999", "is not host:port"),
    ],
)
def test_config_console_listen_bad_value_names_the_line(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigProblems) as caught:
        load_rules(_rules(tmp_path, f"console_listen: {value}\n"), {})
    assert ":1:" in str(caught.value) and message in str(caught.value)


def test_config_console_token_from_the_variable_then_the_credential(tmp_path: Path) -> None:
    (tmp_path / "console_token").write_text(f"  {GOOD[::-1]}\n")
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    from_variable = console_token(Settings(console_token=SecretStr(f"{GOOD}\n")), env)
    assert from_variable is not None and from_variable.get_secret_value() == GOOD
    from_file = console_token(Settings(), env)
    assert from_file is not None and from_file.get_secret_value() == GOOD[::-1]
    assert console_token(Settings(), {}) is None
    assert console_token(Settings(), {"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}) is None


def test_config_console_token_is_read_from_ugcwatchd_console_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UGCWATCHD_CONSOLE_TOKEN", GOOD)
    token = console_token(Settings.from_env(), {})
    assert token is not None and token.get_secret_value() == GOOD
    assert GOOD not in repr(Settings.from_env())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (GOOD[:8] + "\x07" + GOOD[8:], "contains a control character"),
        (GOOD[:8] + "\u00e9" + GOOD[8:], "contains a non-ASCII character"),
        ("short-token", "is shorter than 16 characters"),
    ],
)
def test_config_bad_console_token_is_a_config_error_naming_where_never_what(
    tmp_path: Path, text: str, why: str
) -> None:
    (tmp_path / "console_token").write_text(text)
    with pytest.raises(ConfigError) as caught:
        console_token(Settings(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    message = str(caught.value)
    assert message.startswith(f"the console token from the systemd credential console_token {why}")
    assert text[:8] not in message and "openssl rand" in message
