"""Benchmark: a ledger with a year of history does not slow the daemon.

Run from the project root: ``.venv/bin/python tests/perf/ledger_scale.py [--jobs 1000000] [--held 1000]``.
Prints one JSON object and exits 1 when a target is missed. The ledger holds ``--jobs`` finished jobs
(delivered or failed, spread over a year, under four rules with three outboxes each, FaceDub pairs and
DubLab fan-outs) and ``--held`` open jobs held for credits or the daily budget. Targets: a dispatch
tick (``Lifecycle.dispatch()``) <= 10 ms; ``ugcwatchd status`` (``ops.status`` and printing) <= 1 s;
the real daemon from its start to systemd's ``READY=1`` <= 3 s; its peak RSS (VmHWM) <= 200 MiB.
A delivery tick, a poll, a metrics scrape and naming a new job are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest
from pydantic import SecretStr

from ugcwatchd.daemon import build_providers
from ugcwatchd.ledger import Ledger
from ugcwatchd.lifecycle import Lifecycle
from ugcwatchd.lifecycle.status import status_line
from ugcwatchd.metrics import Metrics
from ugcwatchd.ops import print_status, status
from ugcwatchd.rules import load_rules
from ugcwatchd.settings import Settings
from ugcwatchd.states import JobState

YEAR = 365 * 86400.0
CLIENTS = ("acme", "bravo", "corto")
RULES = (("faces", "facedub"), ("portraits", "facedub"), ("dub", "dublab"), ("voice", "dublab"))
TARGETS = {"dispatch_tick_ms": 10.0, "status_seconds": 1.0, "startup_to_ready_seconds": 3.0, "peak_rss_mib": 200.0}
TICKS = 20
Row = tuple[str, tuple[Any, ...]]


def outbox_of(root: Path, client: str, rule: str) -> Path:
    return root / "clients" / client / rule / "outbox"


def write_rules(root: Path, facedub_url: str, dublab_url: str) -> Path:
    lines = [
        "providers:",
        f"  facedub: {{base_url: '{facedub_url}', poll_every: 10s, daily_credit_budget: 100000}}",
        f"  dublab: {{base_url: '{dublab_url}', poll_every: 15s, daily_seconds_budget: 600}}",
        "defaults: {stable_after: 5s, rescan_every: 60s, watch_mode: events}",
        "rules:",
    ]
    for rule, provider in RULES:
        action = "facedub: {}" if provider == "facedub" else "dublab: {to: [de, es]}"
        lines.append(f"  - {{name: {rule}, inbox: {root}/clients/*/{rule}/inbox, {action}}}")
    path = root / f"rules-{facedub_url.split('//')[1].split(':')[0]}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the ledger ---------------------------------------------------------------------------------------


def _settings(root: Path, client: str, rule: str) -> str:
    outbox = outbox_of(root, client, rule)
    return json.dumps(
        {
            "archive_dir": str(outbox / "originals"),
            "failed_dir": str(outbox / "failed"),
            "on_failure": "move",
            "on_success": "archive",
        },
        sort_keys=True,
    )


def _item(root: Path, item_id: int, rule: str, provider: str, state: str, t: float) -> Iterator[Row]:
    """An item and its inputs, as ingestion records them (``parked`` once delivery moved them)."""
    client = CLIENTS[item_id % len(CLIENTS)]
    inbox, outbox = root / "clients" / client / rule / "inbox", outbox_of(root, client, rule)
    stem = f"clip{item_id:07d}"
    settings = _settings(root, client, rule)
    yield "items", (item_id, rule, provider, str(inbox), str(outbox), stem, state, None, t, t + 90, settings)
    if provider == "facedub":
        files = [("photo", f"{stem}.jpg", "image/jpeg", None), ("video", f"{stem}.mp4", "video/mp4", 4.0)]
    else:
        files = [("media", f"{stem}.mp4", "video/mp4", 30.0)]
    for role, name, mime, seconds in files:
        parked = {"planned": None, "failed": str(outbox / "failed" / name)}.get(state, str(outbox / "originals" / name))
        row = (item_id, role, str(inbox / name), name, f"{item_id:064x}", 250_000, int(t * 1e9), mime, seconds)
        yield "inputs", (*row, item_id, parked)


def _job(job_id: int, item_id: int, name: str, outbox: str, provider: str, state: str, t: float) -> Row:
    """A job as the daemon leaves it: delivered with a result, failed with an error, or held."""
    estimate = 1 if provider == "facedub" else 30
    remote_id, sent_at = (None, None) if state == "held" else (f"r{job_id}", t + 5)
    if state == "held":
        detail: dict[str, object] = {"held": "credits" if provider == "facedub" else "budget"}
    elif state == "failed":
        detail = {"code": "remote_failed", "stage": "poll", "message": "the provider could not make it"}
        detail.update(retryable=True, sidecar="error", submitted_at=t + 5)
    else:
        remote = {"remote_id": remote_id, "state": "completed", "credits_charged": estimate}
        detail = {"remote": remote, "sidecar": "result", "submitted_at": t + 5, "completed_at": t + 80}
    params = {"duration": 5} if provider == "facedub" else {"to": name[-2:], "content_type": "video/mp4"}
    return "jobs", (
        job_id, item_id, f"ugc-{job_id:012x}", name, outbox, provider, f"{job_id:064x}",
        json.dumps(params, sort_keys=True), estimate, state, None, remote_id, sent_at, int(state != "held"),
        json.dumps(detail, sort_keys=True), t, t + 90,
    )  # fmt: skip


def _rows(root: Path, jobs: int, held: int, now: float) -> Iterator[Row]:
    """Every row: ``jobs`` finished jobs spread over the year up to a minute ago, then ``held`` open ones."""
    rng = random.Random(7)
    job_id = item_id = 0
    while job_id < jobs + held:
        item_id += 1
        past = job_id < jobs
        rule, provider = RULES[item_id % len(RULES)]
        left = jobs - job_id if past else jobs + held - job_id
        t = now - 60 - YEAR * (1 - job_id / jobs) if past else now - rng.uniform(60, 3600)
        state = ("failed" if rng.random() < 0.05 else "delivered") if past else "held"
        rows = list(_item(root, item_id, rule, provider, "planned" if state == "held" else state, t))
        yield from rows
        outbox = rows[0][1][4]
        stem = f"clip{item_id:07d}"
        names = [f"{stem}.facedub"] if provider == "facedub" else [f"{stem}.de", f"{stem}.es"][:left]
        for name in names:
            job_id += 1
            yield _job(job_id, item_id, name, outbox, provider, state, t)
            if past:
                yield "events", (t + 90, item_id, job_id, f"job remote_done -> {state}", None)


INSERTS = {
    "items": "INSERT INTO items (id, rule, provider, inbox, outbox, key, state, reason, created_at, updated_at,"
    " settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "inputs": "INSERT INTO inputs (item_id, role, path, name, sha256, bytes, mtime_ns, mime, seconds, inode, parked)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "jobs": "INSERT INTO jobs (id, item_id, token, name, outbox, provider, dedupe_key, params, estimate, state, stage,"
    " remote_id, sent_at, attempts, detail, created_at, updated_at) VALUES"
    " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "events": "INSERT INTO events (at, item_id, job_id, kind, detail) VALUES (?, ?, ?, ?, ?)",
}


def build_ledger(root: Path, state: Path, jobs: int, held: int, now: float) -> dict[str, object]:
    """The ledger, made by the daemon's own code, filled in one transaction by executemany."""
    started = time.perf_counter()
    Ledger.open(state).close()
    db = sqlite3.connect(state / "ledger.sqlite3", isolation_level=None)
    # Filled without a write-ahead log (a fresh file has nothing to protect), then handed back in WAL mode.
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    batch: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERTS}
    for table, row in _rows(root, jobs, held, now):
        batch[table].append(row)
        if len(batch[table]) >= 50_000:
            db.executemany(INSERTS[table], batch[table])
            batch[table].clear()
    for table, rows in batch.items():
        db.executemany(INSERTS[table], rows)
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode=WAL")
    counts = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    db.close()
    for client in CLIENTS:
        for rule, _ in RULES:
            (outbox_of(root, client, rule).parent / "inbox").mkdir(parents=True, exist_ok=True)
            outbox_of(root, client, rule).mkdir(parents=True, exist_ok=True)
    size = (state / "ledger.sqlite3").stat().st_size
    return {"jobs": counts, "mib": round(size / 2**20), "seconds": round(time.perf_counter() - started, 1)}


