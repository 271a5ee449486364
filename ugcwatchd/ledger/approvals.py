"""Work that waits for an operator: jobs held because their drop's estimate passed ``approve_above``,
and the operator's answer, committed for a whole item in one transaction."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..states import HoldReason, JobState
from .backend import Connection, Dialect
from .leases import mine
from .records import Failure, Job, job_from_row
from .schema import JOB_MOVES


class Approvals:
    """Reads and answers approval holds, over the ledger's connection, transactions and event log."""

    _db: Connection
    _dialect: Dialect
    _owner: str | None = None

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _event(self, item_id: int | None, job_id: int | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def _now(self) -> float:
        raise NotImplementedError

    def awaiting_approval(self) -> dict[int, list[Job]]:
        """The jobs held for approval, by item, oldest item first: one range of the index on states."""
        held = self._dialect.json_text("detail", "held")
        condition, owner = mine(self._owner)
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE state = ? AND {held} = ?{condition} ORDER BY item_id, id",  # noqa: S608
            (JobState.HELD, HoldReason.APPROVAL, *owner),
        )
        waiting: dict[int, list[Job]] = {}
        for job in map(job_from_row, rows):
            waiting.setdefault(job.item_id, []).append(job)
        return waiting

    def awaiting_approval_of(self, item_id: int) -> list[Job]:
        """The jobs of ``item_id`` held for approval."""
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE item_id = ? AND state = ? ORDER BY id", (item_id, JobState.HELD)
        )
        return [job for job in map(job_from_row, rows) if job.held == HoldReason.APPROVAL]

    def answer_approval(self, item_id: int, *, by: str, failure: Failure | None = None) -> list[Job]:
        """Release the item's jobs held for approval (to ``queued``), or with ``failure`` end them
        (``failed``), all in one transaction with an event saying who answered; [] when none waits.

        Two answers at once (a file and a command) cannot both act: the second finds nothing waiting.
        """
        to = JobState.QUEUED if failure is None else JobState.FAILED
        assert to in JOB_MOVES[JobState.HELD]
        with self.transaction() as db:
            jobs = self.awaiting_approval_of(item_id)
            now = self._now()
            for job in jobs:
                detail = job.detail.but(held=None, failure=failure)
                db.execute(
                    "UPDATE jobs SET state = ?, detail = ?, updated_at = ? WHERE id = ?",
                    (to, detail.dumps(), now, job.id),
                )
                self._event(item_id, job.id, f"job {JobState.HELD} -> {to}", {"detail": detail.to_json()})
            if jobs:
                kind = "item approved" if failure is None else "item rejected"
                self._event(item_id, None, kind, {"by": by, "jobs": [job.id for job in jobs]})
        return [self._job_now(job.id) for job in jobs]

    def _job_now(self, job_id: int) -> Job:
        return job_from_row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
