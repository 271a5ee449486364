"""The ETA arithmetic: observed job times, what is left of running jobs, queued jobs in free slots."""

from __future__ import annotations

import pytest

from ugcwatchd.console.eta import JobTimes, Running, forecast, observed, progress_of, run_left, words
from ugcwatchd.ledger.console import Finished


def test_eta_observed_times_are_medians_of_the_last_jobs() -> None:
    finished = [Finished(0.0, 10.0, 11.0, 2), Finished(100.0, 112.0, 113.0, 2), Finished(200.0, 260.0, 262.0, 2)]
    times = observed(finished)
    assert times == JobTimes(run=12.0, deliver=1.0, estimate=2, samples=3)
    assert observed([]) is None


def test_eta_job_time_scales_with_the_estimate() -> None:
    times = JobTimes(run=10.0, deliver=1.0, estimate=2.0, samples=5)
    assert times.run_of(4) == 20.0 and times.run_of(1) == 5.0
    assert times.run_of(None) == 10.0
    assert JobTimes(10.0, 1.0, None, 5).run_of(4) == 10.0


def test_eta_running_job_left_from_observed_times_then_progress() -> None:
    times = JobTimes(run=10.0, deliver=1.0, estimate=None, samples=3)
    assert run_left(Running(elapsed=4.0), times) == 6.0
    assert run_left(Running(elapsed=15.0), times) == 0.0  # overran: any moment now
    assert run_left(Running(elapsed=3.0, done=True), times) == 0.0
    assert run_left(Running(elapsed=10.0, progress=25.0), None) == pytest.approx(30.0)
    assert run_left(Running(elapsed=10.0), None) is None
    assert run_left(Running(elapsed=0.0, progress=0.0), None) is None


def test_eta_progress_is_the_providers_or_the_share_of_the_expected_time() -> None:
    times = JobTimes(run=10.0, deliver=1.0, estimate=None, samples=3)
    assert progress_of(Running(elapsed=4.0, progress=70.0), times) == 70.0
    assert progress_of(Running(elapsed=4.0), times) == pytest.approx(40.0)
    assert progress_of(Running(elapsed=40.0), times) == 99.0  # never 100 % before it is done
    assert progress_of(Running(elapsed=4.0, done=True), times) == 100.0
    assert progress_of(Running(elapsed=4.0), None) is None


def test_eta_queued_jobs_take_the_earliest_free_slot() -> None:
    times = JobTimes(run=10.0, deliver=1.0, estimate=None, samples=3)
    running = [Running(elapsed=7.0), Running(elapsed=2.0)]  # 3 s and 8 s left
    plan = forecast(running, [None, None, None], times, slots=2)
    assert plan.running == [4.0, 9.0]
    # slot A: 3 -> 13 -> 23; slot B: 8 -> 18; the last is delivered 1 s after 23
    assert plan.done_in == 24.0


def test_eta_free_slots_start_queued_jobs_at_once() -> None:
    times = JobTimes(run=10.0, deliver=1.0, estimate=None, samples=3)
    assert forecast([], [None, None], times, slots=2).done_in == 11.0
    assert forecast([], [None, None, None], times, slots=2).done_in == 21.0
    assert forecast([], [None] * 5, times, slots=None).done_in == 11.0  # no limit: all at once


def test_eta_finished_remotely_jobs_only_wait_for_delivery_and_hold_no_slot() -> None:
    times = JobTimes(run=10.0, deliver=2.0, estimate=None, samples=3)
    plan = forecast([Running(elapsed=30.0, done=True)], [None], times, slots=1)
    assert plan.running == [2.0] and plan.done_in == 12.0


def test_eta_unknown_without_observed_times_for_queued_work() -> None:
    assert forecast([Running(elapsed=1.0)], [None], None, slots=2).done_in is None
    assert forecast([Running(elapsed=10.0, progress=50.0)], [], None, slots=2).done_in == pytest.approx(10.0)
    assert forecast([], [], None, slots=2).done_in == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "unknown"), (0.4, "any moment"), (42.4, "~42 s"), (89, "~89 s"), (95, "~2 min"), (7800, "~2 h 10 min")],
)
def test_eta_words(seconds: float | None, text: str) -> None:
    assert words(seconds) == text
