"""Ingestion on real folders with real watchdog, real SQLite and the real scheduler."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from tests.support import until
from ugcwatchd.inbox.ingest import InboxIngest, Ingestion
from ugcwatchd.ledger import Item, Ledger
from ugcwatchd.rules import Config, load_rules

pytestmark = pytest.mark.anyio


def rules(tmp_path: Path, body: str, defaults: str = "") -> Config:
    path = tmp_path / "rules.yaml"
    path.write_text(f"defaults: {{stable_after: 0.4s, rescan_every: 1s{defaults}}}\nrules:\n{body}")
    return load_rules(path, {})


@asynccontextmanager
async def ingesting(config: Config, ledger: Ledger) -> AsyncIterator[Ingestion]:
    scheduler = AsyncIOScheduler()
    scheduler.start()
    ingestion = Ingestion(config, ledger)
    ingestion.start(scheduler)
    try:
        yield ingestion
    finally:
        scheduler.shutdown(wait=False)
        ingestion.stop()


def items(ledger: Ledger) -> list[Item]:
    return ledger.items_in("planned", "failed", "delivered")


def refused(ledger: Ledger) -> list[Item]:
    """Items refused at planning: open until delivery writes their error sidecars."""
    return [i for i in ledger.items_in("planned") if i.reason]


def deliver(ledger: Ledger, item: Item, state: str = "delivered") -> None:
    """What delivery does once the sidecars are written and the inputs are dealt with."""
    for job in ledger.jobs_of(item.id):
        if job.state == "queued":
            for step in ("submitting", "submitted", "remote_done", "delivered"):
                ledger.move_job(job.id, step, **({"remote_id": f"r-{job.name}"} if step == "submitted" else {}))
    ledger.move_item(item.id, state)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    for folder in ("in", "out"):
        (tmp_path / folder).mkdir()
    return tmp_path


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(tmp_path / "state")


def dub_rule(world: Path, extra: str = "") -> str:
    return f"  - {{name: dub, inbox: {world}/in, outbox: {world}/out, dublab: {{to: [de, es]}}{extra}}}\n"


def face_rule(world: Path, facedub: str = "{}", extra: str = "") -> str:
    return f"  - {{name: faces, inbox: {world}/in, outbox: {world}/out, facedub: {facedub}{extra}}}\n"


async def test_ingest_slow_writer_is_taken_only_when_complete(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    data = media["long.mp4"].read_bytes()
    target = world / "in" / "clip.mp4"
    finished = threading.Event()

    def write_slowly() -> None:
        with target.open("wb") as f:
            for start in range(0, len(data), len(data) // 12 + 1):
                f.write(data[start : start + len(data) // 12 + 1])
                f.flush()
                time.sleep(0.2)  # a copy over a slow share: pauses shorter than stable_after
        finished.set()

    # stable_after 1 s against 0.2 s pauses: only a writer stalled five times over could look complete.
    async with ingesting(rules(world, dub_rule(world, ", stable_after: 1s")), ledger):
        writer = threading.Thread(target=write_slowly)
        writer.start()
        while not finished.is_set():
            assert items(ledger) == [], "taken before the copy finished"
            await asyncio.sleep(0.05)
        writer.join()
        (item,) = await until(lambda: items(ledger), what="the item")  # type: ignore[misc]
    (taken,) = ledger.inputs_of(item.id)
    assert taken.sha256 == hashlib.sha256(data).hexdigest() and taken.bytes == len(data)
    assert item.state == "planned"
    assert [(j.name, j.params["to"], j.state) for j in ledger.jobs_of(item.id)] == [
        ("clip.de", "de", "queued"),
        ("clip.es", "es", "queued"),
    ]
    assert ledger.jobs_of(item.id)[0].params["seconds"] == pytest.approx(7, abs=0.1)


async def test_ingest_file_touched_repeatedly_is_one_item(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    target = world / "in" / "clip.mp4"
    shutil.copy(media["video.mp4"], target)
    async with ingesting(rules(world, dub_rule(world)), ledger):
        await until(lambda: items(ledger), what="the item")
        for _ in range(5):
            os.utime(target)  # an indexer, a sync client, a curious user
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.2)
    assert len(items(ledger)) == 1


async def test_ingest_ignored_hidden_linked_and_special_files_never_become_items(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    inbox = world / "in"
    for name in (".hidden.mp4", "~$clip.mp4", "clip.mp4.part", "x.tmp", "clip.crdownload", "Thumbs.db", "._clip.mp4"):
        shutil.copy(media["video.mp4"], inbox / name)
    (inbox / "@eaDir").mkdir()
    shutil.copy(media["video.mp4"], inbox / "@eaDir" / "thumb.mp4")
    (inbox / "link.mp4").symlink_to(media["video.mp4"])
    os.mkfifo(inbox / "pipe.mp4")
    shutil.copy(media["video.mp4"], inbox / "real.mp4")
    async with ingesting(rules(world, dub_rule(world, ", recursive: true")), ledger):
        await until(lambda: items(ledger), what="the one real file")
        await asyncio.sleep(1.5)  # a rescan or two more
    assert [i.key for i in items(ledger)] == ["real"]


async def test_ingest_facedub_pairs_by_stem_case_insensitively(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    shutil.copy(media["jpeg"], world / "in" / "Alice.JPG")
    shutil.copy(media["video.mp4"], world / "in" / "alice.mp4")
    shutil.copy(media["png"], world / "in" / "bob.png")
    async with ingesting(rules(world, face_rule(world, "{pair_timeout: 30s}")), ledger):
        (item,) = await until(lambda: items(ledger), what="the pair")  # type: ignore[misc]
        await asyncio.sleep(1.0)
        assert len(items(ledger)) == 1  # bob waits for his video
    assert sorted((i.role, i.name) for i in ledger.inputs_of(item.id)) == [
        ("photo", "Alice.JPG"),
        ("video", "alice.mp4"),
    ]
    (job,) = ledger.jobs_of(item.id)
    assert job.name == "Alice.facedub" and job.params == {"duration": 3}  # auto: 3.02 s is a 3 s clip


async def test_ingest_lone_file_is_unpaired_after_timeout(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    shutil.copy(media["jpeg"], world / "in" / "carol.jpg")
    async with ingesting(rules(world, face_rule(world, "{pair_timeout: 1s}")), ledger):
        (item,) = await until(lambda: items(ledger), what="the timeout")  # type: ignore[misc]
    (job,) = ledger.jobs_of(item.id)
    assert (item.state, item.reason, job.name, job.state) == ("planned", "unpaired", "carol.facedub", "failed")
    assert job.failure is not None and job.failure.stage == "pair" and "no video" in job.failure.message


async def test_ingest_folder_batch_needs_its_marker_and_makes_photo_x_video_jobs(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    batch = world / "in" / "shoot1"
    batch.mkdir()
    for name in ("a.jpg", "b.png"):
        shutil.copy(media["jpeg" if name.endswith("jpg") else "png"], batch / name)
    for name in ("x.mp4", "y.mov"):
        shutil.copy(media["video.mp4" if name.endswith("mp4") else "speech.mov"], batch / name)
    async with ingesting(rules(world, face_rule(world, "{pair_by: folder, done_marker: READY}")), ledger):
        await asyncio.sleep(1.5)
        assert items(ledger) == []  # complete only when READY appears
        (batch / "READY").touch()
        (item,) = await until(lambda: items(ledger), what="the batch")  # type: ignore[misc]
    names = sorted(j.name for j in ledger.jobs_of(item.id))
    assert names == ["shoot1/a+x.facedub", "shoot1/a+y.facedub", "shoot1/b+x.facedub", "shoot1/b+y.facedub"]
    assert {j.params["duration"] for j in ledger.jobs_of(item.id)} == {3, 2}


async def test_ingest_folder_batch_over_the_cap_is_refused(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    batch = world / "in" / "big"
    batch.mkdir()
    for n in range(3):
        shutil.copy(media["jpeg"], batch / f"p{n}.jpg")
        shutil.copy(media["video.mp4"], batch / f"v{n}.mp4")
    async with ingesting(rules(world, face_rule(world, "{pair_by: folder, max_jobs_per_folder: 8}")), ledger):
        (item,) = await until(lambda: items(ledger), what="the refusal")  # type: ignore[misc]
    assert item.reason == "too_many_jobs"
    assert "9 jobs" in str(ledger.jobs_of(item.id)[0].failure)


@pytest.mark.parametrize("bad", ["notes.mp4", "truncated.mp4"])
async def test_ingest_invalid_media_is_failed_at_validate(
    world: Path, ledger: Ledger, media: dict[str, Path], bad: str
) -> None:
    shutil.copy(media[bad], world / "in" / "clip.mp4")
    async with ingesting(rules(world, dub_rule(world)), ledger):
        (item,) = await until(lambda: items(ledger), what="the failure")  # type: ignore[misc]
    jobs = ledger.jobs_of(item.id)
    assert item.state == "planned" and item.reason == "invalid"
    assert [j.name for j in jobs] == ["clip.de", "clip.es"]
    assert all(
        j.state == "failed" and j.failure is not None and j.failure.stage == "validate" and j.failure.code == "invalid"
        for j in jobs
    )


async def test_ingest_duplicate_of_delivered_content_is_caught(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    shutil.copy(media["video.mp4"], world / "in" / "first.mp4")
    config = rules(world, dub_rule(world))
    async with ingesting(config, ledger):
        (first,) = await until(lambda: items(ledger), what="the first item")  # type: ignore[misc]
        deliver(ledger, first)
        shutil.copy(media["video.mp4"], world / "in" / "again.mp4")
        await until(lambda: refused(ledger), what="the duplicate")
    (dup,) = refused(ledger)
    job = ledger.jobs_of(dup.id)[0]
    assert job.failure is not None and job.failure.earlier is not None
    assert dup.reason == "duplicate" and job.failure.code == "duplicate"
    assert job.failure.earlier.remote_id == "r-first.de"
    assert job.failure.earlier.sidecar == str(world / "out" / "first.de.result.json")


async def test_ingest_duplicate_is_processed_again_when_asked(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    shutil.copy(media["video.mp4"], world / "in" / "first.mp4")
    async with ingesting(rules(world, dub_rule(world, ", reprocess_duplicates: true")), ledger):
        (first,) = await until(lambda: items(ledger), what="the first item")  # type: ignore[misc]
        deliver(ledger, first)
        shutil.copy(media["video.mp4"], world / "in" / "again.mp4")
        (second,) = await until(lambda: ledger.items_in("planned"), what="the second item")  # type: ignore[misc]
    assert second.reason is None and {j.state for j in ledger.jobs_of(second.id)} == {"queued"}


async def test_ingest_taken_job_name_gets_a_suffix(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    (world / "out" / "clip.de.result.json").write_text("{}")  # someone else's result
    shutil.copy(media["video.mp4"], world / "in" / "clip.mp4")
    async with ingesting(rules(world, dub_rule(world)), ledger):
        (item,) = await until(lambda: items(ledger), what="the item")  # type: ignore[misc]
    assert [j.name for j in ledger.jobs_of(item.id)] == ["clip-2.de", "clip-2.es"]


async def test_ingest_removed_inbox_pauses_and_resumes(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    async with ingesting(rules(world, dub_rule(world)), ledger) as ingestion:
        (watched,) = ingestion.inboxes.values()
        shutil.move(world / "in", world / "in.away")  # the share drops
        await until(lambda: watched.paused, what="the pause")
        assert "missing" in str(watched.paused) and ledger.counts() == {}
        assert not (world / "in").exists()  # nothing was written where the share was
        shutil.copy(media["video.mp4"], world / "in.away" / "clip.mp4")
        shutil.move(world / "in.away", world / "in")  # it comes back
        await until(lambda: watched.paused is None, what="the resume")
        await until(lambda: items(ledger), what="the item after the return")


async def test_ingest_missing_outbox_on_another_device_pauses(world: Path, ledger: Ledger) -> None:
    config = rules(
        world, f"  - {{name: dub, inbox: {world}/in, outbox: /proc/ugcwatchd-outbox, dublab: {{to: [de]}}}}\n"
    )
    async with ingesting(config, ledger) as ingestion:
        (watched,) = ingestion.inboxes.values()
        await until(lambda: watched.paused, what="the pause")
    assert "is its share mounted" in str(watched.paused)


async def test_ingest_poll_mode_needs_no_inotify(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    async with ingesting(rules(world, dub_rule(world, ", watch_mode: poll")), ledger) as ingestion:
        shutil.copy(media["voice.mp3"], world / "in" / "voice.mp3")
        await until(lambda: items(ledger), what="the item")
        assert ingestion._observer is None  # no watchdog observer, no inotify watch at all
        assert all(i.poll for i in ingestion.inboxes.values())


async def test_ingest_new_glob_match_is_picked_up(tmp_path: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    (tmp_path / "acme" / "in").mkdir(parents=True)
    config = rules(tmp_path, f"  - {{name: dub, inbox: '{tmp_path}/*/in', dublab: {{to: [de]}}}}\n")
    async with ingesting(config, ledger) as ingestion:
        (tmp_path / "zeta" / "in").mkdir(parents=True)
        shutil.copy(media["video.mp4"], tmp_path / "zeta" / "in" / "clip.mp4")
        (item,) = await until(lambda: items(ledger), what="the new client's item")  # type: ignore[misc]
        assert len(ingestion.inboxes) == 2
    assert item.outbox == str(tmp_path / "zeta" / "outbox")  # created beside the inbox, same device


async def test_ingest_kept_input_touched_after_delivery_is_not_taken_again(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    target = world / "in" / "clip.mp4"
    shutil.copy(media["video.mp4"], target)
    async with ingesting(rules(world, dub_rule(world, ", on_success: keep")), ledger):
        (item,) = await until(lambda: items(ledger), what="the item")  # type: ignore[misc]
        deliver(ledger, item)  # delivered; on_success: keep leaves the file where it is
        os.utime(target)
        await asyncio.sleep(1.5)
    assert len(items(ledger)) == 1


async def test_ingest_failed_input_dropped_back_is_a_retry(world: Path, ledger: Ledger, media: dict[str, Path]) -> None:
    shutil.copy(media["truncated.mp4"], world / "in" / "clip.mp4")
    async with ingesting(rules(world, dub_rule(world)), ledger):
        (item,) = await until(lambda: items(ledger), what="the failure")  # type: ignore[misc]
        await asyncio.sleep(1.0)
        assert len(items(ledger)) == 1  # still in the inbox, but its item is open: not taken again
        (world / "out" / "failed").mkdir()
        shutil.move(world / "in" / "clip.mp4", world / "out" / "failed" / "clip.mp4")  # on_failure: move
        deliver(ledger, item, "failed")
        await asyncio.sleep(0.5)
        shutil.move(world / "out" / "failed" / "clip.mp4", world / "in" / "clip.mp4")  # mv keeps the mtime
        await until(lambda: len(items(ledger)) == 2, what="the retry")


async def test_ingest_folder_batch_without_marker_completes_when_quiet(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    batch = world / "in" / "shoot2"
    batch.mkdir()
    async with ingesting(rules(world, face_rule(world, "{pair_by: folder}", ", stable_after: 2s")), ledger):
        shutil.copy(media["jpeg"], batch / "a.jpg")
        await asyncio.sleep(0.3)  # well within stable_after: the folder is still being filled
        shutil.copy(media["video.mp4"], batch / "x.mp4")
        (item,) = await until(lambda: items(ledger), what="the quiet batch")  # type: ignore[misc]
    assert [j.name for j in ledger.jobs_of(item.id)] == ["shoot2/a+x.facedub"]
    assert item.reason is None


async def test_ingest_folder_batch_quiet_too_long_is_taken_as_it_is(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    batch = world / "in" / "shoot3"
    batch.mkdir()
    async with ingesting(rules(world, face_rule(world, "{pair_by: folder}")), ledger):
        shutil.copy(media["jpeg"], batch / "a.jpg")  # and nothing else for longer than stable_after
        (item,) = await until(lambda: items(ledger), what="the batch")  # type: ignore[misc]
    assert item.reason == "unpaired"
    assert "has no video" in str(ledger.jobs_of(item.id)[0].failure)


async def test_ingest_file_dropped_where_another_just_left_waits_its_own_stable_after(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    """A stale 'stable' observation of a file that left never judges the new file at its path."""
    config = rules(world, dub_rule(world, ", watch_mode: poll, stable_after: 1s, rescan_every: 30s"))
    inbox = InboxIngest(config.inboxes()[0], ledger, poll=True)
    clip = world / "in" / "clip.mp4"
    shutil.copy(media["video.mp4"], clip)
    await inbox.tick()
    inbox.stability.stable_after = 0.0  # the first file's observation is now "stable"…
    first = inbox.stability.seen("clip.mp4")
    assert first is not None
    clip.rename(world / "elsewhere.mp4")  # …it leaves, and another file arrives at its path at once
    shutil.copy(media["long.mp4"], clip)
    assert await inbox.tick() == 0  # judged by a fresh observation: not the same file, so not taken now
    fresh = inbox.stability.seen("clip.mp4")
    assert fresh is not None and fresh.signature != first.signature
    assert items(ledger) == []
    await inbox.tick()  # observed again, unchanged: now it is stable on its own account
    (item,) = items(ledger)
    (taken,) = ledger.inputs_of(item.id)
    st = clip.stat()
    assert (taken.bytes, taken.mtime_ns, taken.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert taken.sha256 == hashlib.sha256(clip.read_bytes()).hexdigest()


async def test_ingest_content_under_way_in_another_daemon_is_not_taken_again(
    world: Path, ledger: Ledger, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A daemon whose claim lapsed (restarting, frozen) left its job's status sidecar: the same bytes are
    not planned here, whatever the claim says, until that job is no longer open."""
    config = rules(world, dub_rule(world, ", watch_mode: poll"))
    clip = world / "in" / "clip.mp4"
    shutil.copy(media["video.mp4"], clip)
    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    status = world / "out" / "clip.de.status.json"
    status.write_text(json.dumps({"kind": "status", "job": "clip.de", "inputs": [{"name": "clip.mp4", "sha256": sha}]}))
    inbox = InboxIngest(config.inboxes()[0], ledger, poll=True)
    inbox.stability.stable_after = 0.0
    for _ in range(3):
        assert await inbox.tick() == 0
    assert items(ledger) == []
    assert sum("under way elsewhere" in r.message for r in caplog.records) == 1  # said once, not every tick
    status.unlink()  # the other daemon's job ended (and it would have moved the file away)
    assert await inbox.tick() == 1
    (item,) = items(ledger)
    assert [j.name for j in ledger.jobs_of(item.id)] == ["clip.de", "clip.es"]


