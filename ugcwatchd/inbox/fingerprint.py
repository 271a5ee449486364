"""SHA-256 of a file's content, streamed: computed once per stable file, in a worker thread."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of ``path``; hashlib.file_digest reads in large blocks and releases the GIL."""
    with path.open("rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_if_same(path: Path, size: int, mtime_ns: int, inode: int | None) -> str | None:
    """SHA-256 of ``path`` only if it is still that regular file (size, mtime, inode), else None.

    Opened without following a link and without blocking, so a FIFO or a device put where an input was
    can never hang the caller: it is simply not the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return None
        if inode is not None and st.st_ino != inode:
            return None
        return hashlib.file_digest(f, "sha256").hexdigest()
