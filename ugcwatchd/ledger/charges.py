"""What was paid: one row per remote job the provider charged for, delivered or failed after charging.

Statements and the ``charged`` tallies (metrics) read these rows; they are written in the same transaction
as the terminal move of the job, once per remote job. Also here: what one rule's concrete inbox (one
client) has sent in a period, for the budgets per client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..names import from_db, to_db
from ..states import SPENDING_JOB_STATES, JobState
from .backend import Connection
from .records import JobDetail, parts_from_db


@dataclass(frozen=True)
class Charge:
    """One paid remote job, with what a statement shows of its item and job."""

    at: float  # when it ended (the provider's completion as we saw it, or the failure)
    provider: str
    remote_id: str
    credits: float  # what the provider charged: FaceDub credits, DubLab seconds of credit
    billed_seconds: float | None
    overage: bool | None
    state: JobState  # delivered, or failed after the provider charged for it
    rule: str
    job: str
    item_id: int
    parts: dict[str, str] = field(default_factory=dict)


class Charges:
    """Records and reads charges, over the ledger's transactions."""

    _db: Connection

    def _now(self) -> float:
        raise NotImplementedError

    def _charge(self, db: Connection, job_id: int, to: JobState) -> None:
        """Record what the provider charged for a job that ended (delivered, or failed after it was
        charged), once per remote job: statements and the charged tally read these rows."""
        row = db.execute("SELECT item_id, provider, remote_id, detail FROM jobs WHERE id = ?", (job_id,)).fetchone()
        detail = JobDetail.from_json(json.loads(row["detail"])) if row["detail"] else JobDetail()
        remote = detail.remote
        if row["remote_id"] is None or remote is None or not remote.credits_charged:
            return
        db.execute(
            "INSERT INTO charges (job_id, item_id, provider, remote_id, credits, billed_seconds, overage, state, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (provider, remote_id) DO UPDATE SET state = excluded.state",
            (
                job_id,
                row["item_id"],
                row["provider"],
                row["remote_id"],
                remote.credits_charged,
                remote.billed_seconds,
                None if remote.is_overage is None else int(remote.is_overage),
                to,
                detail.completed_at or self._now(),
            ),
        )

    def charges_between(self, start: float, end: float) -> list[Charge]:
        """The charges that ended in ``[start, end)``, oldest first: one range of the index on their time."""
        rows = self._db.execute(
            "SELECT c.at, c.provider, c.remote_id, c.credits, c.billed_seconds, c.overage, c.state, c.item_id,"
            " items.rule, items.parts, jobs.name FROM charges c JOIN items ON items.id = c.item_id"
            " JOIN jobs ON jobs.id = c.job_id WHERE c.at >= ? AND c.at < ? ORDER BY c.at, c.id",
            (start, end),
        )
        return [
            Charge(
                r["at"],
                r["provider"],
                r["remote_id"],
                r["credits"],
                r["billed_seconds"],
                None if r["overage"] is None else bool(r["overage"]),
                JobState(r["state"]),
                r["rule"],
                from_db(r["name"]),
                r["item_id"],
                parts_from_db(r["parts"]),
            )
            for r in rows
        ]

    def scope_spent(self, provider: str, inbox: str, *, month_from: float, day_from: float) -> tuple[int, int]:
        """(today, this month): the estimates of the jobs of one concrete inbox (one client) sent since
        ``day_from`` and since ``month_from``, counted as the provider's daily budget counts them, plus the
        jobs that failed after the provider charged for them (FaceDub keeps what it charged at creation).

        Whatever rule name its items were planned under: one folder is watched by one rule at a time, and a
        rule renamed by a reload must not start its clients' spend again at zero.

        One range of the provider's sends (the index on (provider, sent_at, state, estimate, item_id) holds
        all the jobs' columns asked), each checked against its item by primary key, and a failed one against
        the charges by remote id: never the scope's whole history, never every job.
        """
        since = min(month_from, day_from)
        marks = ", ".join("?" for _ in SPENDING_JOB_STATES)
        row = self._db.execute(
            "SELECT COALESCE(SUM(CASE WHEN jobs.sent_at >= ? THEN jobs.estimate END), 0),"  # noqa: S608
            " COALESCE(SUM(CASE WHEN jobs.sent_at >= ? THEN jobs.estimate END), 0)"
            " FROM jobs CROSS JOIN items ON items.id = jobs.item_id"
            f" WHERE jobs.provider = ? AND jobs.sent_at >= ? AND (+jobs.state IN ({marks})"
            " OR (+jobs.state = ? AND EXISTS (SELECT 1 FROM charges WHERE charges.provider = jobs.provider"
            " AND charges.remote_id = jobs.remote_id)))"
            " AND items.inbox = ?",
            (day_from, month_from, provider, since, *SPENDING_JOB_STATES, JobState.FAILED, to_db(inbox)),
        ).fetchone()
        return int(row[0]), int(row[1])
