"""The console served by uvicorn on its own event loop thread (as the daemon's loop would), over a real
ledger in a temporary state folder, asked over loopback HTTP."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.console import Console
from ugcwatchd.ledger import Ledger
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings

TOKEN = "integration-console-token-0123"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A console on a loop of its own; ``base`` is its address, ``ledger`` the test's own connection."""

    def __init__(self, root: Path, token: str | None) -> None:
        (root / "in").mkdir()
        rules = root / "rules.yaml"
        rules.write_text(f"rules:\n  - {{name: faces, inbox: {root}/in, outbox: {root}/out, facedub: {{}}}}\n")
        self.config = load_rules(rules, {})
        self.ledger = Ledger.open(root / "state")
        settings = Settings(console_token=SecretStr(token) if token else None)
        self.console = Console(self.ledger.reopen, dict, lambda: self.config, settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-test", daemon=True)
        self.thread.start()
        self.port = free_port()
        self.run(self.console.start(f"127.0.0.1:{self.port}"))
        self.base = f"http://127.0.0.1:{self.port}"

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def close(self) -> None:
        self.run(self.console.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.ledger.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, TOKEN)
    yield s
    s.close()


@pytest.fixture
def tokenless(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path, None)
    yield s
    s.close()


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


def logged_in(served: Served) -> tuple[httpx.Client, str]:
    """A client with a session, and the session's CSRF token."""
    client = served.client()
    form = client.get("/login")
    done = client.post("/login", data={"csrf": csrf_in(form.text), "token": TOKEN, "next": "/"})
    assert done.status_code == 303, done.text
    return client, csrf_in(client.get("/").text)
