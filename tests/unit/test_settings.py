"""Settings from the environment, the state folder, and where API keys come from."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd import cli, daemon, logs
from ugcwatchd.check import check_offline
from ugcwatchd.errors import ConfigError, ConfigProblems, ExitCode
from ugcwatchd.ledger import FILE_NAME, Ledger
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import DEFAULT_RULES, LEDGER_FILE, ApiKey, Settings, api_key, unreadable_credential


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


# -- keys with whitespace, control or non-ASCII characters ---------------------------------------------

ORIGINS = {
    "rules": "providers.dublab.api_key in the rules file",
    "env": "UGCWATCHD_DUBLAB_API_KEY",
    "credential": "systemd credential dublab_api_key",
}


def _key_from(source: str, raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> object:
    """api_key() for dublab with ``raw`` given in one place only."""
    env: dict[str, str] = {}
    from_rules = None
    if source == "rules":
        from_rules = SecretStr(raw)
    elif source == "env":
        monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", raw)
    else:
        (tmp_path / "dublab_api_key").write_text(raw, encoding="utf-8")
        env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    return api_key("dublab", from_rules, Settings.from_env(), env)


@pytest.mark.parametrize("source", sorted(ORIGINS))
@pytest.mark.parametrize("raw", ["dl_secret_key\n", "  dl_secret_key\r\n", "\tdl_secret_key \n"])
def test_settings_api_key_with_surrounding_whitespace_is_trimmed(
    source: str, raw: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = _key_from(source, raw, monkeypatch, tmp_path)
    assert isinstance(key, ApiKey) and key.value is not None
    assert key.value.get_secret_value() == "dl_secret_key" and key.origin == ORIGINS[source]


@pytest.mark.parametrize("source", sorted(ORIGINS))
@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ("dl_secrét_key", "a non-ASCII character"),
        ("dl_secret\u00a0key", "a non-ASCII character"),  # a no-break space from a web page
        ("dl_secret\nkey", "a control character"),
        ("dl_secret\x1bkey", "a control character"),
        ("dl_secret\x7fkey", "a control character"),
    ],
)
def test_settings_api_key_with_bad_characters_is_a_config_error_naming_its_origin_only(
    source: str, raw: str, what: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        _key_from(source, raw, monkeypatch, tmp_path)
    text = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert f"the dublab API key from {ORIGINS[source]} contains {what}" in text
    for form in (raw, raw.strip(), repr(raw)[1:-1], ascii(raw)[1:-1], "dl_secr", "t_key"):
        assert form not in text, form


def test_settings_api_key_credential_in_another_encoding_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "facedub_api_key").write_bytes("fdb_schlüssel".encode("latin-1"))
    with pytest.raises(ConfigError, match="systemd credential facedub_api_key contains a non-ASCII character"):
        api_key("facedub", None, Settings.from_env(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_settings_api_key_of_only_whitespace_falls_through_to_the_next_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("UGCWATCHD_FACEDUB_API_KEY", " \n")
    (tmp_path / "facedub_api_key").write_text("fdb_from_credential\n")
    key = api_key("facedub", SecretStr("\n"), Settings.from_env(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert key.value is not None and key.value.get_secret_value() == "fdb_from_credential"


@pytest.fixture
def dub_rules(tmp_path: Path) -> Path:
    for folder in ("in", "out"):
        (tmp_path / folder).mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {tmp_path}/in, outbox: {tmp_path}/out, dublab: {{to: [de]}}}}\n")
    return rules


def test_settings_api_key_unusable_for_a_rule_stops_run_with_78(
    dub_rules: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", "dl_schlüssel")
    assert cli.main(["-c", str(dub_rules), "run"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "the dublab API key from UGCWATCHD_DUBLAB_API_KEY contains a non-ASCII character" in err
    assert "schl" not in err


def test_settings_api_key_unusable_for_no_rule_is_left_out_of_run(
    dub_rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", "dl_secret_key\n")
    monkeypatch.setenv("UGCWATCHD_FACEDUB_API_KEY", "fdb_schlüssel")  # no rule uses FaceDub
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(dub_rules.parent / "state"))
    masked: list[list[str]] = []
    monkeypatch.setattr(logs, "setup", lambda level, fmt, secrets, **kw: masked.append(list(secrets)))

    class Started:
        def __init__(self, config: object, settings: object) -> None:
            pass

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(daemon, "Daemon", Started)
    assert cli.main(["-c", str(dub_rules), "run"]) == 0
    assert masked == [["dl_secret_key"]]


# -- where operator commands find the service's state and keys ------------------------------------------


@pytest.fixture
def system(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The service's folders (/var/lib/ugcwatchd, /etc/ugcwatchd/credentials) moved under tmp_path."""
    monkeypatch.setenv("UGCWATCHD_SYSTEM_STATE_DIR", str(tmp_path / "var/lib/ugcwatchd"))
    monkeypatch.setenv("UGCWATCHD_SYSTEM_CREDENTIALS_DIR", str(tmp_path / "etc/ugcwatchd/credentials"))
    return tmp_path