async def test_ingest_inbox_replaced_by_a_link_pauses_and_takes_nothing(
    world: Path, ledger: Ledger, media: dict[str, Path]
) -> None:
    config = rules(world, dub_rule(world, ", watch_mode: poll"))
    elsewhere = world / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(media["video.mp4"], elsewhere / "foreign.mp4")
    inbox = InboxIngest(config.inboxes()[0], ledger, poll=True)
    inbox.stability.stable_after = 0.0
    (world / "in").rmdir()
    (world / "in").symlink_to(elsewhere)  # someone's other folder now stands where the inbox was
    for _ in range(3):
        assert await inbox.tick() == 0
    assert inbox.paused is not None and "symbolic link" in inbox.paused
    assert items(ledger) == [] and (elsewhere / "foreign.mp4").exists()


async def test_ingest_one_plan_the_outbox_refuses_never_stops_the_others(
    world: Path, ledger: Ledger, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    config = rules(world, dub_rule(world, ", watch_mode: poll, recursive: true"))
    (world / "out" / "sub").write_text("a file where the subfolder's sidecars would go")
    (world / "in" / "sub").mkdir()
    shutil.copy(media["video.mp4"], world / "in" / "sub" / "clip.mp4")
    shutil.copy(media["speech.mov"], world / "in" / "other.mov")
    inbox = InboxIngest(config.inboxes()[0], ledger, poll=True)
    inbox.stability.stable_after = 0.0
    for _ in range(3):
        await inbox.tick()
    assert [i.key for i in items(ledger)] == ["other"]
    assert sum("cannot be planned now" in r.message for r in caplog.records) == 1
