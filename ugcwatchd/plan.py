"""``ugcwatchd plan``: what every file now in the inboxes would become. Submits nothing, writes nothing.

The real ingestion code runs against a scratch copy of the ledger, so what it prints is what the daemon
would do, duplicates judged against the real history included; files are taken as complete now.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
from pathlib import Path

from .inbox.ingest import InboxIngest
from .ledger import FILE_NAME, Ledger
from .providers import registry
from .rules import Config
from .settings import Settings
from .states import ItemState, JobState


def _scratch(settings: Settings, folder: Path) -> Ledger:
    real = settings.resolved_state_dir() / FILE_NAME
    copy = folder / FILE_NAME
    if real.exists():
        source = sqlite3.connect(f"file:{real}?mode=ro", uri=True)
        target = sqlite3.connect(copy)
        source.backup(target)
        source.close()
        target.close()
    return Ledger(copy)


async def _plan(config: Config, ledger: Ledger) -> list[str]:
    lines: list[str] = []
    totals = dict.fromkeys(registry.names(), 0)
    first_new = max((i.id for i in ledger.items_in(*ItemState)), default=0)
    for rule in config.rules:
        for inbox in rule.inboxes():
            ingest = InboxIngest(inbox, ledger, poll=True, dry_run=True)
            ingest.stability.stable_after = 0.0  # a dry run takes every file as complete now
            await ingest.tick()
            lines.append(f"rule {rule.name}: {inbox.path}" + (f"  (paused: {ingest.paused})" if ingest.paused else ""))
            for item in ledger.items_in(ItemState.PLANNED):
                if item.id <= first_new or item.inbox != str(inbox.path) or item.rule != rule.name:
                    continue
                names = " + ".join(i.name for i in ledger.inputs_of(item.id))
                for job in ledger.jobs_of(item.id):
                    if job.state == JobState.FAILED:
                        failure = job.detail.failure
                        code, message = (failure.code, failure.message) if failure else (None, None)
                        lines.append(f"  {job.name} <- {names}: refused ({code}): {message}")
                        continue
                    lines.append(f"  {job.name} <- {names}: {registry.describe_job(rule.provider, job.params)}")
                    totals[rule.provider] += registry.estimate_params(rule.provider, job.params)
            for candidate in ingest.candidates.values():
                lines.append(f"  {candidate.seen.rel}: waits for its partner")
    estimated = (f"{name} ~{total} {registry.budget_unit(name)}" for name, total in totals.items())
    lines.append(f"estimated: {', '.join(estimated)}")
    return lines


def plan(config: Config, settings: Settings) -> list[str]:
    # Ingestion's own log lines ("failed (duplicate)", "planned") would read as if work were done: the
    # printed plan says it all. Real problems (a warning about a folder) still show.
    quiet = logging.getLogger("ugcwatchd.inbox")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="ugcwatchd-plan-") as folder:
        ledger = _scratch(settings, Path(folder))
        try:
            return asyncio.run(_plan(config, ledger))
        finally:
            ledger.close()
            quiet.setLevel(level)
