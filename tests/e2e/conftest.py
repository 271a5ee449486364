"""Running the real ``ugcwatchd`` command in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_for


class SandboxProcess:
    """``ugcwatchd sandbox`` in a child process, with the URLs it printed."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ugcwatchd", "sandbox", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=os.environ.copy(),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_for(lambda: len(self.lines) >= 3 or self.proc.poll() is not None, timeout=20, what="the sandbox to start")
        self.urls = dict(line.split(" ", 1) for line in self.lines[:3])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def sandbox_process() -> Iterator[type[SandboxProcess]]:
    started: list[SandboxProcess] = []

    class Tracked(SandboxProcess):
        def __init__(self, *args: str, cwd: Path | None = None) -> None:
            super().__init__(*args, cwd=cwd)
            started.append(self)

    yield Tracked
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()
