"""The clients and adapters against a sandbox that answers oddly: malformed 200s (``--odd-answers``), an
absurd ``Retry-After`` (``--retry-after``) and expired presigned upload URLs (``--upload-expires``)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.support import ManualClock
from ugcwatchd.errors import AuthRejected, OddAnswer, RateLimited, Transient, UploadRefused
from ugcwatchd.lifecycle.disposition import UPLOAD_TRIES, Fail, Retry, Step, decide
from ugcwatchd.providers.base import Intent
from ugcwatchd.providers.dublab import DubLab, DubLabClient
from ugcwatchd.providers.facedub import FaceDub, FaceDubClient
from ugcwatchd.providers.http import RETRY_AFTER_CAP
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.states import ErrorCode, FailStage

from ..conftest import DL_KEY, FD_KEY, SandboxFactory, dublab, facedub
from .test_adapters import Hooks, dub_spec, face_spec

pytestmark = pytest.mark.anyio


def raw_job(sandbox: Sandbox, media: dict[str, Path], duration: int = 5) -> str:
    with facedub(sandbox) as raw:
        files = {
            "character_photo": ("p.jpg", media["jpeg"].read_bytes()),
            "reference_video": ("v.mp4", media["video.mp4"].read_bytes()),
        }
        job_id: str = raw.post("/jobs", files=files, data={"duration": str(duration)}).json()["job_id"]
    return job_id


def odd_kinds(sandbox: Sandbox, service: str) -> set[str]:
    return {route.split("(odd ")[1].rstrip(")") for route in sandbox.stats[service].answers if "(odd " in route}


def client_fd(sandbox: Sandbox) -> FaceDubClient:
    return FaceDubClient(sandbox.urls["facedub"], SecretStr(FD_KEY), retry_base=0.01)


def client_dl(sandbox: Sandbox) -> DubLabClient:
    return DubLabClient(sandbox.urls["dublab"], SecretStr(DL_KEY), retry_base=0.01)


# -- malformed 200 answers ------------------------------------------------------------------------------


async def test_account_reads_odd_answers_are_odd_answer_saying_what_never_a_crash(
    make_sandbox: SandboxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = make_sandbox(odd_answers=1.0, seed=3)
    caplog.set_level(logging.DEBUG, logger="ugcwatchd.providers")
    async with client_fd(sandbox) as fd, client_dl(sandbox) as dl:
        for _ in range(4):
            for read in (fd.usage(), dl.me()):
                with pytest.raises(OddAnswer) as odd:
                    await read
                assert isinstance(odd.value, Transient) and not odd.value.outcome_unknown
                assert "does not describe" in str(odd.value) or "not with JSON" in str(odd.value)
    assert odd_kinds(sandbox, "facedub") == odd_kinds(sandbox, "dublab") == {"html", "missing", "wrong-type"}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([m for m in warned if "GET /usage" in m]) == 1  # once, however often it comes
    assert len([m for m in warned if "GET /api/v1/me" in m]) == 1


async def test_facedub_refresh_odd_record_is_not_listed_this_time_never_missing(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    """Two jobs, every list answer odd: one record spoiled at a time, the other job still reported."""
    sandbox = make_sandbox(odd_answers=1.0, seed=11, job_seconds=30)
    ours = {raw_job(sandbox, media), raw_job(sandbox, media, 7)}
    provider = FaceDub(client_fd(sandbox), slot_poll=0.05)
    seen: list[set[str]] = []
    try:
        for _ in range(12):
            await asyncio.sleep(0.06)  # past the cached list
            try:
                states = await provider.refresh(sorted(ours))
            except OddAnswer:
                continue  # an HTML page: the whole poll is tried again next time
            assert all(s.state != "missing" for s in states.values()), states
            assert states, "one odd record took every job with it"
            seen.append(set(states))
    finally:
        await provider.aclose()
    assert any(len(s) == 1 for s in seen)  # a spoiled record was left out, not asked for as missing
    asked_alone = sandbox.stats["facedub"].answers.get("GET /jobs/{id}", {})
    assert set(asked_alone) <= {"200"}  # a record without an id is asked for alone: found, not a 404


async def test_dublab_refresh_odd_record_is_not_listed_this_time_never_missing(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(odd_answers=1.0, seed=5, job_seconds=30)
    provider = DubLab(client_dl(sandbox))
    try:
        ours = [
            await provider.submit(dub_spec(media, f"ugc-00000000000{n}", to), Hooks())
            for n, to in ((1, "de"), (2, "es"))
        ]
        outcomes = []
        for _ in range(12):
            try:
                states = await provider.refresh(ours)
            except OddAnswer:
                outcomes.append("odd")
                continue
            assert all(s.state != "missing" for s in states.values()), states
            outcomes.append(str(len(states)))
    finally:
        await provider.aclose()
    assert "1" in outcomes  # one record spoiled: only its own dub sat this poll out


async def test_facedub_reconcile_with_an_unreadable_record_never_concludes_none(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    """Absence is proven only by a list that can be read whole: an odd record may be ours."""
    sandbox = make_sandbox(odd_answers=0.5, seed=2, job_seconds=30)
    sent_at = time.time()
    job_id = raw_job(sandbox, media, 5)
    provider = FaceDub(client_fd(sandbox))
    intent = Intent(face_spec(media, "ugc-0000000000aa", 5), sent_at, "create")
    outcomes = []
    try:
        for _ in range(16):
            try:
                found = await provider.reconcile(intent, set())
            except OddAnswer:
                outcomes.append("odd")
                continue
            assert (found.outcome, found.remote_id) == ("adopt", job_id)
            outcomes.append("adopt")
    finally:
        await provider.aclose()
    assert {"odd", "adopt"} <= set(outcomes)
    assert isinstance(decide(OddAnswer("facedub", "x"), Step.RECONCILE, 1), Retry)


async def test_dublab_reconcile_with_our_record_unreadable_waits_instead_of_starting_afresh(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(odd_answers=0.6, seed=9, job_seconds=30)
    provider = DubLab(client_dl(sandbox))
    spec = dub_spec(media, "ugc-0000000000bb")
    try:
        hooks = Hooks()
        file_id = await provider.submit(spec, hooks)
        outcomes = []
        for _ in range(16):
            try:
                found = await provider.reconcile(hooks.intent(spec), set())
            except OddAnswer:
                outcomes.append("odd")
                continue
            assert (found.outcome, found.remote_id) == ("adopt", file_id)
            outcomes.append("adopt")
    finally:
        await provider.aclose()
    assert {"odd", "adopt"} <= set(outcomes)


async def test_facedub_create_job_odd_200_leaves_the_outcome_unknown() -> None:
    page = httpx.Response(200, text="<html>Just a moment</html>", headers={"Content-Type": "text/html"})
    async with FaceDubClient("https://fd.test", SecretStr(FD_KEY), transport=httpx.MockTransport(lambda r: page)) as fd:
        with pytest.raises(OddAnswer) as odd:
            await fd.create_api_key("x")
    disposition = decide(odd.value, Step.SUBMIT, 1)
    assert odd.value.outcome_unknown and isinstance(disposition, Retry) and disposition.reconcile


# -- Retry-After: 86400 ----------------------------------------------------------------------------------


def fill_post_window(sandbox: Sandbox) -> None:
    """Ten refused POST /jobs: each still counts in the sandbox's window, so the next one is a 429."""
    with facedub(sandbox) as raw:
        for _ in range(10):
            assert raw.post("/jobs", data={"duration": "5"}).status_code == 400


