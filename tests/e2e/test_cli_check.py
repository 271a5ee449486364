"""``ugcwatchd check`` as a user runs it, against the sandbox for the online part."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]


def check(*args: str, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ugcwatchd", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=full_env)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    """A rules file with two rules whose folders all exist."""
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (tmp_path / folder).mkdir(parents=True)
    return tmp_path


def rules(world: Path, extra: str = "", providers: str = "") -> Path:
    path = world / "rules.yaml"
    path.write_text(
        f"{providers}rules:\n"
        f"  - {{name: faces, inbox: {world}/faces/inbox, facedub: {{}}}}\n"
        f"  - {{name: dub, inbox: {world}/dub/inbox, dublab: {{to: [de, es]}}{extra}}}\n"
    )
    return path


def test_cli_check_example_offline_exits_0() -> None:
    result = check("-c", str(ROOT / "rules.example.yaml"), "check", "--offline")
    assert result.returncode == 0, result.stderr
    assert "ok: no problems found" in result.stdout
    assert "rule 'faces'" in result.stdout and "warning: rule 'dub': no folder matches" in result.stdout


def test_cli_check_prints_resolved_rules_and_folders(world: Path) -> None:
    result = check("-c", str(rules(world)), "check", "--offline")
    assert result.returncode == 0, result.stderr
    assert f"inbox   {world}/faces/inbox" in result.stdout
    assert f"outbox  {world}/faces/outbox" in result.stdout
    assert f"archive {world}/faces/outbox/originals" in result.stdout
    assert "dublab: auto -> de, es" in result.stdout


def test_cli_check_bad_rules_exit_78_with_every_problem(world: Path) -> None:
    path = world / "rules.yaml"
    path.write_text("rules:\n  - inbox: /x\n    dublab: {to: [xx]}\n    stable_after: soon\n")
    result = check("-c", str(path), "check", "--offline")
    assert result.returncode == 78
    assert f"{path}:3:19: rules[0].dublab.to[0]: 'xx' is not a supported language" in result.stderr
    assert f"{path}:4:19: rules[0].stable_after: 'soon' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_missing_inbox_exits_78_at_its_line(world: Path) -> None:
    shutil.rmtree(world / "dub" / "inbox")
    result = check("-c", str(rules(world)), "check", "--offline")
    assert result.returncode == 78
    assert f"rules.yaml:3:24: rules[1].inbox: {world}/dub/inbox does not exist" in result.stderr


def test_cli_check_missing_rules_file_exits_78(tmp_path: Path) -> None:
    result = check("-c", str(tmp_path / "nope.yaml"), "check", "--offline")
    assert result.returncode == 78
    assert "does not exist" in result.stderr and "UGCWATCHD_CONFIG" in result.stderr


def test_cli_check_reads_rules_path_from_environment(world: Path) -> None:
    result = check("check", "--offline", env={"UGCWATCHD_CONFIG": str(rules(world))})
    assert result.returncode == 0, result.stderr


@pytest.fixture
def shared_world() -> Iterator[Path]:
    """Folders another user can reach (pytest's own temp folders are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="ugcwatchd-perm-"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_cli_check_unwritable_outbox_exits_78(shared_world: Path) -> None:
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (shared_world / folder).mkdir(parents=True)
    path = rules(shared_world)
    for p in [shared_world, *shared_world.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    if os.geteuid() == 0:
        # Root may write anywhere: ask as an unprivileged user, for whom everything is read-only here.
        if shutil.which("setpriv") is None:
            pytest.fail("setpriv (util-linux) is needed to test permissions as root")
        probe = check("--version", user="65534")
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged user cannot run this checkout's Python here: {probe.stderr.strip()[:200]}")
        result = check("-c", str(path), "check", "--offline", user="65534")
    else:
        os.chmod(shared_world / "dub" / "outbox", 0o555)
        result = check("-c", str(path), "check", "--offline")
    assert result.returncode == 78
    assert f"rules[1].outbox: {shared_world}/dub/outbox is not writable" in result.stderr


def test_cli_check_online_verifies_keys_and_shows_credits(world: Path, sandbox_process: type[SandboxProcess]) -> None:
    sb = sandbox_process("--port", "0", "--facedub-key", "fdb_check_key", "--dublab-key", "dl_check_key")
    providers = (
        f"providers:\n  facedub: {{base_url: '{sb.urls['facedub']}'}}\n  dublab: {{base_url: '{sb.urls['dublab']}'}}\n"
    )
    env = {"UGCWATCHD_FACEDUB_API_KEY": "fdb_check_key", "UGCWATCHD_DUBLAB_API_KEY": "dl_check_key"}
    result = check("-c", str(rules(world, providers=providers)), "check", env=env)
    assert result.returncode == 0, result.stderr
    assert "facedub: key accepted; plan agency, 150 of 150 credits left" in result.stdout
    assert "dublab: key accepted; plan hobby, active, 3600 seconds of credit left" in result.stdout
    assert "fdb_check_key" not in result.stdout + result.stderr
    assert "dl_check_key" not in result.stdout + result.stderr


def test_cli_check_online_rejected_key_exits_78(world: Path, sandbox_process: type[SandboxProcess]) -> None:
    sb = sandbox_process("--port", "0")
    providers = (
        f"providers:\n  facedub: {{base_url: '{sb.urls['facedub']}'}}\n  dublab: {{base_url: '{sb.urls['dublab']}'}}\n"
    )
    env = {"UGCWATCHD_FACEDUB_API_KEY": "fdb_wrong_secret", "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox"}
    result = check("-c", str(rules(world, providers=providers)), "check", env=env)
    assert result.returncode == 78
    assert (
        "providers.facedub.api_key: the facedub key from UGCWATCHD_FACEDUB_API_KEY was refused (401)" in result.stderr
    )
    assert "fdb_wrong_secret" not in result.stdout + result.stderr


def test_cli_check_online_missing_key_exits_78(world: Path, sandbox_process: type[SandboxProcess]) -> None:
    sb = sandbox_process("--port", "0")
    providers = (
        f"providers:\n  facedub: {{base_url: '{sb.urls['facedub']}'}}\n  dublab: {{base_url: '{sb.urls['dublab']}'}}\n"
    )
    result = check(
        "-c", str(rules(world, providers=providers)), "check", env={"UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox"}
    )
    assert result.returncode == 78
    assert "no facedub API key" in result.stderr


def test_cli_check_online_unreachable_provider_exits_1(world: Path) -> None:
    providers = "providers:\n  facedub: {base_url: 'http://127.0.0.1:9'}\n  dublab: {base_url: 'http://127.0.0.1:9'}\n"
    env = {"UGCWATCHD_FACEDUB_API_KEY": "fdb_x", "UGCWATCHD_DUBLAB_API_KEY": "dl_x"}
    result = check("-c", str(rules(world, providers=providers)), "check", env=env)
    assert result.returncode == 1
    assert "cannot verify the" in result.stderr and "--offline" in result.stderr
    assert result.stderr.count("\n") == 1


def _sandbox_rules(world: Path, sb: SandboxProcess) -> Path:
    providers = (
        f"providers:\n  facedub: {{base_url: '{sb.urls['facedub']}'}}\n  dublab: {{base_url: '{sb.urls['dublab']}'}}\n"
    )
    return rules(world, providers=providers)


def test_cli_check_online_key_with_trailing_newline_is_trimmed_and_accepted(
    world: Path, sandbox_process: type[SandboxProcess]
) -> None:
    sb = sandbox_process("--port", "0")
    env = {"UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox\n", "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox\n"}
    result = check("-c", str(_sandbox_rules(world, sb)), "check", env=env)
    assert result.returncode == 0, result.stderr
    assert "facedub: key accepted" in result.stdout and "dublab: key accepted" in result.stdout


@pytest.mark.parametrize(
    ("key", "what"), [("fdb_sandbö", "a non-ASCII character"), ("fdb_\x1bsandbox", "a control character")]
)
def test_cli_check_online_key_with_bad_characters_exits_78_naming_the_variable(
    world: Path, sandbox_process: type[SandboxProcess], key: str, what: str
) -> None:
    sb = sandbox_process("--port", "0")
    env = {"UGCWATCHD_FACEDUB_API_KEY": key, "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox"}
    result = check("-c", str(_sandbox_rules(world, sb)), "check", env=env)
    assert result.returncode == 78, result.stderr
    assert f"the facedub API key from UGCWATCHD_FACEDUB_API_KEY contains {what}" in result.stderr
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    for form in (key, repr(key)[1:-1], ascii(key)[1:-1], repr(key.encode())[2:-1], "sandb"):
        assert form not in output, form
