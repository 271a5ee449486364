"""Budgets per rule and concrete inbox (per client): one client's spend holds that client's work only."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.ledger import InputFile, ItemSettings, PlannedJob
from ugcwatchd.lifecycle.budgets import ClientBudgets
from ugcwatchd.rules import Config, load_rules
from ugcwatchd.states import HoldReason, JobState

from .conftest import World, lifecycle_world

pytestmark = pytest.mark.anyio


def rules(root: Path, budget: str | None) -> Config:
    path = root / "rules.yaml"
    path.write_text(
        "providers:\n"
        "  facedub: {base_url: 'https://api.facedub.example', api_key: fdb_test, poll_every: 1s}\n"
        "rules:\n"
        f"  - name: faces\n    inbox: '{root}/{{client}}/faces/inbox'\n    outbox: '{root}/{{client}}/faces/outbox'\n"
        + (f"    budget: {budget}\n" if budget else "")
        + "    facedub: {}\n"
    )
    return load_rules(path)


@pytest.fixture
def clients(tmp_path: Path, ledger_where: Path | str) -> Iterator[World]:
    for client in ("acme", "globex"):
        (tmp_path / client / "faces" / "inbox").mkdir(parents=True)
    config = rules(tmp_path, "{daily: 2, monthly: 3}")
    yield from lifecycle_world(tmp_path, config, ledger_where, datetime(2027, 1, 14, 15, 0).timestamp())


def drop(world: World, client: str, stem: str, media: dict[str, Path], estimate: int = 1) -> int:
    """A pair taken from one client's inbox as ingestion records it; the id of its one job."""
    inbox = world.root / client / "faces" / "inbox"
    photo, video = inbox / f"{stem}.jpg", inbox / f"{stem}.mp4"
    shutil.copy(media["jpeg"], photo)
    shutil.copy(media["video.mp4"], video)
    inputs = [
        InputFile(role, str(p), p.name, sha256_of(p), st.st_size, st.st_mtime_ns, mime, 3.0, st.st_ino)
        for role, p, mime in (("photo", photo, "image/jpeg"), ("video", video, "video/mp4"))
        if (st := p.stat())
    ]
    outbox = world.root / client / "faces" / "outbox"
    item = world.ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(inbox),
        outbox=str(outbox),
        key=stem,
        inputs=inputs,
        jobs=[PlannedJob(f"{stem}.facedub", f"key-{stem}", {"duration": 3}, estimate=estimate)],
        settings=ItemSettings("archive", "move", str(outbox / "originals"), str(outbox / "failed")),
        parts={"client": client},
    )
    return world.ledger.jobs_of(item.id)[0].id


async def ticks(world: World, n: int) -> None:
    """``n`` dispatch ticks, each submission finished remotely at once so that job slots stay free."""
    for _ in range(n):
        await world.settle()
        for job in world.fake.jobs:
            if job["status"] == "queued":
                world.fake.finish(job["id"])


def state(world: World, job_id: int) -> tuple[JobState, HoldReason | None]:
    job = world.ledger.job(job_id)
    return job.state, job.held


async def test_client_budget_holds_one_client_while_another_goes(clients: World, media: dict[str, Path]) -> None:
    a1, a2, a3 = (drop(clients, "acme", f"a{n}", media) for n in range(3))
    g1 = drop(clients, "globex", "g1", media)
    await ticks(clients, 4)
    assert [state(clients, j)[0] for j in (a1, a2, g1)] == [JobState.SUBMITTED] * 3
    assert state(clients, a3) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    assert clients.fake.posts() == 3
    await clients.lifecycle.deliver()
    status = json.loads((clients.root / "acme" / "faces" / "outbox" / "a2.facedub.status.json").read_text())
    assert (status["state"], status["held_reason"], status["parts"]) == ("held", "client budget", {"client": "acme"})


