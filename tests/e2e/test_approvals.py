"""Drops above ``approve_above`` wait with a quote until an operator answers: the real daemon and sandbox."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_ops import cli
from .test_cli_run import DaemonProcess, sidecar


def test_approvals_drops_wait_with_quotes_and_go_by_file_or_command_or_end_by_reject(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    inbox.mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'providers:\n  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        "rules:\n  - {name: dub, inbox: dub/inbox, approve_above: 3, dublab: {to: [de]}}\n"
    )
    stats = f"{sb.urls['dublab']}/sandbox/stats"
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        # Estimates in DubLab seconds: a 8, b 5, c 4 wait; d 3 is not above 3 and goes without asking.
        for source, name in (
            ("long.mp4", "a.mp4"),
            ("voice.mp3", "b.mp3"),
            ("video.mp4", "c.mp4"),
            ("speech.mov", "d.mov"),
        ):
            shutil.copy(media[source], inbox / name)
        wait_for(lambda: sidecar(outbox / "d.de.result.json"), timeout=20, what="the drop below the threshold")
        quotes = {s: wait_for(lambda s=s: sidecar(outbox / f"{s}.de.quote.json"), what=f"{s}'s quote") for s in "abc"}
        for s in "abc":
            status = wait_for(lambda s=s: sidecar(outbox / f"{s}.de.status.json"), what=f"{s}'s status")
            assert (status["state"], status["held_reason"]) == ("held", "awaiting approval")
        assert httpx.get(stats).json()["files_created"] == 1  # only d reached DubLab
        a = quotes["a"]
        assert (a["kind"], a["rule"], a["estimate"], a["unit"], a["approve_above"]) == ("quote", "dub", 8, "seconds", 3)
        assert [(j["job"], j["request"]["to"], j["estimate"]) for j in a["jobs"]] == [("a.de", "de", 8)]
        assert a["inputs"][0]["name"] == "a.mp4" and a["answer"]["approve_file"] == "a.approve"
        shown = cli(tmp_path, rules, "status")
        assert "awaiting approval: 3 items" in shown.stdout, shown.stdout + shown.stderr

        (outbox / "a.approve").touch()
        approved = cli(tmp_path, rules, "approve", str(quotes["b"]["item"]))  # while the daemon runs
        assert approved.returncode == 0 and approved.stdout.startswith(f"item {quotes['b']['item']}: approved b.de")
        (outbox / "c.reject").touch()

        for s in "ab":
            wait_for(lambda s=s: sidecar(outbox / f"{s}.de.result.json"), timeout=20, what=f"{s}'s result")
        error = wait_for(lambda: sidecar(outbox / "c.de.error.json"), timeout=10, what="c's error sidecar")
        wait_for(lambda: (outbox / "failed" / "c.mp4").exists(), timeout=10, what="c's input moved")
        again = cli(tmp_path, rules, "approve", str(quotes["c"]["item"]))
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert (error["stage"], error["code"], error["retryable"]) == ("approval", "rejected_by_operator", False)
    assert again.returncode == 2 and "is not awaiting approval: it was rejected by file c.reject" in again.stderr
    assert httpx.get(stats).json()["files_created"] == 3  # a, b and d; c never
    left = sorted(p.name for p in outbox.iterdir() if p.is_file())
    assert left == ["a.de.result.json", "b.de.result.json", "c.de.error.json", "d.de.result.json"]
    assert sorted(p.name for p in (outbox / "originals").iterdir()) == ["a.mp4", "b.mp3", "d.mov"]
    assert list(inbox.iterdir()) == []
    assert "reject wins" not in daemon.text() and "Traceback" not in daemon.text()
