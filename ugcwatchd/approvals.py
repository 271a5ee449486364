"""Approvals: a drop whose estimate passed its rule's ``approve_above`` waits for an operator's answer.

The answer comes as a file beside the quote (``{stem}.approve`` / ``{stem}.reject``, taken by the
daemon's :class:`ApprovalDesk`), as ``ugcwatchd approve|reject ITEM`` or from the console; each is
:func:`approve` or :func:`reject` here, committed to the ledger with who answered. An approved job is
queued and meets credits and budgets like any job; a rejected one fails with ``rejected_by_operator``
and delivery ends it like any failure.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UgcwatchdError, UsageError
from .ledger import Failure, Item, Job, Ledger
from .names import shown
from .outbox.files import Anchor, ensure_folder, remove
from .outbox.quotes import (
    AnswerFiles,
    Identity,
    estimate_of,
    find_answers,
    quote_document,
    quote_path,
    write_missing,
)
from .providers.registry import budget_unit
from .states import ErrorCode, FailStage, HoldReason, JobState

if TYPE_CHECKING:  # the lifecycle imports this module: at run time the desk only holds what it is given
    from .lifecycle.context import Work

log = logging.getLogger("ugcwatchd.lifecycle")
ANSWER_EVENTS = ("item approved", "item rejected")  # the ledger's record of each answer, with who gave it


@dataclass(frozen=True)
class Decision:
    """An operator's answer, as committed: the item and its jobs as they are now."""

    item: Item
    jobs: list[Job]
    approved: bool
    by: str
    estimate: int
    unit: str

    @property
    def line(self) -> str:
        names = ", ".join(shown(j.name) for j in self.jobs)
        if self.approved:
            return f"item {self.item.id}: approved {names} (about {self.estimate} {self.unit}): queued"
        return (
            f"item {self.item.id}: rejected {names} (about {self.estimate} {self.unit}): "
            "its error sidecars follow and its inputs are moved as for any failure"
        )


def awaiting(ledger: Ledger) -> list[tuple[Item, list[Job]]]:
    """The items awaiting approval, each with its jobs held for it, oldest first."""
    return [(ledger.item(item_id), jobs) for item_id, jobs in ledger.awaiting_approval().items()]


def awaiting_report(ledger: Ledger) -> list[dict[str, Any]]:
    """What ``status`` shows of each item awaiting approval: its jobs and what they would cost."""
    return [
        {
            "item": item.id,
            "rule": item.rule,
            "key": shown(item.key),
            "parts": {shown(k): shown(v) for k, v in item.parts.items()},
            "provider": item.provider,
            "jobs": [shown(j.name) for j in jobs],
            "estimate": estimate_of(item.provider, jobs),
            "unit": budget_unit(item.provider),
        }
        for item, jobs in awaiting(ledger)
    ]


def approve(ledger: Ledger, item_id: int, *, by: str = "command") -> Decision:
    """Send the item's jobs held for approval: they are queued (credits and budgets still apply)."""
    return _answer(ledger, item_id, approved=True, by=by)


def reject(ledger: Ledger, item_id: int, *, by: str = "command") -> Decision:
    """Refuse the item's jobs held for approval: each fails with ``rejected_by_operator``."""
    return _answer(ledger, item_id, approved=False, by=by)


def _answer(ledger: Ledger, item_id: int, *, approved: bool, by: str) -> Decision:
    problem = not_awaiting(ledger, item_id)
    if problem is not None:
        raise UsageError(problem, remedy="see `ugcwatchd status`")
    item = ledger.item(item_id)
    held = ledger.awaiting_approval_of(item_id)
    estimate, unit = estimate_of(item.provider, held), budget_unit(item.provider)
    failure = None
    if not approved:
        failure = Failure(
            FailStage.APPROVAL,
            ErrorCode.REJECTED_BY_OPERATOR,
            f"the quote of about {estimate} {unit} was rejected by an operator ({by}); nothing was sent",
            retryable=False,
        )
    jobs = ledger.answer_approval(item_id, by=by, failure=failure)
    if not jobs:  # answered by someone else in the meantime
        raise UsageError(not_awaiting(ledger, item_id) or f"item {item_id} is not awaiting approval")
    return Decision(item, jobs, approved, by, estimate, unit)


def not_awaiting(ledger: Ledger, item_id: int) -> str | None:
    """Why an answer for ``item_id`` is refused (no such item, nothing awaiting approval), or None."""
    try:
        item = ledger.item(item_id)
    except UgcwatchdError:
        return f"there is no item {item_id}"
    jobs = ledger.jobs_of(item_id)
    if any(j.state == JobState.HELD and j.held == HoldReason.APPROVAL for j in jobs):
        return None
    answered = [(kind, detail) for kind, detail in ledger.events(item_id) if kind in ANSWER_EVENTS]
    if answered:
        kind, detail = answered[-1]
        by = (detail or {}).get("by", "an operator")
        return f"item {item_id} is not awaiting approval: it was {kind.split()[1]} by {by}"
    states = ", ".join(sorted({str(j.state) for j in jobs})) or "none"
    return f"item {item_id} is not awaiting approval (it is {item.state}; its jobs: {states})"


def answer_items(ledger: Ledger, item_ids: list[int], *, approved: bool, by: str = "command") -> list[Decision]:
    """Answer several items: every one is checked first, so that a wrong number changes nothing."""
    wanted = list(dict.fromkeys(item_ids))
    problems = [p for item_id in wanted if (p := not_awaiting(ledger, item_id)) is not None]
    if problems:
        verb = "approved" if approved else "rejected"
        raise UsageError("; ".join(problems) + f"; nothing was {verb}", remedy="see `ugcwatchd status`")
    return [_answer(ledger, item_id, approved=approved, by=by) for item_id in wanted]


