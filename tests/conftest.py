"""Fixtures for every test: a hermetic environment and real sample media; PostgreSQL from tests/pg.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ugcwatchd.sandbox.media import make_media, make_photo

# pg_server (a throwaway cluster per test process) and pg_url (a fresh database per test).
pytest_plugins = ("tests.pg", "tests.ledgers")

_LEAKY = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "STATE_DIRECTORY",
    "CREDENTIALS_DIRECTORY",
)
_PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's settings, proxies, systemd sockets, libpq defaults or home directory."""
    for name in list(os.environ):
        if name.startswith(("UGCWATCHD_", "PG")) or name in _LEAKY or name.lower() in _PROXIES:
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Real sample files: photos in three formats, clips, and impostors."""
    root = tmp_path_factory.mktemp("media")
    files = {
        "jpeg": make_photo(root / "photo.jpg"),
        "png": make_photo(root / "photo.png", fmt="PNG"),
        "webp": make_photo(root / "photo.webp", fmt="WEBP"),
    }
    for name, seconds, kwargs in (
        ("video.mp4", 3, {}),
        ("long.mp4", 7, {}),
        ("speech.mov", 2, {"container": "mov"}),
        ("voice.mp3", 4, {"container": "mp3", "video": False}),
    ):
        make_media(root / name, seconds, **kwargs)  # type: ignore[arg-type]
        files[name] = root / name
    (root / "notes.mp4").write_text("this is a text file with a video name\n")
    files["notes.mp4"] = root / "notes.mp4"
    whole = (root / "video.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    files["truncated.mp4"] = root / "truncated.mp4"
    yield files


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, like the daemon."""
    return "asyncio"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Captured output may hold file names that are not UTF-8 (lone surrogates); pytest-xdist sends reports
    between processes as UTF-8 and stops the whole run on one. Such characters are shown escaped instead."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if isinstance(report.longrepr, str):
        report.longrepr = _utf8(report.longrepr)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The minute-long runs first: started last, one of them would keep a worker busy after the rest ended.

    Every worker collects the same order (xdist requires it), so this is a stable sort on the marker only.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
