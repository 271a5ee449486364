"""Prometheus metrics (``metrics_listen:``, off by default): what monitoring needs to see stuck work.

Counts of items and jobs come from the ledger's tallies at scrape time, through a ledger handle of the
metrics' own (the HTTP server runs in other threads), on SQLite or PostgreSQL alike; provider state comes
from the running daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .ledger.records import parts_from_db
from .names import shown

if TYPE_CHECKING:
    from .ledger import Ledger
    from .ledger.console import Tallies
    from .lifecycle import ProviderState


def parts_label(stored: str) -> str:
    """The named parts as the ledger stores them (JSON, or ``""`` for none) as one label: ``client=acme``."""
    parts = parts_from_db(stored)
    # A folder name that is not UTF-8 shows its bytes as \xNN: a label that cannot be encoded fails the scrape.
    return ",".join(f"{shown(k)}={shown(v)}" for k, v in sorted(parts.items()))


class _State(Collector):
    def __init__(
        self,
        open_ledger: Callable[[], Ledger],
        providers: Callable[[], dict[str, ProviderState]],
        clock: Callable[[], float],
    ) -> None:
        self.open_ledger = open_ledger
        self.providers = providers
        self.clock = clock
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()  # scrapes run in threads of their own; one uses the handle at a time

    def tallies(self) -> Tallies:
        """The ledger's tallies, through a handle of the metrics' own (opened at the first scrape)."""
        with self._lock:
            if self._ledger is None:
                self._ledger = self.open_ledger()
            return self._ledger.tallies()

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None

    def collect(self) -> Iterator[Metric]:
        items = GaugeMetricFamily("ugcwatchd_items", "Items by state", labels=["state"])
        jobs = GaugeMetricFamily(
            "ugcwatchd_jobs", "Jobs by provider and state (queued is the queue depth)", labels=["provider", "state"]
        )
        charged = CounterMetricFamily(
            "ugcwatchd_credits_charged",
            "Credits (DubLab: seconds) charged, for delivered jobs and for failed jobs the provider charged",
            labels=["provider"],
        )
        by_client = CounterMetricFamily(
            "ugcwatchd_client_credits_charged",
            "Credits (DubLab: seconds) charged, by rule and the named parts of the inbox (client=acme)",
            labels=["provider", "rule", "parts"],
        )
        tallies = self.tallies()
        for state, count in tallies.items:
            items.add_metric([state], count)
        for provider, state, count in tallies.jobs:
            jobs.add_metric([provider, state], count)
        for provider, total in tallies.charged:
            charged.add_metric([provider], total)
        for provider, rule, parts, total in tallies.charged_by:
            by_client.add_metric([provider, rule, parts_label(parts)], total)
        yield from (items, jobs, charged, by_client)
        remaining = GaugeMetricFamily(
            "ugcwatchd_credits_remaining", "Credits (DubLab: seconds) left at the last check", labels=["provider"]
        )
        paused = GaugeMetricFamily(
            "ugcwatchd_provider_paused", "1 while the provider refuses our key", labels=["provider"]
        )
        poll_age = GaugeMetricFamily(
            "ugcwatchd_last_poll_age_seconds", "Seconds since the last successful poll", labels=["provider"]
        )
        for name, ps in self.providers().items():
            if ps.remaining is not None:
                remaining.add_metric([name], ps.remaining)
            paused.add_metric([name], 1 if ps.paused else 0)
            if ps.last_poll_ok is not None:
                poll_age.add_metric([name], self.clock() - ps.last_poll_ok)
        yield from (remaining, paused, poll_age)


class Metrics:
    def __init__(
        self,
        open_ledger: Callable[[], Ledger],
        providers: Callable[[], dict[str, ProviderState]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``open_ledger``: a handle of the metrics' own on the daemon's ledger (``Ledger.reopen``)."""
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "ugcwatchd_api_answers",
            "Answers from the providers' APIs by HTTP status (429s included)",
            ["provider", "status"],
            registry=self.registry,
        )
        self._state = _State(open_ledger, providers, clock)
        self.registry.register(self._state)

    def answer(self, provider: str) -> Callable[[int], None]:
        """A callback for one provider's client: counts each answer by status."""
        return lambda status: self.answers.labels(provider, str(status)).inc()

    def close(self) -> None:
        """Close the metrics' ledger handle (a scrape after this opens another)."""
        self._state.close()

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
