"""What was paid, recorded: a FaceDub job charged at creation that fails later, against the real sandbox."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from ugcwatchd.daemon import build_providers
from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.ledger import InputFile, ItemSettings, Ledger, PlannedJob
from ugcwatchd.lifecycle import Lifecycle
from ugcwatchd.metrics import Metrics
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings
from ugcwatchd.states import HoldReason, JobState

from ..conftest import DL_KEY, FD_KEY, SandboxFactory, dublab, facedub

pytestmark = pytest.mark.anyio


def add_pair(ledger: Ledger, root: Path, media: dict[str, Path]) -> int:
    """One pair from acme's inbox, recorded as ingestion records it; the id of its job."""
    inbox, outbox = root / "acme" / "faces" / "inbox", root / "acme" / "faces" / "outbox"
    inbox.mkdir(parents=True)
    photo, video = shutil.copy(media["jpeg"], inbox / "alice.jpg"), shutil.copy(media["video.mp4"], inbox / "alice.mp4")
    inputs = [
        InputFile(role, str(p), p.name, sha256_of(p), st.st_size, st.st_mtime_ns, mime, 3.0, st.st_ino)
        for role, p, mime in (("photo", Path(photo), "image/jpeg"), ("video", Path(video), "video/mp4"))
        if (st := p.stat())
    ]
    item = ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(inbox),
        outbox=str(outbox),
        key="alice",
        inputs=inputs,
        jobs=[PlannedJob("alice.facedub", "key-alice", {"duration": 3}, estimate=1)],
        settings=ItemSettings("archive", "move", str(outbox / "originals"), str(outbox / "failed")),
        parts={"client": "acme"},
    )
    return ledger.jobs_of(item.id)[0].id


async def test_facedub_job_failing_after_creation_keeps_its_charge_in_sidecar_ledger_and_metrics(
    make_sandbox: SandboxFactory, tmp_path: Path, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(job_seconds=0.5)
    with facedub(sandbox) as api:  # no credits left, and every job fails: an overage charge for a failure
        api.post("/sandbox/account", json={"credits_limit": 0, "fail_jobs": True}).raise_for_status()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"providers:\n  facedub: {{base_url: '{sandbox.urls['facedub']}', api_key: {FD_KEY}, poll_every: 1s,"
        " allow_overage: true}\n"
        f"rules:\n  - {{name: faces, inbox: '{tmp_path}/{{client}}/faces/inbox', facedub: {{}}}}\n"
    )
    config = load_rules(rules)
    providers = build_providers(config, Settings())
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite3")
    lifecycle = Lifecycle(config, ledger, providers)
    job_id = add_pair(ledger, tmp_path, media)
    error = tmp_path / "acme" / "faces" / "outbox" / "alice.facedub.error.json"
    polls_while_submitted = 0
    try:
        deadline = time.monotonic() + 20
        while not error.exists():
            assert time.monotonic() < deadline, ledger.job(job_id)
            await lifecycle.dispatch()
            await lifecycle.drain(10)
            remote = ledger.job(job_id).detail.remote
            if ledger.job(job_id).state == JobState.SUBMITTED:
                # What the creation answer said is kept from the moment the job is submitted, through every
                # poll of records that never repeat the overage.
                assert remote is not None and (remote.credits_charged, remote.is_overage) == (1, True)
                polls_while_submitted += 1
            await lifecycle.poll("facedub")
            await lifecycle.deliver()
            await asyncio.sleep(0.1)
        with facedub(sandbox) as api:
            used = api.get("/usage").json()["credits_used"]
    finally:
        for ps in providers.values():
            await ps.provider.aclose()
    assert polls_while_submitted >= 1
    document: dict[str, Any] = json.loads(error.read_text())
    assert (document["code"], document["credits_charged"], document["is_overage"]) == ("remote_failed", 1, True)
    assert (document["request"], document["parts"]) == ({"duration": 3}, {"client": "acme"})
    (charge,) = ledger.charges_between(0, time.time() + 60)
    assert (charge.state, charge.credits, charge.overage, charge.job) == (JobState.FAILED, 1, True, "alice.facedub")
    assert used == 1  # what the provider says it used is what the ledger says was paid
    metrics = Metrics(ledger.reopen, dict)
    scrape = generate_latest(metrics.registry).decode()
    metrics.close()
    assert 'ugcwatchd_credits_charged_total{provider="facedub"} 1.0' in scrape
    assert 'ugcwatchd_client_credits_charged_total{parts="client=acme",provider="facedub",rule="faces"} 1.0' in scrape
    ledger.close()


