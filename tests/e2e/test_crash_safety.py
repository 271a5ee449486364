"""Never pay twice, never lose an input: the real daemon under injected faults and kill -9."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar


def make_world(root: Path, sb: SandboxProcess, poll: str = "1s") -> Path:
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (root / folder).mkdir(parents=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f"""\
providers:
  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: {poll}, reconcile_grace: 2s}}
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: {poll}}}
defaults: {{stable_after: 0.5s, rescan_every: 2s}}
rules:
  - {{name: faces, inbox: faces/inbox, facedub: {{}}}}
  - {{name: dub, inbox: dub/inbox, dublab: {{to: [de, es]}}}}
"""
    )
    return rules


def drop_pairs(root: Path, media: dict[str, Path], count: int) -> list[str]:
    names = [f"p{n:02d}" for n in range(count)]
    for name in names:
        shutil.copy(media["jpeg"], root / "faces" / "inbox" / f"{name}.jpg")
        shutil.copy(media["video.mp4"], root / "faces" / "inbox" / f"{name}.mp4")
    return names


def claim_pid(inbox: Path) -> int | None:
    try:
        return int(json.loads((inbox / ".ugcwatchd-claim").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def terminal(outbox: Path, job: str) -> list[str]:
    return [kind for kind in ("result", "error") if (outbox / f"{job}.{kind}.json").exists()]


def stats(sb: SandboxProcess, service: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{sb.urls[service]}/sandbox/stats").json()
    return answer


@pytest.mark.slow
def test_crash_fail_rate_everything_completes_nothing_twice(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--fail-rate", "0.3", "--seed", "20261122")
    rules = make_world(tmp_path, sb)
    pairs = drop_pairs(tmp_path, media, 4)
    clips = ["c0", "c1", "c2"]
    for clip in clips:
        shutil.copy(media["video.mp4"], tmp_path / "dub" / "inbox" / f"{clip}.mp4")
    jobs = [(tmp_path / "faces" / "outbox", f"{p}.facedub") for p in pairs]
    jobs += [(tmp_path / "dub" / "outbox", f"{c}.{lang}") for c in clips for lang in ("de", "es")]
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        wait_for(
            # A job whose requests keep drawing faults backs off exponentially (2 min by its 7th try).
            lambda: all(terminal(outbox, job) for outbox, job in jobs),
            timeout=300,
            interval=0.5,
            what="every job",
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert all(terminal(outbox, job) == ["result"] for outbox, job in jobs), [(j, terminal(o, j)) for o, j in jobs]
    assert stats(sb, "facedub")["jobs_created"] == len(pairs)
    assert stats(sb, "dublab")["files_started"] == len(clips) * 2
    faults = [k for k in stats(sb, "facedub")["answers"] if "fault" in k]  # type: ignore[union-attr]
    assert faults, "no fault was injected: the run proves nothing"


@pytest.mark.slow
def test_crash_kill_9_at_random_moments_loses_nothing_and_pays_once(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    rules = make_world(tmp_path, sb)
    pairs = drop_pairs(tmp_path, media, 20)
    outbox = tmp_path / "faces" / "outbox"
    rng = random.Random(20261122)
    kills = 0
    deadline = time.monotonic() + 240
    daemon = DaemonProcess(rules, tmp_path / "state")
    while time.monotonic() < deadline and kills < 6:
        time.sleep(rng.uniform(1.5, 9.0))
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        kills += 1
        daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        wait_for(
            lambda: all(terminal(outbox, f"{p}.facedub") for p in pairs), timeout=240, interval=0.5, what="every pair"
        )
        inbox = tmp_path / "faces" / "inbox"
        # The claim file (.ugcwatchd-claim) stays while the daemon runs; everything else must go.
        wait_for(
            lambda: not [p for p in inbox.iterdir() if not p.name.startswith(".")],
            timeout=20,
            what="the inbox to empty",
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert kills == 6
    assert all(terminal(outbox, f"{p}.facedub") == ["result"] for p in pairs)
    assert stats(sb, "facedub")["jobs_created"] == len(pairs)  # each input submitted exactly once
    posts = stats(sb, "facedub")["answers"]["POST /jobs"]  # type: ignore[index]
    assert "429" not in posts, posts  # restarts included, the daemon never tripped the POST window
    archived = sorted(p.name for p in (outbox / "originals").iterdir())
    assert archived == sorted(f"{p}.{ext}" for p in pairs for ext in ("jpg", "mp4"))  # no input lost
    results = [sidecar(outbox / f"{p}.facedub.result.json") for p in pairs]
    assert len({r["remote_id"] for r in results if r}) == len(pairs)


@pytest.mark.slow
def test_crash_two_daemons_race_and_kills_inside_posts_pay_once(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    """Two daemons (two state folders) on one inbox, the owner killed -9 while its POST is in flight
    (the job exists, the answer is held back), a backend that sometimes creates a job after its 504:
    every pair is still created once and ends with exactly one terminal sidecar."""
    sb = sandbox_process(
        "--port", "0", "--job-seconds", "1", "--answer-delay", "1.5",
        "--fail-rate", "0.2", "--late-create", "1", "--seed", "7",
    )  # fmt: skip
    rules = make_world(tmp_path, sb)
    pairs = drop_pairs(tmp_path, media, 8)
    outbox = tmp_path / "faces" / "outbox"
    states = [tmp_path / "state-a", tmp_path / "state-b"]
    daemons = [DaemonProcess(rules, state) for state in states]
    kills = 0
    seen = 0
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and not all(terminal(outbox, f"{p}.facedub") for p in pairs):
            created = int(stats(sb, "facedub")["jobs_created"])  # type: ignore[call-overload]
            if created > seen and kills < 4:
                seen = created
                # A job was just created and its answer is held back: kill the inbox's owner, mid-POST.
                owner = claim_pid(tmp_path / "faces" / "inbox")
                for n, daemon in enumerate(daemons):
                    if daemon.proc.pid == owner:
                        daemon.proc.send_signal(signal.SIGKILL)
                        daemon.proc.wait(10)
                        daemons[n] = DaemonProcess(rules, states[n])
                        kills += 1
            time.sleep(0.1)
        wait_for(lambda: all(terminal(outbox, f"{p}.facedub") for p in pairs), timeout=60, what="every pair")
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0, daemon.text()[-3000:]
    assert kills >= 2, "no kill landed: the run proves nothing"
    endings = {p: terminal(outbox, f"{p}.facedub") for p in pairs}
    assert all(len(kinds) == 1 for kinds in endings.values()), endings
    facedub_stats = stats(sb, "facedub")
    print(json.dumps({"chaos": {"pairs": len(pairs), "kills": kills, "facedub": facedub_stats}}))
    assert facedub_stats["jobs_created"] == len(pairs), facedub_stats  # jobs created == pairs, kills included
    results = [sidecar(outbox / f"{p}.facedub.result.json") for p in pairs]
    assert all(results) and len({r["remote_id"] for r in results if r}) == len(pairs)
