"""The S3-like upload host behind DubLab's presigned ``uploadUrl`` (DESIGN §7.3, §9)."""

from __future__ import annotations

import hashlib
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import ManualClock
from ugcwatchd.sandbox import Sandbox

from ..conftest import DL_KEY, SandboxFactory, dublab


def presigned(sandbox: Sandbox, file_type: str = "video/mp4") -> tuple[str, str]:
    with dublab(sandbox) as dl:
        body = dl.post(
            "/api/v1/init-dub",
            json={"fileType": file_type, "name": "talk show.mp4", "source_lang": "en", "dest_lang": "de"},
        ).json()
    return body["uploadUrl"], body["file"]["id"]


def s3_code(r: httpx.Response) -> str:
    assert r.headers["content-type"].startswith("application/xml")
    code = ET.fromstring(r.text).findtext("Code")  # noqa: S314 - our own sandbox's answer
    assert code is not None
    return code


def start(sandbox: Sandbox, file_id: str) -> int:
    with dublab(sandbox) as dl:
        return dl.post("/api/v1/start-dub", json={"fileId": file_id}).status_code


def test_uploads_put_with_signed_content_type_stores_file(sandbox: Sandbox, media: dict[str, Path]) -> None:
    url, file_id = presigned(sandbox)
    data = media["video.mp4"].read_bytes()
    r = httpx.put(url, content=data, headers={"Content-Type": "video/mp4"})
    assert r.status_code == 200
    assert r.headers["etag"] == f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
    assert start(sandbox, file_id) == 200


@pytest.mark.parametrize("header", ["Authorization", "apikey"])
def test_uploads_reject_any_api_key_header(sandbox: Sandbox, media: dict[str, Path], header: str) -> None:
    url, file_id = presigned(sandbox)
    value = f"Bearer {DL_KEY}" if header == "Authorization" else DL_KEY
    r = httpx.put(url, content=media["video.mp4"].read_bytes(), headers={"Content-Type": "video/mp4", header: value})
    assert r.status_code == 400
    assert s3_code(r) == "InvalidArgument"
    assert start(sandbox, file_id) == 412


@pytest.mark.parametrize("content_type", ["video/quicktime", "video/mp4; charset=binary", None])
def test_uploads_with_other_content_type_answer_signature_mismatch(
    sandbox: Sandbox, media: dict[str, Path], content_type: str | None
) -> None:
    url, _ = presigned(sandbox)
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = httpx.put(url, content=media["video.mp4"].read_bytes(), headers=headers)
    assert r.status_code == 403
    assert s3_code(r) == "SignatureDoesNotMatch"


def test_uploads_with_tampered_url_or_other_method_answer_403(sandbox: Sandbox, media: dict[str, Path]) -> None:
    url, _ = presigned(sandbox)
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert s3_code(httpx.put(tampered, content=b"x", headers={"Content-Type": "video/mp4"})) == "SignatureDoesNotMatch"
    assert s3_code(httpx.get(url)) == "SignatureDoesNotMatch"
    unsigned = url.split("?")[0]
    r = httpx.put(unsigned, content=b"x", headers={"Content-Type": "video/mp4"})
    assert r.status_code == 403 and s3_code(r) == "AccessDenied"


def test_uploads_after_expiry_answer_access_denied(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(clock=clock, upload_expires=60)
    url, _ = presigned(sandbox)
    clock.advance(61)
    r = httpx.put(url, content=media["video.mp4"].read_bytes(), headers={"Content-Type": "video/mp4"})
    assert r.status_code == 403
    assert s3_code(r) == "AccessDenied" and "expired" in r.text


def test_uploads_chunked_body_answers_501(sandbox: Sandbox, media: dict[str, Path]) -> None:
    url, file_id = presigned(sandbox)
    data = media["video.mp4"].read_bytes()

    def chunks() -> Iterator[bytes]:
        yield data[:1000]
        yield data[1000:]

    r = httpx.put(url, content=chunks(), headers={"Content-Type": "video/mp4"})
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 501 and s3_code(r) == "NotImplemented"
    assert start(sandbox, file_id) == 412


def _raw_put(url: str, head_lines: list[str], body: bytes, *, close_early: bool = False) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = [f"PUT {parts.path}?{parts.query} HTTP/1.1", f"Host: {parts.netloc}", *head_lines, "", ""]
        sock.sendall("\r\n".join(head).encode() + body)
        if close_early:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"</Error>" in answer or (b"\r\n\r\n" in answer and b"Content-Length: 0" in answer):
                break
        return answer


def test_uploads_without_content_length_answer_411(sandbox: Sandbox) -> None:
    url, file_id = presigned(sandbox)
    answer = _raw_put(url, ["Content-Type: video/mp4", "Connection: close"], b"")
    assert answer.startswith(b"HTTP/1.1 411")
    assert b"<Code>MissingContentLength</Code>" in answer
    assert start(sandbox, file_id) == 412


def test_uploads_short_body_is_not_stored(sandbox: Sandbox, media: dict[str, Path]) -> None:
    url, file_id = presigned(sandbox)
    data = media["video.mp4"].read_bytes()
    _raw_put(url, ["Content-Type: video/mp4", f"Content-Length: {len(data)}"], data[: len(data) // 2], close_early=True)
    # Half a file is never taken for a whole one.
    assert start(sandbox, file_id) == 412


def test_uploads_file_name_with_spaces_round_trips(sandbox: Sandbox, media: dict[str, Path]) -> None:
    url, file_id = presigned(sandbox)
    assert "talk%20show.mp4" in url
    assert (
        httpx.put(url, content=media["video.mp4"].read_bytes(), headers={"Content-Type": "video/mp4"}).status_code
        == 200
    )
    assert start(sandbox, file_id) == 200
