"""When work under way will be done: from the job times observed on the provider, and its free slots.

A job holds one of the provider's slots from its last paid request until its completion is seen
(``run``), then takes a little longer to be delivered (``deliver``). Both are the medians of the
provider's last delivered jobs; a job with another estimate is scaled by it (a 30 s FaceDub job runs
longer than a 5 s one). Running jobs finish when their observed time is up, or as their progress says
when nothing was observed yet; queued jobs take the earliest free slot in turn.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from ..ledger.console import Finished


@dataclass(frozen=True)
class JobTimes:
    """A provider's typical job, as observed."""

    run: float  # seconds from the last paid request to the completion being seen
    deliver: float  # seconds from then to delivered
    estimate: float | None  # the typical job's estimate, to scale others by
    samples: int

    def run_of(self, estimate: int | None) -> float:
        """The expected run of a job with ``estimate``."""
        if estimate and self.estimate:
            return self.run * estimate / self.estimate
        return self.run


def observed(finished: Sequence[Finished]) -> JobTimes | None:
    """The typical job among ``finished`` (None without any)."""
    if not finished:
        return None
    runs = [f.completed_at - f.sent_at for f in finished]
    delivers = [max(0.0, f.delivered_at - f.completed_at) for f in finished]
    estimates = [f.estimate for f in finished if f.estimate]
    return JobTimes(median(runs), median(delivers), median(estimates) if estimates else None, len(finished))


@dataclass(frozen=True)
class Running:
    """A job under way: sent ``elapsed`` seconds ago; ``done`` once its provider finished it."""

    elapsed: float
    progress: float | None = None  # percent, when the provider tells
    estimate: int | None = None
    done: bool = False


def run_left(job: Running, times: JobTimes | None) -> float | None:
    """Seconds until the job's completion is seen, or None when nothing tells."""
    if job.done:
        return 0.0
    if times is not None:
        return max(0.0, times.run_of(job.estimate) - job.elapsed)
    if job.progress is not None and 0 < job.progress < 100 and job.elapsed > 0:
        return job.elapsed * (100 - job.progress) / job.progress
    return None


def progress_of(job: Running, times: JobTimes | None) -> float | None:
    """The job's progress in percent: the provider's, else the share of its expected run gone by."""
    if job.progress is not None:
        return job.progress
    if job.done:
        return 100.0
    if times is None:
        return None
    run = times.run_of(job.estimate)
    return min(99.0, 100.0 * job.elapsed / run) if run > 0 else None


@dataclass(frozen=True)
class Forecast:
    """Seconds from now until each running job and the whole queue are delivered (None: unknown)."""

    running: list[float | None]
    done_in: float | None


def forecast(
    running: Sequence[Running], queued: Sequence[int | None], times: JobTimes | None, slots: int | None
) -> Forecast:
    """When each running job is delivered, and when the last queued one is.

    ``slots``: how many jobs the provider runs at once (None: no limit). A queued job starts when the
    earliest slot frees and holds it for its own expected run.
    """
    lefts = [run_left(job, times) for job in running]
    deliver = times.deliver if times is not None else 0.0
    finishes = [None if left is None else left + deliver for left in lefts]
    if not queued:
        known = [f for f in finishes if f is not None]
        whole = max(known) if known and len(known) == len(finishes) else None
        return Forecast(finishes, whole if running else 0.0)
    if times is None or any(left is None for left in lefts):
        return Forecast(finishes, None)
    last = max([f for f in finishes if f is not None], default=0.0)
    if slots is None:  # every queued job starts at once
        return Forecast(finishes, max(last, *(times.run_of(e) + deliver for e in queued)))
    # A job not yet seen completing holds its slot, even one that overran its expected time.
    busy = [left or 0.0 for job, left in zip(running, lefts, strict=True) if not job.done]
    heap = sorted([*busy, *([0.0] * max(0, slots - len(busy)))]) or [0.0]
    for estimate in queued:
        end = heapq.heappop(heap) + times.run_of(estimate)
        heapq.heappush(heap, end)
        last = max(last, end + deliver)
    return Forecast(finishes, last)


def words(seconds: float | None) -> str:
    """``~40 s``, ``~3 min``, ``~2 h 10 min``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 1:
        return "any moment"
    if seconds < 90:
        return f"~{round(seconds)} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"~{minutes} min"
    return f"~{minutes // 60} h {minutes % 60} min"
