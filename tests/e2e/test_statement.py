"""Agencies' money end to end: a client budget holds that client's work only, and the statement of what was
paid, per client, adds up to what the sandbox itself says was used."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar

DUBLAB_START = 3600  # the sandbox's default balance, in seconds


def rules_file(root: Path, sb: SandboxProcess) -> Path:
    for client in ("acme", "globex"):
        for folder in ("faces/inbox", "dub/inbox"):
            (root / client / folder).mkdir(parents=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f"""\
providers:
  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s}}
  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}
defaults: {{stable_after: 0.5s, rescan_every: 2s}}
rules:
  - name: faces
    inbox: "{root}/{{client}}/faces/inbox"
    budget: {{daily: 2}}
    facedub: {{pair_by: stem}}
  - name: dub
    inbox: "{root}/{{client}}/dub/inbox"
    dublab: {{to: [de]}}
"""
    )
    return rules


def drop(root: Path, client: str, stem: str, photo: Path, video: Path) -> None:
    inbox = root / client / "faces" / "inbox"
    shutil.copy(photo, inbox / f"{stem}{photo.suffix}")
    shutil.copy(video, inbox / f"{stem}.mp4")


def outbox(root: Path, client: str, kind: str = "faces") -> Path:
    return root / client / kind / "outbox"


def sent(job: Path) -> bool:
    """Whether the job's status or result sidecar names its remote id: the provider has it."""
    found = (sidecar(job.with_name(f"{job.name}.{kind}.json")) for kind in ("status", "result"))
    return any(s is not None and s["remote_id"] is not None for s in found)


def held_status(path: Path) -> dict[str, object] | None:
    status = sidecar(path)
    return status if status is not None and status["state"] == "held" else None


def statement(root: Path, *args: str) -> str:
    env = {**os.environ, "UGCWATCHD_STATE_DIR": str(root / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "statement", *args], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_statement_two_clients_one_over_its_budget_reconcile_with_the_sandbox(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    fd = httpx.Client(base_url=sb.urls["facedub"], headers={"Authorization": "Bearer fdb_sandbox"}, timeout=10)
    dl = httpx.Client(base_url=sb.urls["dublab"], headers={"apikey": "dl_sandbox"}, timeout=10)
    daemon = DaemonProcess(rules_file(tmp_path, sb), tmp_path / "state")
    try:
        # acme spends 2 of its 2 credits a day (a 7 s video), globex 1; each client dubs one clip.
        drop(tmp_path, "acme", "a1", media["jpeg"], media["long.mp4"])
        drop(tmp_path, "globex", "g1", media["webp"], media["video.mp4"])
        shutil.copy(media["speech.mov"], tmp_path / "acme" / "dub" / "inbox" / "speech.mov")
        shutil.copy(media["voice.mp3"], tmp_path / "globex" / "dub" / "inbox" / "voice.mp3")
        for client, job in (("acme", "a1"), ("globex", "g1")):
            wait_for(partial(sent, outbox(tmp_path, client) / f"{job}.facedub"), timeout=20, what=f"{job} sent")
        # From now on FaceDub charges every job at creation and fails it later.
        fd.post("/sandbox/account", json={"fail_jobs": True}).raise_for_status()
        drop(tmp_path, "acme", "a2", media["png"], media["video.mp4"])  # 2 + 1 > 2: held
        drop(tmp_path, "globex", "g2", media["jpeg"], media["video.mp4"])  # 1 + 1 <= 2: goes, fails, charged
        status = outbox(tmp_path, "acme") / "a2.facedub.status.json"
        held = wait_for(partial(held_status, status), timeout=20, what="the hold")
        error = wait_for(partial(sidecar, outbox(tmp_path, "globex") / "g2.facedub.error.json"), timeout=20, what="g2")
        results = {
            (client, name): wait_for(
                partial(sidecar, outbox(tmp_path, client, kind) / f"{name}.result.json"), timeout=20, what=name
            )
            for client, kind, name in (
                ("acme", "faces", "a1.facedub"),
                ("globex", "faces", "g1.facedub"),
                ("acme", "dub", "speech.de"),
                ("globex", "dub", "voice.de"),
            )
        }
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    used = fd.get("/usage").json()["credits_used"]
    seconds_used = DUBLAB_START - dl.get("/api/v1/me").json()["seconds"]
    assert (held["held_reason"], held["parts"]) == ("client budget", {"client": "acme"})
    assert (error["code"], error["credits_charged"], error["parts"]) == ("remote_failed", 1, {"client": "globex"})
    assert results["acme", "a1.facedub"]["request"] == {"duration": 7}
    assert results["acme", "a1.facedub"]["is_overage"] is False
    assert results["globex", "voice.de"]["request"] == {"from": "auto", "to": "de", "studio_quality": False}
    assert results["globex", "voice.de"]["is_overage"] is None

    document: dict[str, Any] = json.loads(statement(tmp_path, "--format", "json"))
    lines = {(line["parts"]["client"], line["job"], line["state"]) for line in document["lines"]}
    assert lines == {
        ("acme", "a1.facedub", "delivered"),
        ("acme", "speech.de", "delivered"),
        ("globex", "g1.facedub", "delivered"),
        ("globex", "g2.facedub", "failed"),
        ("globex", "voice.de", "delivered"),
    }
    groups = {(g["client"], g["provider"]): g["credits_charged"] for g in document["totals"]["groups"]}
    assert groups["client=acme", "facedub"] == 2 and groups["client=globex", "facedub"] == 2
    totals = {t["provider"]: t["credits_charged"] for t in document["totals"]["providers"]}
    assert totals == {"facedub": used, "dublab": seconds_used} and used == 4

    rows = list(csv.DictReader(io.StringIO(statement(tmp_path, "--format", "csv", "--by", "rule"))))
    assert sorted(r["client"] for r in rows if r["kind"] == "line") == ["client=acme"] * 2 + ["client=globex"] * 3
    assert {(r["rule"], r["credits_charged"]) for r in rows if r["kind"] == "total"} == {
        ("faces", str(used)),
        ("dub", str(seconds_used)),
    }
