"""The real daemon against a sandbox that answers badly: malformed 200s, a day-long Retry-After,
result links that redirect to nowhere or drip, and an input deleted while its job waits."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar


def make_world(root: Path, sb: SandboxProcess, facedub: str = "", dublab: str = "[de]") -> Path:
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (root / folder).mkdir(parents=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f"""\
providers:
  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s{facedub}}}
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}
defaults: {{stable_after: 0.5s, rescan_every: 2s}}
rules:
  - {{name: faces, inbox: faces/inbox, facedub: {{}}}}
  - {{name: dub, inbox: dub/inbox, dublab: {{to: {dublab}}}}}
"""
    )
    return rules


def drop_pair(root: Path, media: dict[str, Path], name: str = "alice", photo: str = "jpeg") -> None:
    shutil.copy(media[photo], root / "faces" / "inbox" / f"{name}.{'jpg' if photo == 'jpeg' else photo}")
    shutil.copy(media["video.mp4"], root / "faces" / "inbox" / f"{name}.mp4")


def answers(sb: SandboxProcess, service: str) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = httpx.get(f"{sb.urls[service]}/sandbox/stats").json()["answers"]
    return found


def count(sb: SandboxProcess, service: str, prefix: str, status: str | None = None) -> int:
    return sum(
        n
        for route, by in answers(sb, service).items()
        if route.startswith(prefix)
        for code, n in by.items()
        if status is None or code == status
    )


def provider_warnings(daemon: DaemonProcess, words: str) -> list[str]:
    return [line for line in daemon.text().splitlines() if "WARNING ugcwatchd.providers:" in line and words in line]


# -- malformed 200 answers ------------------------------------------------------------------------------


def test_run_odd_answers_every_time_keep_the_daemon_up_and_check_says_one_sentence(
    tmp_path: Path, sandbox_process: type[SandboxProcess]
) -> None:
    sb = sandbox_process("--port", "0", "--odd-answers", "1", "--seed", "4")
    rules = make_world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        wait_for(lambda: count(sb, "facedub", "GET /usage (odd") >= 6, timeout=15, what="odd /usage answers")
        wait_for(lambda: count(sb, "dublab", "GET /api/v1/me (odd") >= 6, timeout=15, what="odd /me answers")
        assert daemon.proc.poll() is None, daemon.text()[-2000:]
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert "Traceback" not in daemon.text()
    assert len(provider_warnings(daemon, "GET /usage")) == 1  # what was wrong, once
    assert len(provider_warnings(daemon, "GET /api/v1/me")) == 1
    check = subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "check"],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "UGCWATCHD_STATE_DIR": str(tmp_path / "state"),
            "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
            "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
        },
    )
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
    assert "ugcwatchd: cannot verify the dublab key: dublab answered GET /api/v1/me" in check.stderr


def test_run_odd_answers_now_and_then_still_deliver_every_job(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "3", "--odd-answers", "0.5", "--seed", "7")
    rules = make_world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        drop_pair(tmp_path, media)
        shutil.copy(media["video.mp4"], tmp_path / "dub" / "inbox" / "pitch.mp4")
        face = wait_for(lambda: sidecar(tmp_path / "faces/outbox/alice.facedub.result.json"), timeout=20, what="face")
        dub = wait_for(lambda: sidecar(tmp_path / "dub/outbox/pitch.de.result.json"), timeout=20, what="the dub")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert face["state"] == dub["state"] == "delivered"
    odd = count(sb, "facedub", "GET /jobs (odd") + count(sb, "dublab", "GET /api/v1/dubs (odd")
    assert odd >= 1, f"no odd list answer came: the test proved nothing: {answers(sb, 'facedub')}"
    assert "Traceback" not in daemon.text()
    assert not list(tmp_path.glob("*/outbox/*.error.json"))


# -- Retry-After: 86400 ---------------------------------------------------------------------------------


def test_run_retry_after_86400_on_a_post_never_holds_up_polling_or_delivery(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "8", "--retry-after", "86400")
    rules = make_world(tmp_path, sb)
    daemon = DaemonProcess(rules, tmp_path / "state")
    outbox = tmp_path / "faces" / "outbox"
    try:
        drop_pair(tmp_path, media, "first")
        wait_for(
            lambda: (s := sidecar(outbox / "first.facedub.status.json")) and s["state"] == "submitted",
            timeout=15,
            what="the first job to be submitted",
        )
        with httpx.Client(base_url=sb.urls["facedub"], headers={"Authorization": "Bearer fdb_sandbox"}) as raw:
            for _ in range(9):  # refused, yet counted: with the daemon's POST the window is full
                assert raw.post("/jobs", data={"duration": "5"}).status_code == 400
        drop_pair(tmp_path, media, "second", photo="png")
        wait_for(lambda: count(sb, "facedub", "POST /jobs", "429"), timeout=15, what="the 429")
        assert sidecar(outbox / "first.facedub.result.json") is None  # it is delivered only after the 429
        result = wait_for(lambda: sidecar(outbox / "first.facedub.result.json"), timeout=15, what="the first result")
        second = sidecar(outbox / "second.facedub.status.json")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert result["state"] == "delivered" and (outbox / "first.facedub.mp4").exists()
    assert second is not None and second["state"] == "queued"  # waits its (capped) Retry-After in the queue
    assert count(sb, "facedub", "POST /jobs", "429") == 1
    assert len(provider_warnings(daemon, "waiting 600 s at most")) == 1


# -- result links ---------------------------------------------------------------------------------------


def test_run_download_redirect_without_location_is_never_delivered_as_a_video(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--download-mode", "redirect-html")
    daemon = DaemonProcess(make_world(tmp_path, sb), tmp_path / "state")
    outbox = tmp_path / "faces" / "outbox"
    try:
        drop_pair(tmp_path, media)
        wait_for(lambda: count(sb, "facedub", "GET /cdn", "302") >= 2, timeout=15, what="a retried download")
        status = sidecar(outbox / "alice.facedub.status.json")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert status is not None and status["state"] == "remote_done"
    assert not (outbox / "alice.facedub.result.json").exists() and not list(outbox.glob("*.mp4"))
    assert not list(outbox.glob(".*.part")) and "Traceback" not in daemon.text()


def test_run_download_slower_than_download_timeout_is_given_up_and_tried_again(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--download-mode", "slow")
    daemon = DaemonProcess(make_world(tmp_path, sb, ", download_timeout: 1.5s"), tmp_path / "state")
    outbox = tmp_path / "faces" / "outbox"
    try:
        drop_pair(tmp_path, media)
        wait_for(lambda: count(sb, "facedub", "GET /cdn") >= 2, timeout=15, what="a second download attempt")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert not (outbox / "alice.facedub.result.json").exists() and not list(outbox.glob("*.mp4"))
    assert not list(outbox.glob(".*.part")) and "Traceback" not in daemon.text()


# -- an input deleted while its job waits ---------------------------------------------------------------


def test_run_input_deleted_while_held_for_credits_fails_input_changed_once_and_closes(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--dublab-seconds", "1")  # the dub needs 7
    daemon = DaemonProcess(make_world(tmp_path, sb), tmp_path / "state")
    outbox = tmp_path / "dub" / "outbox"
    dropped = tmp_path / "dub" / "inbox" / "pitch.mp4"
    try:
        shutil.copy(media["long.mp4"], dropped)
        wait_for(
            lambda: (s := sidecar(outbox / "pitch.de.status.json")) and s["held_reason"] == "credits",
            timeout=15,
            what="the credit hold",
        )
        dropped.unlink()
        httpx.post(f"{sb.urls['dublab']}/sandbox/account", headers={"apikey": "dl_sandbox"}, json={"seconds": 3600})
        error = wait_for(lambda: sidecar(outbox / "pitch.de.error.json"), timeout=15, what="the error sidecar")
        wait_for(lambda: item_states(tmp_path / "state") == ["failed"], timeout=10, what="the item to close")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert (error["code"], error["stage"], error["retryable"]) == ("input_changed", "upload", True)
    assert "is gone from where it was taken" in str(error["message"])
    assert sorted(p.name for p in outbox.glob("*.json")) == ["pitch.de.error.json"]
    assert count(sb, "dublab", "POST /api/v1/init-dub") == 0  # nothing was sent for it, ever


def item_states(state: Path) -> list[str]:
    with closing(sqlite3.connect(f"file:{state / 'ledger.sqlite3'}?mode=ro", uri=True)) as db:
        return [row[0] for row in db.execute("SELECT state FROM items ORDER BY id")]
