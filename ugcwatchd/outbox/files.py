"""Files in the outbox: atomic writes, and inputs archived, moved or deleted last.

Every write is a temporary file in the target folder, fsync'd, renamed into place, and the folder
fsync'd, so a reader on the share never sees half a sidecar and a crash never leaves one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def iso(ts: float | None) -> str | None:
    """``2026-11-22T10:00:00Z``."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; some network filesystems refuse it, and the rename is what counts."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class FolderGone(OSError):
    """A folder the daemon writes into is not the one it resolved: its share is gone or replaced."""


@dataclass(frozen=True)
class Anchor:
    """The nearest existing folder at or above a target folder, as it was when the item was planned.

    Writing below it is safe only while it is still that very folder (same device and inode): a
    share that was unmounted leaves a bare mount point that must never be written into.
    """

    path: str
    dev: int
    ino: int

    @classmethod
    def of(cls, folder: Path) -> Anchor | None:
        for candidate in (folder, *folder.parents):
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            return cls(str(candidate), st.st_dev, st.st_ino)
        return None


def ensure_folder(folder: Path, anchor: Anchor | None) -> None:
    """Create ``folder`` if need be, but only below ``anchor``, which must still be the same folder."""
    if anchor is None:  # an item planned before anchors were recorded
        folder.mkdir(parents=True, exist_ok=True)
        return
    try:
        st = os.stat(anchor.path)
    except OSError:
        raise FolderGone(errno.ENOENT, f"{anchor.path} is gone (is its share mounted?)") from None
    if st.st_dev != anchor.dev or not stat.S_ISDIR(st.st_mode):
        # Another device: the share is gone and its bare mount point shows. Never write there.
        raise FolderGone(errno.ESTALE, f"{anchor.path} is not the folder it was (is its share mounted?)")
    # Same device, another inode: the folder was re-created on the share itself; it is still the
    # share, and a person who re-creates an outbox expects results in it.
    base = Path(anchor.path)
    for part in folder.relative_to(base).parts:
        base = base / part
        base.mkdir(exist_ok=True)


def write_atomic(target: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``target`` (whose folder exists) so that it is either all there or not at all.

    The file gets 0666 less the process umask, like any file a program creates (the unit's
    ``UMask=0002`` makes results group-writable for the people who share the folder), or ``mode``.
    """
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, target)
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def write_json(target: Path, document: dict[str, Any]) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # Names are shown with their bad bytes as \xNN already; anything else undecodable is escaped, never fatal.
    write_atomic(target, text.encode("utf-8", "backslashreplace"))


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``… when taken: nothing is ever overwritten."""
    candidate = folder / name
    stem, dot, suffix = name.partition(".")
    n = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{stem}-{n}{dot}{suffix}"
        n += 1
    return candidate


def move_input(source: Path, folder: Path, rel: str, anchor: Anchor | None = None) -> Path | None:
    """Move an input into ``folder`` (keeping its subfolders), durably; None when it is already gone.

    Across filesystems the file is copied, fsync'd and renamed before the original is removed, so a
    crash leaves at worst two copies, never none; a copy that fails (a full disk) leaves nothing.
    """
    if not source.exists():
        return None
    relative = Path(rel)
    target_dir = folder / relative.parent
    ensure_folder(target_dir, anchor)
    target = free_name(target_dir, relative.name)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # only another filesystem is worth a copy
            raise
        _copy_across(source, target)
        source.unlink()
    fsync_dir(target.parent)
    fsync_dir(source.parent)
    return target


def _copy_across(source: Path, target: Path) -> None:
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with source.open("rb") as src, temp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, temp)
        os.replace(temp, target)
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)  # never a .tmp left behind, whatever failed


def delete_input(source: Path) -> None:
    remove(source)
