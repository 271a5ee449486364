"""Streaming transfers: exact lengths, files that change under us, interrupted downloads, no leaks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.support import wait_for
from ugcwatchd.errors import AuthRejected, Transient
from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.providers.base import Fingerprint
from ugcwatchd.providers.dublab import DubLabClient
from ugcwatchd.providers.facedub import FaceDubClient
from ugcwatchd.providers.transfer import CHUNK, FileChanged, check_unchanged, content_type_of, file_chunks

from ..conftest import SandboxFactory, facedub

pytestmark = pytest.mark.anyio


async def test_transfer_file_that_shrinks_while_read_is_never_sent_whole(tmp_path: Path) -> None:
    path = tmp_path / "growing.mp4"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    chunks = file_chunks(path, path.stat().st_size)
    assert len(await anext(chunks)) == 1024 * 1024
    path.write_bytes(b"x" * 1024)  # a copy restarted over it
    with pytest.raises(FileChanged, match="shrank"):
        async for _ in chunks:
            pass


async def test_transfer_file_that_grows_while_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "growing.mp4"
    size = CHUNK + 1000
    path.write_bytes(b"x" * size)
    chunks = file_chunks(path, size)
    await anext(chunks)
    with path.open("ab") as f:
        f.write(b"more")
    with pytest.raises(FileChanged, match="grew"):
        async for _ in chunks:
            pass


def _fingerprint(path: Path) -> Fingerprint:
    st = path.stat()
    return Fingerprint(st.st_size, st.st_mtime_ns, st.st_ino, sha256_of(path))


async def test_transfer_same_size_other_content_is_abandoned_before_the_last_byte(tmp_path: Path) -> None:
    """A file rewritten in place, same size and mtime (a sync tool restoring times): the hash catches it."""
    path = tmp_path / "clip.mp4"
    size = 2 * CHUNK + 10
    path.write_bytes(b"a" * size)
    taken = _fingerprint(path)
    with path.open("r+b") as f:
        f.seek(CHUNK + 5)
        f.write(b"b")
    os.utime(path, ns=(taken.mtime_ns, taken.mtime_ns))
    sent = 0
    with pytest.raises(FileChanged, match="other content"):
        async for chunk in file_chunks(path, size, taken):
            sent += len(chunk)
    assert sent < size  # the body never completed: nothing can have been created from it


async def test_transfer_replaced_file_is_refused_before_any_byte(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"a" * 100)
    taken = _fingerprint(path)
    replacement = tmp_path / "new.mp4"
    replacement.write_bytes(b"a" * 100)
    os.utime(replacement, ns=(taken.mtime_ns, taken.mtime_ns))
    replacement.replace(path)  # same name, size, mtime and content: another file all the same
    with pytest.raises(FileChanged, match="replaced"):
        await anext(file_chunks(path, 100, taken))
    with pytest.raises(FileChanged, match="replaced"):
        check_unchanged(path, taken)
    path.unlink()
    with pytest.raises(FileChanged, match="gone"):
        check_unchanged(path, taken)


def test_transfer_content_types_are_sniffed_for_photos(media: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "photo.mp4"
    disguised.write_bytes(media["png"].read_bytes())
    assert content_type_of(disguised) == "image/png"
    assert content_type_of(media["jpeg"]) == "image/jpeg" and content_type_of(media["webp"]) == "image/webp"
    assert (
        content_type_of(media["video.mp4"]) == "video/mp4" and content_type_of(media["speech.mov"]) == "video/quicktime"
    )


async def test_transfer_interrupted_download_leaves_nothing(
    make_sandbox: SandboxFactory, media: dict[str, Path], tmp_path: Path
) -> None:
    healthy = make_sandbox(job_seconds=0.01)
    with facedub(healthy) as raw:
        files = {
            "character_photo": ("p.jpg", media["jpeg"].read_bytes()),
            "reference_video": ("v.mp4", media["video.mp4"].read_bytes()),
        }
        job_id = raw.post("/jobs", files=files).json()["job_id"]
        url = wait_for(lambda: raw.get(f"/jobs/{job_id}").json()["output_url"], what="the job to complete")
    broken = make_sandbox(fail_rate=1.0, seed=4)
    path = url.split("/cdn/", 1)[1]
    target = tmp_path / "downloads"
    target.mkdir()
    async with FaceDubClient(broken.urls["facedub"], SecretStr("fdb_x")) as fd:
        for _ in range(6):  # 500s, 502s and dropped connections in turn
            with pytest.raises(Transient):
                await fd.download(f"{broken.urls['facedub']}/cdn/{path}", target / "out.mp4")
    assert list(target.iterdir()) == []


async def test_transfer_keys_never_reach_logs_or_errors(sandbox_keys_logs: tuple[list[str], str]) -> None:
    text, secret = sandbox_keys_logs
    assert text, "the client logged nothing at all: the test would prove nothing"
    assert all(secret not in line for line in text)


@pytest.fixture
async def sandbox_keys_logs(
    make_sandbox: SandboxFactory, media: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> tuple[list[str], str]:
    secret = "fdb_this_key_must_never_be_seen"
    sandbox = make_sandbox(facedub_keys=[secret], dublab_keys=["dl_this_key_must_never_be_seen"])
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with (
        FaceDubClient(sandbox.urls["facedub"], SecretStr(secret)) as fd,
        DubLabClient(sandbox.urls["dublab"], SecretStr("dl_this_key_must_never_be_seen")) as dl,
    ):
        await fd.usage()
        await fd.create_job(media["jpeg"], media["video.mp4"], 5)
        init = await dl.init_dub(file_type="video/mp4", name="a.mp4", source_lang="auto", dest_lang="de")
        await dl.upload(init.uploadUrl, media["video.mp4"], "video/mp4")
    async with FaceDubClient(sandbox.urls["facedub"], SecretStr(secret + "_wrong")) as bad:
        with pytest.raises(AuthRejected) as refused:
            await bad.usage()
        seen += [str(refused.value), repr(refused.value), str(refused.value.provider_error)]
    seen += [r.getMessage() for r in caplog.records] + [caplog.text]
    return seen, "this_key_must_never_be_seen"
