"""The daemon's two listeners at start, against a real sandbox: an address already taken stops the start
the same way for the console as for the metrics (one sentence, the runtime exit code, nothing left
locked), before systemd is told the daemon is ready."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd.daemon import Daemon
from ugcwatchd.errors import ExitCode, UgcwatchdError
from ugcwatchd.rules import load_rules
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.settings import Settings

from .conftest import FD_KEY


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("console_listen", "cannot serve the web console on 127.0.0.1:{port}: the address is already in use"),
        ("metrics_listen", "cannot serve metrics on 127.0.0.1:{port}: the address is already in use"),
    ],
)
def test_daemon_listen_address_taken_at_start_exits_with_one_sentence_and_unlocks(
    tmp_path: Path, sandbox: Sandbox, key: str, said: str
) -> None:
    (tmp_path / "in").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"providers:\n  facedub: {{base_url: '{sandbox.urls['facedub']}'}}\n{key}: 127.0.0.1:{port}\n"
            f"rules:\n  - {{name: faces, inbox: {tmp_path}/in, facedub: {{}}}}\n"
        )
        settings = Settings(
            state_dir=tmp_path / "state",
            facedub_api_key=SecretStr(FD_KEY),
            console_token=SecretStr("a-console-token-0123456789"),
        )
        with pytest.raises(UgcwatchdError) as raised:
            asyncio.run(Daemon(load_rules(rules, {}), settings).run())
    assert str(raised.value).startswith(said.format(port=port))
    assert raised.value.exit_code == ExitCode.RUNTIME  # systemd may start it again: the address may be freed
    assert "\n" not in str(raised.value)
    Daemon(load_rules(rules, {}), settings).state_lock.release()  # the first one let go of the state folder
