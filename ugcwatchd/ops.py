"""Operator commands over the ledger: status, jobs, retry, usage."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from .errors import ProviderError, UgcwatchdError, UsageError
from .inbox.fingerprint import sha256_of
from .ledger import InputFile, Item, Job, Ledger
from .names import shown
from .outbox import iso, move_input, remove, sidecar_path
from .rules import Config
from .settings import Settings
from .states import PLANNING_CODES, RUNNING_JOB_STATES, WAITING_JOB_STATES, ErrorCode, ItemState, JobState


def _job_row(item: Item, job: Job) -> dict[str, Any]:
    return {
        "item": item.id,
        "rule": item.rule,
        "job": shown(job.name),
        "name": shown(job.name),
        "provider": job.provider,
        "state": job.state,
        "stage": job.stage,
        "remote_id": job.remote_id,
        "held": job.held,
        "code": job.failure.code if job.failure else None,
        "message": job.failure.message if job.failure else None,
        "attempts": job.attempts,
        "outbox": item.outbox,
        "parts": {k: shown(v) for k, v in item.parts.items()},  # its inbox's named parts: {"client": "acme"}
    }


def _parts(row: dict[str, Any]) -> str:
    """``client=acme `` (the named parts, to put before the rule), or nothing."""
    parts: dict[str, str] = row.get("parts") or {}
    return "".join(f"{k}={v} " for k, v in parts.items())


def status(ledger: Ledger) -> dict[str, Any]:
    """Counts by state (tallies), the open jobs that run or wait, the newest failures: never the history."""
    from .approvals import awaiting_report  # it prices jobs through the providers: only when asked

    running = [_job_row(i, j) for i, j in ledger.jobs_with_items(*RUNNING_JOB_STATES)]
    held = [_job_row(i, j) for i, j in ledger.jobs_with_items(*WAITING_JOB_STATES)]
    report: dict[str, Any] = {}
    if ledger.shared:  # several hosts: who works this ledger now
        report["daemons"] = [{"name": name, "lease_left": round(left, 1)} for name, left in ledger.daemons()]
    return report | {
        "items": ledger.counts(),
        "jobs": ledger.job_counts(),
        "running": running,
        "held": held,
        "awaiting_approval": awaiting_report(ledger),
        "recent_failures": [_job_row(i, j) for i, j in ledger.recent_failures()],
        "at": iso(time.time()),
    }


def print_status(report: dict[str, Any]) -> None:
    items = ", ".join(f"{n} {s}" for s, n in sorted(report["items"].items())) or "none"
    jobs = ", ".join(f"{n} {s}" for s, n in sorted(report["jobs"].items())) or "none"
    if "daemons" in report:
        daemons = report["daemons"]
        print(f"daemons: {len(daemons)} sharing the ledger" + "".join(f"\n  {d['name']}" for d in daemons))
    print(f"items: {items}")
    print(f"jobs:  {jobs}")
    if waiting := report.get("awaiting_approval"):
        print(f"awaiting approval: {len(waiting)} item{'' if len(waiting) == 1 else 's'}")
        for w in waiting:
            jobs_and_cost = f"{', '.join(w['jobs'])} (about {w['estimate']} {w['unit']})"
            print(f"  item {w['item']} {_parts(w)}{w['rule']}/{w['key']}: {jobs_and_cost}")
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
            print(f"  item {r['item']} {_parts(r)}{r['rule']}/{r['job']} [{r['provider']} {r['state']}{remote}]{why}")


_ITEM_KEYS = frozenset({"item", "rule", "outbox", "parts", "job"})  # said once per item, not per job


def jobs(ledger: Ledger, state: str | None) -> list[dict[str, Any]]:
    """The items with their inputs and jobs (only the jobs in ``state``, and only items that have one)."""
    items: dict[int, dict[str, Any]] = {}
    for item, job in ledger.all_jobs(JobState(state) if state else None):
        if item.id not in items:
            items[item.id] = {
                "id": item.id,
                "rule": item.rule,
                "state": item.state,
                "parts": {k: shown(v) for k, v in item.parts.items()},  # its inbox's named parts
                "inbox": shown(item.inbox),
                "outbox": shown(item.outbox),
                "inputs": [
                    {"name": shown(i.name), "sha256": i.sha256, "bytes": i.bytes} for i in ledger.inputs_of(item.id)
                ],
                "jobs": [],
            }
        row = _job_row(item, job)
        items[item.id]["jobs"].append({k: v for k, v in row.items() if k not in _ITEM_KEYS})
    return list(items.values())


def job_rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs of ``jobs()``'s items, one flat row each, with their item's id, rule and parts."""
    return [
        {"item": i["id"], "rule": i["rule"], "parts": i["parts"], "outbox": i["outbox"], "job": j["name"], **j}
        for i in items
        for j in i["jobs"]
    ]