async def test_facedub_client_retry_after_86400_is_capped_and_holds_only_its_class(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(retry_after=86400)
    fill_post_window(sandbox)
    async with client_fd(sandbox) as fd:
        with pytest.raises(RateLimited) as limited:
            await fd.create_job(media["jpeg"], media["video.mp4"], 5)
        assert limited.value.retry_after == RETRY_AFTER_CAP == 600.0
        waiting = asyncio.create_task(fd.windows.acquire("POST /jobs"))  # held off for 10 minutes
        try:
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(fd.list_jobs(), fd.usage()), timeout=5)
            assert time.monotonic() - started < 2 and not waiting.done()
        finally:
            waiting.cancel()


async def test_facedub_submit_long_retry_after_gives_the_job_back_instead_of_sleeping(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(retry_after=86400)
    fill_post_window(sandbox)
    provider = FaceDub(client_fd(sandbox))
    try:
        started = time.monotonic()
        with pytest.raises(RateLimited) as limited:
            await asyncio.wait_for(provider.submit(face_spec(media, "ugc-0000000000cc", 5), Hooks()), timeout=10)
        assert time.monotonic() - started < 3
        assert decide(limited.value, Step.SUBMIT, 1) == Retry(600.0)  # it waits in the queue, not in a lock
        assert await asyncio.wait_for(provider.refresh([]), timeout=2) == {}  # polling goes on meanwhile
        assert (await asyncio.wait_for(provider.account(), timeout=2)).remaining == 150
    finally:
        await provider.aclose()


# -- expired presigned upload URLs ----------------------------------------------------------------------


async def test_dublab_client_expired_upload_url_is_upload_refused_not_the_account(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    async with client_dl(timed_sandbox) as dl:
        init = await dl.init_dub(file_type="video/mp4", name="a.mp4", source_lang="en", dest_lang="de")
        clock.advance(901)
        with pytest.raises(UploadRefused) as refused:
            await dl.upload(init.uploadUrl, media["video.mp4"], "video/mp4")
    exc = refused.value
    assert not isinstance(exc, AuthRejected)
    assert exc.status == 403 and exc.provider_error == "AccessDenied: Request has expired"
    assert isinstance(decide(exc, Step.SUBMIT, 1), Retry)  # back to the queue for a fresh init-dub; no pause
    assert decide(exc, Step.SUBMIT, UPLOAD_TRIES) == Fail(ErrorCode.REJECTED, stage=FailStage.UPLOAD)


async def test_dublab_submit_after_an_expired_url_starts_afresh_with_a_new_record(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    class Expiring(Hooks):
        """The clock jumps past the URL's lifetime right before the first upload (a slow share)."""

        async def submitting(self, stage: str, remote_id: str | None) -> None:
            await super().submitting(stage, remote_id)
            if stage == "upload" and len(self.stages) == 2:
                clock.advance(901)

    provider = DubLab(client_dl(timed_sandbox))
    spec = dub_spec(media, "ugc-0000000000dd")
    try:
        with pytest.raises(UploadRefused):
            await provider.submit(spec, Expiring())
        file_id = await provider.submit(spec, Hooks())
        records = await provider.client.dubs()
    finally:
        await provider.aclose()
    assert len(records) == 2  # the abandoned record never started: it costs nothing
    started = [d.id for d in records if d.externalStatusId != 1]
    assert started == [file_id]
    with dublab(timed_sandbox) as raw:
        assert raw.get("/api/v1/me").json()["seconds"] == 3600
