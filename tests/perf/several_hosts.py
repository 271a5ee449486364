"""Benchmark: several daemons on one PostgreSQL ledger share one FaceDub account as well as one daemon does.

Run: ``.venv/bin/python tests/perf/several_hosts.py [--pairs 20] [--job-seconds 20] [--daemons 3]``. Prints
one JSON object. Targets (issue: several hosts): with sandbox jobs of T seconds and N pairs dropped on one
share watched by 3 daemons (a state folder each, one database), achieved throughput >= 0.95 of the
provider bound min(10/min, 2/T), zero 429s answered by the sandbox, and exactly one remote job per pair.

The database is a throwaway cluster started the way the tests start theirs (tests/pg.py); the sandbox and
the daemons are real processes. Figures come from the shared ledger and the sandbox's own counters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.perf.throughput import drop, results, start_sandbox, wait  # noqa: E402
from tests.pg import PgServer, find_bindir, reap_stale  # noqa: E402
from ugcwatchd.sandbox.media import make_media  # noqa: E402

SUBMITTED = "facedub: submitted "  # the daemon's log line for each job it sends


def start_daemon(work: Path, name: str, urls: dict[str, str], ledger: str) -> subprocess.Popen[bytes]:
    """One daemon with a state folder of its own, on the shared inbox, outbox and database."""
    home = work / name
    home.mkdir()
    rules = home / "rules.yaml"
    rules.write_text(
        f'ledger: "{ledger}"\n'
        f'providers:\n  facedub: {{base_url: "{urls["facedub"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 1s}\n"
        f"rules:\n  - {{name: faces, inbox: {work / 'inbox'}, outbox: {work / 'outbox'}, facedub: {{}}}}\n"
    )
    env = {**os.environ, "UGCWATCHD_STATE_DIR": str(home / "state"), "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox"}
    log = (home / "daemon.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "run"], stdout=log, stderr=log, env=env
    )


def ledger_rows(url: str) -> list[dict[str, object]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        found = db.execute(
            "SELECT jobs.name, jobs.sent_at, jobs.detail, items.owner FROM jobs JOIN items ON items.id = jobs.item_id"
        ).fetchall()
    return [{"name": n, "sent_at": s, "detail": json.loads(d or "{}"), "owner": o} for n, s, d, o in found]


def taken_over(url: str) -> int:
    """Items one daemon took over from another: none, in a run where no daemon dies."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as db:
        row = db.execute("SELECT count(*) FROM events WHERE kind = 'item taken over'").fetchone()
    return int(row[0]) if row else 0


def per_daemon(work: Path, names: list[str], pids: dict[int, str], rows: list[dict[str, object]]) -> dict[str, object]:
    """Submissions by daemon: from each one's log, and the items each one owns in the ledger."""
    said = {name: (work / name / "daemon.log").read_text(errors="replace").count(SUBMITTED) for name in names}
    owners = Counter(pids.get(int(str(r["owner"]).split(":")[1]), "?") for r in rows if r.get("owner"))
    return {"submissions_logged": said, "items_owned": {name: owners.get(name, 0) for name in names}}


def run(work: Path, ledger: str, pairs: int, job_seconds: float, daemons: int) -> dict[str, object]:
    sandbox, urls = start_sandbox(job_seconds)
    names = [f"daemon{n}" for n in range(daemons)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for folder in ("inbox", "outbox"):
            (work / folder).mkdir(parents=True)
        procs = [start_daemon(work, name, urls, ledger) for name in names]
        wait(lambda: all("ugcwatchd running" in (work / n / "daemon.log").read_text() for n in names), 60)
        for n in range(pairs):
            drop(work, work.parent / "media", f"p{n:02d}")
        wait(lambda: results(work) == pairs, pairs * job_seconds + 240)
        stats = httpx.get(f"{urls['facedub']}/sandbox/stats", timeout=5).json()
    finally:
        for proc in procs:
            proc.terminate()
        exits = [proc.wait(60) for proc in procs]
        sandbox.terminate()
        sandbox.wait(10)
    rows = ledger_rows(ledger)
    first = min(float(r["sent_at"]) for r in rows)  # type: ignore[arg-type]
    last = max(float(r["detail"]["completed_at"]) for r in rows)  # type: ignore[index]
    achieved = pairs / (last - first) * 60
    bound = min(10.0, 2 * 60 / job_seconds)
    too_many = sum(by.get("429", 0) for by in stats["answers"].values())
    created = int(stats["jobs_created"])
    return {
        "daemons": daemons,
        "pairs": pairs,
        "job_seconds": job_seconds,
        "jobs_per_minute": round(achieved, 3),
        "bound_per_minute": round(bound, 3),
        "share_of_bound": round(achieved / bound, 3),
        "answers_429": too_many,
        "post_jobs_answers": stats["answers"].get("POST /jobs"),
        # the daemons share GET /jobs/*'s 60 a minute too: each one polls and counts slots through it
        "sandbox_answers": stats["answers"],
        "run_seconds": round(last - first, 1),
        "jobs_created": created,
        "jobs_planned": pairs,
        "items_taken_over": taken_over(ledger),
        "per_daemon": per_daemon(work, names, {p.pid: n for p, n in zip(procs, names, strict=True)}, rows),
        "daemon_exit_codes": exits,
        "target_share": 0.95,
        "met": achieved / bound >= 0.95 and too_many == 0 and created == pairs,
    }


def main(pairs: int, job_seconds: float, daemons: int, keep: bool = False) -> dict[str, object]:
    bindir = find_bindir()
    if bindir is None:
        sys.exit("several_hosts: the PostgreSQL server programs (initdb, pg_ctl) are not installed")
    reap_stale(bindir)
    server = PgServer(bindir)
    root = Path(tempfile.mkdtemp(prefix="ugcwatchd-several-hosts-"))
    try:
        began = time.monotonic()
        server.start()
        ledger = server.url(server.create_database("several_hosts"))
        (root / "media").mkdir()
        make_media(root / "media" / "clip.mp4", 4)
        figures = run(root / "work", ledger, pairs, job_seconds, daemons)
        return {
            "benchmark": "several_hosts",
            "facedub_throughput": figures,
            "wall_seconds": round(time.monotonic() - began, 1),
        }
    finally:
        server.stop()
        if keep:
            print(f"several_hosts: the daemons' folders and logs are kept in {root / 'work'}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--job-seconds", type=float, default=20.0)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the daemons' folders and logs")
    args = parser.parse_args()
    print(json.dumps(main(args.pairs, args.job_seconds, args.daemons, args.keep), indent=2))