async def test_client_budget_daily_turn_releases_and_the_monthly_one_holds_until_the_1st(
    clients: World, media: dict[str, Path]
) -> None:
    a1, a2, a3 = (drop(clients, "acme", f"a{n}", media) for n in range(3))
    await ticks(clients, 3)
    assert state(clients, a3) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    now = datetime.fromtimestamp(clients.clock())
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time())
    clients.clock.advance(midnight.timestamp() - clients.clock() - 1)
    await ticks(clients, 1)
    assert state(clients, a3) == (JobState.HELD, HoldReason.CLIENT_BUDGET)  # one second before midnight
    clients.clock.advance(2)
    await ticks(clients, 1)
    assert state(clients, a3)[0] == JobState.SUBMITTED  # a new day: 1 of 2 today, 3 of 3 this month
    a4 = drop(clients, "acme", "a4", media)
    await ticks(clients, 1)
    assert state(clients, a4) == (JobState.HELD, HoldReason.CLIENT_BUDGET)  # the month's 3 are spent
    first = datetime.combine((now.replace(day=28) + timedelta(days=4)).replace(day=1).date(), datetime.min.time())
    clients.clock.advance(first.timestamp() - clients.clock() + 1)
    await ticks(clients, 1)
    assert state(clients, a4)[0] == JobState.SUBMITTED
    assert {state(clients, j)[0] for j in (a1, a2)} == {JobState.SUBMITTED}


async def test_client_budget_release_of_one_client_never_waits_for_a_cheaper_held_client(
    clients: World, media: dict[str, Path]
) -> None:
    a1 = drop(clients, "acme", "a1", media, estimate=2)
    a2 = drop(clients, "acme", "a2", media, estimate=1)  # the cheapest held job: its client stays over
    g1 = drop(clients, "globex", "g1", media, estimate=1)
    g2 = drop(clients, "globex", "g2", media, estimate=2)
    await ticks(clients, 4)
    assert [state(clients, j)[0] for j in (a1, g1)] == [JobState.SUBMITTED] * 2
    assert state(clients, a2) == state(clients, g2) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    # globex's job fails remotely and its credit is given back: what it sent no longer counts, and its next
    # job fits again (a failure the provider charged for counts: see the test below).
    remote = clients.ledger.job(g1).remote_id or ""
    clients.fake.finish(remote, failed=True)
    next(j for j in clients.fake.jobs if j["id"] == remote)["credits_charged"] = 0
    await clients.lifecycle.poll("facedub")
    assert clients.ledger.job(g1).state == JobState.FAILED
    await ticks(clients, 1)
    assert state(clients, g2)[0] == JobState.SUBMITTED
    assert state(clients, a2) == (JobState.HELD, HoldReason.CLIENT_BUDGET)


async def test_client_budget_comes_from_the_rules_as_reloaded(clients: World, media: dict[str, Path]) -> None:
    jobs = [drop(clients, "acme", f"a{n}", media) for n in range(4)]
    await ticks(clients, 4)
    assert [state(clients, j)[1] for j in jobs] == [None, None, HoldReason.CLIENT_BUDGET, HoldReason.CLIENT_BUDGET]
    clients.lifecycle.config = rules(clients.root, "{daily: 3}")  # a reload: the new budget applies to held work
    await ticks(clients, 2)
    assert [state(clients, j)[0] for j in jobs] == [JobState.SUBMITTED] * 3 + [JobState.HELD]
    clients.lifecycle.config = rules(clients.root, None)  # no budget any more
    await ticks(clients, 2)
    assert state(clients, jobs[3])[0] == JobState.SUBMITTED
    assert clients.fake.posts() == 4


async def test_client_budget_named_once_the_provider_budget_no_longer_holds_the_job(
    clients: World, media: dict[str, Path]
) -> None:
    ps = clients.lifecycle.work.providers["facedub"]
    ps.settings = ps.settings.model_copy(update={"daily_credit_budget": 2})
    jobs = [drop(clients, "acme", f"a{n}", media) for n in range(3)]
    await ticks(clients, 3)
    assert state(clients, jobs[2]) == (JobState.HELD, HoldReason.BUDGET)  # the account's budget, checked first
    ps.settings = ps.settings.model_copy(update={"daily_credit_budget": 10})  # a reload raised it
    await ticks(clients, 1)
    assert state(clients, jobs[2]) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    assert clients.fake.posts() == 2


