"""Work awaiting approval in one process: the real desk, delivery and dispatch over a real ledger and outbox."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for
from ugcwatchd.approvals import approve
from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.ledger import InputFile, Item, ItemSettings, JobDetail, PlannedJob
from ugcwatchd.lifecycle import Lifecycle
from ugcwatchd.outbox.files import Anchor
from ugcwatchd.rules import load_rules
from ugcwatchd.states import ErrorCode, HoldReason, ItemState, JobState

from .conftest import World, lifecycle_world

pytestmark = pytest.mark.anyio


@pytest.fixture
def world(tmp_path: Path, ledger_where: Path | str) -> Iterator[World]:
    (tmp_path / "faces" / "inbox").mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "providers:\n"
        "  facedub: {base_url: 'https://api.facedub.example', api_key: fdb_test, poll_every: 1s}\n"
        "rules:\n"
        f"  - {{name: faces, inbox: {tmp_path}/faces/inbox, outbox: {tmp_path}/faces/outbox, approve_above: 1,"
        " facedub: {}}\n"
    )
    yield from lifecycle_world(tmp_path, load_rules(rules), ledger_where)


def held_drop(world: World, media: dict[str, Path], stem: str, pairs: tuple[str, ...] = ("",)) -> Item:
    """A drop as ingestion records it above ``approve_above``: its jobs held for approval.

    ``pairs`` names FaceDub jobs: ``("",)`` is one ``{stem}.facedub``; several make a batch ``{stem}/…``.
    """
    folder = world.inbox / stem if pairs != ("",) else world.inbox
    folder.mkdir(exist_ok=True)
    photo, video = folder / f"{stem}.jpg", folder / f"{stem}.mp4"
    shutil.copy(media["jpeg"], photo)
    shutil.copy(media["video.mp4"], video)
    inputs = [
        InputFile(
            role,
            str(p),
            str(p.relative_to(world.inbox)),
            sha256_of(p),
            st.st_size,
            st.st_mtime_ns,
            None,
            None,
            st.st_ino,
        )
        for role, p in (("photo", photo), ("video", video))
        if (st := p.stat())
    ]
    names = [f"{stem}.facedub"] if pairs == ("",) else [f"{stem}/{pair}.facedub" for pair in pairs]
    waiting = JobDetail(held=HoldReason.APPROVAL)
    jobs = [PlannedJob(name, f"key-{name}", {"duration": 10}, state=JobState.HELD, detail=waiting) for name in names]
    outbox = world.outbox
    folders = {"outbox": outbox, "archive": outbox / "originals", "failed": outbox / "failed"}
    anchors = {k: (a.path, a.dev, a.ino) for k, f in folders.items() if (a := Anchor.of(f))}
    settings = ItemSettings("archive", "move", str(folders["archive"]), str(folders["failed"]), anchors)
    return world.ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(world.inbox),
        outbox=str(outbox),
        key=stem,
        inputs=inputs,
        jobs=jobs,
        settings=settings,
    )


async def tick(world: World) -> None:
    """One round of every step a daemon runs: answers, dispatch, delivery."""
    await world.lifecycle.answer()
    await world.settle()
    await world.lifecycle.deliver()


async def test_desk_quotes_every_waiting_job_and_nothing_is_sent(world: World, media: dict[str, Path]) -> None:
    alice = held_drop(world, media, "alice")
    batch = held_drop(world, media, "batch", ("alice+dance", "bob+dance"))
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await tick(world)
    quote = world.sidecar("alice.facedub.quote.json")
    assert (quote["kind"], quote["item"], quote["estimate"], quote["unit"], quote["approve_above"]) == (
        "quote",
        alice.id,
        2,
        "credits",
        1,
    )
    assert quote["answer"]["approve_file"] == "alice.approve"
    assert world.sidecar("alice.facedub.status.json")["held_reason"] == "awaiting approval"
    for name in ("alice+dance", "bob+dance"):
        in_batch = world.sidecar(f"batch/{name}.facedub.quote.json")
        assert in_batch["estimate"] == 4 and in_batch["item"] == batch.id
        assert [j["job"] for j in in_batch["jobs"]] == ["batch/alice+dance.facedub", "batch/bob+dance.facedub"]
        assert in_batch["answer"]["reject_file"] == "batch.reject"
    assert world.fake.posts() == 0


async def test_desk_approve_file_sends_the_drop_and_tidies_up(world: World, media: dict[str, Path]) -> None:
    item = held_drop(world, media, "alice")
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await tick(world)
    (world.outbox / "alice.approve").touch()
    await world.lifecycle.answer()
    (job,) = world.ledger.jobs_of(item.id)
    assert (job.state, job.held) == (JobState.QUEUED, None)
    assert not (world.outbox / "alice.approve").exists()
    assert ("item approved", {"by": "file alice.approve", "jobs": [job.id]}) in world.ledger.events(item.id)
    await world.lifecycle.deliver()
    assert world.sidecar("alice.facedub.status.json")["held_reason"] is None
    assert not (world.outbox / "alice.facedub.quote.json").exists()
    await world.settle()
    assert world.fake.posts() == 1


async def test_desk_both_files_reject_wins_and_the_drop_ends_as_a_failure(
    world: World, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    item = held_drop(world, media, "alice")
    await tick(world)
    (world.outbox / "alice.approve").touch()
    (world.outbox / "alice.reject").touch()
    with caplog.at_level(logging.INFO, "ugcwatchd"):
        await tick(world)
        await world.lifecycle.deliver()
    assert "both .approve and .reject exist: reject wins" in caplog.text
    error = world.sidecar("alice.facedub.error.json")
    assert (error["stage"], error["code"], error["retryable"]) == ("approval", ErrorCode.REJECTED_BY_OPERATOR, False)
    assert "rejected by an operator (file alice.reject)" in error["message"]
    assert sorted(p.name for p in world.outbox.iterdir()) == ["alice.facedub.error.json", "failed"]
    assert sorted(p.name for p in (world.outbox / "failed").iterdir()) == ["alice.jpg", "alice.mp4"]
    assert world.ledger.item(item.id).state == ItemState.FAILED
    assert world.fake.posts() == 0


async def test_desk_file_left_before_the_quote_answers_nothing(
    world: World, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    world.outbox.mkdir()
    left = world.outbox / "alice.approve"
    left.touch()
    probe = world.outbox / ".probe"
    before = left.stat().st_ctime_ns
    wait_for(lambda: probe.write_bytes(b"x") and probe.stat().st_ctime_ns > before, timeout=5, what="a clock tick")
    probe.unlink()
    item = held_drop(world, media, "alice")
    with caplog.at_level(logging.WARNING, "ugcwatchd"):
        await tick(world)
        await tick(world)
    assert caplog.text.count("older than the quote (left before it was written, or copied with older times)") == 1
    assert world.ledger.jobs_of(item.id)[0].held == HoldReason.APPROVAL and left.exists()
    left.unlink()
    left.touch()
    await world.lifecycle.answer()
    assert world.ledger.jobs_of(item.id)[0].state == JobState.QUEUED and not left.exists()


async def test_desk_file_for_nothing_awaiting_is_left_alone(world: World, media: dict[str, Path]) -> None:
    item = held_drop(world, media, "alice")
    await tick(world)
    approve(world.ledger, item.id)  # by command, before the daemon saw the file
    (world.outbox / "alice.approve").touch()
    (world.outbox / "ghost.reject").touch()
    await tick(world)
    assert (world.outbox / "alice.approve").exists() and (world.outbox / "ghost.reject").exists()
    assert [kind for kind, _ in world.ledger.events(item.id)].count("item approved") == 1


async def test_desk_restart_keeps_the_quote_and_tidies_what_was_answered_meanwhile(
    world: World, media: dict[str, Path]
) -> None:
    first, second = held_drop(world, media, "alice"), held_drop(world, media, "bob")
    await tick(world)
    quote = world.outbox / "alice.facedub.quote.json"
    assert quote.exists()
    # The daemon stops; one drop is approved by command, the other answered by a file, before it starts again.
    approve(world.ledger, first.id)
    (world.outbox / "bob.reject").touch()
    w = world.lifecycle.work
    world.lifecycle = Lifecycle(w.config, world.ledger, w.providers, clock=world.clock)
    await world.lifecycle.answer()
    await world.lifecycle.deliver()
    await world.lifecycle.deliver()
    assert not quote.exists() and world.sidecar("alice.facedub.status.json")["state"] == "queued"
    assert world.sidecar("bob.facedub.error.json")["code"] == "rejected_by_operator"
    assert not (world.outbox / "bob.facedub.quote.json").exists()
    assert world.ledger.item(second.id).state == ItemState.FAILED


async def test_desk_quote_kept_as_written_across_a_restart(world: World, media: dict[str, Path]) -> None:
    held_drop(world, media, "alice")
    await tick(world)
    quote = world.outbox / "alice.facedub.quote.json"
    before = os.stat(quote)
    w = world.lifecycle.work
    world.lifecycle = Lifecycle(w.config, world.ledger, w.providers, clock=world.clock)
    world.clock.advance(60)
    await tick(world)
    after = os.stat(quote)
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)
    assert json.loads(quote.read_text())["updated_at"] == "2027-01-15T08:00:00Z"


def reload(world: World, rule: str) -> None:
    """A reload of the rules: ``rule`` is the YAML of the one rule the file now has."""
    path = world.root / "reloaded.yaml"
    path.write_text(
        "providers:\n"
        "  facedub: {base_url: 'https://api.facedub.example', api_key: fdb_test, poll_every: 1s}\n"
        f"rules:\n  - {rule}\n"
    )
    world.lifecycle.config = load_rules(path)


async def test_desk_approved_drop_whose_inputs_were_replaced_fails_input_changed_and_sends_nothing(
    world: World, media: dict[str, Path]
) -> None:
    item = held_drop(world, media, "alice")
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    await tick(world)
    # While the quote waits, someone saves another video over the one that was priced.
    video = world.inbox / "alice.mp4"
    video.unlink()
    shutil.copy(media["jpeg"], video)
    (world.outbox / "alice.approve").touch()
    await tick(world)
    await tick(world)
    (job,) = world.ledger.jobs_of(item.id)
    assert (job.state, job.failure and job.failure.code) == (JobState.FAILED, ErrorCode.INPUT_CHANGED)
    assert world.fake.posts() == 0
    assert world.sidecar("alice.facedub.error.json")["code"] == "input_changed"


async def test_desk_approved_while_out_of_credits_is_held_for_credits_then_sent_once(
    world: World, media: dict[str, Path]
) -> None:
    ps = world.lifecycle.work.providers["facedub"]
    world.fake.credits = 0
    await world.lifecycle.refresh_account(ps)
    item = held_drop(world, media, "alice")
    await tick(world)
    approve(world.ledger, item.id)
    for _ in range(3):
        await tick(world)
    (job,) = world.ledger.jobs_of(item.id)
    assert (job.state, job.held) == (JobState.HELD, HoldReason.CREDITS)
    assert world.sidecar("alice.facedub.status.json")["held_reason"] == "credits"
    assert not (world.outbox / "alice.facedub.quote.json").exists()
    world.fake.credits = 100
    await world.lifecycle.refresh_account(ps)
    for _ in range(3):
        await tick(world)
    assert world.ledger.jobs_of(item.id)[0].state == JobState.SUBMITTED
    assert world.fake.posts() == 1


async def test_desk_rules_reloaded_while_a_drop_waits_never_send_it_unanswered(
    world: World, media: dict[str, Path]
) -> None:
    gone = held_drop(world, media, "alice")
    raised = held_drop(world, media, "bob")
    # The rule is renamed and its approve_above raised above both quotes: what was priced still waits.
    reload(world, f"{{name: faces2, inbox: {world.inbox}, outbox: {world.outbox}, approve_above: 100, facedub: {{}}}}")
    await world.lifecycle.refresh_account(world.lifecycle.work.providers["facedub"])
    for _ in range(2):
        await tick(world)
    assert [world.ledger.jobs_of(i.id)[0].held for i in (gone, raised)] == [HoldReason.APPROVAL] * 2
    quote = world.sidecar("alice.facedub.quote.json")
    assert (quote["rule"], quote["estimate"], quote["approve_above"]) == ("faces", 2, None)
    assert world.fake.posts() == 0
    (world.outbox / "alice.approve").touch()  # the item of a rule that is gone is still answered
    for _ in range(2):
        await tick(world)
    assert world.ledger.jobs_of(gone.id)[0].state == JobState.SUBMITTED
    assert world.ledger.jobs_of(raised.id)[0].held == HoldReason.APPROVAL
    assert world.fake.posts() == 1


def held_named(world: World, media: dict[str, Path], folder: str, stem: str, jobs: list[str]) -> Item:
    """A drop held for approval whose files and job names may be anything a filesystem allows."""
    where = world.inbox / folder if folder else world.inbox
    where.mkdir(exist_ok=True)
    photo, video = where / f"{stem}.jpg", where / f"{stem}.mp4"
    shutil.copy(media["jpeg"], photo)
    shutil.copy(media["video.mp4"], video)
    inputs = [
        InputFile(
            role,
            str(p),
            str(p.relative_to(world.inbox)),
            sha256_of(p),
            st.st_size,
            st.st_mtime_ns,
            None,
            None,
            st.st_ino,
        )
        for role, p in (("photo", photo), ("video", video))
        if (st := p.stat())
    ]
    waiting = JobDetail(held=HoldReason.APPROVAL)
    planned = [
        PlannedJob(name, f"key-{n}-{folder[:3]!r}", {"duration": 10}, state=JobState.HELD, detail=waiting)
        for n, name in enumerate(jobs)
    ]
    outbox = world.outbox
    outbox.mkdir(exist_ok=True)
    anchors = {"outbox": (str(outbox), outbox.stat().st_dev, outbox.stat().st_ino)}
    settings = ItemSettings("archive", "move", str(outbox / "originals"), str(outbox / "failed"), anchors)
    key = os.fsencode(f"{folder}/{stem}").hex()
    return world.ledger.add_item(
        rule="faces",
        provider="facedub",
        inbox=str(world.inbox),
        outbox=str(outbox),
        key=key,
        inputs=inputs,
        jobs=planned,
        settings=settings,
    )


def unshown(text: str) -> str:
    """The file name a sidecar shows as ``text`` (its ``\\xNN`` back to the bytes they stand for)."""
    return os.fsdecode(re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes.fromhex(m[1].decode()), text.encode()))


async def test_desk_odd_names_get_quotes_and_their_answer_files_are_taken(world: World, media: dict[str, Path]) -> None:
    odd = os.fsdecode(b'caf\xe9 "1", x')
    long_folder = "b." + "x" * 248  # a batch folder as long as a name may be
    items = {
        "odd": held_named(world, media, "", odd, [f"{odd}.facedub"]),
        "sub": held_named(world, media, "sub", "clip", ["sub/clip.facedub"]),
        "batch": held_named(
            world, media, long_folder, "a", [f"{long_folder}/a+v.facedub", f"{long_folder}/b+v.facedub"]
        ),
    }
    await tick(world)
    answers = {}
    for what, item in items.items():
        job = world.ledger.jobs_of(item.id)[0]
        quote_file = world.outbox / f"{job.name}.quote.json"
        quote = json.loads(quote_file.read_bytes())
        assert quote["item"] == item.id
        answers[what] = quote_file.parent / unshown(quote["answer"]["reject_file"])
    assert json.loads((world.outbox / f"{odd}.facedub.quote.json").read_bytes())["answer"]["approve_file"] == (
        'caf\\xe9 "1", x.approve'
    )
    for path in answers.values():
        path.touch()  # every name the quote gives can be created, beside the quote
    await tick(world)
    await tick(world)
    for item in items.values():
        assert {j.failure and j.failure.code for j in world.ledger.jobs_of(item.id)} == {ErrorCode.REJECTED_BY_OPERATOR}
    assert not any(path.exists() for path in answers.values())
    assert world.fake.posts() == 0


async def test_desk_outbox_gone_writes_no_quote_and_creates_nothing_until_it_is_back(
    world: World, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    item = held_named(world, media, "", "alice", ["alice.facedub"])  # planned while the outbox was there
    shutil.rmtree(world.outbox)  # the share is unmounted: its folder is gone
    with caplog.at_level(logging.WARNING, "ugcwatchd"):
        for _ in range(2):
            await tick(world)
    assert not world.outbox.exists()
    assert caplog.text.count("cannot write its quote now") == 1
    world.outbox.mkdir()  # the share is back (re-created on the same device)
    await tick(world)
    assert world.sidecar("alice.facedub.quote.json")["item"] == item.id
    assert world.fake.posts() == 0


async def test_desk_old_answer_file_stays_no_answer_after_a_chmod_a_restart_or_a_copy_keeping_times(
    world: World, media: dict[str, Path]
) -> None:
    world.outbox.mkdir()
    left = world.outbox / "alice.approve"
    left.touch()
    old = world.root / "old.approve"  # an answer file of a drop long gone, kept somewhere
    old.touch()
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    probe = world.outbox / ".probe"
    before = max(left.stat().st_ctime_ns, old.stat().st_ctime_ns)
    wait_for(lambda: probe.write_bytes(b"x") and probe.stat().st_ctime_ns > before, timeout=5, what="a clock tick")
    probe.unlink()
    alice, bob = held_drop(world, media, "alice"), held_drop(world, media, "bob")
    await tick(world)
    quoted = max((world.outbox / f"{s}.facedub.quote.json").stat().st_ctime_ns for s in ("alice", "bob"))

    def newer_ctime(path: Path) -> bool:
        os.chmod(path, 0o664)  # an administrator "fixes permissions": ctime moves, content and mtime do not
        return path.stat().st_ctime_ns > quoted

    wait_for(lambda: newer_ctime(left), timeout=5, what="a newer ctime")
    shutil.copy2(old, world.outbox / "bob.approve")  # a copy that keeps the old file's times, made after the quote
    await tick(world)
    await tick(world)
    assert [world.ledger.jobs_of(i.id)[0].held for i in (alice, bob)] == [HoldReason.APPROVAL] * 2
    # After a restart the desk knows no file it judged: an old file's mtime still tells it is no answer (one
    # made within CLOCK_SKEW_NS before the quote, like alice's, would then count: it is taken away here).
    left.unlink()
    w = world.lifecycle.work
    world.lifecycle = Lifecycle(w.config, world.ledger, w.providers, clock=world.clock)
    newer_ctime(world.outbox / "bob.approve")
    await tick(world)
    assert world.ledger.jobs_of(bob.id)[0].held == HoldReason.APPROVAL
    assert world.fake.posts() == 0
    (world.outbox / "bob.approve").touch()  # an operator's own act on the file: now it answers
    await world.lifecycle.answer()
    assert world.ledger.jobs_of(bob.id)[0].state == JobState.QUEUED
    assert not (world.outbox / "bob.approve").exists()
