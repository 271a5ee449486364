"""Which filesystem a folder lives on: inotify never hears of writes made by other machines."""

from __future__ import annotations

import os
from pathlib import Path

# Network shares: another host may write there, and their POSIX locks, which SQLite relies on, are not
# reliable (emulated, advisory per client, or missing), so the ledger must not live on one.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "davfs", "ncpfs", "fuse.sshfs", "fuse.rclone", "fuse.s3fs"}
)
# Filesystems where another host may write: events cannot be trusted there, so poll.
_REMOTE = NETWORK_FILESYSTEMS | {"ceph", "glusterfs", "lustre", "virtiofs"}


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mount_table(text: str | None = None) -> list[tuple[str, str]]:
    """(mount point, filesystem type) for every mount, from /proc/self/mountinfo."""
    if text is None:
        try:
            text = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        mounts.append((_unescape(fields[4]), right.split()[0]))
    return mounts


def filesystem_of(path: Path, table: list[tuple[str, str]] | None = None) -> str | None:
    """The type of the filesystem holding ``path`` (the longest matching mount point)."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for point, fstype in table if table is not None else mount_table():
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best else None


def needs_polling(fstype: str | None) -> bool:
    """True on network and FUSE filesystems (``watch_mode: auto`` polls there)."""
    if fstype is None:
        return False
    return fstype in _REMOTE or fstype == "fuse" or fstype.startswith(("fuse.", "fuseblk"))


def is_network_filesystem(fstype: str | None) -> bool:
    """True on network shares (NFS, SMB/CIFS, sshfs …), where SQLite's locks are not reliable."""
    return fstype in NETWORK_FILESYSTEMS


def creatable_below(folder: Path, inbox: Path) -> Path | None:
    """The nearest existing folder above a missing ``folder`` when the daemon may create ``folder`` below
    it: a folder on the inbox's own device (a per-client outbox, ``/srv/results/{client}/dub``, may be
    several levels deep). None when ``folder`` exists or its nearest folder is on another device, which
    may be a bare mount point whose share is offline: nothing is ever written there."""
    try:
        if folder.exists():
            return None
        base = folder.parent
        while not base.exists() and base != base.parent:
            base = base.parent
        if base == base.parent or not base.is_dir():
            return None
        return base if os.stat(base).st_dev == os.stat(inbox).st_dev else None
    except OSError:
        return None
