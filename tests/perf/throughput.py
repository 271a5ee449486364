"""Benchmark: how close the daemon comes to FaceDub's allowed throughput, and how fast it submits.

Run: ``.venv/bin/python tests/perf/throughput.py [--job-seconds 20] [--pairs 20]``. Prints one JSON object.
Targets (issue: the daemon): with sandbox jobs of T seconds and 20 pairs queued, achieved throughput
>= 0.95 of the provider bound min(10/min, 2/T), with zero 429s caused; median time from a file
becoming stable to its submission <= 0.5 s.

Both the sandbox and the daemon run as real processes; figures come from the daemon's own ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ugcwatchd.sandbox.media import make_media, make_photo


def start_sandbox(job_seconds: float) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ugcwatchd", "sandbox", "--port", "0", "--job-seconds", str(job_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, dict(proc.stdout.readline().split() for _ in range(3))


def start_daemon(root: Path, urls: dict[str, str]) -> subprocess.Popen[bytes]:
    for folder in ("inbox", "outbox"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f'providers:\n  facedub: {{base_url: "{urls["facedub"]}", poll_every: 1s}}\n'
        "defaults: {stable_after: 1s}\n"
        "rules:\n  - {name: faces, inbox: inbox, outbox: ../outbox, facedub: {}}\n"
    )
    env = {**os.environ, "UGCWATCHD_STATE_DIR": str(root / "state"), "UGCWATCHD_FACEDUB_API_KEY": "fdb_sandbox"}
    log = (root / "daemon.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "ugcwatchd", "-c", str(rules), "run"], stdout=log, stderr=log, env=env
    )


def drop(root: Path, media: Path, name: str) -> None:
    """A pair with a photo of its own: identical content would rightly be refused as a duplicate."""
    photo = root / f".{name}.jpg"  # hidden while written, then renamed in: complete at once
    make_photo(photo, size=(320 + int.from_bytes(name.encode(), "big") % 97, 400))
    os.replace(photo, root / "inbox" / f"{name}.jpg")
    clip = root / f".{name}.mp4"
    shutil.copy(media / "clip.mp4", clip)
    os.replace(clip, root / "inbox" / f"{name}.mp4")


def ledger_rows(root: Path) -> list[dict[str, object]]:
    db = sqlite3.connect(f"file:{root / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    rows = db.execute(
        "SELECT jobs.name, jobs.sent_at, jobs.detail, items.created_at FROM jobs JOIN items ON items.id = jobs.item_id"
    ).fetchall()
    db.close()
    return [{"name": n, "sent_at": s, "detail": json.loads(d or "{}"), "planned_at": c} for n, s, d, c in rows]


def results(root: Path) -> int:
    return len(list((root / "outbox").glob("*.result.json")))


def wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark did not finish in time")
        time.sleep(0.2)


@contextmanager
def running(work: Path, job_seconds: float) -> Iterator[dict[str, str]]:
    """A sandbox and a daemon, both real processes; the sandbox's URLs."""
    sandbox, urls = start_sandbox(job_seconds)
    daemon = start_daemon(work, urls)
    try:
        yield urls
    finally:
        daemon.terminate()
        daemon.wait(30)
        sandbox.terminate()
        sandbox.wait(10)


def latency(media: Path, work: Path, samples: int) -> dict[str, object]:
    with running(work, 1.0):
        for n in range(samples):
            drop(work, media, f"solo{n}")
            wait(lambda n=n: results(work) > n, 60)  # one at a time: a slot is always free
        rows = ledger_rows(work)
    delays = sorted(float(r["sent_at"]) - float(r["planned_at"]) for r in rows)  # type: ignore[arg-type]
    median = statistics.median(delays)
    return {
        "samples": len(delays),
        "median_seconds": round(median, 3),
        "max_seconds": round(delays[-1], 3),
        "target_seconds": 0.5,
        "met": median <= 0.5,
    }


def throughput(media: Path, work: Path, pairs: int, job_seconds: float) -> dict[str, object]:
    with running(work, job_seconds) as urls:
        for n in range(pairs):
            drop(work, media, f"p{n:02d}")
        wait(lambda: results(work) == pairs, pairs * job_seconds + 180)
        answers = httpx.get(f"{urls['facedub']}/sandbox/stats").json()["answers"]
        rows = ledger_rows(work)
    first = min(float(r["sent_at"]) for r in rows)  # type: ignore[arg-type]
    last = max(float(r["detail"]["completed_at"]) for r in rows)  # type: ignore[index]
    achieved = pairs / (last - first) * 60
    bound = min(10.0, 2 * 60 / job_seconds)
    too_many = sum(by.get("429", 0) for by in answers.values())
    return {
        "pairs": pairs,
        "job_seconds": job_seconds,
        "jobs_per_minute": round(achieved, 3),
        "bound_per_minute": round(bound, 3),
        "share_of_bound": round(achieved / bound, 3),
        "answers_429": too_many,
        "post_jobs_answers": answers.get("POST /jobs"),
        "poll_every_seconds": 1,
        "target_share": 0.95,
        "met": achieved / bound >= 0.95 and too_many == 0,
    }


def main(job_seconds: float, pairs: int, samples: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="ugcwatchd-throughput-"))
    try:
        media = root / "media"
        media.mkdir()
        make_media(media / "clip.mp4", 4)
        return {
            "benchmark": "throughput",
            "stable_to_submitted": latency(media, root / "latency", samples),
            "facedub_throughput": throughput(media, root / "throughput", pairs, job_seconds),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job-seconds", type=float, default=20.0)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(main(args.job_seconds, args.pairs, args.samples), indent=2))
