"""One owner, with real daemons: one per state folder, and one per inbox across state folders."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar

CLAIM = ".ugcwatchd-claim"


def remote_jobs(sb: SandboxProcess) -> Counter[str]:
    """DubLab's records (one per remote job, paid or not) by input stem: a name is ``{stem}.{token}{ext}``."""
    answer = httpx.get(f"{sb.urls['dublab']}/api/v1/dubs", headers={"apikey": "dl_sandbox"}, timeout=5)
    answer.raise_for_status()
    return Counter(str(record["name"]).split(".")[0] for record in answer.json())


def write_rules(folder: Path, sb: SandboxProcess, inbox: Path, outbox: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.yaml"
    rules.write_text(
        f"""\
providers:
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}
defaults: {{stable_after: 0.3s, rescan_every: 1s}}
rules:
  - {{name: dub, inbox: {inbox}, outbox: {outbox}, dublab: {{to: [de, es]}}}}
"""
    )
    return rules


def claim(inbox: Path) -> dict[str, object] | None:
    return sidecar(inbox / CLAIM)


def results(outbox: Path, stems: list[str]) -> bool:
    return all(sidecar(outbox / f"{stem}.{lang}.result.json") for stem in stems for lang in ("de", "es"))


def test_second_run_on_the_same_state_folder_exits_1_naming_the_first(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    inbox, outbox, state = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "state"
    inbox.mkdir()
    rules = write_rules(tmp_path / "a", sb, inbox, outbox)
    first = DaemonProcess(rules, state)
    try:
        wait_for(lambda: "ugcwatchd running" in first.text(), timeout=20, what="the first daemon")
        started = time.monotonic()
        env = {
            **os.environ,
            "UGCWATCHD_STATE_DIR": str(state),
            "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
            "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
        }
        second = subprocess.run(
            [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=20,
        )
        assert time.monotonic() - started < 5
        assert second.returncode == 1
        assert second.stderr == (
            f"ugcwatchd: another ugcwatchd (pid {first.proc.pid}) is already running on {state}\n"
        ), second.stderr
        assert second.stdout == ""
        # The first goes on as if nothing happened: one remote job per job, results delivered.
        shutil.copy(media["video.mp4"], inbox / "pitch.mp4")
        wait_for(lambda: results(outbox, ["pitch"]), timeout=20, what="pitch's results")
        assert first.proc.poll() is None
        assert remote_jobs(sb) == {"pitch": 2}
    finally:
        assert first.stop() == 0, first.text()[-3000:]
    assert "Traceback" not in first.text()
    assert (state / "daemon.lock").read_text() == ""  # released at exit


def test_two_state_folders_one_inbox_one_owner_then_a_handover(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    inbox = tmp_path / "share" / "inbox"
    inbox.mkdir(parents=True)
    out_a, out_b = tmp_path / "share" / "out-a", tmp_path / "share" / "out-b"
    a = DaemonProcess(write_rules(tmp_path / "a", sb, inbox, out_a), tmp_path / "state-a")
    b: DaemonProcess | None = None
    try:
        wait_for(lambda: (claim(inbox) or {}).get("pid") == a.proc.pid, timeout=20, what="a's claim")
        state_a = (tmp_path / "state-a" / "id").read_text().strip()
        document = claim(inbox) or {}
        assert sorted(document) == ["claimed_at", "host", "pid", "refreshed_at", "state_id"]
        assert (document["host"], document["state_id"]) == (socket.gethostname(), state_a)
        b = DaemonProcess(write_rules(tmp_path / "b", sb, inbox, out_b), tmp_path / "state-b")
        held_by_a = (
            f"rule dub: paused: inbox {inbox} is claimed by {socket.gethostname()}:{a.proc.pid} (state {state_a})"
        )
        wait_for(lambda: held_by_a in b.text(), timeout=20, what="b to see a's claim")
        for stem in ("one", "two"):
            shutil.copy(media["video.mp4"], inbox / f"{stem}.mp4")
        wait_for(lambda: results(out_a, ["one", "two"]), timeout=20, what="a's results")
        # Inputs leave the inbox only once delivered: wait for that before a hands over.
        wait_for(lambda: sorted(p.name for p in inbox.iterdir()) == [CLAIM], timeout=10, what="the archive")
        assert remote_jobs(sb) == {"one": 2, "two": 2}  # taken once, by a alone
        assert not out_b.exists() or not list(out_b.glob("*.json"))
        assert b.text().count(held_by_a) == 1 and "nothing is taken from it" in b.text()

        assert a.stop() == 0, a.text()[-3000:]
        assert (claim(inbox) or {}).get("pid") != a.proc.pid  # released (b may already hold it)
        wait_for(lambda: f"rule dub: resumed: {inbox} is ours now" in b.text(), timeout=10, what="b's takeover")
        assert (claim(inbox) or {}).get("pid") == b.proc.pid
        shutil.copy(media["video.mp4"], inbox / "three.mp4")
        wait_for(lambda: results(out_b, ["three"]), timeout=20, what="b's results")
        assert remote_jobs(sb) == {"one": 2, "two": 2, "three": 2}
        assert not list(out_a.glob("three.*"))
    finally:
        a.stop()
        if b is not None:
            assert b.stop() == 0, b.text()[-3000:]
    assert claim(inbox) is None  # every claim released at a clean shutdown
    assert "Traceback" not in a.text() + b.text()
    names = sorted(
        json.loads(p.read_text())["job"] for p in [*out_a.glob("*.result.json"), *out_b.glob("*.result.json")]
    )
    assert names == ["one.de", "one.es", "three.de", "three.es", "two.de", "two.es"]
