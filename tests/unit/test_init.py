"""``ugcwatchd init``: the files a service install needs, from the package's own data."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from ugcwatchd import cli, init
from ugcwatchd.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
SOURCES = {
    "ugcwatchd.service": REPO / "systemd/ugcwatchd.service",
    "ugcwatchd.sysusers": REPO / "systemd/ugcwatchd.sysusers",
    "ugcwatchd.tmpfiles": REPO / "systemd/ugcwatchd.tmpfiles",
    "rules.yaml": REPO / "rules.example.yaml",
}
WRITTEN = {
    "unit": "etc/systemd/system/ugcwatchd.service",
    "sysusers": "etc/sysusers.d/ugcwatchd.conf",
    "tmpfiles": "etc/tmpfiles.d/ugcwatchd.conf",
    "rules": "etc/ugcwatchd/rules.yaml",
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_init_package_data_is_the_repositorys_files(name: str) -> None:
    """ugcwatchd/data/ carries copies of systemd/ and rules.example.yaml: edit both, or this fails."""
    assert init.data_text(name) == SOURCES[name].read_text(), f"copy {SOURCES[name]} to ugcwatchd/data/{name}"


def test_init_print_unit_points_exec_start_at_this_ugcwatchd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--print", "unit"]) == ExitCode.OK
    printed = capsys.readouterr().out.splitlines()
    source = SOURCES["ugcwatchd.service"].read_text().splitlines()
    assert [line for line in printed if line.startswith("ExecStart=")] == [f"ExecStart={init.executable()} run"]
    assert [line for line in printed if not line.startswith("ExecStart=")] == [
        line for line in source if not line.startswith("ExecStart=")
    ]
    assert "RestartPreventExitStatus=78" in printed


@pytest.mark.parametrize(("what", "name"), [("sysusers", "ugcwatchd.sysusers"), ("tmpfiles", "ugcwatchd.tmpfiles")])
def test_init_print_other_files_as_shipped(what: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--print", what]) == ExitCode.OK
    assert capsys.readouterr().out == SOURCES[name].read_text()


def test_init_print_unknown_file_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["init", "--print", "nothing"])
    assert caught.value.code == 2


def test_init_root_writes_every_file_and_says_what_next(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--root", str(tmp_path)]) == ExitCode.OK
    out = capsys.readouterr().out
    for what, path in WRITTEN.items():
        written = tmp_path / path
        assert f"wrote    {written}" in out
        assert stat.S_IMODE(written.stat().st_mode) == 0o644
        assert written.read_text() == init.render(what)
    credentials = tmp_path / "etc/ugcwatchd/credentials"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    for step in ("systemd-sysusers", "systemd-tmpfiles --create", "systemctl daemon-reload", "enable --now"):
        assert step in out, step
    assert "install -m 600 -o root" in out


def test_init_never_overwrites_the_rules_and_units_only_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules, unit = tmp_path / WRITTEN["rules"], tmp_path / WRITTEN["unit"]
    rules.parent.mkdir(parents=True)
    rules.write_text("rules: [mine]\n")
    assert cli.main(["init", "--root", str(tmp_path)]) == ExitCode.OK
    assert rules.read_text() == "rules: [mine]\n"
    assert f"kept     {rules}" in capsys.readouterr().out

    assert cli.main(["init", "--root", str(tmp_path)]) == ExitCode.OK
    assert f"same     {unit}" in capsys.readouterr().out
    unit.write_text("[Service]\nExecStart=/old/ugcwatchd run\n")
    assert cli.main(["init", "--root", str(tmp_path)]) == ExitCode.OK
    assert f"kept     {unit} (it exists and differs: --force overwrites it)" in capsys.readouterr().out
    assert unit.read_text().startswith("[Service]")

    assert cli.main(["init", "--root", str(tmp_path), "--force"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"replaced {unit} (--force)" in out and f"kept     {rules}" in out
    assert unit.read_text() == init.render("unit")
    assert rules.read_text() == "rules: [mine]\n"


def test_init_executable_is_the_script_beside_the_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "venv/bin").mkdir(parents=True)
    script = tmp_path / "venv/bin/ugcwatchd"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv/bin/python"))
    assert init.executable() == str(script)


def test_init_executable_falls_back_to_argv0_then_python_m(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere/python"))
    script = tmp_path / "bin/ugcwatchd"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(script), "init"])
    assert init.executable() == str(script.resolve())
    monkeypatch.setattr(sys, "argv", ["-c"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert init.executable() == f"{tmp_path}/nowhere/python -m ugcwatchd"
    assert f"ExecStart={tmp_path}/nowhere/python -m ugcwatchd run" in init.render("unit").splitlines()


def test_init_warns_when_the_command_lives_where_the_unit_cannot_see(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(init, "executable", lambda: "/home/ann/.venv/bin/ugcwatchd")
    assert cli.main(["init", "--root", str(tmp_path)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "ExecStart=/home/ann/.venv/bin/ugcwatchd run" in out
    assert "warning: the unit hides /home" in out
