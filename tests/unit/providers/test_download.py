"""Result downloads on canned answers: what the sandbox cannot serve (https, endless bodies without a
Content-Length, redirect chains), and what every answer other than a whole 200 becomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from ugcwatchd.errors import AuthRejected, DownloadFailed, Rejected
from ugcwatchd.lifecycle.disposition import Fail, Retry, Step, decide
from ugcwatchd.providers.transfer import MAX_REDIRECTS, DownloadLimits, download
from ugcwatchd.states import ErrorCode

pytestmark = pytest.mark.anyio
MP4 = b"\x00\x00\x00\x20ftypisom" + b"\x00" * 2000
CDN = "https://cdn.facedub.test/out/1.mp4"


def serving(handle: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.AsyncClient, list[str]]:
    asked: list[str] = []

    def recorded(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return handle(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(recorded)), asked


async def endless(piece: bytes = b"\0" * 65536) -> AsyncIterator[bytes]:
    while True:
        yield piece


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    yield data


def answer(status: int, data: bytes = b"", **headers: str) -> httpx.Response:
    """An answer streamed as a server sends it (a canned body would count as read already)."""
    return httpx.Response(status, content=streamed(data), headers={"Content-Length": str(len(data)), **headers})


async def fetch(client: httpx.AsyncClient, target: Path, url: str = CDN, **limits: object) -> int:
    async with client:
        return await download(client, "facedub", url, target, DownloadLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


def nothing_left(folder: Path) -> bool:
    return not any(folder.iterdir())


async def test_download_without_content_length_is_counted_and_stopped_at_max_bytes(outbox: Path) -> None:
    client, _ = serving(lambda r: httpx.Response(200, content=endless()))
    with pytest.raises(DownloadFailed, match="larger than max_download_bytes"):
        await fetch(client, outbox / "a.mp4", max_bytes=1_000_000)
    assert nothing_left(outbox)


async def test_download_200_html_for_an_mp4_is_not_kept(outbox: Path) -> None:
    client, _ = serving(lambda r: answer(200, b"<html>Moved</html>"))
    with pytest.raises(DownloadFailed, match="not an MP4") as failed:
        await fetch(client, outbox / "a.mp4")
    assert nothing_left(outbox)
    assert isinstance(decide(failed.value, Step.DOWNLOAD, 1), Retry)


async def test_download_redirects_to_https_are_followed_up_to_five(outbox: Path) -> None:
    def hop(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("n", "0"))
        if n < MAX_REDIRECTS:
            return answer(302, Location=f"https://edge{n}.facedub.test/x.mp4?n={n + 1}")
        return answer(200, MP4)

    client, asked = serving(hop)
    assert await fetch(client, outbox / "a.mp4") == len(MP4)
    assert len(asked) == MAX_REDIRECTS + 1 and (outbox / "a.mp4").read_bytes() == MP4


async def test_download_six_redirects_fail(outbox: Path) -> None:
    client, asked = serving(lambda r: answer(301, Location="/again"))
    with pytest.raises(DownloadFailed, match="redirected more than 5 times"):
        await fetch(client, outbox / "a.mp4")
    assert len(asked) == MAX_REDIRECTS + 1 and nothing_left(outbox)


@pytest.mark.parametrize(
    "location", ["http://cdn.facedub.test/x.mp4", "http://127.0.0.1:9464/metrics", "https://localhost/x", "ftp://x/y"]
)
async def test_download_redirect_to_plain_http_or_this_machine_is_never_followed(outbox: Path, location: str) -> None:
    client, asked = serving(lambda r: answer(302, Location=location))
    with pytest.raises(DownloadFailed, match="which is not fetched"):
        await fetch(client, outbox / "a.mp4")
    assert asked == [CDN] and nothing_left(outbox)


async def test_download_redirect_to_loopback_http_is_followed_when_the_provider_is_on_loopback(outbox: Path) -> None:
    def cdn(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("redirected"):
            return answer(200, MP4)
        return answer(302, Location="http://127.0.0.1:8787/cdn/x.mp4?redirected=1")

    client, asked = serving(cdn)
    assert await fetch(client, outbox / "a.mp4", url="http://127.0.0.1:8787/cdn/x.mp4", loopback=True) == len(MP4)
    assert len(asked) == 2


@pytest.mark.parametrize("status", [204, 206, 401, 403, 404, 429, 500, 503])
async def test_download_any_other_status_is_a_download_failure_never_a_pause(outbox: Path, status: int) -> None:
    client, _ = serving(lambda r: answer(status, b'{"error": "no"}'))
    with pytest.raises(DownloadFailed) as failed:
        await fetch(client, outbox / "a.mp4")
    assert failed.value.status == status and not isinstance(failed.value, AuthRejected)
    assert isinstance(decide(failed.value, Step.DOWNLOAD, 1), Retry)
    assert nothing_left(outbox)


async def test_download_400_is_refused_for_good(outbox: Path) -> None:
    client, _ = serving(lambda r: answer(400, b'{"error": "bad link"}'))
    with pytest.raises(Rejected) as refused:
        await fetch(client, outbox / "a.mp4")
    assert decide(refused.value, Step.DOWNLOAD, 1) == Fail(ErrorCode.DOWNLOAD_REFUSED)


async def test_download_endless_error_page_is_read_only_a_little(outbox: Path) -> None:
    client, _ = serving(lambda r: httpx.Response(503, content=endless(b"<p>busy</p>" * 100)))
    with pytest.raises(DownloadFailed) as failed:
        await fetch(client, outbox / "a.mp4")
    assert len(failed.value.provider_error or "") <= 300


async def test_download_plain_http_link_is_refused_before_any_request(outbox: Path) -> None:
    client, asked = serving(lambda r: answer(200, MP4))
    with pytest.raises(Rejected, match="only https"):
        await fetch(client, outbox / "a.mp4", url="http://cdn.facedub.test/x.mp4", loopback=True)
    assert asked == []
