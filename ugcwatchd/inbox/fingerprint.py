"""SHA-256 of a file's content, streamed: computed once per stable file, in a worker thread."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of ``path``; hashlib.file_digest reads in large blocks and releases the GIL."""
    with path.open("rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
