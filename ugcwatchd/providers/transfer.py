"""Streaming uploads and downloads: memory does not grow with file size.

File reads and writes run in worker threads, so a slow share cannot stall the event loop; bodies
have an exact ``Content-Length`` (never chunked); a file that changes size while it is being sent
aborts the upload rather than sending half of it. Downloads fetch only what :func:`~.http.fetchable`
allows (redirects included), within a size cap and an overall deadline; they land in a temporary file
beside their target, are checked against ``Content-Length`` and against the media the target's name
claims, fsync'd and renamed into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from ..errors import DownloadFailed, Rejected
from ..names import shown
from .base import Fingerprint
from .http import check_fetchable, fetchable, map_transport_errors, raise_for_download, raise_for_upload, safe_url

CHUNK = 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024**3  # 20 GiB
DOWNLOAD_TIMEOUT = 1800.0  # 30 minutes for the whole download, redirects included
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ERROR_TEXT = 4096  # of an error answer's body, only this much is read


class FileChanged(Rejected):
    """The file is not the one that was taken: replaced, modified, or still being written."""


def content_type_of(path: Path) -> str:
    """The MIME type for ``path``: sniffed for photos, by extension for media."""
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _changed(path: Path, what: str) -> FileChanged:
    return FileChanged("upload", f"{path.name} {what}; it is not sent, and a new drop of it waits its own turn")


def _differs(st: os.stat_result, expect: Fingerprint) -> str | None:
    """How the open file differs from what was taken, or None."""
    if st.st_size != expect.size:
        return f"is {st.st_size} bytes, not the {expect.size} that were taken"
    if st.st_mtime_ns != expect.mtime_ns:
        return "was modified since it was taken"
    if expect.inode is not None and st.st_ino != expect.inode:
        return "was replaced by another file since it was taken"
    return None


def check_unchanged(path: Path, expect: Fingerprint) -> None:
    """Raise :class:`FileChanged` unless ``path`` is still the file that was taken (by its metadata)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _changed(path, "is gone from where it was taken") from None
    why = _differs(st, expect)
    if why:
        raise _changed(path, why)