# -- the daemon's step ------------------------------------------------------------------------------


class ApprovalDesk:
    """Each tick: a quote for every job newly awaiting approval, and the answer files beside them taken.

    Only items awaiting approval are looked at, with a few ``stat`` calls each; a quote already written
    is never rewritten, and its time tells an answer from a file that was there before it.
    """

    def __init__(self, work: Work) -> None:
        self.work = work
        self._quoted: set[int] = set()  # items whose quotes this process has written or found
        self._said: dict[int, str] = {}  # the last trouble logged per item: the same one is not repeated
        self._answered: set[int] = set()  # items this desk answered (from their files) and logged
        self._stale: dict[int, frozenset[Identity]] = {}  # answer files judged older than an item's quote

    async def __call__(self) -> None:
        waiting = awaiting(self.work.ledger)
        # No await between reading the ledger and writing the quotes: delivery, which removes a quote once
        # its job is answered, cannot run in between and leave one behind.
        for item, jobs in waiting:
            if item.id not in self._quoted:
                self._quote(item, jobs)
        quoted = [(item, jobs) for item, jobs in waiting if item.id in self._quoted]
        stale = dict(self._stale)
        for item, found in await asyncio.to_thread(_look, quoted, stale):
            self._take(item, found)
        alive = {item.id for item, _ in waiting}
        for item_id in self._quoted - alive - self._answered:
            self._answered_elsewhere(item_id)
        self._answered &= alive
        self._quoted &= alive
        self._said = {k: v for k, v in self._said.items() if k in alive}
        self._stale = {k: v for k, v in self._stale.items() if k in alive}

    def _tell(self, item: Item, level: int, what: str) -> None:
        if self._said.get(item.id) != what:
            self._said[item.id] = what
            log.log(level, "rule %s: item %d (%s): %s", item.rule, item.id, shown(item.key), what)

    def _quote(self, item: Item, jobs: list[Job]) -> None:
        ledger, outbox = self.work.ledger, Path(item.outbox)
        rule = self.work.rule(item.rule)
        above = rule.approve_above if rule else None
        inputs, created, now = ledger.inputs_of(item.id), ledger.job_created(jobs[0].id), self.work.clock()
        documents = {j.name: quote_document(item, jobs, j, inputs, above, created, now) for j in jobs}
        found = item.settings.anchors.get("outbox") if item.settings else None
        try:
            for folder in {quote_path(outbox, j.name).parent for j in jobs}:
                ensure_folder(folder, Anchor(*found) if found else None)
            written = write_missing(outbox, documents)
        except OSError as exc:
            self._tell(item, logging.WARNING, f"cannot write its quote now ({exc}); tried again")
            return
        self._quoted.add(item.id)
        if written:
            document = next(iter(documents.values()))
            log.info(
                "rule %s: item %d (%s) awaits approval: about %d %s; quote %s",
                item.rule,
                item.id,
                shown(item.key),
                document["estimate"],
                document["unit"],
                shown(str(quote_path(outbox, jobs[0].name))),
            )

    def _answered_elsewhere(self, item_id: int) -> None:
        """The journal tells of an answer given by command or console, as of one given by file."""
        ledger = self.work.ledger
        answers = [(kind, detail or {}) for kind, detail in ledger.events(item_id) if kind in ANSWER_EVENTS]
        if answers:
            kind, detail = answers[-1]
            item = ledger.item(item_id)
            log.info("rule %s: item %d (%s) %s by %s", item.rule, item_id, shown(item.key), kind[5:], detail.get("by"))

    def _take(self, item: Item, found: AnswerFiles) -> None:
        if found.stale:
            # Stale it stays, even once a `chmod -R` or `chown -R` on the share moves its ctime past the quote's.
            self._stale[item.id] = self._stale.get(item.id, frozenset()) | found.stale_ids
            files = " and ".join(shown(str(path)) for path in found.stale)
            self._tell(
                item,
                logging.WARNING,
                f"{files}: older than the quote (left before it was written, or copied with older times), "
                "so no answer to it; a new file answers",
            )
        if not found.taken:
            return
        answer = found.reject or found.approve
        assert answer is not None
        try:
            decision = (reject if found.reject else approve)(self.work.ledger, item.id, by=f"file {shown(answer.name)}")
        except UsageError:
            return  # answered another way meanwhile: the file answers nothing now, and stays
        self._answered.add(item.id)
        both = "; both .approve and .reject exist: reject wins" if found.approve and found.reject else ""
        names = ", ".join(shown(j.name) for j in decision.jobs)
        outcome = "queued" if decision.approved else f"failed ({ErrorCode.REJECTED_BY_OPERATOR})"
        log.log(
            logging.INFO if decision.approved else logging.WARNING,
            "rule %s: item %d (%s) %s by %s: %s %s (about %d %s)%s",
            item.rule,
            item.id,
            shown(item.key),
            "approved" if decision.approved else "rejected",
            shown(str(answer)),
            names,
            outcome,
            decision.estimate,
            decision.unit,
            both,
        )
        for path in found.taken:
            try:
                remove(path)
            except OSError as exc:
                log.warning("rule %s: cannot remove %s: %s", item.rule, shown(str(path)), exc)


def _look(
    quoted: list[tuple[Item, list[Job]]], stale: dict[int, frozenset[Identity]]
) -> list[tuple[Item, AnswerFiles]]:
    """The answer files beside each item's quotes (run in a worker thread: a share may be slow)."""
    looked = []
    for item, jobs in quoted:
        found = find_answers(Path(item.outbox), [j.name for j in jobs], stale.get(item.id, frozenset()))
        if found is not None:
            looked.append((item, found))
    return looked
