"""The providers by name: the one place that lists them.

The core asks the registry, never an ``if`` on a name: which providers exist, what a job would cost
before any client exists (``plan``), in what unit, and how to build an adapter from its settings
block and key (the daemon, ``check``, ``usage``). A new provider is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import httpx
from pydantic import SecretStr

from ..rules import ProviderSettings
from .base import AdapterClass, Provider
from .dublab import DubLab
from .facedub import FaceDub

_ADAPTERS: dict[str, AdapterClass] = {"facedub": FaceDub, "dublab": DubLab}
ADAPTERS: Mapping[str, AdapterClass] = MappingProxyType(_ADAPTERS)


def names() -> tuple[str, ...]:
    """Every registered provider's name, in a fixed order (FaceDub first)."""
    return tuple(ADAPTERS)


def adapter_class(name: str) -> AdapterClass:
    """The adapter class of the provider called ``name``; KeyError for an unknown name."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise KeyError(f"no provider called {name!r}; known: {', '.join(ADAPTERS)}") from None


def estimate_params(name: str, params: Mapping[str, Any]) -> int:
    """What a job of provider ``name`` with these ledger parameters would cost, in its budget unit."""
    return adapter_class(name).estimate_params(params)


def describe_job(name: str, params: Mapping[str, Any]) -> str:
    """A job's parameters and its expected cost in a few words, e.g. ``duration 7 s, ~2 credits``."""
    return adapter_class(name).describe_job(params)


def budget_unit(name: str) -> str:
    """What provider ``name``'s estimates, credits left and daily budget count: "credits", "seconds"."""
    return adapter_class(name).budget_unit


def build_provider(
    name: str,
    settings: ProviderSettings,
    key: SecretStr,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_answer: Callable[[int], None] | None = None,
) -> Provider:
    """The adapter of provider ``name``, with its client, from its ``providers.NAME`` block and key.

    ``on_answer`` is called with the status of every answer (metrics); ``transport`` is for tests.
    """
    return adapter_class(name).from_settings(settings, key, transport=transport, on_answer=on_answer)
