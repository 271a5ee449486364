"""What each console page shows, read from the ledger and the providers' state; rendering is elsewhere.

Every read is bounded: counts are the ledger's tallies, lists of open work are cut at a limit (their
totals come from the tallies), observed job times are the last few finished jobs of each provider.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from ..ledger import InputFile, Item, Job, Ledger
from ..ledger.console import Event, SearchPage
from ..providers.registry import budget_unit, estimate_params
from ..states import PLANNING_CODES, RUNNING_JOB_STATES, WAITING_JOB_STATES, ErrorCode, HoldReason, JobState
from .chart import Series, days_until, top_series
from .eta import Forecast, JobTimes, Running, forecast, observed, progress_of
from .sidecars import Found

HELD_SHOWN = 20  # groups of held work on the overview; the rest is counted
RUNNING_SHOWN = 50
FAILURES_SHOWN = 10


@dataclass(frozen=True)
class ProviderView:
    """A read-only copy of what the daemon knows of one provider right now."""

    name: str
    unit: str
    paused: str | None
    remaining: int | None
    slots: int | None  # jobs it runs at once, None for no limit
    daily_budget: int | None
    allows_overage: bool
    last_poll_ok: float | None


def client_label(parts: Mapping[str, str]) -> str:
    """``acme`` for one named part, ``client=acme,site=b`` for several, ``(no client)`` for none."""
    if not parts:
        return "(no client)"
    if len(parts) == 1:
        return next(iter(parts.values()))
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))


def retryable(job: Job) -> bool:
    """A failed job that ``retry`` may send again: not refused at planning, not refused by an operator."""
    code = job.failure.code if job.failure else None
    return job.state == JobState.FAILED and code not in PLANNING_CODES and code != ErrorCode.REJECTED_BY_OPERATOR


def estimate_of(job: Job) -> int:
    return job.estimate if job.estimate is not None else estimate_params(job.provider, job.params)


# -- the overview ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderRow:
    view: ProviderView
    jobs: dict[str, int]  # by state
    times: JobTimes | None
    forecast: Forecast


@dataclass(frozen=True)
class HeldGroup:
    """Jobs of one item held for one reason, and that reason in words."""

    item: Item
    jobs: list[Job]
    reason: HoldReason | None  # None for ambiguous jobs
    words: str


@dataclass(frozen=True)
class RunningRow:
    item: Item
    job: Job
    progress: float | None
    estimated: bool  # the progress is ours (from observed times), not the provider's
    eta: float | None  # seconds until delivered


@dataclass(frozen=True)
class Overview:
    items: dict[str, int]
    jobs: dict[str, int]
    providers: list[ProviderRow]
    held: list[HeldGroup]
    held_total: int
    running: list[RunningRow]
    running_total: int
    failures: list[tuple[Item, Job]]
    at: float


def _budget_words(ledger: Ledger, view: ProviderView) -> str:
    midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    spent = ledger.estimated_since(view.name, midnight)
    return f"daily budget: {spent} of {view.daily_budget} {view.unit} spent today"


def hold_words(ledger: Ledger, jobs: Sequence[Job], reason: HoldReason | None, view: ProviderView | None) -> str:
    """Why these jobs wait, as an operator would say it: ``needs 3 credits, 1 left``."""
    unit = view.unit if view else (budget_unit(jobs[0].provider) if jobs else "credits")
    needed = sum(estimate_of(j) for j in jobs)
    if reason is None:
        candidates = len(jobs[0].detail.candidates) if jobs else 0
        return f"submission outcome unclear: {candidates} candidate remote jobs; resolve it on the item page"
    if reason == HoldReason.CREDITS:
        left = "unknown" if view is None or view.remaining is None else str(view.remaining)
        return f"needs {needed} {unit}, {left} left"
    if reason == HoldReason.BUDGET and view is not None and view.daily_budget is not None:
        return f"needs {needed} {unit}; {_budget_words(ledger, view)}"
    if reason == HoldReason.APPROVAL:
        return f"awaiting approval: about {needed} {unit}"
    if reason == HoldReason.CLIENT_BUDGET:
        return f"client budget: needs {needed} {unit}, beyond what the rule allows this client now"
    return str(reason)


def _held(ledger: Ledger, views: Mapping[str, ProviderView]) -> list[HeldGroup]:
    groups: dict[tuple[int, HoldReason | None], tuple[Item, list[Job]]] = {}
    for item, job in ledger.jobs_in_with_items(*WAITING_JOB_STATES, limit=HELD_SHOWN * 10):
        reason = job.held if job.state == JobState.HELD else None
        key = (item.id, reason)
        if key not in groups and len(groups) >= HELD_SHOWN:
            continue
        groups.setdefault(key, (item, []))[1].append(job)
    return [
        HeldGroup(item, jobs, reason, hold_words(ledger, jobs, reason, views.get(item.provider)))
        for (_, reason), (item, jobs) in groups.items()
    ]


def overview(ledger: Ledger, views: Sequence[ProviderView], now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    by_name = {v.name: v for v in views}
    running = ledger.jobs_in_with_items(*RUNNING_JOB_STATES, limit=RUNNING_SHOWN)
    rows, providers = [], []
    for view in views:
        times = observed(ledger.finished_recently(view.name))
        mine = [(item, job) for item, job in running if job.provider == view.name]
        under_way = [_running(job, now) for _, job in mine]
        plan = forecast(under_way, ledger.queued_estimates(view.name), times, view.slots)
        for (item, job), state, eta in zip(mine, under_way, plan.running, strict=True):
            provided = state.progress is not None
            rows.append(RunningRow(item, job, progress_of(state, times), not provided, eta))
        providers.append(ProviderRow(view, ledger.job_counts(view.name), times, plan))
    for item, job in running:
        if job.provider not in by_name:  # a provider no rule uses any more: shown, without a forecast
            state = _running(job, now)
            rows.append(RunningRow(item, job, progress_of(state, None), False, None))
    jobs = ledger.job_counts()
    return Overview(
        items=ledger.counts(),
        jobs=jobs,
        providers=providers,
        held=_held(ledger, by_name),
        held_total=sum(jobs.get(s, 0) for s in WAITING_JOB_STATES),
        running=sorted(rows, key=lambda r: r.job.id),
        running_total=sum(jobs.get(s, 0) for s in RUNNING_JOB_STATES),
        failures=ledger.recent_failures(FAILURES_SHOWN),
        at=now,
    )


def _running(job: Job, now: float) -> Running:
    remote = job.detail.remote
    elapsed = max(0.0, now - job.sent_at) if job.sent_at else 0.0
    done = job.state == JobState.REMOTE_DONE
    return Running(elapsed, remote.progress if remote and not done else None, job.estimate, done)


# -- spend ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """One provider's spend per day over the last 30 days, by client."""

    provider: str
    unit: str
    days: list[date]
    series: list[Series]

    @property
    def total(self) -> float:
        return sum(s.total for s in self.series)


