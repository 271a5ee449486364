"""Odd names through the real daemon: long CJK names, bytes that are not UTF-8, beside a plain one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import wait_for

from .test_cli_run import DaemonProcess, sidecar
from .test_cli_run import world as world  # the fixture


def test_odd_names_long_and_non_utf8_names_are_dubbed_and_never_stop_the_others(
    world: tuple[Path, Path], media: dict[str, Path]
) -> None:
    root, rules = world
    inbox, outbox = root / "dub" / "inbox", root / "dub" / "outbox"
    long_stem = "映像" * 39  # 234 bytes in UTF-8: too long to take ".de.status.json" and a temp suffix
    names = {
        "plain": "zz_ok.mp4",
        "latin1": os.fsdecode(b"caf\xe9.mp4"),  # as an SMB share from an old Windows may hand it over
        "long": f"{long_stem}.mp4",
    }
    for name in names.values():
        shutil.copy(media["video.mp4"], inbox / name)
    daemon = DaemonProcess(rules, root / "state")
    try:
        results = lambda: sorted(p.name for p in outbox.glob("*.de.result.json"))  # noqa: E731
        wait_for(lambda: len(results()) == 3, timeout=60, what="three results")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert "Traceback" not in daemon.text()
    by_input = {}
    for path in outbox.glob("*.de.result.json"):
        document = sidecar(path)
        assert document is not None
        (taken,) = document["inputs"]  # type: ignore[misc]
        by_input[taken["name"]] = document  # type: ignore[index]
    assert set(by_input) == {"zz_ok.mp4", "caf\\xe9.mp4", f"{long_stem}.mp4"}
    long_job = str(by_input[f"{long_stem}.mp4"]["job"])
    assert "~" in long_job and len(os.fsencode(long_job)) < 200
    status = subprocess.run(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "jobs", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "UGCWATCHD_STATE_DIR": str(root / "state")},
        check=True,
    )
    assert "caf\\\\xe9.de" in status.stdout and json.loads(status.stdout)
