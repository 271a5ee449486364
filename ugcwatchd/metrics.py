"""Prometheus metrics (``metrics_listen:``, off by default): what monitoring needs to see stuck work.

Counts of items and jobs come from the ledger at scrape time, through a read-only connection of the
scrape's own (the HTTP server runs in another thread); provider state comes from the running daemon.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .names import shown

if TYPE_CHECKING:
    from .lifecycle import ProviderState


def parts_label(stored: str) -> str:
    """The named parts as the ledger stores them (JSON, or ``""`` for none) as one label: ``client=acme``."""
    parts = json.loads(stored) if stored else {}
    # A folder name that is not UTF-8 shows its bytes as \xNN: a label that cannot be encoded fails the scrape.
    return ",".join(f"{shown(k)}={shown(v)}" for k, v in sorted(parts.items()))


class _State(Collector):
    def __init__(
        self, ledger_path: Path, providers: Callable[[], dict[str, ProviderState]], clock: Callable[[], float]
    ) -> None:
        self.ledger_path = ledger_path
        self.providers = providers
        self.clock = clock

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
        db = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=5)
        try:
            # Tallies the ledger's triggers keep: a few rows, however long the history.
            for state, count in db.execute("SELECT state, n FROM item_tally WHERE n > 0"):
                items.add_metric([state], count)
            for provider, state, count in db.execute("SELECT provider, state, n FROM job_tally WHERE n > 0"):
                jobs.add_metric([provider, state], count)
            for provider, total in db.execute("SELECT provider, credits FROM charged"):
                charged.add_metric([provider], total)
            for provider, rule, parts, total in db.execute("SELECT provider, rule, parts, credits FROM charged_by"):
                by_client.add_metric([provider, rule, parts_label(parts)], total)
        finally:
            db.close()
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
        ledger_path: Path,
        providers: Callable[[], dict[str, ProviderState]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        self.answers = Counter(
            "ugcwatchd_api_answers",
            "Answers from the providers' APIs by HTTP status (429s included)",
            ["provider", "status"],
            registry=self.registry,
        )
        self.registry.register(_State(ledger_path, providers, clock))

    def answer(self, provider: str) -> Callable[[int], None]:
        """A callback for one provider's client: counts each answer by status."""
        return lambda status: self.answers.labels(provider, str(status)).inc()

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=self.registry)