def spend(ledger: Ledger, providers: Sequence[str], today: date | None = None) -> list[Spend]:
    today = today or date.today()
    days = days_until(today)
    since = datetime.combine(days[0], datetime.min.time()).timestamp()
    index = {d.isoformat(): n for n, d in enumerate(days)}
    sums: dict[str, dict[str, list[float]]] = {name: {} for name in providers}
    for day, provider, parts, credits in ledger.spend_by_day(since):
        if day not in index:
            continue
        values = sums.setdefault(provider, {}).setdefault(client_label(parts), [0.0] * len(days))
        values[index[day]] += credits
    charts = top_series({name: [Series(k, tuple(v)) for k, v in by_client.items()] for name, by_client in sums.items()})
    return [Spend(name, budget_unit(name), days, series) for name, series in charts.items()]


# -- items ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    name: str = ""
    client: str = ""
    rule: str = ""
    state: str = ""
    before: int | None = None


@dataclass(frozen=True)
class ItemRow:
    item: Item
    inputs: list[InputFile]
    jobs: list[Job]


@dataclass(frozen=True)
class ItemsPage:
    filters: Filters
    rows: list[ItemRow]
    page: SearchPage


def items(ledger: Ledger, filters: Filters, limit: int = 50) -> ItemsPage:
    page = ledger.search_items(
        name=filters.name,
        client=filters.client,
        rule=filters.rule,
        state=filters.state,
        before=filters.before,
        limit=limit,
    )
    rows = [ItemRow(item, ledger.inputs_of(item.id), ledger.jobs_of(item.id)) for item in page.items]
    return ItemsPage(filters, rows, page)


# -- one item ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    remote_id: str
    owner: int | None  # the ledger job that owns it already, if any


@dataclass(frozen=True)
class ItemView:
    item: Item
    inputs: list[InputFile]
    jobs: list[Job]
    charged: dict[int, float]
    events: list[Event]
    candidates: dict[int, list[Candidate]]  # per ambiguous job
    awaiting_approval: bool
    retryable: bool
    sidecars: Found = field(default_factory=dict)  # job -> kind -> its text, why it is not shown, or None


def item_view(ledger: Ledger, item_id: int) -> ItemView:
    item = ledger.item(item_id)
    jobs = ledger.jobs_of(item_id)
    candidates = {}
    for job in jobs:
        if job.state == JobState.AMBIGUOUS:
            owners = [ledger.job_owning(job.provider, c) for c in job.detail.candidates]
            candidates[job.id] = [
                Candidate(c, o.id if o else None) for c, o in zip(job.detail.candidates, owners, strict=True)
            ]
    return ItemView(
        item=item,
        inputs=ledger.inputs_of(item_id),
        jobs=jobs,
        charged=ledger.charges_of(item_id),
        events=ledger.timeline(item_id),
        candidates=candidates,
        awaiting_approval=any(j.state == JobState.HELD and j.held == HoldReason.APPROVAL for j in jobs),
        retryable=any(retryable(j) for j in jobs),
    )