# -- in process: the lifecycle's ticks, status, metrics ----------------------------------------------------


def answer(request: httpx.Request) -> httpx.Response:
    """FaceDub and DubLab as their documents describe them: no credits left, nothing running."""
    path = request.url.path
    if path == "/usage":
        return httpx.Response(
            200, json={"plan": "pro", "credits_used": 500, "credits_limit": 500, "credits_remaining": 0}
        )
    if path == "/jobs" and request.method == "GET":
        return httpx.Response(200, json=[])
    if path == "/api/v1/me":
        return httpx.Response(200, json={"id": "u1", "seconds": 0, "subscriptionStatus": "active"})
    if path == "/api/v1/dubs":
        return httpx.Response(200, json=[])
    raise AssertionError(f"unexpected request {request.method} {request.url}")


async def timed(step: Callable[[], Awaitable[object]], times: int) -> list[float]:
    """Milliseconds each of ``times`` runs of ``step`` took."""
    out = []
    for _ in range(times):
        started = time.perf_counter()
        await step()
        out.append((time.perf_counter() - started) * 1000)
    return out


def timed_sync(step: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        started = time.perf_counter()
        step()
        out.append((time.perf_counter() - started) * 1000)
    return out


def figures(ms: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(ms), 2), "max": round(max(ms), 2)}


