"""The FaceDub and DubLab clients against the sandbox over loopback: every endpoint, every error row."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.errors import (
    AuthRejected,
    Conflict,
    Forbidden,
    NotFound,
    NotUploaded,
    OutOfCredits,
    ProviderError,
    RateLimited,
    Rejected,
    Transient,
    UploadRefused,
)
from ugcwatchd.providers.dublab import COMPLETED, DubLabClient
from ugcwatchd.providers.facedub import FaceDubClient
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.sandbox.media import probe_duration

from ..conftest import DL_KEY, DL_KEY2, FD_KEY, FD_KEY2, SandboxFactory, dublab, facedub

pytestmark = pytest.mark.anyio


class Recorder(httpx.AsyncBaseTransport):
    """The real transport, with every request's method, URL and headers written down."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def fd_client(sandbox: Sandbox, key: str = FD_KEY, **kw: object) -> FaceDubClient:
    return FaceDubClient(sandbox.urls["facedub"], SecretStr(key), **kw)  # type: ignore[arg-type]


def dl_client(sandbox: Sandbox, key: str = DL_KEY, **kw: object) -> DubLabClient:
    return DubLabClient(sandbox.urls["dublab"], SecretStr(key), **kw)  # type: ignore[arg-type]


async def completed(fd: FaceDubClient, job_id: str) -> None:
    for _ in range(200):
        if (await fd.get_job(job_id)).status == "completed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not complete")


# -- FaceDub endpoints -------------------------------------------------------------------------------


async def test_facedub_client_create_poll_download(sandbox: Sandbox, media: dict[str, Path], tmp_path: Path) -> None:
    recorder = Recorder()
    async with fd_client(sandbox, transport=recorder) as fd:
        created = await fd.create_job(media["png"], media["video.mp4"], 7)
        assert created.status == "queued" and created.credits_charged == 2 and not created.is_overage
        await completed(fd, created.job_id)
        listed = await fd.list_jobs()
        job = await fd.get_job(created.job_id)
        assert listed == [job] and job.duration_seconds == 7 and job.output_url
        assert job.output_url is not None
        written = await fd.download(job.output_url, tmp_path / "out.mp4")
    assert written == (tmp_path / "out.mp4").stat().st_size
    assert probe_duration(tmp_path / "out.mp4") == pytest.approx(7, abs=0.2)
    assert not list(tmp_path.glob(".*.part"))
    post = next(r for r in recorder.seen if r.method == "POST")
    assert post.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(post.headers["content-length"]) > media["video.mp4"].stat().st_size
    assert "transfer-encoding" not in post.headers
    cdn = next(r for r in recorder.seen if "/cdn/" in r.url.path)
    assert "authorization" not in cdn.headers  # the CDN link never gets the key


async def test_facedub_client_sends_real_file_names_and_types(sandbox: Sandbox, media: dict[str, Path]) -> None:
    captured: list[bytes] = []

    class Capture(Recorder):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                body = b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]
                captured.append(body)
                request = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            return await super().handle_async_request(request)

    async with fd_client(sandbox, transport=Capture()) as fd:
        await fd.create_job(media["webp"], media["speech.mov"], 2)
    head = captured[0][:2000] + captured[0][-400:]
    assert b'name="character_photo"; filename="photo.webp"\r\nContent-Type: image/webp' in captured[0]
    assert b'name="reference_video"; filename="speech.mov"\r\nContent-Type: video/quicktime' in captured[0]
    assert b'name="duration"\r\n\r\n2\r\n' in head


async def test_facedub_client_usage_and_api_keys(sandbox: Sandbox) -> None:
    async with fd_client(sandbox) as fd:
        usage = await fd.usage()
        assert (usage.plan, usage.credits_remaining, usage.credits_limit) == ("agency", 150, 150)
        new = await fd.create_api_key("Production Key")
        assert new.key.get_secret_value().startswith("fdb_") and new.key.get_secret_value() not in repr(new)
        assert {k.id for k in await fd.list_api_keys()} == {"key_sandbox1", new.id}
        await fd.revoke_api_key(new.id)
        assert [k.id for k in await fd.list_api_keys()] == ["key_sandbox1"]
        with pytest.raises(NotFound):
            await fd.revoke_api_key(new.id)


