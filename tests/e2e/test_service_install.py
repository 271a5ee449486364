"""The wheel, installed as an administrator would: ``ugcwatchd init``, the unit, the daemon as its own user.

The wheel is built from this checkout and installed into a fresh venv; every command then runs from that
venv with the checkout off the path (``cwd`` outside it, no ``PYTHONPATH``). Only the sandbox runs from
the checkout. The daemon runs as an unprivileged user with the unit's environment (``STATE_DIRECTORY``,
``CREDENTIALS_DIRECTORY``, ``UMask=0002``), which needs root to set up (``useradd``).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for

from .conftest import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
GROUP, SERVICE, DROPPER = "ugcwt-media", "ugcwt-svc", "ugcwt-drop"


def _python() -> str:
    """An interpreter every user may run: the system's when it is new enough (pyenv's may live under /root)."""
    system = Path("/usr/bin/python3")
    if system.exists():
        probe = subprocess.run(
            [str(system), "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"],
            capture_output=True,
        )
        if probe.returncode == 0:
            return str(system)
    return sys.executable


def _clean_env(**extra: str) -> dict[str, str]:
    """No checkout on the path, no developer settings: what a fresh shell on a server has."""
    keep = ("PATH", "LANG", "LC_ALL", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_INDEX_URL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    """A fresh venv, readable by every user, with the wheel built from this checkout installed."""
    base = Path(tempfile.mkdtemp(prefix="ugcwatchd-wheel-"))
    base.chmod(0o755)
    try:
        built = subprocess.run(
            [sys.executable, "-m", "build", "--wheel", "--outdir", str(base / "dist"), str(ROOT)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        (wheel,) = (base / "dist").glob("ugcwatchd-*.whl")
        target = base / "venv"
        made = subprocess.run([_python(), "-m", "venv", str(target)], capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        cache = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "pip"  # the real one: HOME is a tmp folder
        installed = subprocess.run(
            [str(target / "bin" / "pip"), "install", "-q", str(wheel)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=base,
            env=_clean_env(PIP_CACHE_DIR=str(cache), HOME=str(base)),
        )
        assert installed.returncode == 0, installed.stderr[-3000:]
        yield target
    finally:
        shutil.rmtree(base, ignore_errors=True)


def ugcwatchd(venv: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = kwargs.pop("env", None) or _clean_env(HOME=str(venv.parent))
    return subprocess.run(
        [str(venv / "bin" / "ugcwatchd"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=venv.parent,
        env=env,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[call-overload]
    )


def test_service_wheel_runs_without_the_checkout_and_carries_its_data(venv: Path) -> None:
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ugcwatchd; print(ugcwatchd.__file__)"],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        env=_clean_env(),
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    version = ugcwatchd(venv, "--version")
    assert version.returncode == 0 and version.stdout.startswith("ugcwatchd 0.")
    assert ugcwatchd(venv, "init", "--print", "rules").stdout == (ROOT / "rules.example.yaml").read_text()
    assert ugcwatchd(venv, "init", "--print", "tmpfiles").stdout == (ROOT / "systemd/ugcwatchd.tmpfiles").read_text()
    # Installed without extras: the demo names the install command in one sentence, and exits 2.
    demo = ugcwatchd(venv, "demo", "--folder", str(venv.parent / "demo"))
    assert demo.returncode == 2 and demo.stdout == ""
    assert demo.stderr == (
        "ugcwatchd: the demo needs the 'sandbox' extra, which is not installed (pip install 'ugcwatchd[sandbox]')\n"
    )


def test_service_init_writes_a_unit_systemd_accepts(venv: Path, tmp_path: Path) -> None:
    result = ugcwatchd(venv, "init", "--root", str(tmp_path))
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/ugcwatchd.service"
    exec_start = [line for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart={venv}/bin/ugcwatchd run"]
    for path in ("etc/sysusers.d/ugcwatchd.conf", "etc/tmpfiles.d/ugcwatchd.conf", "etc/ugcwatchd/rules.yaml"):
        assert (tmp_path / path).is_file(), path
    assert "systemctl enable --now ugcwatchd" in result.stdout
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit cannot be verified here")
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stdout + verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    exposure = [line for line in security.stdout.splitlines() if "Overall exposure level" in line]
    assert exposure, security.stdout + security.stderr
    assert float(exposure[0].split(":")[-1].split()[0]) <= 2.0, exposure[0]


# -- the daemon as its own user ---------------------------------------------------------------------


class Accounts:
    """The service user, a colleague who drops files, and the group they share: made for this test."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str]] = []
        if not self._exists(grp.getgrnam, GROUP):
            self._run(["groupadd", "--system", GROUP], ("groupdel", GROUP))
        for user in (SERVICE, DROPPER):
            if not self._exists(pwd.getpwnam, user):
                self._run(
                    ["useradd", "--system", "--no-create-home", "--user-group", "-G", GROUP, user], ("userdel", user)
                )
        self.media = grp.getgrnam(GROUP).gr_gid
        self.service = pwd.getpwnam(SERVICE)
        self.dropper = pwd.getpwnam(DROPPER)

    @staticmethod
    def _exists(lookup: object, name: str) -> bool:
        try:
            lookup(name)  # type: ignore[operator]
        except KeyError:
            return False
        return True

    def _run(self, argv: list[str], undo: tuple[str, str]) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
        self.made.append(undo)

    def remove(self) -> None:
        for command, name in reversed(self.made):  # users before the group
            subprocess.run([command, name], capture_output=True, timeout=30)


