"""``ugcwatchd plan``: what every file now in the inboxes would become. Submits nothing, writes nothing.

The real ingestion code runs against a scratch copy of the ledger, so what it prints is what the daemon
would do, duplicates judged against the real history included; files are taken as complete now.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from .inbox.ingest import InboxIngest
from .ledger import FILE_NAME, Ledger
from .providers.dublab import estimate_seconds
from .providers.facedub import estimate_credits
from .rules import Config
from .settings import Settings


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
    totals = {"facedub": 0, "dublab": 0}
    first_new = max(
        (i.id for i in ledger.items_in("waiting", "planned", "running", "held", "delivered", "failed")), default=0
    )
    for rule in config.rules:
        for inbox in rule.inboxes():
            ingest = InboxIngest(inbox, ledger, poll=True)
            ingest.stability.stable_after = 0.0  # a dry run takes every file as complete now
            await ingest.tick()
            lines.append(f"rule {rule.name}: {inbox.path}" + (f"  (paused: {ingest.paused})" if ingest.paused else ""))
            for item in ledger.items_in("planned"):
                if item.id <= first_new or item.inbox != str(inbox.path) or item.rule != rule.name:
                    continue
                names = " + ".join(i.name for i in ledger.inputs_of(item.id))
                for job in ledger.jobs_of(item.id):
                    if job.state == "failed":
                        lines.append(
                            f"  {job.name} <- {names}: refused ({job.detail.get('code')}): {job.detail.get('message')}"
                        )
                        continue
                    if rule.provider == "facedub":
                        cost = estimate_credits(int(job.params["duration"]))
                        lines.append(f"  {job.name} <- {names}: duration {job.params['duration']} s, ~{cost} credits")
                    else:
                        cost = estimate_seconds(float(job.params["seconds"]), bool(job.params.get("studio_quality")))
                        lines.append(
                            f"  {job.name} <- {names}: {job.params['seconds']:.1f} s, ~{cost} seconds of credit"
                        )
                    totals[rule.provider] += cost
            for candidate in ingest.candidates.values():
                lines.append(f"  {candidate.seen.rel}: waits for its partner")
    lines.append(f"estimated: facedub ~{totals['facedub']} credits, dublab ~{totals['dublab']} seconds")
    return lines


def plan(config: Config, settings: Settings) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="ugcwatchd-plan-") as folder:
        ledger = _scratch(settings, Path(folder))
        try:
            return asyncio.run(_plan(config, ledger))
        finally:
            ledger.close()