def renamed(root: Path, name: str, budget: str) -> Config:
    """The clients' rule under another name, watching the same folders with the same budget (a reload)."""
    path = root / "renamed.yaml"
    path.write_text(
        "providers:\n"
        "  facedub: {base_url: 'https://api.facedub.example', api_key: fdb_test, poll_every: 1s}\n"
        f"rules:\n  - name: {name}\n    inbox: '{root}/{{client}}/faces/inbox'\n"
        f"    outbox: '{root}/{{client}}/faces/outbox'\n    budget: {budget}\n    facedub: {{}}\n"
    )
    return load_rules(path)


async def test_client_budget_rule_renamed_by_reload_keeps_holding_its_clients_work(
    clients: World, media: dict[str, Path]
) -> None:
    jobs = [drop(clients, "acme", f"a{n}", media) for n in range(3)]
    await ticks(clients, 3)
    assert state(clients, jobs[2]) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    # The operator names the rule: the folders and the budget are the same, and so is what acme spent today.
    clients.lifecycle.config = renamed(clients.root, "acme-faces", "{daily: 2, monthly: 3}")
    await ticks(clients, 2)
    assert state(clients, jobs[2]) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    new = clients.ledger.job(drop(clients, "acme", "a3", media)).item_id
    clients.ledger._db.execute("UPDATE items SET rule = 'acme-faces' WHERE id = ?", (new,))  # as planned now
    await ticks(clients, 2)
    assert state(clients, clients.ledger.jobs_of(new)[0].id) == (JobState.HELD, HoldReason.CLIENT_BUDGET)
    assert clients.fake.posts() == 2


async def test_client_budget_failed_job_charged_at_creation_still_counts(
    clients: World, media: dict[str, Path]
) -> None:
    first = drop(clients, "acme", "a0", media)
    await ticks(clients, 1)
    remote = clients.ledger.job(first).remote_id or ""
    clients.fake.jobs[0]["status"] = "queued"
    clients.fake.finish(remote, failed=True)  # FaceDub charged it at creation and keeps the credit
    await clients.lifecycle.poll("facedub")
    assert clients.ledger.job(first).state == JobState.FAILED
    later = [drop(clients, "acme", f"a{n}", media) for n in (1, 2)]
    await ticks(clients, 3)
    assert [state(clients, j) for j in later] == [(JobState.SUBMITTED, None), (JobState.HELD, HoldReason.CLIENT_BUDGET)]
    assert clients.fake.posts() == 2


async def test_client_budget_monthly_zero_holds_every_job_and_sends_nothing(
    clients: World, media: dict[str, Path]
) -> None:
    clients.lifecycle.config = rules(clients.root, "{monthly: 0}")
    jobs = [drop(clients, "acme", "a0", media), drop(clients, "globex", "g0", media)]
    await ticks(clients, 3)
    clients.clock.advance(40 * 86400)  # a month turns: 0 is still 0
    await ticks(clients, 2)
    assert [state(clients, j) for j in jobs] == [(JobState.HELD, HoldReason.CLIENT_BUDGET)] * 2
    assert clients.fake.posts() == 0


async def test_client_budget_claim_of_a_submission_under_way_counts_for_its_client_only(
    clients: World, media: dict[str, Path]
) -> None:
    ps = clients.lifecycle.work.providers["facedub"]
    a1, a2, g1 = (
        drop(clients, "acme", "a1", media),
        drop(clients, "acme", "a2", media),
        drop(clients, "globex", "g1", media),
    )
    # a1 passed its check in this pass; its intent is not committed yet (as two DubLab starts in one tick).
    ps.claims[a1] = 2
    budgets = ClientBudgets(clients.lifecycle.work, ps)
    assert budgets.over(clients.ledger.job(a2), 1)  # 2 claimed + 1 > daily 2
    assert not budgets.over(clients.ledger.job(g1), 2)  # another client's claim says nothing of globex
    assert not budgets.over(clients.ledger.job(a1), 2)  # a claim is not counted twice against itself