def add_clip(ledger: Ledger, root: Path, client: str, stem: str, media: dict[str, Path]) -> int:
    """One 3 s clip from a client's dub inbox, dubbed into German; the id of its job."""
    inbox, outbox = root / client / "dub" / "inbox", root / client / "dub" / "outbox"
    inbox.mkdir(parents=True, exist_ok=True)
    clip = Path(shutil.copy(media["video.mp4"], inbox / f"{stem}.mp4"))
    st = clip.stat()
    taken = InputFile(
        "media", str(clip), clip.name, sha256_of(clip), st.st_size, st.st_mtime_ns, "video/mp4", 3.0, st.st_ino
    )
    params = {"to": "de", "from": "auto", "studio_quality": False, "seconds": 3.0, "content_type": "video/mp4"}
    item = ledger.add_item(
        rule="dub",
        provider="dublab",
        inbox=str(inbox),
        outbox=str(outbox),
        key=stem,
        inputs=[taken],
        jobs=[PlannedJob(f"{stem}.de", f"key-{client}-{stem}", params)],
        settings=ItemSettings("archive", "move", str(outbox / "originals"), str(outbox / "failed")),
        parts={"client": client},
    )
    return ledger.jobs_of(item.id)[0].id


async def test_dublab_two_starts_in_one_tick_pass_a_client_budget_only_as_far_as_it_goes(
    make_sandbox: SandboxFactory, tmp_path: Path, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(job_seconds=0.3)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f"providers:\n  dublab: {{base_url: '{sandbox.urls['dublab']}', api_key: {DL_KEY}, poll_every: 1s}}\n"
        f"rules:\n  - {{name: dub, inbox: '{tmp_path}/{{client}}/dub/inbox', budget: {{daily: 5}},"
        " dublab: {to: [de]}}\n"
    )
    config = load_rules(rules)
    providers = build_providers(config, Settings())
    ledger = Ledger(tmp_path / "state" / "ledger.sqlite3")
    lifecycle = Lifecycle(config, ledger, providers)
    # DubLab starts two dubs in one dispatch pass: acme's second (3 + 3 > 5) must wait for its client's budget.
    a1, a2 = add_clip(ledger, tmp_path, "acme", "a1", media), add_clip(ledger, tmp_path, "acme", "a2", media)
    g1 = add_clip(ledger, tmp_path, "globex", "g1", media)
    results = [
        tmp_path / client / "dub" / "outbox" / f"{stem}.de.result.json"
        for client, stem in (("acme", "a1"), ("globex", "g1"))
    ]
    try:
        await lifecycle.refresh_account(providers["dublab"])
        deadline = time.monotonic() + 20
        while not all(r.exists() for r in results):
            assert time.monotonic() < deadline, [ledger.job(j) for j in (a1, a2, g1)]
            await lifecycle.dispatch()
            await lifecycle.drain(10)
            await lifecycle.poll("dublab")
            await lifecycle.deliver()
            await asyncio.sleep(0.1)
        with dublab(sandbox) as api:
            left = api.get("/api/v1/me").json()["seconds"]
    finally:
        for ps in providers.values():
            await ps.provider.aclose()
    assert (ledger.job(a2).state, ledger.job(a2).held) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    charges = ledger.charges_between(0, time.time() + 60)
    assert sorted((c.parts["client"], c.job, c.state) for c in charges) == [
        ("acme", "a1.de", JobState.DELIVERED),
        ("globex", "g1.de", JobState.DELIVERED),
    ]
    assert sum(c.credits for c in charges) == 3600 - left  # what DubLab billed is what the ledger says was paid
    ledger.close()
