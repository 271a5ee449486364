"""Held, not failed: too few credits, a spent daily budget, a refused key (DESIGN §7.1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar


def world(root: Path, sb: SandboxProcess, facedub: str = "") -> Path:
    for folder in ("faces/inbox", "faces/outbox"):
        (root / folder).mkdir(parents=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f'providers:\n  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s{facedub}}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        "rules:\n  - {name: faces, inbox: faces/inbox, facedub: {duration: 10}}\n"
    )
    return rules


def drop_pair(root: Path, media: dict[str, Path], name: str = "alice", photo: str = "jpeg") -> None:
    shutil.copy(media[photo], root / "faces" / "inbox" / f"{name}.{'jpg' if photo == 'jpeg' else photo}")
    shutil.copy(media["video.mp4"], root / "faces" / "inbox" / f"{name}.mp4")


def test_hold_until_credits_return(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--facedub-credits", "1")  # the job costs 2
    rules = world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state")
    status = tmp_path / "faces" / "outbox" / "alice.facedub.status.json"
    try:
        drop_pair(tmp_path, media)
        held = wait_for(
            lambda: (s := sidecar(status)) and s["held_reason"] == "credits" and s, timeout=20, what="the hold"
        )
        assert held["state"] == "held"
        assert httpx.get(f"{sb.urls['facedub']}/sandbox/stats").json()["jobs_created"] == 0  # no overage paid
        httpx.post(
            f"{sb.urls['facedub']}/sandbox/account",
            headers={"Authorization": "Bearer fdb_sandbox"},
            json={"credits_limit": 50},
        )
        result = wait_for(
            lambda: sidecar(tmp_path / "faces" / "outbox" / "alice.facedub.result.json"), timeout=30, what="the release"
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert result["credits_charged"] == 2 and not status.exists()


def test_hold_once_the_daily_budget_is_spent(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    rules = world(tmp_path, sb, ", daily_credit_budget: 3")  # one job of 2 fits, a second does not
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        drop_pair(tmp_path, media, "first")
        wait_for(
            lambda: sidecar(tmp_path / "faces" / "outbox" / "first.facedub.result.json"),
            timeout=30,
            what="the first job",
        )
        drop_pair(tmp_path, media, "second", photo="png")  # other content: not a duplicate of the first
        status = tmp_path / "faces" / "outbox" / "second.facedub.status.json"
        wait_for(lambda: (s := sidecar(status)) and s["held_reason"] == "budget", timeout=20, what="the budget hold")
    finally:
        assert daemon.stop() == 0
    assert httpx.get(f"{sb.urls['facedub']}/sandbox/stats").json()["jobs_created"] == 1


def test_refused_key_at_start_exits_78_naming_the_provider(
    tmp_path: Path, sandbox_process: type[SandboxProcess]
) -> None:
    """systemd does not restart on 78 (RestartPreventExitStatus): a wrong key is a configuration error."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    rules = world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state", {"UGCWATCHD_FACEDUB_API_KEY": "fdb_revoked_long_ago"})
    assert daemon.proc.wait(30) == 78
    assert "facedub" in daemon.text() and "Traceback" not in daemon.text()
    assert "fdb_revoked_long_ago" not in daemon.text()


def test_key_revoked_while_running_pauses_the_provider_and_fails_nothing(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    owner = {"Authorization": "Bearer fdb_sandbox"}
    created = httpx.post(f"{sb.urls['facedub']}/api-keys", json={"name": "daemon"}, headers=owner).json()
    rules = world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state", {"UGCWATCHD_FACEDUB_API_KEY": created["key"]})
    status = tmp_path / "faces" / "outbox" / "alice.facedub.status.json"
    try:
        wait_for(lambda: "ugcwatchd running" in daemon.text(), timeout=20, what="the daemon to start")
        revoked = httpx.delete(f"{sb.urls['facedub']}/api-keys/{created['id']}", headers=owner)
        assert revoked.status_code < 300, revoked.text
        drop_pair(tmp_path, media)
        paused = wait_for(
            lambda: (s := sidecar(status)) and s["held_reason"] == "paused" and s, timeout=20, what="the pause"
        )
        assert paused["state"] == "queued"
    finally:
        assert daemon.stop() == 0
    assert not list((tmp_path / "faces" / "outbox").glob("*.error.json"))
    assert "facedub: paused, all its work held" in daemon.text()
    assert created["key"] not in daemon.text()
