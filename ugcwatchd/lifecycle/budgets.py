"""Budgets per rule and concrete inbox (per client): ``budget: {daily, monthly}`` on a rule.

A rule's budget counts, in its provider's unit, what each of its concrete inboxes sent today (since
local midnight) and this month (since the local 1st): the estimates of that inbox's jobs sent in the
period and not failed (or failed after the provider charged for them), the submissions of that inbox now
passing their checks, and the job in question. The budget is read from the configuration as it is now: a
reload that changes it applies to work already held. An item's budget is its rule's, by name; when no rule
has that name any more (renamed by a reload), it is the budget of the rule that now watches the item's
folder, and what that folder spent under the old name still counts. An item whose folder no rule watches
has no rule budget.
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import PurePath

from ..ledger import Item, Job
from ..rules import Budget
from .context import ProviderState, Work

Scope = str  # one concrete inbox: one client of the one rule that watches it


def period_starts(now: float) -> tuple[float, float]:
    """(local midnight today, local midnight on the 1st of this month), as wall-clock seconds."""
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp(), midnight.replace(day=1).timestamp()


class ClientBudgets:
    """Answers "would this job pass its client's budget?" for one dispatch pass of one provider.

    What a scope sent is read once per pass and kept: nothing a pass does moves it (releasing a hold sends
    nothing, and a submission it starts counts as a claim until its intent is committed, after the pass).
    """

    def __init__(self, work: Work, ps: ProviderState) -> None:
        self.work = work
        self.ps = ps
        self.day_from, self.month_from = period_starts(work.clock())
        self._spent: dict[Scope, tuple[int, int]] = {}
        self.pending: dict[Scope, int] = {}  # released in this pass, not yet claimed

    def over(self, job: Job, estimate: int) -> bool:
        """Whether ``job`` (costing ``estimate``) would take its rule's concrete inbox past its budget."""
        if not self.work.budgets:
            return False  # no rule has one: no item needs reading
        item = self.work.ledger.item(job.item_id)
        budget = self._budget_of(item)
        if budget is None:
            return False
        scope = item.inbox
        today, month = self._sent(scope)
        more = self._claimed(scope, job.id) + self.pending.get(scope, 0) + estimate
        return (budget.daily is not None and today + more > budget.daily) or (
            budget.monthly is not None and month + more > budget.monthly
        )

    def release(self, job: Job, estimate: int) -> None:
        """Count a job let go in this pass against its scope, so the next one's check sees it."""
        scope = self.work.ledger.item(job.item_id).inbox
        self.pending[scope] = self.pending.get(scope, 0) + estimate

    def _budget_of(self, item: Item) -> Budget | None:
        budgets = self.work.budgets
        if item.rule in budgets or self.work.rule(item.rule) is not None:
            return budgets.get(item.rule)
        # The rule's name is gone: a rename must not let held work past its client's budget.
        owner = next((r for r in self.work.config.rules if _watches(r.glob_pattern, item.inbox)), None)
        return owner.budget if owner is not None and owner.provider == item.provider else None

    def _sent(self, scope: Scope) -> tuple[int, int]:
        if scope not in self._spent:
            ledger = self.work.ledger
            self._spent[scope] = ledger.scope_spent(
                self.ps.name, scope, month_from=self.month_from, day_from=self.day_from
            )
        return self._spent[scope]

    def _claimed(self, scope: Scope, job_id: int) -> int:
        """The submissions of ``scope`` that passed their checks and whose intent is not committed yet."""
        total = 0
        for claimed, estimate in self.ps.claims.items():
            if claimed == job_id:
                continue
            if self.work.ledger.item(self.work.ledger.job(claimed).item_id).inbox == scope:
                total += estimate
        return total


def _watches(glob_pattern: str, inbox: str) -> bool:
    """Whether a rule's inbox pattern matches the concrete inbox ``inbox``, segment by segment as a glob."""
    wanted, have = PurePath(glob_pattern).parts, PurePath(inbox).parts
    return len(wanted) == len(have) and all(fnmatchcase(h, w) for w, h in zip(wanted, have, strict=True))
