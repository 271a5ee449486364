"""Dispatch, polling and delivery in one process: the real stages over a real ledger and outbox."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from ugcwatchd.lifecycle.disposition import DOWNLOAD_TRIES
from ugcwatchd.states import ErrorCode, HoldReason, ItemState, JobState

from .conftest import World

pytestmark = pytest.mark.anyio


async def test_dispatch_queued_job_commits_its_intent_before_the_paid_request(
    world: World, media: dict[str, Path]
) -> None:
    seen_states: list[str] = []

    def post(request: httpx.Request) -> httpx.Response:
        # What the ledger says at the moment the paid request arrives.
        seen_states.append(world.ledger.jobs_of(item.id)[0].state)
        return httpx.Response(200, json=world.fake.create(request))

    world.fake.on_post = post
    item = world.drop_pair("alice", media)
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await world.settle()
    (job,) = world.ledger.jobs_of(item.id)
    assert seen_states == ["submitting"]
    assert (job.state, job.remote_id, job.attempts, job.estimate) == ("submitted", "j1", 1, 1)
    assert world.ledger.item(item.id).state == ItemState.RUNNING
    kinds = [kind for kind, _ in world.ledger.events(item.id)]
    assert kinds.index("job queued -> submitting") < kinds.index("job submitting -> submitted")


async def test_dispatch_unknown_outcome_is_reconciled_not_resent(world: World, media: dict[str, Path]) -> None:
    def created_then_lost(request: httpx.Request) -> httpx.Response:
        world.fake.create(request)  # the job exists, but the answer is a 504
        return httpx.Response(504, text="gateway timeout")

    world.fake.on_post = created_then_lost
    item = world.drop_pair("bob", media)
    await world.settle()
    (job,) = world.ledger.jobs_of(item.id)
    assert job.state == JobState.SUBMITTING and job.detail.retry_at is not None
    world.fake.on_post = None
    await world.settle()  # not due yet: nothing happens
    assert world.fake.posts() == 1
    world.clock.advance(10 * 60)
    await world.settle()
    (job,) = world.ledger.jobs_of(item.id)
    assert (job.state, job.remote_id, job.detail.adopted) == ("submitted", "j1", True)
    assert world.fake.posts() == 1


async def test_dispatch_too_few_credits_holds_without_sending(world: World, media: dict[str, Path]) -> None:
    world.fake.credits = 0
    item = world.drop_pair("carol", media)
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await world.settle()
    (job,) = world.ledger.jobs_of(item.id)
    assert (job.state, job.held) == (JobState.HELD, HoldReason.CREDITS)
    assert world.fake.posts() == 0
    world.fake.credits = 5
    await world.lifecycle.poll("facedub")  # a held job makes every poll read the credits
    await world.settle()
    await world.settle()
    assert world.ledger.jobs_of(item.id)[0].state == JobState.SUBMITTED


async def test_poll_refused_key_pauses_the_provider_and_nothing_is_sent(world: World, media: dict[str, Path]) -> None:
    world.fake.on_usage = lambda request: httpx.Response(401, json={"error": "Invalid API key"})
    world.drop_pair("dave", media)
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await world.settle()
    assert world.fake.posts() == 0
    assert "paused" in world.lifecycle.status_line(1)
    await world.lifecycle.deliver()
    assert world.sidecar("dave.facedub.status.json")["held_reason"] == "paused"


async def test_poll_completed_job_is_delivered_with_its_output_and_inputs_archived(
    world: World, media: dict[str, Path]
) -> None:
    item = world.drop_pair("erin", media)
    await world.settle()
    world.fake.finish("j1")
    await world.lifecycle.poll("facedub")
    assert world.ledger.jobs_of(item.id)[0].state == JobState.REMOTE_DONE
    await world.lifecycle.deliver()
    result = world.sidecar("erin.facedub.result.json")
    assert (result["kind"], result["output"], result["remote_id"], result["credits_charged"]) == (
        "result",
        "erin.facedub.mp4",
        "j1",
        1,
    )
    assert (world.outbox / "erin.facedub.mp4").read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
    assert not (world.outbox / "erin.facedub.status.json").exists()
    assert world.ledger.item(item.id).state == ItemState.DELIVERED
    assert sorted(p.name for p in (world.outbox / "originals").iterdir()) == ["erin.jpg", "erin.mp4"]
    assert list(world.inbox.iterdir()) == []


async def test_poll_remote_failure_gets_an_error_sidecar_and_inputs_moved(world: World, media: dict[str, Path]) -> None:
    item = world.drop_pair("fay", media)
    await world.settle()
    world.fake.finish("j1", failed=True)
    await world.lifecycle.poll("facedub")
    await world.lifecycle.deliver()
    error = world.sidecar("fay.facedub.error.json")
    assert (error["code"], error["stage"], error["retryable"], error["provider_error"]) == (
        ErrorCode.REMOTE_FAILED,
        "poll",
        True,
        "face not found",
    )
    assert world.ledger.item(item.id).state == ItemState.FAILED
    assert sorted(p.name for p in (world.outbox / "failed").iterdir()) == ["fay.jpg", "fay.mp4"]


async def test_delivery_one_broken_outbox_never_stops_the_others(world: World, media: dict[str, Path]) -> None:
    blocked = world.root / "blocked"
    blocked.write_text("a file where a folder should be")
    broken = world.drop_pair("gus", media, outbox=blocked / "outbox")
    fine = world.drop_pair("hal", media)
    await world.settle()
    await world.settle()
    for remote_id in ("j1", "j2"):
        world.fake.finish(remote_id)
    await world.lifecycle.poll("facedub")
    await world.lifecycle.deliver()
    assert world.ledger.item(fine.id).state == ItemState.DELIVERED
    assert world.sidecar("hal.facedub.result.json")["kind"] == "result"
    (stuck,) = world.ledger.jobs_of(broken.id)
    assert stuck.state == JobState.REMOTE_DONE and stuck.detail.trouble
    blocked.unlink()  # the share comes back
    world.lifecycle.delivery.monotonic = lambda: float("inf")  # past any backoff
    await world.lifecycle.deliver()
    assert world.ledger.item(broken.id).state == ItemState.DELIVERED
    assert (blocked / "outbox" / "gus.facedub.mp4").exists()


async def test_delivery_failing_download_is_retried_then_failed_as_retryable(
    world: World, media: dict[str, Path]
) -> None:
    world.fake.on_download = lambda request: httpx.Response(503, text="cdn hiccup")
    item = world.drop_pair("ida", media)
    await world.settle()
    world.fake.finish("j1")
    await world.lifecycle.poll("facedub")
    for _ in range(DOWNLOAD_TRIES):
        await world.lifecycle.deliver()
        world.clock.advance(3600)
    error = world.sidecar("ida.facedub.error.json")
    assert (error["code"], error["stage"], error["retryable"]) == (ErrorCode.DOWNLOAD_FAILED, "download", True)
    downloads = [r for r in world.fake.requests if r.url.host == "cdn.example"]
    assert len(downloads) == DOWNLOAD_TRIES
    assert world.ledger.item(item.id).state == ItemState.FAILED
    assert not [p for p in os.listdir(world.outbox) if p.endswith(".tmp")]
