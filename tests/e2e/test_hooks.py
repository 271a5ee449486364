"""notify: hooks on every result and error sidecar; a failing hook never stops a job."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support import wait_for

from .conftest import SandboxProcess
from .test_cli_run import DaemonProcess, sidecar


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A local webhook receiver that keeps every JSON body posted to it."""
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_hooks_post_the_sidecar_and_run_the_command_and_failures_change_nothing(
    tmp_path: Path,
    sandbox_process: type[SandboxProcess],
    media: dict[str, Path],
    receiver: tuple[str, list[dict[str, object]]],
) -> None:
    url, received = receiver
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    for folder in ("good/inbox", "good/outbox", "bad/inbox", "bad/outbox"):
        (tmp_path / folder).mkdir(parents=True)
    seen = tmp_path / "seen.txt"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'providers:\n  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 0.5s, rescan_every: 2s}\n"
        f'notify: {{webhook: "{url}", command: ["/bin/sh", "-c", "echo \\"$1\\" >> {seen}", "hook", "{{sidecar}}"]}}\n'
        "rules:\n"
        "  - {name: good, inbox: good/inbox, dublab: {to: [de]}}\n"
        "  - {name: bad, inbox: bad/inbox, dublab: {to: [de]},\n"
        f'     notify: {{webhook: "http://127.0.0.1:{closed}/x", command: ["/bin/false"]}}}}\n'
    )
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        shutil.copy(media["video.mp4"], tmp_path / "good" / "inbox" / "clip.mp4")
        shutil.copy(media["notes.mp4"], tmp_path / "good" / "inbox" / "notes.mp4")
        shutil.copy(media["voice.mp3"], tmp_path / "bad" / "inbox" / "voice.mp3")
        wait_for(lambda: len(received) >= 2, timeout=30, what="two webhook calls")
        bad = wait_for(
            lambda: sidecar(tmp_path / "bad" / "outbox" / "voice.de.result.json"),
            timeout=30,
            what="the bad rule's result",
        )
        wait_for(lambda: "notify: /bin/false" in daemon.text(), timeout=10, what="the failed command in the log")
    finally:
        assert daemon.stop() == 0, daemon.text()[-2000:]
    assert bad["state"] == "delivered"  # failing hooks changed nothing
    kinds = sorted((str(doc["job"]), str(doc["kind"])) for doc in received)
    assert kinds == [("clip.de", "result"), ("notes.de", "error")]
    assert sorted(Path(line).name for line in seen.read_text().split()) == [
        "clip.de.result.json",
        "notes.de.error.json",
    ]
    assert "notify: webhook for voice.de.result.json failed" in daemon.text()
