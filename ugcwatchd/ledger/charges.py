"""What was paid: one row per remote job the provider charged for, delivered or failed after charging.

Statements and the ``charged`` tally (metrics) read these rows; they are written in the same transaction
as the terminal move of the job, once per remote job.
"""

from __future__ import annotations

import json
import sqlite3

from ..states import JobState
from .records import JobDetail


class Charges:
    """Records and reads charges, over the ledger's transactions."""

    def _now(self) -> float:
        raise NotImplementedError

    def _charge(self, db: sqlite3.Connection, job_id: int, to: JobState) -> None:
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
