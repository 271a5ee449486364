"""``ugcwatchd init``: write what a service install needs, from the files the package carries.

The unit, the sysusers and tmpfiles entries and a commented starter rules file ship in
``ugcwatchd/data/`` (copies of the repository's ``systemd/`` and ``rules.example.yaml``). The unit's
``ExecStart=`` is pointed at the ``ugcwatchd`` that runs ``init``, wherever it was installed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ExitCode, UsageError, map_os_errors


@dataclass(frozen=True)
class Target:
    """One file ``init`` writes: its name in the package, where it goes, and whether it is the admin's."""

    data: str
    path: str  # absolute, under --root
    mode: int
    admin_owned: bool = False  # the rules file: never overwritten, even with --force


TARGETS = {
    "unit": Target("ugcwatchd.service", "/etc/systemd/system/ugcwatchd.service", 0o644),
    "sysusers": Target("ugcwatchd.sysusers", "/etc/sysusers.d/ugcwatchd.conf", 0o644),
    "tmpfiles": Target("ugcwatchd.tmpfiles", "/etc/tmpfiles.d/ugcwatchd.conf", 0o644),
    "rules": Target("rules.yaml", "/etc/ugcwatchd/rules.yaml", 0o644, admin_owned=True),
}
CREDENTIALS = "/etc/ugcwatchd/credentials"
HIDDEN = ("/home/", "/root/", "/run/user/")  # ProtectHome=yes in the unit


def data_text(name: str) -> str:
    """A file the package carries in ``ugcwatchd/data/``."""
    return resources.files("ugcwatchd").joinpath("data", name).read_text(encoding="utf-8")


def executable() -> str:
    """The absolute path of the running ``ugcwatchd`` command, for ``ExecStart=``.

    The console script beside the interpreter (a venv, pipx, /usr/local), else ``sys.argv[0]`` when it is
    the script, else the one on PATH; as a last resort the interpreter itself with ``-m ugcwatchd``.
    """
    beside = Path(sys.executable).parent / "ugcwatchd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "ugcwatchd" and argv0.is_file():
        return str(argv0.resolve())
    found = shutil.which("ugcwatchd")
    if found:
        return str(Path(found).resolve())
    return f"{Path(sys.executable).absolute()} -m ugcwatchd"


def render(what: str, command: str | None = None) -> str:
    """The text of one file as ``init`` writes it (the unit's ``ExecStart=`` pointed at ``command``)."""
    text = data_text(TARGETS[what].data)
    if what != "unit":
        return text
    command = command or executable()
    if " " in command.split(" -m ")[0]:
        raise UsageError(f"the ugcwatchd command's path contains a space, which ExecStart= cannot take: {command}")
    lines = [f"ExecStart={command} run" if line.startswith("ExecStart=") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.init-tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(mode)
    os.replace(temporary, path)


def install(root: Path, *, force: bool = False, command: str | None = None) -> list[str]:
    """Write every file under ``root``; the lines say what was written, kept or left unchanged."""
    lines: list[str] = []
    for what, target in TARGETS.items():
        path = root / target.path.lstrip("/")
        text = render(what, command)
        with map_os_errors(f"write {path}"):
            if path.exists():
                if target.admin_owned:
                    lines.append(f"kept     {path} (it exists; init never overwrites the rules)")
                    continue
                if path.read_text(encoding="utf-8", errors="replace") == text:
                    lines.append(f"same     {path}")
                    continue
                if not force:
                    lines.append(f"kept     {path} (it exists and differs: --force overwrites it)")
                    continue
                _write(path, text, target.mode)
                lines.append(f"replaced {path} (--force)")
                continue
            _write(path, text, target.mode)
            lines.append(f"wrote    {path}")
    credentials = root / CREDENTIALS.lstrip("/")
    with map_os_errors(f"create {credentials}"):
        if not credentials.exists():
            credentials.mkdir(mode=0o700, parents=True)
            credentials.chmod(0o700)
            lines.append(f"created  {credentials}/ (0700, for the API keys)")
    return lines


NEXT_STEPS = """\
next:
  systemd-sysusers                     # the ugcwatchd user
  systemd-tmpfiles --create            # /etc/ugcwatchd/credentials, root-only
  usermod -aG media ugcwatchd          # the group that owns your shared folders
  # the keys, readable by root only (systemd hands them to the daemon):
  install -m 600 -o root /dev/stdin /etc/ugcwatchd/credentials/facedub_api_key
  install -m 600 -o root /dev/stdin /etc/ugcwatchd/credentials/dublab_api_key
  # edit /etc/ugcwatchd/rules.yaml, and ReadWritePaths= in the unit if your folders are not under /srv/ugc
  ugcwatchd check
  systemctl daemon-reload
  systemctl enable --now ugcwatchd"""


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ugcwatchd init`` on the command line."""
    p = commands.add_parser(
        "init",
        help="write the systemd unit, sysusers, tmpfiles and a starter rules file",
        description="Write /etc/systemd/system/ugcwatchd.service (ExecStart= is this ugcwatchd), "
        "/etc/sysusers.d/ugcwatchd.conf, /etc/tmpfiles.d/ugcwatchd.conf and a commented starter "
        "/etc/ugcwatchd/rules.yaml, then print the next commands. An existing rules file is never "
        "overwritten; existing unit files only with --force.",
    )
    p.add_argument("--root", metavar="DIR", help="write under DIR instead of / (an image, a package, a test)")
    p.add_argument("--force", action="store_true", help="overwrite existing unit, sysusers and tmpfiles files")
    p.add_argument(
        "--print", dest="show", choices=tuple(TARGETS), metavar="WHAT", help=f"print one of {', '.join(TARGETS)}"
    )
    p.set_defaults(handler=run_init)


def run_init(args: argparse.Namespace) -> int:
    if args.show:
        sys.stdout.write(render(args.show))
        return ExitCode.OK
    root = Path(args.root) if args.root else Path("/")
    for line in install(root, force=args.force):
        print(line)
    command = executable()
    print(f"ExecStart={command} run")
    if command.startswith(HIDDEN):
        # ProtectHome=yes: the service would not even find its own command.
        print(
            "warning: the unit hides /home, /root and /run/user from the daemon; install it elsewhere (/opt/ugcwatchd)"
        )
    print(NEXT_STEPS)
    return ExitCode.OK
