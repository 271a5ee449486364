"""Operator commands against a real ledger filled by the real daemon: status, jobs, retry, usage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar


def cli(root: Path, rules: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "UGCWATCHD_STATE_DIR": str(root / "state"),
        "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
        "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
    }
    return subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_ops_remote_failure_then_status_jobs_retry_and_usage(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    for folder in ("dub/inbox", "dub/outbox"):
        (tmp_path / folder).mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'providers:\n  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        "rules:\n  - {name: dub, inbox: dub/inbox, dublab: {to: [fr]}}\n"
    )
    httpx.post(f"{sb.urls['dublab']}/sandbox/account", headers={"apikey": "dl_sandbox"}, json={"fail_jobs": True})
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        shutil.copy(media["video.mp4"], tmp_path / "dub" / "inbox" / "talk.mp4")
        error = wait_for(
            lambda: sidecar(tmp_path / "dub" / "outbox" / "talk.fr.error.json"), timeout=30, what="the error sidecar"
        )
        assert (error["stage"], error["code"], error["retryable"]) == ("poll", "remote_failed", True)
        wait_for(
            lambda: (tmp_path / "dub" / "outbox" / "failed" / "talk.mp4").exists(), timeout=10, what="the failed input"
        )

        report = json.loads(cli(tmp_path, rules, "status", "--json").stdout)
        assert report["items"] == {"failed": 1} and report["jobs"] == {"failed": 1}
        (failure,) = report["recent_failures"]
        assert failure["job"] == "talk.fr" and failure["code"] == "remote_failed"
        listed = cli(tmp_path, rules, "jobs", "--state", "failed")
        assert "talk.fr" in listed.stdout and listed.returncode == 0

        httpx.post(f"{sb.urls['dublab']}/sandbox/account", headers={"apikey": "dl_sandbox"}, json={"fail_jobs": False})
        retried = cli(tmp_path, rules, "retry", str(failure["item"]))
        assert retried.returncode == 0 and "talk.fr queued again" in retried.stdout
        result = wait_for(
            lambda: sidecar(tmp_path / "dub" / "outbox" / "talk.fr.result.json"), timeout=30, what="the retried result"
        )
        assert result["state"] == "delivered" and result["billed_seconds"] == 3
        assert not (tmp_path / "dub" / "outbox" / "talk.fr.error.json").exists()  # one terminal sidecar per job
        wait_for(
            lambda: (tmp_path / "dub" / "outbox" / "originals" / "talk.mp4").exists(), timeout=10, what="the archive"
        )
        assert not (tmp_path / "dub" / "outbox" / "failed" / "talk.mp4").exists()
    finally:
        assert daemon.stop() == 0, daemon.text()
    assert cli(tmp_path, rules, "retry", "99").returncode == 2
    usage = cli(tmp_path, rules, "usage")
    assert usage.returncode == 0 and usage.stdout.startswith("dublab: plan hobby, active, 3597 seconds of credit left")


def test_plan_shows_what_would_happen_and_changes_nothing(tmp_path: Path, media: dict[str, Path]) -> None:
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox"):  # dub's outbox: the daemon would create it
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(media["jpeg"], tmp_path / "faces" / "inbox" / "alice.jpg")
    shutil.copy(media["long.mp4"], tmp_path / "faces" / "inbox" / "alice.mp4")
    shutil.copy(media["png"], tmp_path / "faces" / "inbox" / "bob.png")
    shutil.copy(media["video.mp4"], tmp_path / "dub" / "inbox" / "pitch.mp4")
    shutil.copy(media["notes.mp4"], tmp_path / "dub" / "inbox" / "notes.mp4")
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {name: faces, inbox: faces/inbox, facedub: {}}\n"
        "  - {name: dub, inbox: dub/inbox, dublab: {to: [de], studio_quality: true}}\n"
    )
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    result = cli(tmp_path, rules, "plan")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  alice.facedub <- alice.jpg + alice.mp4: duration 7 s, ~2 credits" in lines
    assert "  bob.png: waits for its partner" in lines
    assert "  pitch.de <- pitch.mp4: 3.0 s, ~8 seconds of credit" in lines
    assert any(line.startswith("  notes.de <- notes.mp4: refused (invalid)") for line in lines)
    assert lines[-1] == "estimated: facedub ~2 credits, dublab ~8 seconds"
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # no state, no outbox files