async def lifecycle_ticks(root: Path, state: Path) -> dict[str, object]:
    """The real Lifecycle over the ledger, its providers answered by ``answer``: each stage's tick, timed."""
    config = load_rules(write_rules(root, "https://api.facedub.example", "https://dublab.example"), {})
    settings = Settings(facedub_api_key=SecretStr("fdb_bench"), dublab_api_key=SecretStr("dl_bench"))
    providers = build_providers(config, settings, transport=httpx.MockTransport(answer))
    ledger = Ledger.open(state)
    lifecycle = Lifecycle(config, ledger, providers)
    for ps in providers.values():
        await lifecycle.refresh_account(ps)
    first_dispatch = await timed(lifecycle.dispatch, 1)
    first_deliver = await timed(lifecycle.deliver, 1)  # writes every held job's status sidecar, once
    dispatch = await timed(lifecycle.dispatch, TICKS)
    deliver = await timed(lifecycle.deliver, TICKS)
    poll = await timed(lambda: lifecycle.poll("facedub"), 5)
    held = len(ledger.jobs_in(JobState.HELD))
    for ps in providers.values():
        await ps.provider.aclose()
    ledger.close()
    return {
        "held_jobs": held,
        "dispatch_tick_ms": figures(dispatch),
        "deliver_tick_ms": figures(deliver),
        "first_dispatch_tick_ms": round(first_dispatch[0], 1),
        "first_deliver_tick_ms": round(first_deliver[0], 1),
        "poll_ms": figures(poll),
    }


def other_questions(root: Path, state: Path) -> dict[str, object]:
    """What else runs while the daemon works: the STATUS= line, naming a new job, a metrics scrape."""
    ledger = Ledger.open(state)
    outbox = str(outbox_of(root, "acme", "dub"))
    metrics = Metrics(ledger.reopen, dict)
    try:
        return {
            "status_line_ms": figures(timed_sync(lambda: status_line(ledger, {}, 12), 5)),
            "new_job_name_ms": figures(timed_sync(lambda: ledger.job_names_in(outbox, {"clip0000042"}), 5)),
            "metrics_scrape_ms": figures(timed_sync(lambda: generate_latest(metrics.registry), 5)),
        }
    finally:
        metrics.close()
        ledger.close()


def status_seconds(state: Path) -> float:
    """``ugcwatchd status``: open the ledger, read the report, print it."""
    started = time.perf_counter()
    ledger = Ledger.open(state)
    with contextlib.redirect_stdout(io.StringIO()):
        print_status(status(ledger))
    ledger.close()
    return round(time.perf_counter() - started, 3)


