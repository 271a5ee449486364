"""DubLab's live language list, read from the sandbox over loopback HTTP, cached in a real ledger."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from ugcwatchd import languages
from ugcwatchd.check import use_languages
from ugcwatchd.ledger import FILE_NAME, Ledger
from ugcwatchd.live_languages import refresh
from ugcwatchd.providers.dublab import DubLab, DubLabClient
from ugcwatchd.providers.facedub import FaceDub, FaceDubClient
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.settings import Settings

from .conftest import DL_KEY, FD_KEY

pytestmark = pytest.mark.anyio
NEW = "qx"


@pytest.fixture(autouse=True)
def built_in_languages() -> Iterator[None]:
    languages.use(None)
    yield
    languages.use(None)


def dublab_at(url: str) -> DubLab:
    return DubLab(DubLabClient(url, SecretStr(DL_KEY), retry_base=0.01, get_attempts=1))


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed


async def test_refresh_reads_caches_and_uses_the_providers_list(tmp_path: Path, sandbox: Sandbox) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    dublab = dublab_at(sandbox.urls["dublab"])
    facedub = FaceDub(FaceDubClient(sandbox.urls["facedub"], SecretStr(FD_KEY)))
    try:
        read = await refresh({"facedub": facedub, "dublab": dublab}, ledger)
    finally:
        await dublab.aclose()
        await facedub.aclose()
    assert read == {"dublab": languages.BUILT_IN}  # FaceDub's jobs take no language: nothing read for it
    cached = ledger.cached_languages("dublab")
    assert cached is not None and cached[0] == languages.BUILT_IN
    assert ledger.cached_languages("facedub") is None
    assert languages.live()
    ledger.close()


async def test_refresh_provider_unreachable_keeps_the_cached_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path / FILE_NAME)
    ledger.put_languages("dublab", {*languages.BUILT_IN, NEW})
    languages.use({*languages.BUILT_IN, NEW})  # what the daemon put in use from the cache at start
    dublab = dublab_at(closed_port())
    try:
        with caplog.at_level(logging.WARNING, "ugcwatchd.live_languages"):
            assert await refresh({"dublab": dublab}, ledger) == {}
    finally:
        await dublab.aclose()
    assert NEW in languages.known()
    cached = ledger.cached_languages("dublab")
    assert cached is not None and NEW in cached[0]
    assert "dublab: cannot read the language list now" in caplog.text and "the cached list stays in use" in caplog.text
    ledger.close()


def rules_file(tmp_path: Path, dublab_url: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f'providers:\n  dublab: {{base_url: "{dublab_url}"}}\n'
        f"rules:\n  - {{inbox: {tmp_path}/in, dublab: {{to: [de, {NEW}]}}}}\n"
    )
    return path


def test_check_languages_online_are_read_and_cached_in_an_existing_ledger(
    tmp_path: Path, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", DL_KEY)
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "state"))
    rules = rules_file(tmp_path, sandbox.urls["dublab"])
    said = use_languages(rules, Settings.from_env(), online=True)
    assert said == f"languages: dublab's current list ({len(languages.BUILT_IN)})"
    assert not (tmp_path / "state").exists()  # check never creates a ledger
    Ledger(tmp_path / "state" / FILE_NAME).close()
    said = use_languages(rules, Settings.from_env(), online=True)
    assert said.endswith(", cached in the ledger")
    ledger = Ledger(tmp_path / "state" / FILE_NAME)
    cached = ledger.cached_languages("dublab")
    assert cached is not None and cached[0] == languages.BUILT_IN
    ledger.close()


def test_check_languages_offline_or_unreachable_use_the_cache_else_the_built_in_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UGCWATCHD_DUBLAB_API_KEY", DL_KEY)
    monkeypatch.setenv("UGCWATCHD_STATE_DIR", str(tmp_path / "state"))
    rules = rules_file(tmp_path, closed_port())
    assert use_languages(rules, Settings.from_env(), online=False).startswith("languages: the built-in list")
    assert use_languages(rules, Settings.from_env(), online=True).startswith("languages: the built-in list")
    ledger = Ledger(tmp_path / "state" / FILE_NAME)
    ledger.put_languages("dublab", {*languages.BUILT_IN, NEW})
    ledger.close()
    for online in (False, True):
        languages.use(None)
        said = use_languages(rules, Settings.from_env(), online=online)
        assert said.startswith("languages: the list cached in") and NEW in languages.known()
    (tmp_path / "rules.yaml").write_text("providers: [not, a, mapping\n")  # unreadable: load_rules will say why
    assert use_languages(rules, Settings.from_env(), online=True).startswith("languages: the list cached in")
