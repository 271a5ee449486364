"""Reading an item's sidecars from a shared outbox: only regular files of a sidecar's size, never through
a symlink, never waiting on a FIFO; a hung share holds a few daemon threads of its own, nothing more."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from ugcwatchd.console import sidecars
from ugcwatchd.console.sidecars import READERS, SIZE_MAX, Unshown, read_one, read_within


def test_sidecars_read_one_reads_only_a_regular_file_of_a_sidecars_size(tmp_path: Path) -> None:
    secret = tmp_path / "facedub_api_key"
    secret.write_text("fdb_live_secret")
    (tmp_path / "link.json").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "big.json").write_bytes(b" " * (SIZE_MAX + 1))
    (tmp_path / "ok.json").write_bytes(b'{"kind": "status", "note": "caf\xe9"}')  # not UTF-8: shown, replaced
    started = time.monotonic()
    assert read_one(tmp_path / "link.json") == Unshown("not shown: a symbolic link")
    assert read_one(tmp_path / "fifo.json") == Unshown("not shown: not a regular file")
    assert read_one(tmp_path / "folder.json") == Unshown("not shown: not a regular file")
    assert read_one(tmp_path / "big.json") == Unshown(f"not shown: {SIZE_MAX + 1} bytes, more than a sidecar has")
    assert read_one(tmp_path / "ok.json") == '{"kind": "status", "note": "caf\ufffd"}'
    assert read_one(tmp_path / "missing.json") is None
    assert time.monotonic() - started < 1  # the FIFO was not waited on


def test_sidecars_hung_share_holds_at_most_a_few_daemon_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = sidecars.read_sidecars

    def hung(outbox: str, jobs: object) -> sidecars.Found:
        release.wait(10)  # what a read on a share that stopped answering does
        return {}

    monkeypatch.setattr(sidecars, "read_sidecars", hung)

    async def visit(count: int) -> list[sidecars.Found | None]:
        return [await read_within(str(tmp_path), [(1, "clip.facedub")], 0.05) for _ in range(count)]

    before = {t.ident for t in threading.enumerate()}
    started = time.monotonic()
    assert asyncio.run(visit(READERS + 3)) == [None] * (READERS + 3)
    assert time.monotonic() - started < 0.05 * READERS + 1  # beyond the first few, nothing is even started
    stuck = [t for t in threading.enumerate() if t.ident not in before]
    assert len(stuck) == READERS and all(t.daemon and t.name == "console-sidecars" for t in stuck)
    release.set()
    for t in stuck:
        t.join(5)
    monkeypatch.setattr(sidecars, "read_sidecars", real)
    (tmp_path / "clip.facedub.status.json").write_text("{}")
    found = asyncio.run(visit(1))[0]
    assert found is not None and found[1]["status"] == "{}"  # the threads came back: reads work again