def test_settings_ledger_file_name_is_the_ledgers() -> None:
    assert LEDGER_FILE == FILE_NAME


def _service_ledger(system: Path) -> Path:
    state = system / "var/lib/ugcwatchd"
    Ledger.open(state).close()
    return state


def test_settings_state_dir_is_the_services_when_it_holds_a_ledger(system: Path) -> None:
    home = Path(os.environ["HOME"])
    assert Settings.from_env().resolved_state_dir() == home / ".local/state/ugcwatchd"
    (system / "var/lib/ugcwatchd").mkdir(parents=True)  # a folder without a ledger is not the daemon's state
    assert Settings.from_env().resolved_state_dir() == home / ".local/state/ugcwatchd"
    state = _service_ledger(system)
    assert Settings.from_env().resolved_state_dir() == state
    assert Settings.from_env().resolved_state_dir({"STATE_DIRECTORY": "/srv/st", "HOME": "/h"}) == Path("/srv/st")


def test_settings_state_dir_explicit_variable_wins_over_the_services(
    system: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _service_ledger(system)
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(system / "mine"))
    assert Settings.from_env().resolved_state_dir() == system / "mine"


def test_settings_existing_state_dir_without_a_ledger_says_where_it_looked(system: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env().existing_state_dir()
    assert caught.value.exit_code == ExitCode.CONFIG
    text = str(caught.value)
    assert (
        f"looked in {system}/var/lib/ugcwatchd (the service's) and {os.environ['HOME']}/.local/state/ugcwatchd" in text
    )


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["jobs"], ["retry", "1"]])
def test_settings_read_commands_never_create_a_ledger(
    command: list[str], system: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (system / "in").mkdir()
    rules = system / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {system}/in, dublab: {{to: [de]}}}}\n")
    assert cli.main(["-c", str(rules), *command]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.startswith("ugcwatchd: no ledger found: looked in ") and "(the service's)" in err
    home = Path(os.environ["HOME"])
    assert not (home / ".local").exists() and not (system / "var").exists()


def test_settings_status_finds_the_services_ledger_by_itself(system: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _service_ledger(system)
    assert cli.main(["status", "--json"]) == ExitCode.OK
    assert '"items"' in capsys.readouterr().out
    assert not (Path(os.environ["HOME"]) / ".local").exists()


def test_settings_api_key_outside_the_unit_is_read_from_the_services_credential_file(system: Path) -> None:
    folder = system / "etc/ugcwatchd/credentials"
    folder.mkdir(parents=True)
    (folder / "facedub_api_key").write_text("fdb_from_etc\n")
    key = api_key("facedub", None, Settings.from_env(), {})
    assert key.value is not None and key.value.get_secret_value() == "fdb_from_etc"
    assert key.origin == f"the credential file {folder}/facedub_api_key"
    # Under the unit, $CREDENTIALS_DIRECTORY is the only place: systemd put the keys there.
    inside = api_key("facedub", None, Settings.from_env(), {"CREDENTIALS_DIRECTORY": str(system / "none")})
    assert not inside.present
    assert unreadable_credential("facedub", Settings.from_env()) is None


def test_settings_check_offline_and_the_services_keys(system: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {tmp_path}/in, dublab: {{to: [de]}}}}\n")
    report = check_offline(load_rules(rules), Settings.from_env())
    assert any("the daemon will not start without it" in w for w in report.warnings)
    folder = system / "etc/ugcwatchd/credentials"
    folder.mkdir(parents=True)
    (folder / "dublab_api_key").write_text("dl_from_etc")
    report = check_offline(load_rules(rules), Settings.from_env())
    assert report.warnings == [] and report.problems == []
    assert f"provider dublab: https://dublab.app, key from the credential file {folder}/dublab_api_key" in "\n".join(
        report.lines
    )


# -- check agrees with run ------------------------------------------------------------------------------


def test_settings_check_offline_outbox_that_run_creates_is_not_a_problem(tmp_path: Path) -> None:
    (tmp_path / "acme/dub/inbox").mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - name: dub\n    inbox: {tmp_path}/*/dub/inbox\n    dublab: {{to: [de]}}\n")
    report = check_offline(load_rules(rules), Settings.from_env())
    assert report.problems == []
    assert f"    outbox  {tmp_path}/acme/dub/outbox (will be created)" in report.lines


def test_settings_check_offline_problem_with_a_default_points_at_the_rules_folder_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").write_text("a file where the outbox should be\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "defaults:\n  stable_after: 5s\nrules:\n  - name: dub\n"
        f"    inbox: {tmp_path}/in\n    outbox: {tmp_path}/out\n    dublab: {{to: [de]}}\n"
    )
    report = check_offline(load_rules(rules), Settings.from_env())
    where = {p.path: p.line for p in report.problems}
    # archive_dir and failed_dir are defaults ({outbox}/originals, {outbox}/failed): the outbox line caused them.
    assert where == {"rules[0].outbox": 6, "rules[0].archive_dir": 6, "rules[0].failed_dir": 6}


# -- fatal errors under systemd ------------------------------------------------------------------------------


def test_settings_fatal_error_carries_its_journal_priority_under_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dub_rules: Path
) -> None:
    monkeypatch.setattr(logs, "_journal_is_stderr", lambda: True)
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(dub_rules.parent / "state"))
    assert cli.main(["-c", str(dub_rules), "run"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.startswith("<3>ugcwatchd: no dublab API key")
    assert all(line.startswith("<3>") for line in err.splitlines())
    monkeypatch.setattr(logs, "_journal_is_stderr", lambda: False)
    logs.fatal("ugcwatchd: two\nlines")
    assert capsys.readouterr().err == "ugcwatchd: two\nlines\n"


# -- a replaced key resumes a paused provider ----------------------------------------------------------------


def test_settings_daemon_key_recheck_rebuilds_a_paused_provider_whose_key_file_changed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ugcwatchd.sandbox import Sandbox, SandboxConfig

    sandbox = Sandbox(SandboxConfig(port=0, facedub_keys=["fdb_good_key"])).start()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "facedub_api_key").write_text("fdb_revoked_key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "in").mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'providers:\n  facedub: {{base_url: "{sandbox.urls["facedub"]}"}}\n'
        f"rules:\n  - {{name: faces, inbox: {tmp_path}/in, facedub: {{}}}}\n"
    )

    async def scenario() -> None:
        d = daemon.Daemon(load_rules(rules), Settings.from_env())
        try:
            await d._start_provider(d.providers["facedub"])
            paused = d.providers["facedub"]
            assert paused.paused
            await d.recheck_keys()  # the same key: nothing is rebuilt
            assert d.providers["facedub"] is paused
            (credentials / "facedub_api_key").write_text("fdb_good_key\n")
            await d.recheck_keys()
            assert d.providers["facedub"] is not paused and d.providers["facedub"].paused is None
            assert d.keys == {"facedub": "fdb_good_key"}
        finally:
            await d._close()

    try:
        asyncio.run(scenario())
    finally:
        sandbox.stop()
