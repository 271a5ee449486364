"""A real sandbox per test, on free loopback ports, with two users per provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support import ManualClock
from ugcwatchd.sandbox import Sandbox, SandboxConfig

FD_KEY, FD_KEY2 = "fdb_test_user_one", "fdb_test_user_two"
DL_KEY, DL_KEY2 = "dl_test_user_one", "dl_test_user_two"

SandboxFactory = Callable[..., Sandbox]


@pytest.fixture
def make_sandbox() -> Iterator[SandboxFactory]:
    started: list[Sandbox] = []

    def make(**overrides: Any) -> Sandbox:
        options: dict[str, Any] = {
            "port": 0,
            "job_seconds": 0.6,
            "facedub_keys": [FD_KEY, FD_KEY2],
            "dublab_keys": [DL_KEY, DL_KEY2],
        }
        options.update(overrides)
        sandbox = Sandbox(SandboxConfig(**options)).start()
        started.append(sandbox)
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    return make_sandbox()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timed_sandbox(make_sandbox: SandboxFactory, clock: ManualClock) -> Sandbox:
    """A sandbox whose time moves only with ``clock.advance`` (jobs take 10 s of that time)."""
    return make_sandbox(clock=clock, job_seconds=10.0)


def facedub(sandbox: Sandbox, key: str = FD_KEY) -> httpx.Client:
    return httpx.Client(base_url=sandbox.urls["facedub"], headers={"Authorization": f"Bearer {key}"}, timeout=10)


def dublab(sandbox: Sandbox, key: str = DL_KEY) -> httpx.Client:
    return httpx.Client(base_url=sandbox.urls["dublab"], headers={"apikey": key}, timeout=10)
