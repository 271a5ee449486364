"""The real daemon, ``ugcwatchd run`` in a subprocess, against the sandbox: files in, sidecars out."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for

from .conftest import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]


class DaemonProcess:
    def __init__(self, rules: Path, state: Path, env: dict[str, str] | None = None) -> None:
        self.log = rules.parent / "daemon.log"
        full_env = {
            **os.environ,
            "UGCWATCHD_STATE_DIR": str(state),
            "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
            "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
            **(env or {}),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "run"], stdout=out, stderr=out, env=full_env
            )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(30)

    def text(self) -> str:
        return self.log.read_text()


@pytest.fixture
def world(tmp_path: Path, sandbox_process: type[SandboxProcess]) -> Iterator[tuple[Path, Path]]:
    sb = sandbox_process("--port", "0", "--job-seconds", "3")
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (tmp_path / folder).mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"""\
providers:
  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s}}
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}
defaults: {{stable_after: 0.5s, rescan_every: 2s}}
rules:
  - {{name: faces, inbox: faces/inbox, facedub: {{}}}}
  - {{name: dub, inbox: dub/inbox, dublab: {{to: [de, es]}}}}
"""
    )
    yield tmp_path, rules


def sidecar(path: Path) -> dict[str, object] | None:
    try:
        document: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return document


def test_run_delivers_a_facedub_pair_and_a_dublab_fan_out(world: tuple[Path, Path], media: dict[str, Path]) -> None:
    root, rules = world
    daemon = DaemonProcess(rules, root / "state")
    try:
        shutil.copy(media["jpeg"], root / "faces" / "inbox" / "alice.jpg")
        shutil.copy(media["video.mp4"], root / "faces" / "inbox" / "alice.mp4")
        shutil.copy(media["long.mp4"], root / "dub" / "inbox" / "pitch.mp4")
        status = wait_for(
            lambda: sidecar(root / "faces" / "outbox" / "alice.facedub.status.json"),
            timeout=20,
            what="a status sidecar",
        )
        assert status["kind"] == "status" and status["job"] == "alice.facedub"
        result = wait_for(
            lambda: sidecar(root / "faces" / "outbox" / "alice.facedub.result.json"),
            timeout=30,
            what="the FaceDub result",
        )
        dubs = [
            wait_for(
                lambda lang=lang: sidecar(root / "dub" / "outbox" / f"pitch.{lang}.result.json"),
                timeout=30,
                what=f"pitch.{lang}",
            )
            for lang in ("de", "es")
        ]
        wait_for(
            lambda: (root / "dub" / "outbox" / "originals" / "pitch.mp4").exists(),
            timeout=10,
            what="the archived input",
        )
    finally:
        assert daemon.stop() == 0, daemon.text()
    assert result["ugcwatchd"] == 1 and result["rule"] == "faces" and result["provider"] == "facedub"
    assert result["state"] == "delivered" and result["output"] == "alice.facedub.mp4" and result["credits_charged"] == 1
    assert (root / "faces" / "outbox" / "alice.facedub.mp4").stat().st_size > 1000
    assert [i["name"] for i in result["inputs"]] == ["alice.jpg", "alice.mp4"]  # type: ignore[index]
    assert all(
        key in result for key in ("remote_id", "created_at", "updated_at", "submitted_at", "completed_at", "output_url")
    )
    assert [d["job"] for d in dubs] == ["pitch.de", "pitch.es"]
    assert all(d["billed_seconds"] == 7 and d["credits_charged"] == 7 and d["output"] is None for d in dubs)
    assert not list(root.glob("*/outbox/*.status.json"))  # status sidecars go away at the end
    assert not list((root / "faces" / "inbox").iterdir()) and not list((root / "dub" / "inbox").iterdir())
    assert sorted(p.name for p in (root / "faces" / "outbox" / "originals").iterdir()) == ["alice.jpg", "alice.mp4"]
    assert "Traceback" not in daemon.text()


def test_run_refused_input_gets_error_sidecars_and_moves_to_failed(
    world: tuple[Path, Path], media: dict[str, Path]
) -> None:
    root, rules = world
    daemon = DaemonProcess(rules, root / "state")
    try:
        shutil.copy(media["notes.mp4"], root / "dub" / "inbox" / "notes.mp4")
        errors = [
            wait_for(
                lambda lang=lang: sidecar(root / "dub" / "outbox" / f"notes.{lang}.error.json"),
                timeout=20,
                what="an error",
            )
            for lang in ("de", "es")
        ]
        wait_for(
            lambda: (root / "dub" / "outbox" / "failed" / "notes.mp4").exists(), timeout=10, what="the failed input"
        )
    finally:
        assert daemon.stop() == 0
    for error in errors:
        assert (error["kind"], error["stage"], error["code"], error["retryable"]) == (
            "error",
            "validate",
            "invalid",
            False,
        )
        assert isinstance(error["message"], str) and "notes.mp4" in error["message"]


def test_run_notifies_systemd_ready_status_and_stopping(world: tuple[Path, Path], tmp_path: Path) -> None:
    root, rules = world
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        daemon = DaemonProcess(rules, root / "state", {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
        messages: list[str] = []
        try:
            deadline = time.monotonic() + 20
            while not any(m.startswith("WATCHDOG=1") for m in messages) and time.monotonic() < deadline:
                messages.append(sock.recv(4096).decode())
            daemon.proc.send_signal(signal.SIGHUP)
            while not any("RELOADING=1" in m for m in messages) and time.monotonic() < deadline:
                messages.append(sock.recv(4096).decode())
            messages.append(sock.recv(4096).decode())
        finally:
            daemon.proc.send_signal(signal.SIGTERM)
            while time.monotonic() < deadline:
                message = sock.recv(4096).decode()
                messages.append(message)
                if "STOPPING=1" in message:
                    break
            assert daemon.proc.wait(30) == 0
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert "STATUS=2 inboxes, 0 running, 0 queued, 0 held" in ready
    reloading = next(m for m in messages if "RELOADING=1" in m)
    assert "MONOTONIC_USEC=" in reloading
    assert any(m.startswith("READY=1") for m in messages[messages.index(reloading) :])
    assert any("STOPPING=1" in m for m in messages)


def test_demo_runs_the_tour_and_exits_0(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "demo", "--folder", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    assert "alice.facedub: delivered" in result.stdout and "pitch.de: delivered" in result.stdout
    assert "broken.de: error at validate (invalid)" in result.stdout
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr


def test_run_sighup_with_a_bad_file_keeps_the_old_rules(world: tuple[Path, Path], media: dict[str, Path]) -> None:
    root, rules = world
    good = rules.read_text()
    daemon = DaemonProcess(rules, root / "state")
    try:
        wait_for(lambda: "ugcwatchd running" in daemon.text(), timeout=20, what="the daemon to start")
        rules.write_text(good.replace("dublab: {to: [de, es]}", "dublab: {to: [xx]}"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused, the old rules stay" in daemon.text(), timeout=10, what="the refusal")
        assert "'xx' is not a supported language" in daemon.text()
        shutil.copy(media["video.mp4"], root / "dub" / "inbox" / "clip.mp4")  # the old rules still work
        wait_for(
            lambda: sidecar(root / "dub" / "outbox" / "clip.es.result.json"), timeout=30, what="the old rules' result"
        )
        rules.write_text(good.replace("dublab: {to: [de, es]}", "dublab: {to: [fr]}"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reloaded" in daemon.text(), timeout=10, what="the reload")
        shutil.copy(media["voice.mp3"], root / "dub" / "inbox" / "voice.mp3")
        wait_for(
            lambda: sidecar(root / "dub" / "outbox" / "voice.fr.result.json"), timeout=30, what="the new rules' result"
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert not (root / "dub" / "outbox" / "voice.de.result.json").exists()


def test_run_logs_with_journald_priorities_under_systemd(world: tuple[Path, Path], media: dict[str, Path]) -> None:
    root, rules = world
    log = root / "daemon.log"
    log.touch()
    st = os.stat(log)  # what systemd puts in JOURNAL_STREAM: the device and inode of our stderr
    daemon = DaemonProcess(rules, root / "state", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        shutil.copy(media["video.mp4"], root / "dub" / "inbox" / "clip.mp4")
        wait_for(lambda: sidecar(root / "dub" / "outbox" / "clip.es.result.json"), timeout=30, what="the result")
    finally:
        assert daemon.stop() == 0
    lines = [line for line in daemon.text().splitlines() if line]
    assert lines and all(line[0] == "<" and line[2] == ">" for line in lines), lines[:5]
    assert "<6>ugcwatchd.inbox.ingest: rule dub: planned clip: clip.de, clip.es" in lines
    assert any(line.startswith("<6>ugcwatchd.lifecycle: dublab: delivered clip.de") for line in lines)
    assert "dl_sandbox" not in daemon.text()


def test_run_serves_metrics_when_asked(world: tuple[Path, Path], media: dict[str, Path]) -> None:
    root, rules = world
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rules.write_text(f"metrics_listen: 127.0.0.1:{port}\n" + rules.read_text())
    daemon = DaemonProcess(rules, root / "state")
    try:
        shutil.copy(media["video.mp4"], root / "dub" / "inbox" / "clip.mp4")
        wait_for(lambda: sidecar(root / "dub" / "outbox" / "clip.es.result.json"), timeout=30, what="the result")
        wait_for(lambda: "ugcwatchd_items" in _scrape(port), timeout=10, what="the metrics endpoint")
        text = _scrape(port)
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert 'ugcwatchd_jobs{provider="dublab",state="delivered"} 2.0' in text
    assert 'ugcwatchd_credits_charged_total{provider="dublab"} 6.0' in text
    assert 'ugcwatchd_provider_paused{provider="facedub"} 0.0' in text
    assert 'ugcwatchd_api_answers_total{provider="dublab",status="200"}' in text
    assert 'ugcwatchd_credits_remaining{provider="dublab"}' in text and "ugcwatchd_last_poll_age_seconds" in text


def _scrape(port: int) -> str:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return ""