async def test_facedub_client_stream_follows_a_job_to_the_end(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as raw:
        token = raw.post("/sandbox/token").json()["token"]
    async with fd_client(sandbox) as fd:
        created = await fd.create_job(media["jpeg"], media["video.mp4"], 3)
        seen = [job.status async for job in fd.stream_job(created.job_id, token)]
        with pytest.raises(AuthRejected):
            async for _ in fd.stream_job(created.job_id, FD_KEY):
                pass
    assert seen[-1] == "completed" and len(seen) >= 2


# -- DubLab endpoints --------------------------------------------------------------------------------


async def test_dublab_client_full_dub_without_key_on_upload_host(sandbox: Sandbox, media: dict[str, Path]) -> None:
    recorder = Recorder()
    async with dl_client(sandbox, transport=recorder) as dl:
        me = await dl.me()
        assert me.seconds == 3600 and me.subscriptionStatus == "active"
        assert {"code": "de", "name": "German"} in [lang.model_dump() for lang in await dl.langs()]
        init = await dl.init_dub(
            file_type="video/mp4", name="clip.ugc-abc123.mp4", source_lang="auto", dest_lang="de", duration=3
        )
        await dl.upload(init.uploadUrl, media["video.mp4"], "video/mp4")
        await dl.start_dub(init.file.id)
        with pytest.raises(Conflict):
            await dl.start_dub(init.file.id)
        for _ in range(200):
            (dub,) = await dl.dubs()
            if dub.externalStatusId == COMPLETED:
                break
            await asyncio.sleep(0.05)
    assert dub.name == "clip.ugc-abc123.mp4" and dub.measuredDuration == 3
    put = next(r for r in recorder.seen if r.method == "PUT")
    assert put.url.host == "127.0.0.1" and str(put.url).startswith(sandbox.urls["uploads"])
    assert "apikey" not in put.headers and "authorization" not in put.headers
    assert put.headers["content-type"] == "video/mp4"
    assert put.headers["content-length"] == str(media["video.mp4"].stat().st_size)
    assert "transfer-encoding" not in put.headers


async def test_dublab_client_start_errors_are_classified(sandbox: Sandbox, media: dict[str, Path]) -> None:
    async with dl_client(sandbox) as dl, dl_client(sandbox, DL_KEY2) as other:
        init = await dl.init_dub(file_type="video/mp4", name="a.mp4", source_lang="en", dest_lang="de")
        with pytest.raises(NotUploaded) as not_uploaded:
            await dl.start_dub(init.file.id)
        assert not_uploaded.value.status == 412
        await dl.upload(init.uploadUrl, media["video.mp4"], "video/mp4")
        with pytest.raises(Forbidden):
            await other.start_dub(init.file.id)
        with pytest.raises(NotFound):
            await dl.start_dub("00000000-0000-0000-0000-000000000000")
        with dublab(sandbox) as raw:
            raw.post("/sandbox/account", json={"dispatch_down": True})
        with pytest.raises(Transient) as down:
            await dl.start_dub(init.file.id)
        assert down.value.status == 502 and down.value.outcome_unknown
        with dublab(sandbox) as raw:
            raw.post("/sandbox/account", json={"dispatch_down": False, "seconds": 0})
        with pytest.raises(OutOfCredits) as broke:
            await dl.start_dub(init.file.id)
        assert broke.value.status == 402 and broke.value.provider_error == "Insufficient credit balance"


async def test_dublab_client_upload_with_wrong_type_is_upload_refused(sandbox: Sandbox, media: dict[str, Path]) -> None:
    async with dl_client(sandbox) as dl:
        init = await dl.init_dub(file_type="video/mp4", name="a.mp4", source_lang="en", dest_lang="de")
        with pytest.raises(UploadRefused) as refused:
            await dl.upload(init.uploadUrl, media["video.mp4"], "video/quicktime")
    assert refused.value.status == 403 and "SignatureDoesNotMatch" in (refused.value.provider_error or "")


# -- the error table: every status the APIs answer, classified ---------------------------------------


async def test_client_400_is_rejected_with_the_providers_message(sandbox: Sandbox, media: dict[str, Path]) -> None:
    async with fd_client(sandbox) as fd, dl_client(sandbox) as dl:
        with pytest.raises(Rejected) as bad_media:
            await fd.create_job(media["notes.mp4"], media["video.mp4"], 5)
        with pytest.raises(Rejected) as bad_lang:
            await dl.init_dub(file_type="video/mp4", name="a.mp4", source_lang="en", dest_lang="auto")
    assert bad_media.value.status == 400 and "character_photo" in (bad_media.value.provider_error or "")
    assert "auto" in (bad_lang.value.provider_error or "")


@pytest.mark.parametrize("setting", [{"plan": "pro"}, {"suspended": True}])
async def test_client_403_on_the_account_is_auth_rejected(sandbox: Sandbox, setting: dict[str, object]) -> None:
    with facedub(sandbox) as raw:
        raw.post("/sandbox/account", json=setting)
    async with fd_client(sandbox) as fd:
        with pytest.raises(AuthRejected) as refused:
            await fd.usage()
    assert refused.value.status == 403


async def test_client_401_is_auth_rejected_and_never_shows_the_key(sandbox: Sandbox) -> None:
    async with fd_client(sandbox, "fdb_secret_never_shown") as fd, dl_client(sandbox, "dl_secret_never_shown") as dl:
        errors: list[ProviderError] = []
        for call in (fd.usage(), dl.me()):
            with pytest.raises(AuthRejected) as refused:
                await call
            errors.append(refused.value)
    for err in errors:
        assert err.status == 401
        text = f"{err} {err!r} {err.provider_error} {err.args}"
        assert "secret_never_shown" not in text


async def test_client_404_on_unknown_job_is_not_found(sandbox: Sandbox) -> None:
    async with fd_client(sandbox) as fd:
        with pytest.raises(NotFound):
            await fd.get_job("000000000000")


async def test_client_429_carries_retry_after(timed_sandbox: Sandbox, media: dict[str, Path]) -> None:
    async with fd_client(timed_sandbox) as fd:
        await fd.create_job(media["jpeg"], media["video.mp4"], 5)
        await fd.create_job(media["jpeg"], media["video.mp4"], 5)
        with pytest.raises(RateLimited) as limited:
            await fd.create_job(media["jpeg"], media["video.mp4"], 5)
    assert limited.value.status == 429 and limited.value.retry_after == 10
    assert fd.windows.waited == 0  # raised at once: the wait falls on the next request of the class


async def test_client_after_429_next_request_of_the_class_waits_retry_after() -> None:
    from ugcwatchd.providers.limits import RateWindows

    windows = RateWindows({"POST /jobs": 10})
    windows.hold_off("POST /jobs", 0.3)
    started = asyncio.get_running_loop().time()
    await windows.acquire("POST /jobs")
    assert asyncio.get_running_loop().time() - started >= 0.29
    await windows.acquire("POST /jobs")  # the hold is spent
    assert windows.waited == pytest.approx(0.3, abs=0.05)


async def test_client_5xx_after_sending_is_an_unknown_outcome(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(fail_rate=1.0, seed=1, job_seconds=0.01)
    outcomes = set()
    async with fd_client(sandbox, get_attempts=1) as fd:
        for _ in range(10):  # the tenth is the last the client's own POST window lets through at once
            try:
                await fd.create_job(media["jpeg"], media["video.mp4"], 5)
            except Transient as exc:
                assert exc.outcome_unknown  # 500, 502 or a dropped answer to a POST: it may have worked
                outcomes.add(exc.status)
            except RateLimited:
                break
        with pytest.raises(Transient) as on_get:
            await fd.list_jobs()
    assert outcomes >= {500, 502, None}
    assert not on_get.value.outcome_unknown  # a GET never leaves anything to reconcile


async def test_client_connection_refused_is_transient_and_surely_not_sent() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with FaceDubClient(f"http://127.0.0.1:{port}", SecretStr("fdb_x"), get_attempts=1) as fd:
        with pytest.raises(Transient) as refused:
            await fd.create_api_key("x")
    assert not refused.value.outcome_unknown and refused.value.status is None


async def test_client_get_retries_transient_failures(make_sandbox: SandboxFactory) -> None:
    sandbox = make_sandbox(fail_rate=0.5, seed=5)
    async with dl_client(sandbox, get_attempts=8, retry_base=0.01) as dl:
        for _ in range(10):
            assert (await dl.me()).seconds == 3600


async def test_client_other_users_resources_stay_invisible(sandbox: Sandbox, media: dict[str, Path]) -> None:
    async with fd_client(sandbox) as mine, fd_client(sandbox, FD_KEY2) as theirs:
        created = await mine.create_job(media["jpeg"], media["video.mp4"], 5)
        assert await theirs.list_jobs() == []
        with pytest.raises(NotFound):
            await theirs.get_job(created.job_id)


async def test_client_window_seeded_from_before_a_restart_stays_closed() -> None:
    from ugcwatchd.providers.limits import RateWindows

    windows = RateWindows({"POST /jobs": 3}, window_seconds=2)
    now = time.time()
    await windows.seed("POST /jobs", [now - 5, now - 1.5, now - 1.2, now - 1.0], now=now)  # three still count
    started = asyncio.get_running_loop().time()
    await windows.acquire("POST /jobs")
    waited = asyncio.get_running_loop().time() - started
    # Counted as if sent now (the safe side): the window, 2 s plus 1 s of slack, stays closed that long.
    assert 2.9 <= waited <= 4.5
