"""The console's life in the daemon: moved by a reload (or refused one), a new token ends sessions, and
it stops promptly with a browser's connection still open."""

from __future__ import annotations

import socket
import time
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.console import Console, ConsoleError
from ugcwatchd.errors import ConfigError
from ugcwatchd.ledger import Ledger
from ugcwatchd.settings import Settings

from .conftest import Served, free_port, logged_in


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/overview.json", timeout=5).status_code == 200
    except httpx.ConnectError:
        return False


def test_console_reload_moves_it_or_is_refused_when_the_address_is_taken(served: Served) -> None:
    old, new = served.port, free_port()
    served.run(served.console.apply(served.console.prepare(f"127.0.0.1:{new}")))
    assert _answers(new) and not _answers(old)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        said = f"cannot serve the web console on 127.0.0.1:{busy}: the address is already in use"
        with pytest.raises(ConsoleError, match=said):
            served.console.prepare(f"127.0.0.1:{busy}")
    assert _answers(new)
    same = served.console.prepare(f"127.0.0.1:{new}")
    assert same.sock is None  # nothing to bind: it already serves there
    served.run(served.console.apply(same))
    assert _answers(new)
    served.run(served.console.apply(served.console.prepare(None)))
    assert not _answers(new)


def test_console_new_token_at_reload_ends_every_session(served: Served) -> None:
    client, csrf = logged_in(served)
    with closing(client):
        served.console.settings = Settings(console_token=SecretStr("a-brand-new-console-token"))
        served.run(served.console.apply(served.console.prepare(served.console.listen)))
        assert client.post("/logout", data={"csrf": csrf}).status_code == 403
        assert 'action="/logout"' not in client.get("/").text


def test_console_bad_token_stops_the_start_with_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "console_token").write_text("short")
    console = Console(lambda: Ledger(tmp_path / "ledger.sqlite3"), dict, lambda: None, Settings())  # type: ignore[arg-type,return-value]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
        with pytest.raises(ConfigError, match="console token from the systemd credential console_token is shorter"):
            console.prepare("127.0.0.1:0")


def test_console_stops_within_seconds_with_a_connection_open(served: Served) -> None:
    with httpx.Client(base_url=served.base) as browser:  # keeps its connection alive, as a browser does
        assert browser.get("/").status_code == 200
        started = time.monotonic()
        served.run(served.console.stop())
        took = time.monotonic() - started
    assert took < 4 and not _answers(served.port)
