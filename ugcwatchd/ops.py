"""Operator commands over the ledger: status, jobs, retry, usage."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .errors import ProviderError, UgcwatchdError, UsageError
from .ledger import Item, Job, Ledger
from .outbox import iso, move_input, remove, sidecar_path
from .rules import Config
from .settings import Settings
from .states import PLANNING_CODES, RUNNING_JOB_STATES, WAITING_JOB_STATES, ItemState, JobState


def _job_row(item: Item, job: Job) -> dict[str, Any]:
    return {
        "item": item.id,
        "rule": item.rule,
        "job": job.name,
        "provider": job.provider,
        "state": job.state,
        "stage": job.stage,
        "remote_id": job.remote_id,
        "held": job.held,
        "code": job.failure.code if job.failure else None,
        "message": job.failure.message if job.failure else None,
        "attempts": job.attempts,
        "outbox": item.outbox,
    }


def status(ledger: Ledger) -> dict[str, Any]:
    every = ledger.all_jobs()
    running = [_job_row(i, j) for i, j in every if j.state in RUNNING_JOB_STATES]
    held = [_job_row(i, j) for i, j in every if j.state in WAITING_JOB_STATES]
    return {
        "items": ledger.counts(),
        "jobs": ledger.job_counts(),
        "running": running,
        "held": held,
        "recent_failures": [_job_row(i, j) for i, j in ledger.recent_failures()],
        "at": iso(time.time()),
    }


def print_status(report: dict[str, Any]) -> None:
    items = ", ".join(f"{n} {s}" for s, n in sorted(report["items"].items())) or "none"
    jobs = ", ".join(f"{n} {s}" for s, n in sorted(report["jobs"].items())) or "none"
    print(f"items: {items}")
    print(f"jobs:  {jobs}")
    for title, rows in (
        ("running", report["running"]),
        ("held", report["held"]),
        ("recent failures", report["recent_failures"]),
    ):
        if not rows:
            continue
        print(f"{title}:")
        for r in rows:
            why = f" ({r['held']})" if r["held"] else f": {r['code']}: {r['message']}" if r["code"] else ""
            remote = f" remote {r['remote_id']}" if r["remote_id"] else ""
            print(f"  item {r['item']} {r['rule']}/{r['job']} [{r['provider']} {r['state']}{remote}]{why}")


def jobs(ledger: Ledger, state: str | None) -> list[dict[str, Any]]:
    return [_job_row(i, j) for i, j in ledger.all_jobs(JobState(state) if state else None)]


def print_jobs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no jobs")
    for r in rows:
        remote = r["remote_id"] or "-"
        print(f"{r['item']:>5}  {r['state']:<11} {r['provider']:<8} {r['rule']}/{r['job']}  {remote}")


def retry(ledger: Ledger, config: Config, item_ids: list[int]) -> list[str]:
    """Re-queue the failed jobs of failed items: an operator's act, which may cost credits."""
    done = []
    for item_id in item_ids:
        try:
            item = ledger.item(item_id)
        except UgcwatchdError:
            raise UsageError(
                f"there is no item {item_id}", remedy="see `ugcwatchd status` or `ugcwatchd jobs`"
            ) from None
        every = ledger.jobs_of(item_id)
        planning = [j for j in every if j.failure is not None and j.failure.code in PLANNING_CODES]
        again = [j for j in every if j.state in (JobState.FAILED, JobState.AMBIGUOUS) and j not in planning]
        if not again:
            refused = sorted({str(j.failure.code) for j in planning if j.failure is not None})
            if refused:
                raise UsageError(
                    f"item {item_id} was refused before anything was sent ({', '.join(refused)})",
                    remedy="fix the input and drop it into the inbox again",
                )
            raise UsageError(f"item {item_id} has no failed job to retry (it is {item.state})")
        _restore_inputs(ledger, config, item)
        for job in again:
            remove(sidecar_path(Path(item.outbox), job.name, "error"))
            ledger.requeue(job.id)
        if item.state == ItemState.FAILED:
            ledger.move_item(item_id, ItemState.PLANNED)
        done.append(f"item {item_id}: {', '.join(j.name for j in again)} queued again")
    return done


def _restore_inputs(ledger: Ledger, config: Config, item: Item) -> None:
    """Bring inputs moved to the failed folder back to where they were taken from."""
    rule = next((r for r in config.rules if r.name == item.rule), None)
    if rule is None:
        return
    failed_dir = rule.inbox_at(Path(item.inbox)).failed_dir
    for taken in ledger.inputs_of(item.id):
        original = Path(taken.path)
        parked = failed_dir / taken.name
        if not original.exists() and parked.exists():
            restored = move_input(parked, original.parent, original.name)
            if restored is not None and restored != original:
                raise UgcwatchdError(f"cannot put {parked} back: {original} is taken")


async def usage(config: Config, settings: Settings) -> list[str]:
    from .daemon import build_providers

    lines = []
    for name, ps in build_providers(config, settings).items():
        try:
            account = await ps.provider.account()
            lines.append(f"{name}: {account.description}")
        except ProviderError:
            raise
        finally:
            await ps.provider.aclose()
    return lines


def as_json(document: object) -> str:
    return json.dumps(document, indent=2, sort_keys=True)


def run_usage(config: Config, settings: Settings) -> list[str]:
    return asyncio.run(usage(config, settings))
