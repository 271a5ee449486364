"""In-process lifecycle tests: the real stages, ledger and outbox; the provider answers through
``httpx.MockTransport`` and time moves only when the test says so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ManualClock
from ugcwatchd.daemon import build_providers
from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.ledger import InputFile, Item, ItemSettings, Ledger, PlannedJob
from ugcwatchd.lifecycle import Lifecycle
from ugcwatchd.outbox.files import Anchor
from ugcwatchd.rules import Config, load_rules
from ugcwatchd.settings import Settings

Answer = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeFaceDub:
    """FaceDub as its document describes the answers, scripted per test; every request is kept."""

    credits: int = 100
    jobs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    on_post: Answer | None = None  # overrides the normal POST /jobs answer
    on_download: Answer | None = None
    on_usage: Answer | None = None
    next_id: int = 1
    now: Callable[[], float] = lambda: 0.0  # the provider's clock: created_at of new jobs

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.url.host == "cdn.example":
            if self.on_download is not None:
                return self.on_download(request)
            # A stream, as a real transport gives: the download reads it raw, chunk by chunk.
            headers = {"Content-Length": str(len(MP4)), "Content-Type": "video/mp4"}
            return httpx.Response(200, stream=httpx.ByteStream(MP4), headers=headers)
        if path == "/usage":
            if self.on_usage is not None:
                return self.on_usage(request)
            usage = {"plan": "pro", "credits_used": 0, "credits_limit": 100, "credits_remaining": self.credits}
            return httpx.Response(200, json=usage)
        if path == "/jobs" and request.method == "GET":
            return httpx.Response(200, json=list(reversed(self.jobs))[:50])
        if path == "/jobs" and request.method == "POST":
            request.read()
            if self.on_post is not None:
                return self.on_post(request)
            return httpx.Response(200, json=self.create(request))
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def create(self, request: httpx.Request, created_at: float | None = None) -> dict[str, Any]:
        duration = int(request.content.split(b'name="duration"\r\n\r\n')[1].split(b"\r\n")[0])
        job = {
            "id": f"j{self.next_id}",
            "status": "queued",
            "created_at": int(created_at if created_at is not None else self.now()),
            "duration_seconds": duration,
        }
        self.next_id += 1
        self.jobs.append(job)
        return {"job_id": job["id"], "status": "queued", "credits_charged": (duration + 4) // 5}

    def finish(self, job_id: str, *, failed: bool = False) -> None:
        for job in self.jobs:
            if job["id"] == job_id:
                job["status"] = "failed" if failed else "completed"
                job["error"] = "face not found" if failed else None
                job["output_url"] = None if failed else f"https://cdn.example/{job_id}.mp4"
                job["credits_charged"] = 1

    def posts(self) -> int:
        return sum(1 for r in self.requests if r.method == "POST" and r.url.path == "/jobs")


# The smallest thing that passes for an MP4: an ftyp box.
MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64


@dataclass
class World:
    root: Path
    ledger: Ledger
    lifecycle: Lifecycle
    clock: ManualClock
    fake: FakeFaceDub

    @property
    def inbox(self) -> Path:
        return self.root / "faces" / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "faces" / "outbox"

    def drop_pair(self, stem: str, media: dict[str, Path], *, outbox: Path | None = None) -> Item:
        """An item as ingestion records it: a photo and a video taken from the inbox, one queued job."""
        photo, video = self.inbox / f"{stem}.jpg", self.inbox / f"{stem}.mp4"
        shutil.copy(media["jpeg"], photo)
        shutil.copy(media["video.mp4"], video)
        inputs = [
            InputFile(role, str(p), p.name, sha256_of(p), st.st_size, st.st_mtime_ns, mime, seconds, st.st_ino)
            for role, p, mime, seconds in (("photo", photo, "image/jpeg", None), ("video", video, "video/mp4", 3.0))
            if (st := p.stat())
        ]
        job = PlannedJob(f"{stem}.facedub", f"key-{stem}", {"duration": 3}, estimate=1)
        outbox = outbox or self.outbox
        folders = {"outbox": outbox, "archive": outbox / "originals", "failed": outbox / "failed"}
        anchors = {k: (a.path, a.dev, a.ino) for k, f in folders.items() if (a := Anchor.of(f))}
        settings = ItemSettings("archive", "move", str(folders["archive"]), str(folders["failed"]), anchors)
        return self.ledger.add_item(
            rule="faces",
            provider="facedub",
            inbox=str(self.inbox),
            outbox=str(outbox),
            key=stem,
            inputs=inputs,
            jobs=[job],
            settings=settings,
        )

    async def settle(self) -> None:
        """One dispatch tick, and every submission it started finished."""
        await self.lifecycle.dispatch()
        await self.lifecycle.drain(10.0)

    def sidecar(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.outbox / name).read_text())
        return data


@pytest.fixture
def world(tmp_path: Path, ledger_where: Path | str) -> Iterator[World]:
    """The lifecycle over a fake FaceDub, on each ledger backend."""
    (tmp_path / "faces" / "inbox").mkdir(parents=True)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "providers:\n"
        "  facedub: {base_url: 'https://api.facedub.example', api_key: fdb_test, poll_every: 1s}\n"
        "rules:\n"
        f"  - {{name: faces, inbox: {tmp_path}/faces/inbox, outbox: {tmp_path}/faces/outbox, facedub: {{}}}}\n"
    )
    yield from lifecycle_world(tmp_path, load_rules(rules), ledger_where)


def lifecycle_world(
    root: Path, config: Config, ledger_where: Path | str, now: float = 1_800_000_000.0
) -> Iterator[World]:
    """The lifecycle of ``config`` over a fake FaceDub and a manual clock at ``now``; the ledger closed after."""
    clock = ManualClock(now)
    fake = FakeFaceDub(now=clock)
    providers = build_providers(config, Settings(), transport=httpx.MockTransport(fake))
    for ps in providers.values():
        # Waiting for a job slot re-reads the list this often (seconds of real time in a test).
        ps.provider.slot_poll = 0.01  # type: ignore[attr-defined]
    ledger = Ledger(ledger_where, clock=clock)
    yield World(root, ledger, Lifecycle(config, ledger, providers, clock=clock), clock, fake)
    ledger.close()