def print_jobs(items: list[dict[str, Any]]) -> None:
    rows = job_rows(items)
    if not rows:
        print("no jobs")
    for r in rows:
        remote = r["remote_id"] or "-"
        print(f"{r['item']:>5}  {r['state']:<11} {r['provider']:<8} {_parts(r)}{r['rule']}/{r['job']}  {remote}")


def retry(ledger: Ledger, config: Config, item_ids: list[int]) -> list[str]:
    """Send the failed jobs of failed items again: an operator's act, which may cost credits.

    A job whose remote result exists is downloaded again, never resubmitted. The inputs go back into
    the inbox exactly as they were taken (found by hash); an item whose content is nowhere to be
    found is refused before anything changes.
    """
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
                rejected = refused == [ErrorCode.REJECTED_BY_OPERATOR]
                raise UsageError(
                    f"item {item_id} was refused before anything was sent ({', '.join(refused)})",
                    remedy="drop the input again to get a new quote"
                    if rejected
                    else "fix the input and drop it into the inbox again",
                )
            raise UsageError(f"item {item_id} has no failed job to retry (it is {item.state})")
        _restore_inputs(ledger, config, item)
        words = []
        for job in again:
            remove(sidecar_path(Path(item.outbox), job.name, "error"))
            if _result_exists(job):
                ledger.redownload(job.id)
                words.append(f"{job.name} (downloaded again)")
            else:
                ledger.requeue(job.id)
                words.append(job.name)
        if item.state == ItemState.FAILED:
            ledger.move_item(item_id, ItemState.PLANNED)
        done.append(f"item {item_id}: {', '.join(words)} queued again")
    return done


def _result_exists(job: Job) -> bool:
    """The provider finished the job (and charged for it): only its delivery failed."""
    remote = job.detail.remote
    completed = remote is not None and remote.state == "completed"
    return job.state == JobState.FAILED and job.remote_id is not None and completed


def _restore_inputs(ledger: Ledger, config: Config, item: Item) -> None:
    """Put every input back where it was taken from, exactly the content that was taken.

    Nothing moves until every input is found: a retry never half-happens.
    """
    moves: list[tuple[InputFile, Path]] = []
    for taken in ledger.inputs_of(item.id):
        original = Path(taken.path)
        if _is_taken_content(original, taken):
            continue
        found = next((c for c in _parked_candidates(config, item, taken) if _is_taken_content(c, taken)), None)
        if found is None:
            raise UsageError(
                f"item {item.id}: {taken.name} with the content that was taken (sha256 {taken.sha256[:12]}…) "
                "is nowhere to be found",
                remedy="drop the file into the inbox again; it is then a new drop",
            )
        if original.exists():
            raise UsageError(f"cannot put {found} back: {original} is taken by another file")
        moves.append((taken, found))
    for taken, found in moves:
        original = Path(taken.path)
        restored = move_input(found, original.parent, original.name)
        if restored != original:
            raise UgcwatchdError(f"cannot put {found} back: {original} is taken")
        st = original.stat()
        ledger.rebind_input(item.id, taken.path, st.st_size, st.st_mtime_ns, st.st_ino)


def _is_taken_content(path: Path, taken: InputFile) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if (st.st_size, st.st_mtime_ns, st.st_ino) == (taken.bytes, taken.mtime_ns, taken.inode):
        return True
    return st.st_size == taken.bytes and sha256_of(path) == taken.sha256


def _parked_candidates(config: Config, item: Item, taken: InputFile) -> list[Path]:
    """Where delivery may have put the file: the recorded place, else the failed folder by name."""
    found = [Path(taken.parked)] if taken.parked else []
    failed_dir = item.settings.failed_dir if item.settings else None
    if failed_dir is None:
        rule = next((r for r in config.rules if r.name == item.rule), None)
        failed_dir = str(rule.inbox_at(Path(item.inbox)).failed_dir) if rule else None
    if failed_dir is not None:
        relative = Path(taken.name)
        stem, dot, suffix = relative.name.partition(".")
        folder = Path(failed_dir) / relative.parent
        found += [folder / relative.name, *(folder / f"{stem}-{n}{dot}{suffix}" for n in range(2, 100))]
    return found


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
