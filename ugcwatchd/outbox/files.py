"""Files in the outbox: atomic writes, and inputs archived, moved or deleted last.

Every write is a temporary file in the target folder, fsync'd, renamed into place, and the folder
fsync'd, so a reader on the share never sees half a sidecar and a crash never leaves one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any


def iso(ts: float | None) -> str | None:
    """``2026-11-22T10:00:00Z``."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` so that it is either all there or not there at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # readable by the people who share the folder, whatever our umask
        os.replace(temp, target)
        _fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)


def write_json(target: Path, document: dict[str, Any]) -> None:
    write_atomic(target, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``… when taken: nothing is ever overwritten."""
    candidate = folder / name
    stem, dot, suffix = name.partition(".")
    n = 2
    while candidate.exists() or candidate.is_symlink():
        candidate = folder / f"{stem}-{n}{dot}{suffix}"
        n += 1
    return candidate


def move_input(source: Path, folder: Path, rel: str) -> Path | None:
    """Move an input into ``folder`` (keeping its subfolders), durably; None when it is already gone.

    Across filesystems the file is copied, fsync'd and renamed before the original is removed, so a
    crash leaves at worst two copies, never none.
    """
    if not source.exists():
        return None
    relative = Path(rel)
    target_dir = folder / relative.parent
    target_dir.mkdir(parents=True, exist_ok=True)
    target = free_name(target_dir, relative.name)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another filesystem
            raise
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        with source.open("rb") as src, temp.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, temp)
        os.replace(temp, target)
        _fsync_dir(target.parent)
        source.unlink()
    _fsync_dir(target.parent)
    _fsync_dir(source.parent)
    return target


def delete_input(source: Path) -> None:
    remove(source)
