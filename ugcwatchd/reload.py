"""What a reload changes about the providers: settings applied live, adapters rebuilt, or a refusal.

A reload applies provider settings too (budgets, overage, poll cadence, keys). What is read at use
time (``LIVE_FIELDS``) changes in place; anything an adapter was built from (the URL, the key, the
job slots) gets a new adapter, which is refused while submissions are under way, since a request
cut off there would have to be reconciled against the old endpoint. A refusal keeps the old
configuration whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from .errors import ConfigError, UgcwatchdError
from .lifecycle import ProviderState
from .providers.registry import build_provider
from .rules import Config, ProviderSettings
from .settings import Settings, api_key

# Read by the lifecycle each time it decides, so a new value applies at once.
LIVE_FIELDS = frozenset(
    {"poll_every", "allow_overage", "daily_credit_budget", "daily_seconds_budget", "reconcile_grace"}
)


class ReloadRefused(UgcwatchdError):
    """A reload that cannot be applied live; the old configuration stays whole."""


@dataclass
class ProviderChanges:
    """What a reload does to the providers."""

    settings: dict[str, ProviderSettings] = field(default_factory=dict)  # applied in place
    rebuilt: dict[str, ProviderState] = field(default_factory=dict)  # new adapters (new or changed)
    polls: set[str] = field(default_factory=set)  # providers whose poll cadence is new

    def describe(self) -> str:
        parts = [f"{name} settings" for name in sorted(self.settings)]
        parts += [f"{name} rebuilt" for name in sorted(self.rebuilt)]
        return ", ".join(parts) or "providers unchanged"


def _key_text(name: str, block: ProviderSettings, settings: Settings) -> str:
    key = api_key(name, block.api_key, settings)
    if key.value is None or not key.present:
        raise ConfigError(f"no {name} API key", remedy=f"set UGCWATCHD_{name.upper()}_API_KEY or the credential")
    return key.value.get_secret_value()


def provider_changes(
    current: dict[str, ProviderState],
    keys: dict[str, str],
    config: Config,
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_answer: Callable[[str], Callable[[int], None]] | None = None,
    in_flight: Callable[[str], list[int]] = lambda name: [],
    previous: Config | None = None,
) -> ProviderChanges:
    """Compare the running providers (and the keys they were built with) with ``config``.

    ``in_flight(name)``: the ids of the provider's jobs whose submission is unresolved (the ledger's
    ``submitting`` jobs), besides those under way in this process. ``previous``: the rules running now, for
    what a reload cannot change (:func:`check_ledger_unchanged`).
    """
    if previous is not None:
        check_ledger_unchanged(previous, config, settings)
    changes = ProviderChanges()
    for name in sorted({rule.provider for rule in config.rules} | set(current)):
        block = config.providers.settings(name)
        key = _key_text(name, block, settings)
        ps = current.get(name)
        if ps is not None and ps.settings == block and keys.get(name) == key:
            continue
        if ps is not None and _only_live(ps.settings, block) and keys.get(name) == key:
            changes.settings[name] = block
            if block.poll_every != ps.settings.poll_every:
                changes.polls.add(name)
            continue
        unresolved = len(ps.submitting | set(ps.claims) | set(in_flight(name))) if ps is not None else 0
        # A paused provider's old key is refused: its unresolved submissions can only be reconciled with the
        # new one (a rotated key of the same account at the same address), so that change is let through.
        rotated = ps is not None and ps.paused is not None and ps.settings.base_url == block.base_url
        if unresolved and not rotated:
            # A submission whose outcome is unknown must be reconciled where it was sent, with that key.
            raise ReloadRefused(
                f"{name}'s endpoint, key or job slots changed while {unresolved} submission(s) are under way",
                remedy="reload again once they are done",
            )
        counted = on_answer(name) if on_answer else None
        provider = build_provider(name, block, SecretStr(key), transport=transport, on_answer=counted)
        changes.rebuilt[name] = ProviderState(name, provider, block)
        changes.polls.add(name)
    return changes


def _only_live(old: ProviderSettings, new: ProviderSettings) -> bool:
    differing = {k for k in type(new).model_fields if getattr(old, k, None) != getattr(new, k, None)}
    return type(old) is type(new) and differing <= LIVE_FIELDS


def current_keys(config: Config, settings: Settings, names: list[str]) -> dict[str, str]:
    """The key each provider's adapter is built with now, to tell a replaced key at the next reload."""
    return {name: _key_text(name, config.providers.settings(name), settings) for name in names}


def check_ledger_unchanged(old: Config, new: Config, settings: Settings) -> None:
    """A reload cannot move the ledger or change the lease time: the daemon's work is recorded, and leased,
    where it started. Refused (naming no URL, which may hold a password) when either changes."""
    environment = settings.ledger.get_secret_value().strip() if settings.ledger is not None else ""
    if (old.ledger or environment or None) != (new.ledger or environment or None):
        raise ReloadRefused("the ledger changed", remedy="restart to move the ledger")
    if old.lease_ttl != new.lease_ttl:
        raise ReloadRefused(
            f"lease_ttl changed from {old.lease_ttl:g}s to {new.lease_ttl:g}s", remedy="restart to move the ledger"
        )
