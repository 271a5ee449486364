"""Any name a filesystem allows: too long for a sidecar suffix, or not valid UTF-8 (common on SMB).

A file name is a ``str`` as Python gives it: undecodable bytes are lone surrogates (U+DC80-U+DCFF,
the ``surrogateescape`` convention). Such a string reaches the filesystem unchanged, but cannot be
written as UTF-8: sidecars and logs show the bad bytes as ``\\xNN`` (:func:`shown`), and the ledger
stores them as the private-use characters U+F780-U+F7FF (:func:`to_db` / :func:`from_db`), which no
file name uses in practice, so every other name is stored as it is.
"""

from __future__ import annotations

import hashlib
import os

NAME_MAX = 255  # bytes, on every filesystem the daemon meets
# The longest thing added to a job name in the outbox: ".{job}.status.json.{8 hex}.tmp" and "-NN".
SUFFIX_ROOM = 40
KEEP_BYTES = 100  # of a name too long, this much is kept, then "~" and 8 hex of a hash of the whole

_SURROGATES = range(0xDC80, 0xDD00)
_PRIVATE = 0xF780 - 0xDC80  # a lone surrogate U+DCxx is stored as U+F7xx


def shown(name: str) -> str:
    """``café`` stays; ``caf\\udce9`` (the byte 0xE9 that is not UTF-8) becomes ``caf\\xe9``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def to_db(text: str) -> str:
    """A name as the ledger stores it (valid UTF-8 whatever the name's bytes)."""
    if not any(ord(c) in _SURROGATES for c in text):
        return text
    return "".join(chr(ord(c) + _PRIVATE) if ord(c) in _SURROGATES else c for c in text)


def from_db(text: str) -> str:
    """The name :func:`to_db` stored."""
    if not any(0xF780 <= ord(c) < 0xF800 for c in text):
        return text
    return "".join(chr(ord(c) - _PRIVATE) if 0xF780 <= ord(c) < 0xF800 else c for c in text)


def fit_job_name(name: str) -> str:
    """A job name short enough to take every sidecar suffix: ``{first 100 bytes}~{8 hex}.{tag}``.

    ``name`` is ``[sub/]stem.tag``; only its last part counts against the file name limit.
    """
    folder, slash, base = name.rpartition("/")
    if len(os.fsencode(base)) + SUFFIX_ROOM <= NAME_MAX:
        return name
    stem, dot, tag = base.rpartition(".")
    if not dot:
        stem, tag = base, ""
    raw = os.fsencode(stem)
    digest = hashlib.sha256(raw).hexdigest()[:8]
    kept = raw[:KEEP_BYTES]
    while kept:  # never cut a UTF-8 character in half
        try:
            kept.decode("utf-8")
            break
        except UnicodeDecodeError as exc:
            if exc.start < len(kept) - 4:
                break  # the name was not UTF-8 to begin with: keep the bytes as they are
            kept = kept[:-1]
    short = f"{os.fsdecode(kept)}~{digest}" + (f".{tag}" if dot else "")
    return f"{folder}{slash}{short}"
