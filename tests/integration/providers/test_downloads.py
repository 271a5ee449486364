"""Result downloads against the sandbox's misbehaving result links (``--download-mode``): only https (this
machine only while the provider is on it), a size cap and an overall deadline, redirects checked, and a
file kept only when it is the media it claims to be. Nothing half-fetched is ever left behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.support import wait_for
from ugcwatchd.errors import DownloadFailed, Rejected, Transient
from ugcwatchd.lifecycle.disposition import DOWNLOAD_TRIES, Fail, Retry, Step, decide
from ugcwatchd.providers.facedub import FaceDub, FaceDubClient
from ugcwatchd.providers.transfer import DownloadLimits
from ugcwatchd.rules import FaceDubProvider
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.states import ErrorCode

from ..conftest import FD_KEY, SandboxFactory, facedub

pytestmark = pytest.mark.anyio


def finished_job(sandbox: Sandbox, media: dict[str, Path]) -> str:
    """A completed job's ``output_url``, made with the sandbox's own API."""
    with facedub(sandbox) as raw:
        files = {
            "character_photo": ("p.jpg", media["jpeg"].read_bytes()),
            "reference_video": ("v.mp4", media["video.mp4"].read_bytes()),
        }
        job_id = raw.post("/jobs", files=files, data={"duration": "3"}).json()["job_id"]
        url: str = wait_for(lambda: raw.get(f"/jobs/{job_id}").json()["output_url"], what="the job to complete")
    return url


def cdn_gets(sandbox: Sandbox) -> int:
    return sum(
        sum(by.values()) for route, by in sandbox.stats["facedub"].answers.items() if route.startswith("GET /cdn")
    )


def client(sandbox: Sandbox, **limits: object) -> FaceDubClient:
    options: dict[str, object] = {"loopback": True, **limits}
    return FaceDubClient(sandbox.urls["facedub"], SecretStr(FD_KEY), download_limits=DownloadLimits(**options))  # type: ignore[arg-type]


def left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


async def test_download_huge_content_length_is_refused_before_reading_and_retried(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01, download_mode="huge")
    url = finished_job(sandbox, media)
    started = time.monotonic()
    async with client(sandbox) as fd:  # the default cap, 20 GiB, against 10^12 announced bytes
        with pytest.raises(DownloadFailed, match="larger than max_download_bytes") as failed:
            await fd.download(url, outbox / "a.facedub.mp4")
    assert time.monotonic() - started < 1.5  # refused on the header, not after a drip of 1 KiB every 2 s
    assert left_behind(outbox) == []
    assert isinstance(decide(failed.value, Step.DOWNLOAD, 1), Retry)
    assert decide(failed.value, Step.DOWNLOAD, DOWNLOAD_TRIES) == Fail(ErrorCode.DOWNLOAD_FAILED, retryable=True)


async def test_download_announced_past_a_small_max_bytes_fails_and_leaves_nothing(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01)
    url = finished_job(sandbox, media)
    async with client(sandbox, max_bytes=1024) as fd:
        with pytest.raises(DownloadFailed, match="larger than max_download_bytes"):
            await fd.download(url, outbox / "a.facedub.mp4")
    assert left_behind(outbox) == []


async def test_download_slower_than_download_timeout_fails_within_the_deadline(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01, download_mode="slow")
    url = finished_job(sandbox, media)
    started = time.monotonic()
    async with client(sandbox, timeout=1.5) as fd:
        with pytest.raises(DownloadFailed, match=r"took longer than download_timeout \(1.5 s\)") as failed:
            await fd.download(url, outbox / "a.facedub.mp4")
    assert 1.4 < time.monotonic() - started < 4
    assert left_behind(outbox) == []
    assert isinstance(decide(failed.value, Step.DOWNLOAD, 1), Retry)


async def test_download_redirect_without_location_is_a_failure_not_a_video(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01, download_mode="redirect-html")
    url = finished_job(sandbox, media)
    async with client(sandbox) as fd:
        with pytest.raises(DownloadFailed) as failed:
            await fd.download(url, outbox / "a.facedub.mp4")
    assert failed.value.status == 302 and "Moved" in (failed.value.provider_error or "")
    assert left_behind(outbox) == []


async def test_download_redirect_to_http_on_the_sandbox_is_followed_to_a_real_mp4(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01, download_mode="redirect-http")
    url = finished_job(sandbox, media)
    async with client(sandbox) as fd:
        written = await fd.download(url, outbox / "a.facedub.mp4")
    saved = (outbox / "a.facedub.mp4").read_bytes()
    assert written == len(saved) > 1000 and saved[4:8] == b"ftyp"
    assert cdn_gets(sandbox) == 2  # the redirect and its target
    assert left_behind(outbox) == ["a.facedub.mp4"]


@pytest.mark.parametrize(("mode", "error"), [("truncated", Transient), ("error", DownloadFailed)])
async def test_download_cut_short_or_503_fails_as_a_download_and_never_pauses(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path, mode: str, error: type[Exception]
) -> None:
    sandbox = make_sandbox(job_seconds=0.01, download_mode=mode)
    url = finished_job(sandbox, media)
    async with client(sandbox) as fd:
        with pytest.raises(error) as failed:
            await fd.download(url, outbox / "a.facedub.mp4")
    assert isinstance(decide(failed.value, Step.DOWNLOAD, 1), Retry)
    assert left_behind(outbox) == []


async def test_download_loopback_link_from_a_remote_provider_is_refused_unfetched(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    """An answer of a provider on the internet cannot make the daemon read a local service."""
    sandbox = make_sandbox(job_seconds=0.01)
    url = finished_job(sandbox, media)
    async with FaceDubClient("https://api.facedub.test", SecretStr(FD_KEY)) as remote:
        for link in (url, url.replace("127.0.0.1", "localhost", 1)):
            with pytest.raises(Rejected, match="only https") as refused:
                await remote.download(link, outbox / "a.facedub.mp4")
    assert cdn_gets(sandbox) == 0 and left_behind(outbox) == []
    assert decide(refused.value, Step.DOWNLOAD, 1) == Fail(ErrorCode.DOWNLOAD_REFUSED)


async def test_download_normal_link_is_saved_whole(
    make_sandbox: SandboxFactory, media: dict[str, Path], outbox: Path
) -> None:
    sandbox = make_sandbox(job_seconds=0.01)
    url = finished_job(sandbox, media)
    async with client(sandbox) as fd:
        written = await fd.download(url, outbox / "a.facedub.mp4")
    assert written == (outbox / "a.facedub.mp4").stat().st_size and left_behind(outbox) == ["a.facedub.mp4"]


async def test_facedub_from_settings_download_limits_come_from_the_provider_block() -> None:
    block = FaceDubProvider(base_url="http://127.0.0.1:8787", max_download_bytes=4096, download_timeout=3.0)
    local = FaceDub.from_settings(block, SecretStr(FD_KEY))
    remote = FaceDub.from_settings(FaceDubProvider(), SecretStr(FD_KEY))
    try:
        assert local.client.download_limits == DownloadLimits(4096, 3.0, loopback=True)
        assert remote.client.download_limits == DownloadLimits(20 * 1024**3, 1800.0, loopback=False)
    finally:
        await local.aclose()
        await remote.aclose()
