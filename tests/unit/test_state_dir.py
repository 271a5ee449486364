"""The state folder must be on a local disk: SQLite's locks are not reliable on network shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugcwatchd import cli, logs
from ugcwatchd.check import check_offline
from ugcwatchd.errors import ConfigError, ExitCode
from ugcwatchd.inbox import mounts
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings, check_state_dir, state_dir_problem

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /srv/nas rw,relatime shared:20 - nfs4 nas:/export rw,vers=4.2
41 40 0:36 / /srv/nas/local rw,relatime shared:21 - ext4 /dev/sdb1 rw
42 22 0:37 / /mnt/smb\\040share rw,relatime shared:22 - cifs //nas/share rw
43 22 0:38 / /home/u/remote rw,nosuid shared:23 - fuse.sshfs u@host: rw
44 22 0:39 / /mnt/vault rw,nosuid shared:24 - fuse.gocryptfs vault rw
"""


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/srv/nas/ugcwatchd", "nfs4"),
        ("/srv/nas/not/yet/created", "nfs4"),  # a folder the ledger would create: its mount decides
        ("/mnt/smb share/state", "cifs"),
        ("/home/u/remote/state", "fuse.sshfs"),
    ],
)
def test_state_dir_on_a_network_share_is_refused_with_the_reason(path: str, fstype: str) -> None:
    assert state_dir_problem(Path(path), MOUNTINFO) == (
        f"the state folder {path} is on {fstype}; SQLite's locks are not reliable there: "
        "use a local disk (UGCWATCHD_STATE_DIR)"
    )
    with pytest.raises(ConfigError) as caught:
        check_state_dir(Path(path), MOUNTINFO)
    assert caught.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize("path", ["/var/lib/ugcwatchd", "/srv/nas/local/state", "/mnt/vault/state", "/srv/nasty"])
def test_state_dir_on_a_local_disk_is_accepted(path: str) -> None:
    assert state_dir_problem(Path(path), MOUNTINFO) is None
    check_state_dir(Path(path), MOUNTINFO)


def test_state_dir_without_a_mount_table_is_accepted() -> None:
    assert state_dir_problem(Path("/var/lib/ugcwatchd"), "") is None


def test_mounts_network_filesystems_are_also_polled() -> None:
    assert all(mounts.needs_polling(fstype) for fstype in mounts.NETWORK_FILESYSTEMS)
    assert mounts.is_network_filesystem("nfs") and not mounts.is_network_filesystem("ext4")
    assert not mounts.is_network_filesystem(None)


@pytest.fixture
def on_nfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A rules file whose folders exist, and a state folder the mount table puts on NFS."""
    for folder in ("in", "out"):
        (tmp_path / folder).mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {tmp_path}/in, outbox: {tmp_path}/out, dublab: {{to: [de]}}}}\n")
    state = tmp_path / "state"
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(state))
    monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", "dl_secret_key")
    table = [("/", "ext4"), (str(state), "nfs4")]
    monkeypatch.setattr(mounts, "mount_table", lambda text=None: table)
    monkeypatch.setattr(logs, "setup", lambda *args, **kwargs: None)  # the test's own logging stays as it is
    return rules


def test_state_dir_on_nfs_check_offline_reports_the_problem(on_nfs: Path) -> None:
    report = check_offline(load_rules(on_nfs), Settings.from_env())
    (problem,) = report.problems
    assert "is on nfs4; SQLite's locks are not reliable there" in str(problem)
    assert any(line.startswith("state folder ") for line in report.lines)


@pytest.mark.parametrize("command", [["check", "--offline"], ["run"]])
def test_state_dir_on_nfs_cli_exits_78_before_opening_it(
    on_nfs: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["-c", str(on_nfs), *command]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert f"the state folder {on_nfs.parent / 'state'} is on nfs4; SQLite's locks are not reliable there" in err
    assert "use a local disk (UGCWATCHD_STATE_DIR)" in err and "Traceback" not in err
    assert not (on_nfs.parent / "state").exists()  # neither locked nor created
