"""A ledger with a history, for the web console's tests, screenshot and benchmark: delivered and failed
work over the last 30 days for three clients (paid jobs with their charges, the events a run leaves),
and, on request, open work in every waiting state.

Rows are written in one transaction by SQL, as the daemon's own transitions leave them; the ledger's
triggers keep the tallies, as they do for the daemon.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from ugcwatchd.ledger import Ledger
from ugcwatchd.ledger.backend import Connection

CLIENTS = ("acme", "bravo", "corto")
DAY = 86400.0
OPEN_KINDS = ("queued", "credits", "approval", "ambiguous", "running")


def _insert(db: Connection, table: str, row: dict[str, object]) -> int:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    if table == "inputs":  # keyed by (item_id, path): no id to return
        db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))  # noqa: S608
        return 0
    query = f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id"  # noqa: S608
    return int(db.execute(query, tuple(row.values())).fetchone()[0])


def _event(db: Connection, at: float, item: int, job: int | None, kind: str, detail: object = None) -> None:
    text = json.dumps(detail, sort_keys=True) if detail is not None else None
    _insert(db, "events", {"at": at, "item_id": item, "job_id": job, "kind": kind, "detail": text})


def seed(state: Path, root: Path, *, items: int, now: float, days: int = 30, open_items: int = 0) -> None:
    """The state folder's ledger, seeded as :func:`seed_ledger` does."""
    ledger = Ledger.open(state)
    try:
        seed_ledger(ledger, root, items=items, now=now, days=days, open_items=open_items)
    finally:
        ledger.close()


def seed_ledger(ledger: Ledger, root: Path, *, items: int, now: float, days: int = 30, open_items: int = 0) -> None:
    """``items`` finished items spread over the last ``days`` (the newest last), then ``open_items`` open ones."""
    with ledger.transaction() as db:
        rng = random.Random(7)
        for n in range(items + open_items):
            past = n < items
            t = now - days * DAY * (1 - n / items) - 600 if past else now - rng.uniform(60, 3600)
            _item(db, root, n, t, rng, "finished" if past else OPEN_KINDS[n % len(OPEN_KINDS)])


def _item(db: Connection, root: Path, n: int, t: float, rng: random.Random, kind: str) -> None:
    client = CLIENTS[(n // 3) % len(CLIENTS)]  # every client uses both providers
    facedub = n % 3 != 2
    rule, provider = ("faces", "facedub") if facedub else ("dub", "dublab")
    inbox, outbox = root / "clients" / client / rule / "inbox", root / "clients" / client / rule / "outbox"
    stem = f"clip{n:06d}" if n % 50 else f"caf\uf7e9{n:06d}"  # every 50th name is not UTF-8 (stored as the ledger does)
    failed = kind == "finished" and rng.random() < 0.05
    if kind == "finished":
        state = "failed" if failed else "delivered"
    else:
        state = "running" if kind in ("ambiguous", "running") else "planned"
    item = _insert(db, "items", {
        "rule": rule, "provider": provider, "inbox": str(inbox), "outbox": str(outbox), "key": stem, "state": state,
        "reason": None, "created_at": t, "updated_at": t + 120, "parts": json.dumps({"client": client}),
    })  # fmt: skip
    files = [("photo", f"{stem}.jpg", "image/jpeg", None), ("video", f"{stem}.mp4", "video/mp4", 12.0)]
    for role, name, mime, seconds in files if facedub else [("media", f"{stem}.mp4", "video/mp4", 40.0)]:
        _insert(db, "inputs", {
            "item_id": item, "role": role, "path": str(inbox / name), "name": name, "sha256": f"{n:064x}",
            "bytes": 250_000, "mtime_ns": int(t * 1e9), "mime": mime, "seconds": seconds, "inode": n,
        })  # fmt: skip
    _event(db, t, item, None, "item planned", {"rule": rule, "key": stem})
    for tag in ["facedub"] if facedub else ["de", "es"]:
        _job(db, item, f"{stem}.{tag}", str(outbox), provider, t, rng, kind, failed)
    if kind == "finished":
        _event(db, t + 120, item, None, f"item running -> {state}")


def _job(
    db: Connection, item: int, name: str, outbox: str, provider: str, t: float, rng: random.Random,
    kind: str, failed: bool,
) -> None:  # fmt: skip
    duration = rng.choice((5, 10, 15, 20, 30))
    estimate = math.ceil(duration / 5) if provider == "facedub" else rng.randint(20, 120)
    params = {"duration": duration} if provider == "facedub" else {"to": name.rsplit(".", 1)[1], "from": "auto"}
    sent, run = t + 2, rng.uniform(6, 10) if provider == "facedub" else rng.uniform(20, 40)
    job_id = _insert(db, "jobs", {
        "item_id": item, "token": f"ugc-{rng.getrandbits(48):012x}", "name": name, "outbox": outbox,
        "provider": provider, "dedupe_key": f"{item:032x}{name}", "params": json.dumps(params), "estimate": estimate,
        "state": "queued", "attempts": 0, "created_at": t, "updated_at": t,
    })  # fmt: skip
    remote_id = f"r{job_id:08d}"
    detail: dict[str, object] = {}
    if kind == "finished":
        remote = {"remote_id": remote_id, "state": "failed" if failed else "completed", "credits_charged": estimate}
        detail = {"remote": remote, "submitted_at": sent, "completed_at": sent + run}
        if failed:
            detail.update(code="remote_failed", stage="poll", message="the provider could not make it", retryable=True)
        state, stamp = ("failed" if failed else "delivered"), sent + run + 2
        charged = not failed or rng.random() < 0.3
    else:
        charged, stamp = False, t + 5
        progress = {"progress": 40.0} if provider == "dublab" else {"stage": "rendering"}  # FaceDub tells stages
        state, detail = {
            "queued": ("queued", {}),
            "credits": ("held", {"held": "credits"}),
            "approval": ("held", {"held": "awaiting approval"}),
            "ambiguous": ("ambiguous", {"held": "ambiguous", "candidates": [f"c{job_id}a", f"c{job_id}b"]}),
            "running": ("submitted", {"remote": {"remote_id": remote_id, "state": "running", **progress}}),
        }[kind]
    sent_at = sent if state not in ("queued", "held") else None
    db.execute(
        "UPDATE jobs SET state = ?, remote_id = ?, sent_at = ?, attempts = ?, detail = ?, updated_at = ? WHERE id = ?",
        (state, remote_id if sent_at and state != "ambiguous" else None, sent_at, int(sent_at is not None),
         json.dumps(detail, sort_keys=True) if detail else None, stamp, job_id),
    )  # fmt: skip
    if sent_at is not None:
        _event(db, sent, item, job_id, "job queued -> submitting", {"stage": "create", "sent_at": sent})
        _event(db, sent + 1, item, job_id, "job submitting -> submitted", {"remote_id": remote_id})
    if kind == "finished":
        _event(db, sent + run, item, job_id, f"job submitted -> {'failed' if failed else 'remote_done'}")
        if not failed:
            _event(db, stamp, item, job_id, "job remote_done -> delivered", {"detail": {"output": f"{name}.mp4"}})
    if charged:
        _insert(db, "charges", {
            "job_id": job_id, "item_id": item, "provider": provider, "remote_id": remote_id, "credits": estimate,
            "billed_seconds": estimate if provider == "dublab" else None, "overage": 0, "state": state,
            "at": sent + run,
        })  # fmt: skip