# -- the real daemon -------------------------------------------------------------------------------------


@contextlib.contextmanager
def process(argv: list[str], **options: Any) -> Iterator[subprocess.Popen[str]]:
    """A child process, stopped with SIGTERM (then killed) however the block ends."""
    proc = subprocess.Popen(argv, text=True, **options)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def wait_ready(sock: socket.socket, proc: subprocess.Popen[str], log: Path) -> str:
    """The daemon's READY=1 notification (with its STATUS=), or why it never came."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited {proc.returncode} before READY=1: {log.read_text()[-2000:]}")
        with contextlib.suppress(TimeoutError):
            message = sock.recv(4096).decode()
            if message.startswith("READY=1"):
                return message
    raise RuntimeError(f"no READY=1 within 60 s: {log.read_text()[-2000:]}")


def daemon(root: Path, state: Path, run_seconds: float) -> dict[str, object]:
    """The real daemon against the sandbox (no credits: the held work stays held): time to READY, peak RSS."""
    sandbox_argv = ["ugcwatchd", "sandbox", "--port", "0", "--facedub-credits", "0", "--dublab-seconds", "0"]
    with process([sys.executable, "-m", *sandbox_argv], stdout=subprocess.PIPE) as sandbox:
        assert sandbox.stdout is not None
        urls = dict(sandbox.stdout.readline().split() for _ in range(3))
        rules = write_rules(root, urls["facedub"], urls["dublab"])
        sock_path = root / "notify.sock"
        sock_path.unlink(missing_ok=True)  # left by an earlier run in a kept folder
        env = {
            **os.environ,
            "UGCWATCHD_STATE_DIR": str(state),
            "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox",
            "UGCWATCHD_DUBLAB_API_KEY": "dl_sandbox",
            "NOTIFY_SOCKET": str(sock_path),
        }
        log = root / "daemon.log"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, log.open("w") as out:
            sock.bind(str(sock_path))
            sock.settimeout(0.5)
            started = time.perf_counter()
            argv = [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "run"]
            with process(argv, env=env, stdout=out, stderr=out) as proc:
                message = wait_ready(sock, proc, log)
                ready = time.perf_counter() - started
                time.sleep(run_seconds)  # ticks of every kind: dispatch, deliver, polls, the STATUS= line
                rss = vm_hwm_mib(proc.pid)
    return {
        "startup_to_ready_seconds": round(ready, 2),
        "ready_status": message.split("STATUS=")[-1],
        "peak_rss_mib": round(rss, 1),
        "ran_seconds": run_seconds,
        "exit_code": proc.returncode,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="finished jobs in the history")
    parser.add_argument("--held", type=int, default=1000, help="open jobs held for credits or the budget")
    parser.add_argument("--run-seconds", type=float, default=10.0, help="how long the daemon runs after READY")
    parser.add_argument(
        "--keep", type=Path, help="build the world in this folder and keep it; one built there before is reused"
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="ugcwatchd-ledger-scale-"))
    state = root / "state"
    try:
        report: dict[str, Any] = {"benchmark": "ledger_scale"}
        if (state / "ledger.sqlite3").exists():
            report["ledger"] = {"reused": str(state / "ledger.sqlite3")}
        else:
            report["ledger"] = build_ledger(root, state, args.jobs, args.held, time.time())
        report.update(asyncio.run(lifecycle_ticks(root, state)))
        report.update(other_questions(root, state))
        report["status_seconds"] = status_seconds(state)
        report.update(daemon(root, state, args.run_seconds))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    measured = {
        "dispatch_tick_ms": report["dispatch_tick_ms"]["median"],
        "status_seconds": report["status_seconds"],
        "startup_to_ready_seconds": report["startup_to_ready_seconds"],
        "peak_rss_mib": report["peak_rss_mib"],
    }
    report["targets"] = TARGETS
    report["missed"] = sorted(k for k, limit in TARGETS.items() if measured[k] > limit)
    report["met"] = not report["missed"]
    print(json.dumps(report, indent=2))
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
