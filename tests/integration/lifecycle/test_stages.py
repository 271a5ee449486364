"""Dispatch, polling and delivery in one process: the real stages over a real ledger and outbox."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
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
    (blocked / "outbox").mkdir(parents=True)
    broken = world.drop_pair("gus", media, outbox=blocked / "outbox")
    (blocked / "outbox").rmdir()
    blocked.rmdir()
    blocked.write_text("a file where a folder should be")
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
    blocked.unlink()  # a person puts the folders back
    (blocked / "outbox").mkdir(parents=True)
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


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def share(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A share on its own filesystem (tmpfs), bind-mounted at a mount point, as a NAS would be."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a share needs root and mount(8)")
    backing, point = tmp_path / "nas", tmp_path / "mnt" / "share"
    backing.mkdir()
    point.mkdir(parents=True)
    try:
        _mount("-t", "tmpfs", "-o", "size=16m", "none", str(backing))
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    (backing / "outbox").mkdir()
    _mount("--bind", str(backing), str(point))
    try:
        yield backing, point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True)
        subprocess.run(["umount", str(backing)], capture_output=True)


async def test_delivery_outbox_share_unmounted_mid_job_writes_nothing_on_the_mount_point(
    world: World, media: dict[str, Path], share: tuple[Path, Path]
) -> None:
    backing, point = share
    outbox = point / "outbox"
    item = world.drop_pair("ivy", media, outbox=outbox)
    await world.settle()
    world.fake.finish("j1")
    await world.lifecycle.poll("facedub")
    subprocess.run(["umount", str(point)], check=True)  # the NAS goes away; the bare mount point stays
    await world.lifecycle.deliver()
    (job,) = world.ledger.jobs_of(item.id)
    assert job.state == JobState.REMOTE_DONE and job.detail.trouble and "mounted" in job.detail.trouble
    assert list(point.iterdir()) == []  # nothing created on the local disk under the mount point
    _mount("--bind", str(backing), str(point))  # it comes back
    world.lifecycle.delivery.monotonic = lambda: float("inf")
    await world.lifecycle.deliver()
    assert world.ledger.item(item.id).state == ItemState.DELIVERED
    assert (backing / "outbox" / "ivy.facedub.result.json").exists() and (
        backing / "outbox" / "ivy.facedub.mp4"
    ).exists()
    assert sorted(p.name for p in (backing / "outbox" / "originals").iterdir()) == ["ivy.jpg", "ivy.mp4"]


async def test_delivery_full_archive_disk_leaves_no_temp_files_and_the_others_go_on(
    world: World, media: dict[str, Path], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny filesystem needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=8k", "none", str(tiny))  # smaller than one input: a full disk
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        item = world.drop_pair("jay", media)
        settings = world.ledger.item(item.id).settings
        assert settings is not None
        with world.ledger.transaction() as db:  # its archive folder is on the full disk, across devices
            full = replace(
                settings,
                archive_dir=str(tiny / "originals"),
                anchors={**settings.anchors, "archive": (str(tiny), os.stat(tiny).st_dev, os.stat(tiny).st_ino)},
            )
            db.execute("UPDATE items SET settings = ? WHERE id = ?", (full.dumps(), item.id))
        other = world.drop_pair("kim", media)
        await world.settle()
        await world.settle()
        world.fake.finish("j1")
        world.fake.finish("j2")
        await world.lifecycle.poll("facedub")
        for _ in range(3):
            await world.lifecycle.deliver()
            world.lifecycle.delivery.monotonic = lambda: float("inf")
        assert world.ledger.item(other.id).state == ItemState.DELIVERED
        assert world.ledger.item(item.id).state != ItemState.DELIVERED  # its inputs could not leave yet
        assert (world.inbox / "jay.mp4").exists()  # it stays in the inbox until it can be archived whole
        assert any(j.detail.trouble and "No space" in j.detail.trouble for j in world.ledger.jobs_of(item.id))
        leftovers = [p.name for p in tiny.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(tiny)], capture_output=True)


async def test_delivery_sidecars_follow_the_umask(world: World, media: dict[str, Path]) -> None:
    old = os.umask(0o002)
    try:
        world.drop_pair("lea", media)
        await world.settle()
        await world.lifecycle.deliver()
    finally:
        os.umask(old)
    mode = (world.outbox / "lea.facedub.status.json").stat().st_mode & 0o777
    assert mode == 0o664  # group-writable for the people who share the folder, as UMask=0002 asks


async def test_delivery_fifo_where_an_input_was_never_hangs_delivery(world: World, media: dict[str, Path]) -> None:
    """on_success: delete hashes an input before deleting it: a FIFO left in its place must not block."""
    item = world.drop_pair("max", media)
    settings = world.ledger.item(item.id).settings
    assert settings is not None
    with world.ledger.transaction() as db:
        db.execute(
            "UPDATE items SET settings = ? WHERE id = ?", (replace(settings, on_success="delete").dumps(), item.id)
        )
    other = world.drop_pair("ned", media)
    await world.settle()
    await world.settle()
    world.fake.finish("j1")
    world.fake.finish("j2")
    await world.lifecycle.poll("facedub")
    video = world.inbox / "max.mp4"
    video.unlink()
    os.mkfifo(video)  # no writer will ever come
    await asyncio.wait_for(world.lifecycle.deliver(), timeout=10)
    assert world.ledger.item(other.id).state == ItemState.DELIVERED
    assert world.ledger.item(item.id).state == ItemState.DELIVERED
    assert video.exists() and not (world.inbox / "max.jpg").exists()  # the FIFO is not the input: left alone
