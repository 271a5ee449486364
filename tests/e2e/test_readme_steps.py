"""The README's "Running as a service" steps, run as written against a scratch root.

Every ```sh block of that section is run in one bash, in order, with ``ROOT`` set to a scratch folder
(the blocks prefix every absolute path with it). What would change the machine itself is stubbed by
scripts on PATH that record their calls: ``sudo`` (runs the command), ``groupadd``, ``usermod``,
``chgrp``, ``systemd-sysusers``, ``systemd-tmpfiles``, ``systemctl``; and ``/usr/bin/python3 -m venv``
makes a venv whose ``pip`` records its call and whose ``ugcwatchd`` is this checkout's.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMMAND = Path(sys.executable).parent / "ugcwatchd"  # this checkout's console script

RECORD = '#!/bin/sh\necho "$(basename "$0") $*" >> "$CALLS"\n'
SUDO = """#!/bin/bash
echo "sudo $*" >> "$CALLS"
while [ "${1#-}" != "$1" ]; do case "$1" in -u) shift 2 ;; *) shift ;; esac; done
if [ "$1" = /usr/bin/python3 ] && [ "$2" = -m ] && [ "$3" = venv ]; then
    mkdir -p "$4/bin"
    printf '#!/bin/sh\\necho "pip $*" >> "$CALLS"\\n' > "$4/bin/pip"
    printf '#!/bin/sh\\nexec %s "$@"\\n' "$UGCWATCHD_COMMAND" > "$4/bin/ugcwatchd"
    chmod +x "$4/bin/pip" "$4/bin/ugcwatchd"
    exit 0
fi
exec "$@"
"""


def service_blocks(readme: str) -> list[str]:
    """The ```sh blocks between "## Running as a service" and the next section."""
    start = readme.index("## Running as a service")
    end = readme.index("\n## ", start + 1)
    return re.findall(r"^```sh\n(.*?)^```$", readme[start:end], flags=re.S | re.M)


def test_readme_service_section_has_the_steps() -> None:
    blocks = service_blocks((REPO / "README.md").read_text())
    text = "\n".join(blocks)
    assert len(blocks) >= 5
    for needed in ("groupadd", "/usr/bin/python3 -m venv", 'bin/pip" install', 'ugcwatchd" init', "install -m 600"):
        assert needed in text, needed
    assert "enable --now ugcwatchd" in text
    # Every absolute path is under $ROOT, except the system's Python and the devices.
    for path in re.findall(r'(?<![\w$}"/.])/(?:srv|opt|etc|var|usr/local)\b\S*', text):
        pytest.fail(f"{path} is not prefixed with $ROOT")


@pytest.mark.skipif(os.geteuid() != 0, reason="the steps `install -o root` the key files, which needs root")
def test_readme_service_steps_run_as_written(tmp_path: Path) -> None:
    root, stubs, calls = tmp_path / "root", tmp_path / "stubs", tmp_path / "calls"
    (root / "usr/local/bin").mkdir(parents=True)  # there on every Debian and Ubuntu
    stubs.mkdir()
    for name in ("groupadd", "usermod", "chgrp", "systemd-sysusers", "systemd-tmpfiles", "systemctl"):
        (stubs / name).write_text(RECORD)
    (stubs / "sudo").write_text(SUDO)
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    script = "set -euo pipefail\n" + "\n".join(service_blocks((REPO / "README.md").read_text()))
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "ROOT": str(root),
        "CALLS": str(calls),
        "UGCWATCHD_COMMAND": str(COMMAND),
        # Outside the unit, commands read the keys where LoadCredential= does: here, under ROOT.
        "UGCWATCHD_SYSTEM_CREDENTIALS_DIR": str(root / "etc/ugcwatchd/credentials"),
        "UGCWATCHD_SYSTEM_STATE_DIR": str(root / "var/lib/ugcwatchd"),
    }
    result = subprocess.run(
        ["bash", "-c", script],
        input="fdb_readme_key\ndl_readme_key\n",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    recorded = [line.strip() for line in calls.read_text().splitlines()]
    for call in (
        "groupadd -f media",
        "pip install .",
        f"systemd-sysusers --root {root}",  # under a scratch ROOT, the users and folders go there too
        f"systemd-tmpfiles --create --root {root}",
        "usermod -aG media ugcwatchd",
        "systemctl daemon-reload",
        "systemctl enable --now ugcwatchd",
    ):
        assert call in recorded, f"{call!r} not in {recorded}"
    unit = (root / "etc/systemd/system/ugcwatchd.service").read_text()
    assert f"ExecStart={COMMAND} run" in unit.splitlines()
    assert (root / "etc/sysusers.d/ugcwatchd.conf").is_file() and (root / "etc/tmpfiles.d/ugcwatchd.conf").is_file()
    assert (root / "etc/ugcwatchd/rules.yaml").read_text() == (REPO / "rules.example.yaml").read_text()
    for name, key in (("facedub_api_key", "fdb_readme_key"), ("dublab_api_key", "dl_readme_key")):
        path = root / "etc/ugcwatchd/credentials" / name
        assert path.read_text() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    srv = (root / "srv/ugc").stat()
    assert stat.S_IMODE(srv.st_mode) == 0o2775
    assert (root / "usr/local/bin/ugcwatchd").resolve() == (root / "opt/ugcwatchd/bin/ugcwatchd")
    # check --offline ran and found the keys LoadCredential= will hand over.
    assert "ok: no problems found" in result.stdout
    assert "facedub: " not in result.stderr and "no facedub API key" not in result.stdout