@pytest.fixture
def accounts() -> Iterator[Accounts]:
    if os.geteuid() != 0:
        pytest.skip("running the daemon as its own user needs root (useradd, and setting another user's uid)")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed here")
    made = Accounts()
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder tree every user may traverse (pytest's own tmp folders are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="ugcwatchd-service-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Service:
    """The daemon as the unit runs it: its user, its groups, UMask=0002, the unit's environment."""

    def __init__(self, venv: Path, world: Path, accounts: Accounts) -> None:
        self.venv, self.world, self.accounts = venv, world, accounts
        self.state = world / "var/lib/ugcwatchd"
        self.credentials = world / "run/credentials/ugcwatchd.service"
        self.rules = world / "etc/ugcwatchd/rules.yaml"
        self.log = world / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        for folder, mode in ((self.state, 0o700), (self.credentials, 0o500)):
            folder.mkdir(parents=True, mode=mode)
            os.chown(folder, accounts.service.pw_uid, accounts.service.pw_gid)

    def key(self, text: str) -> None:
        """Replace the key file, as `install -m 600` into /etc/ugcwatchd/credentials and systemd's copy do."""
        path = self.credentials / "facedub_api_key"
        path.unlink(missing_ok=True)
        path.write_text(text + "\n")
        os.chown(path, self.accounts.service.pw_uid, self.accounts.service.pw_gid)
        path.chmod(0o400)

    def env(self) -> dict[str, str]:
        return _clean_env(
            STATE_DIRECTORY=str(self.state),
            CREDENTIALS_DIRECTORY=str(self.credentials),
            UGCWATCHD_CONFIG=str(self.rules),
            HOME=str(self.state),
        )

    def start(self) -> subprocess.Popen[bytes]:
        a = self.accounts
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.venv / "bin" / "ugcwatchd"), "run"],
                stdout=log,
                stderr=log,
                cwd=self.world,
                env=self.env(),
                user=a.service.pw_uid,
                group=a.service.pw_gid,
                extra_groups=[a.media],
                umask=0o002,
            )
        return self.proc

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _status(venv: Path, world: Path, user: pwd.struct_passwd | None) -> dict[str, object]:
    """``status --json`` as an operator runs it: no STATE_DIRECTORY, the service's folder found by itself."""
    env = _clean_env(
        UGCWATCHD_SYSTEM_STATE_DIR=str(world / "var/lib/ugcwatchd"),
        HOME=str(world / "nohome"),
        UGCWATCHD_CONFIG=str(world / "etc/ugcwatchd/rules.yaml"),
    )
    ids = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
    result = ugcwatchd(venv, "status", "--json", env=env, **ids)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    report.pop("at")
    return report  # type: ignore[no-any-return]


