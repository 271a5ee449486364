"""Which mounts are polled, and when a file counts as complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugcwatchd.inbox.mounts import filesystem_of, mount_table, needs_polling
from ugcwatchd.inbox.scan import Seen
from ugcwatchd.inbox.stability import Stability

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /srv/ugc rw,relatime shared:20 - nfs4 nas:/export/ugc rw,vers=4.2
41 40 0:36 / /srv/ugc/local rw,relatime shared:21 - ext4 /dev/sdb1 rw
42 22 0:37 / /mnt/smb\\040share rw,relatime shared:22 - cifs //nas/share rw
43 22 0:38 / /home/u/gdrive rw,nosuid shared:23 - fuse.rclone gdrive: rw
"""


@pytest.mark.parametrize(
    ("path", "fstype", "polled"),
    [
        ("/srv/ugc/acme/inbox", "nfs4", True),
        ("/srv/ugc/local/inbox", "ext4", False),  # the longest mount point wins
        ("/mnt/smb share/in", "cifs", True),
        ("/home/u/gdrive/in", "fuse.rclone", True),
        ("/var/lib/x", "ext4", False),
    ],
)
def test_mounts_network_and_fuse_are_polled(path: str, fstype: str, polled: bool) -> None:
    found = filesystem_of(Path(path), mount_table(MOUNTINFO))
    assert found == fstype
    assert needs_polling(found) is polled


def test_mounts_this_machine_has_a_root() -> None:
    assert filesystem_of(Path("/")) is not None


def seen(size: int = 10, mtime: int = 1, ino: int = 1) -> Seen:
    return Seen("/in/a.mp4", "a.mp4", size, mtime, ino)


def test_stability_needs_an_observation_after_stable_after() -> None:
    s = Stability(5.0)
    s.observe(seen(), 100.0)
    assert not s.is_stable("a.mp4")
    s.observe(seen(), 104.9)
    assert not s.is_stable("a.mp4")
    s.observe(seen(), 105.0)
    assert s.is_stable("a.mp4")


def test_stability_any_change_restarts_the_wait() -> None:
    s = Stability(5.0)
    s.observe(seen(size=10), 100.0)
    s.observe(seen(size=20), 104.0)  # still being written
    s.observe(seen(size=20), 108.0)
    assert not s.is_stable("a.mp4")
    s.observe(seen(size=20, mtime=2), 109.5)  # same size, touched
    s.observe(seen(size=20, mtime=2), 114.4)
    assert not s.is_stable("a.mp4")
    s.observe(seen(size=20, mtime=2), 114.5)
    assert s.is_stable("a.mp4")


def test_stability_replaced_file_with_new_inode_starts_over() -> None:
    s = Stability(1.0)
    s.observe(seen(ino=1), 0.0)
    s.observe(seen(ino=2), 2.0)  # written elsewhere, renamed over it
    assert not s.is_stable("a.mp4")


def test_stability_empty_files_wait_forever() -> None:
    s = Stability(1.0)
    s.observe(seen(size=0), 0.0)
    s.observe(seen(size=0), 1000.0)
    assert not s.is_stable("a.mp4") and s.unsettled() == ["a.mp4"]