async def file_chunks(path: Path, size: int, expect: Fingerprint | None = None) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of ``path``, read in a worker thread a chunk at a time.

    With ``expect``, the open file must be the one that was taken (size, mtime, inode), and its bytes
    must hash to the recorded SHA-256. The last chunk is held back until the hash is checked, so on
    any difference the request is abandoned before its body completes and nothing is created.
    """
    f: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        if expect is not None:
            why = _differs(await asyncio.to_thread(os.fstat, f.fileno()), expect)
            if why:
                raise _changed(path, why)
        digest = hashlib.sha256()
        held: bytes | None = None
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                raise _changed(path, "shrank while it was being sent")
            left -= len(chunk)
            digest.update(chunk)
            if held is not None:
                yield held
            held = chunk
        if await asyncio.to_thread(f.read, 1):
            raise _changed(path, "grew while it was being sent")
        if expect is not None and digest.hexdigest() != expect.sha256:
            raise _changed(path, "has other content than the one that was taken")
        if held is not None:
            yield held
    finally:
        await asyncio.to_thread(f.close)


@dataclass(frozen=True)
class FilePart:
    """One file field of a multipart form."""

    field: str
    path: Path
    content_type: str
    expect: Fingerprint | None = None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def multipart(
    fields: dict[str, str], files: list[FilePart], *, on_sent: Callable[[], Awaitable[None]] | None = None
) -> tuple[AsyncIterator[bytes], dict[str, str]]:
    """A streamed ``multipart/form-data`` body and its headers (with an exact Content-Length).

    ``on_sent`` is awaited once the last byte has been handed to the transport.
    """
    boundary = secrets.token_hex(16)
    heads: list[bytes] = []
    for name, value in fields.items():
        heads.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'.encode()
        )
    parts: list[tuple[bytes, FilePart, int]] = []
    for part in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(part.field)}"; '
            f'filename="{_quote(shown(part.path.name))}"\r\nContent-Type: {part.content_type}\r\n\r\n'
        ).encode()
        # The recorded size: a file that differs is caught while streaming, never sent with a length to match.
        parts.append((head, part, part.expect.size if part.expect else part.path.stat().st_size))
    tail = f"--{boundary}--\r\n".encode()
    length = sum(map(len, heads)) + sum(len(h) + size + 2 for h, _, size in parts) + len(tail)

    async def body() -> AsyncIterator[bytes]:
        for head in heads:
            yield head
        for head, part, size in parts:
            yield head
            async for chunk in file_chunks(part.path, size, part.expect):
                yield chunk
            yield b"\r\n"
        yield tail
        if on_sent is not None:
            await on_sent()

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
    return body(), headers


async def put_file(
    client: httpx.AsyncClient,
    provider: str,
    url: str,
    path: Path,
    content_type: str,
    *,
    expect: Fingerprint | None = None,
) -> None:
    """PUT ``path`` to a presigned URL: exact Content-Type and Content-Length, no credentials.

    ``client`` must be a bare client: the URL is another host, and an API key must never go there.
    The upload host's refusals (an expired URL, a signature mismatch) raise
    :class:`~ugcwatchd.errors.UploadRefused`: about that URL, never the account.
    """
    size = expect.size if expect is not None else (await asyncio.to_thread(path.stat)).st_size
    headers = {"Content-Type": content_type, "Content-Length": str(size)}
    with map_transport_errors(provider, mutating=False):
        # An upload can simply be repeated: it is not a paid action, so its outcome is never "unknown".
        response = await client.put(url, content=file_chunks(path, size, expect), headers=headers)
    raise_for_upload(provider, response)


@dataclass(frozen=True)
class DownloadLimits:
    """What a result download may take: bytes, time, and whether this machine may serve it."""

    max_bytes: int = MAX_DOWNLOAD_BYTES
    timeout: float = DOWNLOAD_TIMEOUT  # seconds, for the whole download
    loopback: bool = False  # the provider itself is on this machine (the sandbox): its links may be too


async def download(
    client: httpx.AsyncClient, provider: str, url: str, target: Path, limits: DownloadLimits = DownloadLimits()
) -> int:
    """Stream ``url`` into ``target`` atomically; the number of bytes written.

    A URL that is not fetchable raises :class:`~ugcwatchd.errors.Rejected`; anything else that does not
    end in a whole body of the media ``target`` names raises :class:`~ugcwatchd.errors.DownloadFailed`.
    """
    check_fetchable(url, provider=provider, loopback=limits.loopback)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        try:
            async with asyncio.timeout(limits.timeout):
                written, head = await _fetch(client, provider, url, temp, limits)
        except TimeoutError:
            raise DownloadFailed(
                provider,
                f"download of {safe_url(url)} took longer than download_timeout ({limits.timeout:g} s); it is given up",
            ) from None
        what = _not_the_media(target, head)
        if what:
            raise DownloadFailed(provider, f"download of {safe_url(url)} is not {what} (it starts with {head[:16]!r})")
        await asyncio.to_thread(_fsync_rename, temp, target)
        return written
    finally:
        await asyncio.to_thread(temp.unlink, missing_ok=True)


async def _fetch(
    client: httpx.AsyncClient, provider: str, url: str, temp: Path, limits: DownloadLimits
) -> tuple[int, bytes]:
    """GET ``url`` into ``temp``, following at most :data:`MAX_REDIRECTS` fetchable redirects; (bytes, head)."""
    for _ in range(MAX_REDIRECTS + 1):
        with map_transport_errors(provider, mutating=False):
            # identity: the bytes on disk must be the bytes Content-Length counts, never a gzip of them.
            async with client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
                status = response.status_code
                location = response.headers.get("location") if status in _REDIRECTS else None
                if location:
                    nxt = str(response.url.join(location))
                    if not fetchable(nxt, loopback=limits.loopback):
                        raise DownloadFailed(
                            provider,
                            f"{safe_url(url)} redirects to {safe_url(nxt)}, which is not fetched",
                            status=status,
                        )
                    url = nxt
                    continue
                if status != 200:
                    raise_for_download(provider, url, status, await _error_text(response))
                announced = response.headers.get("content-length", "")
                length = int(announced) if announced.isdigit() else None
                if length is not None and length > limits.max_bytes:
                    raise DownloadFailed(provider, _too_large(url, length, limits))
                written, head = await _write_stream(response, temp, limits.max_bytes)
                if written > limits.max_bytes:
                    raise DownloadFailed(provider, _too_large(url, written, limits))
        if length is not None and length != written:
            raise DownloadFailed(provider, f"download of {safe_url(url)} ended after {written} of {length} bytes")
        return written, head
    raise DownloadFailed(provider, f"download of {safe_url(url)} was redirected more than {MAX_REDIRECTS} times")


def _too_large(url: str, size: int, limits: DownloadLimits) -> str:
    return f"download of {safe_url(url)} is larger than max_download_bytes ({size} > {limits.max_bytes} bytes)"


async def _error_text(response: httpx.Response) -> str:
    """The start of an error answer's body (an error page may be endless too)."""
    body = response.content if response.is_stream_consumed else b""  # already read: a canned answer
    if not response.is_stream_consumed:
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= _ERROR_TEXT:
                break
    text = body[:_ERROR_TEXT].decode("utf-8", "replace").strip()
    return " ".join(text.split())[:300]


def _not_the_media(target: Path, head: bytes) -> str | None:
    """What ``target``'s name claims it is, when its first bytes say otherwise; None when they agree."""
    if target.suffix.lower() in (".mp4", ".m4v") and head[4:8] != b"ftyp":
        return "an MP4 (no ftyp box)"
    return None


async def _write_stream(response: httpx.Response, temp: Path, cap: int) -> tuple[int, bytes]:
    """The body into ``temp``: (bytes written, its first 16 bytes); stops once past ``cap`` bytes."""
    f: BinaryIO = await asyncio.to_thread(temp.open, "wb")
    written = 0
    head = b""
    try:
        async for chunk in response.aiter_raw(CHUNK):
            if len(head) < 16:
                head = (head + chunk)[:16]
            written += len(chunk)
            if written > cap:
                break
            await asyncio.to_thread(f.write, chunk)
        await asyncio.to_thread(f.flush)
        await asyncio.to_thread(os.fsync, f.fileno())
    finally:
        await asyncio.to_thread(f.close)
    return written, head


def _fsync_rename(temp: Path, target: Path) -> None:
    os.replace(temp, target)
    # The rename itself should survive a crash; some network filesystems refuse a folder's fsync, and
    # the rename (already done) is what counts: a refusal there must not fail a finished download.
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