def _drop(world: Path, accounts: Accounts, stem: str, photo: Path, video: Path) -> None:
    """A colleague (another user of the group) copies a photo and a video into the inbox."""
    stage = world / "stage"
    stage.mkdir(exist_ok=True, mode=0o755)
    for source, suffix in ((photo, ".jpg"), (video, ".mp4")):
        shutil.copy(source, stage / f"{stem}{suffix}")
        (stage / f"{stem}{suffix}").chmod(0o664)  # a colleague with umask 0002 (cp keeps the mode)
    subprocess.run(
        ["cp", str(stage / f"{stem}.jpg"), str(stage / f"{stem}.mp4"), str(world / "srv/ugc/acme/facedub/inbox")],
        check=True,
        user=accounts.dropper.pw_uid,
        group=accounts.media,
        umask=0o002,
        timeout=30,
    )


def _sidecar(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _result(outbox: Path, stem: str) -> dict[str, object]:
    return _sidecar(outbox / f"{stem}.facedub.result.json")


def test_service_daemon_as_its_own_user_shares_results_and_resumes_on_a_replaced_key(
    venv: Path,
    world: Path,
    accounts: Accounts,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
) -> None:
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    ugc = world / "srv/ugc"
    inbox = ugc / "acme/facedub/inbox"
    inbox.mkdir(parents=True)
    for folder in (ugc, ugc / "acme", ugc / "acme/facedub", inbox):  # as the README makes them: setgid, group-write
        os.chown(folder, 0, accounts.media)
        folder.chmod(0o2775)
    service = Service(venv, world, accounts)
    service.rules.parent.mkdir(parents=True)
    service.rules.write_text(
        f'providers:\n  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        f"rules:\n  - {{name: faces, inbox: {ugc}/*/facedub/inbox, facedub: {{}}}}\n"
    )
    service.rules.chmod(0o644)

    # A refused key at start: exit 78 naming the provider (the unit does not restart it).
    service.key("fdb_not_a_valid_key")
    assert service.start().wait(60) == 78
    assert "facedub API key" in service.text() and "refused" in service.text()

    service.key("fdb_sandbox")
    service.start()
    try:
        wait_for(lambda: "ugcwatchd running" in service.text(), timeout=30, what="the daemon to start")
        _drop(world, accounts, "alice", media["jpeg"], media["video.mp4"])
        outbox = ugc / "acme/facedub/outbox"  # created by the daemon: check --offline said "will be created"
        wait_for(lambda: _result(outbox, "alice"), timeout=60, what="alice's result")
        wait_for(lambda: (outbox / "originals" / "alice.jpg").exists(), timeout=30, what="the archived inputs")
        for path in [outbox, *outbox.rglob("*")]:
            st = path.stat()
            assert st.st_gid == accounts.media, f"{path} is not in the shared group"
            assert st.st_mode & 0o020, f"{path} is not group-writable ({oct(st.st_mode)})"

        as_root = _status(venv, world, None)
        as_service = _status(venv, world, accounts.service)
        assert as_root == as_service
        assert as_root["items"] == {"delivered": 1}
        owners = {p.name: p.stat().st_uid for p in service.state.iterdir()}
        assert set(owners.values()) == {accounts.service.pw_uid}, f"root's status left files of its own: {owners}"

        # A key refused later pauses the provider; a replaced key file and a reload resume it.
        service.key("fdb_revoked_key")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "facedub: paused" in service.text(), timeout=30, what="the provider to pause")
        _drop(world, accounts, "bob", media["png"], media["long.mp4"])  # new content: no duplicate
        wait_for(
            lambda: _sidecar(outbox / "bob.facedub.status.json").get("held_reason") == "paused",
            timeout=30,
            what="bob's job to be held",
        )
        assert not _result(outbox, "bob")
        service.key("fdb_sandbox")
        service.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _result(outbox, "bob"), timeout=60, what="bob's result after the key was replaced")
        assert service.text().count("reloaded") >= 2
    finally:
        service.stop()
    assert service.proc is not None and service.proc.returncode == 0, service.text()[-3000:]
