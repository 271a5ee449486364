"""``ugcwatchd sandbox`` as a user runs it: the printed lines, signals, exit codes, clear errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from .conftest import SandboxProcess


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ugcwatchd", *args], capture_output=True, text=True, timeout=30)


def test_cli_sandbox_prints_three_urls_and_serves(sandbox_process: type[SandboxProcess]) -> None:
    sb = sandbox_process("--port", "0", "--facedub-key", "fdb_cli", "--dublab-key", "dl_cli")
    assert [line.split(" ")[0] for line in sb.lines] == ["facedub", "dublab", "uploads"]
    assert all(url.startswith("http://127.0.0.1:") for url in sb.urls.values())
    usage = httpx.get(f"{sb.urls['facedub']}/usage", headers={"Authorization": "Bearer fdb_cli"})
    assert usage.json()["credits_remaining"] == 150
    me = httpx.get(f"{sb.urls['dublab']}/api/v1/me", headers={"apikey": "dl_cli"})
    assert me.json()["seconds"] == 3600


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_sandbox_stops_cleanly_on_signal(sandbox_process: type[SandboxProcess], sig: int) -> None:
    sb = sandbox_process("--port", "0")
    assert sb.stop(sig) == 0
    assert sb.proc.stderr is not None
    assert "Traceback" not in sb.proc.stderr.read()


def test_cli_sandbox_uses_consecutive_ports(sandbox_process: type[SandboxProcess]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    if base > 65000:
        base -= 1000
    sb = sandbox_process("--port", str(base), "--facedub-credits", "7", "--dublab-seconds", "9")
    assert sb.urls == {
        "facedub": f"http://127.0.0.1:{base}",
        "dublab": f"http://127.0.0.1:{base + 1}",
        "uploads": f"http://127.0.0.1:{base + 2}",
    }
    assert (
        httpx.get(f"{sb.urls['facedub']}/usage", headers={"Authorization": "Bearer fdb_sandbox"}).json()[
            "credits_limit"
        ]
        == 7
    )
    assert httpx.get(f"{sb.urls['dublab']}/api/v1/me", headers={"apikey": "dl_sandbox"}).json()["seconds"] == 9


def test_cli_sandbox_port_in_use_exits_1_with_one_line(sandbox_process: type[SandboxProcess]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("sandbox", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["sandbox", "--fail-rate", "2"],
        ["sandbox", "--port", "70000"],
        ["sandbox", "--job-seconds", "0"],
        ["sandbox", "--facedub-key", "not_fdb"],
        ["sandbox", "--no-such-flag"],
        ["no-such-command"],
        [],
    ],
)
def test_cli_misuse_exits_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip()


def test_cli_version_and_help_exit_0() -> None:
    assert run_cli("--version").stdout.startswith("ugcwatchd ")
    helped = run_cli("sandbox", "--help")
    assert helped.returncode == 0 and "--fail-rate" in helped.stdout
