"""``ugcwatchd plan``: what every file now in the inboxes would become. Submits nothing, writes nothing.

Per concrete inbox: its jobs with their estimates, and for DubLab what it dubs into (the rule's targets,
and each option folder's); inboxes of one client (the same named parts) together, with the client's
totals; then the totals of all.

The real ingestion code runs against a scratch SQLite copy of the ledger (of the SQLite file, or of the
PostgreSQL database's rows), so what it prints is what the daemon would do, duplicates judged against the
real history included; files are taken as complete now.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LedgerError
from .inbox.ingest import InboxIngest
from .inbox.options import BadFolderOptions, folder_targets, rule_targets
from .ledger import FILE_NAME, Ledger
from .ledger_location import Target, pg_target, schema_of
from .names import shown
from .providers import registry
from .rules import Config, DubLabAction
from .settings import Settings
from .states import HoldReason, ItemState, JobState

SCRATCH_TABLES = ("items", "inputs", "jobs", "charges", "facts")  # parents first


def _scratch(settings: Settings, config: Config, folder: Path) -> Ledger:
    """A SQLite copy of the daemon's ledger (of its SQLite file, or of its PostgreSQL database) in ``folder``."""
    copy = folder / FILE_NAME
    target = pg_target(settings, config)
    if target is not None:
        ledger = Ledger(copy)
        _copy_pg(target, ledger)
        return ledger
    real = settings.resolved_state_dir() / FILE_NAME
    if real.exists():
        source = sqlite3.connect(f"file:{real}?mode=ro", uri=True)
        target_db = sqlite3.connect(copy)
        source.backup(target_db)
        source.close()
        target_db.close()
    return Ledger(copy)


def _copy_pg(target: Target, ledger: Ledger) -> None:
    """The rows ingestion judges by (the history's events are not needed), from the database into ``ledger``."""
    import psycopg

    if schema_of(target) is None:
        return  # no ledger there yet: nothing to judge duplicates by
    conn = target.connect()
    try:
        with conn, ledger.transaction() as db:
            for table in SCRATCH_TABLES:
                columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
                names = ", ".join(columns)
                rows = conn.execute(f"SELECT {names} FROM {table}")  # noqa: S608
                marks = ", ".join("?" * len(columns))
                db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)  # noqa: S608
    except psycopg.Error as exc:
        raise LedgerError(
            f"cannot read the ledger in {target.shown} for the plan: {target.redact(str(exc))}",
            remedy="run the daemon of this version with it once (it upgrades the schema), then plan again",
        ) from None


@dataclass
class _Block:
    """What one concrete inbox would produce: its lines and its estimate, in its provider's unit."""

    label: str  # the inbox's named parts (``client=acme``), or ""
    provider: str
    lines: list[str] = field(default_factory=list)
    estimate: int = 0


async def _plan(config: Config, ledger: Ledger) -> list[str]:
    blocks: list[_Block] = []
    first_new = max((i.id for i in ledger.items_in(*ItemState)), default=0)
    for rule in config.rules:
        for inbox in rule.inboxes():
            ingest = InboxIngest(inbox, ledger, poll=True, dry_run=True)
            ingest.stability.stable_after = 0.0  # a dry run takes every file as complete now
            await ingest.tick()
            block = _Block(inbox.parts_label, rule.provider)
            blocks.append(block)
            lines = block.lines
            parts = f"  ({inbox.parts_label})" if inbox.parts_label else ""
            paused = f"  (paused: {ingest.paused})" if ingest.paused else ""
            lines.append(f"rule {rule.name}: {inbox.path}{parts}{paused}")
            if isinstance(rule.action, DubLabAction):
                lines += _options(rule.action, ingest)
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
                    waits = "  (awaits approval)" if job.held == HoldReason.APPROVAL else ""
                    lines.append(f"  {job.name} <- {names}: {registry.describe_job(rule.provider, job.params)}{waits}")
                    block.estimate += registry.estimate_params(rule.provider, job.params)
            for candidate in ingest.candidates.values():
                lines.append(f"  {candidate.seen.rel}: waits for its partner")
    return _by_client(blocks)


def _by_client(blocks: list[_Block]) -> list[str]:
    """The blocks of each client (each set of named parts) together, each client with its own totals."""
    lines: list[str] = []
    clients: dict[str, list[_Block]] = {}
    for block in blocks:
        clients.setdefault(block.label, []).append(block)
    for label, own in clients.items():
        for block in own:
            lines += block.lines
        if label:
            lines.append(f"total for {label}: {_totals(own, {b.provider for b in own})}")
    lines.append(f"estimated: {_totals(blocks, set(registry.names()))}")
    return lines


def _totals(blocks: list[_Block], providers: set[str]) -> str:
    """``facedub ~2 credits, dublab ~8 seconds``: the estimates of ``blocks`` for each of ``providers``."""
    totals = {name: 0 for name in registry.names() if name in providers}
    for block in blocks:
        totals[block.provider] += block.estimate
    return ", ".join(f"{name} ~{total} {registry.budget_unit(name)}" for name, total in totals.items())


def _options(action: DubLabAction, ingest: InboxIngest) -> list[str]:
    """What a DubLab inbox dubs into: its own files as the rule says, and each option folder as it names."""
    lines = [f"  options: {rule_targets(action).describe()}"]
    if not action.options_from_folders or ingest.paused:
        return lines
    scanner = ingest.scanner
    try:
        with os.scandir(ingest.inbox.path) as entries:
            folders = sorted(
                e.name
                for e in entries
                if e.is_dir(follow_symlinks=False)
                and not scanner.ignored(e.name)
                and os.path.normpath(e.path) not in scanner.exclude
            )
    except OSError:
        return lines
    for folder in folders:
        try:
            lines.append(f"  options {shown(folder)}/: {folder_targets(folder, action).describe()}")
        except BadFolderOptions as exc:
            lines.append(f"  options {shown(folder)}/: refused: {exc}")
    return lines


def plan(config: Config, settings: Settings) -> list[str]:
    # Ingestion's own log lines ("failed (duplicate)", "planned") would read as if work were done: the
    # printed plan says it all. Real problems (a warning about a folder) still show.
    quiet = logging.getLogger("ugcwatchd.inbox")
    level = quiet.level
    quiet.setLevel(max(level, logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="ugcwatchd-plan-") as folder:
        ledger = _scratch(settings, config, Path(folder))
        try:
            return asyncio.run(_plan(config, ledger))
        finally:
            ledger.close()
            quiet.setLevel(level)
