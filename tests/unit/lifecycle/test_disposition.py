"""The one table of what an error means for a job: complete, and in step with the documentation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ugcwatchd import errors
from ugcwatchd.lifecycle.disposition import (
    DOWNLOAD_TRIES,
    TABLE,
    UPLOAD_TRIES,
    Fail,
    Hold,
    Pause,
    Retry,
    Step,
    decide,
    rule_for,
)
from ugcwatchd.providers.transfer import FileChanged
from ugcwatchd.states import PLANNING_CODES, ErrorCode, FailStage, HoldReason

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"


def _all_subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


ERROR_CLASSES = sorted(
    {errors.ProviderError, *_all_subclasses(errors.ProviderError), FileChanged, OSError, FileNotFoundError, ValueError},
    key=lambda c: c.__name__,
)


def _example(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, errors.ProviderError):
        return cls("facedub", "an example answer", status=500)
    return cls("example")


@pytest.mark.parametrize("step", list(Step))
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_disposition_every_error_class_at_every_step_has_an_answer(cls: type[BaseException], step: Step) -> None:
    disposition = decide(_example(cls), step, attempts=1)
    assert isinstance(disposition, Pause | Hold | Retry | Fail)
    if isinstance(disposition, Retry):
        assert 0 <= disposition.after <= 600


def test_disposition_every_failure_code_is_an_error_code() -> None:
    for rules in TABLE.values():
        for rule in rules.values():
            if isinstance(rule, Fail):
                assert rule.code in ErrorCode


def test_disposition_auth_rejected_pauses_at_every_step() -> None:
    for step in Step:
        assert decide(_example(errors.AuthRejected), step) == Pause()


def test_disposition_out_of_credits_holds_a_submission_but_not_a_poll() -> None:
    exc = _example(errors.OutOfCredits)
    assert decide(exc, Step.SUBMIT) == Hold(HoldReason.CREDITS)
    assert isinstance(decide(exc, Step.POLL), Retry)


def test_disposition_unknown_outcome_at_submit_asks_for_reconciliation() -> None:
    unknown = errors.Transient("facedub", "504", status=504, outcome_unknown=True)
    known = errors.Transient("facedub", "cannot connect")
    assert decide(unknown, Step.SUBMIT).reconcile  # type: ignore[union-attr]
    assert not decide(known, Step.SUBMIT).reconcile  # type: ignore[union-attr]


def test_disposition_rate_limited_waits_as_the_server_says() -> None:
    limited = errors.RateLimited("facedub", "slow down", status=429, retry_after=42.0)
    assert decide(limited, Step.SUBMIT) == Retry(42.0)


def test_disposition_download_is_retried_then_failed_as_retryable() -> None:
    exc = _example(errors.Transient)
    assert isinstance(decide(exc, Step.DOWNLOAD, DOWNLOAD_TRIES - 1), Retry)
    assert decide(exc, Step.DOWNLOAD, DOWNLOAD_TRIES) == Fail(ErrorCode.DOWNLOAD_FAILED, retryable=True)
    assert decide(_example(errors.Rejected), Step.DOWNLOAD) == Fail(ErrorCode.DOWNLOAD_REFUSED)


def test_disposition_unforeseen_error_is_retried_and_reconciled() -> None:
    assert rule_for(KeyError, Step.SUBMIT) == Retry(60.0, reconcile=True)


def _documented_codes() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    sections = re.split(r"^### `([a-z_]+)`\s*$", text, flags=re.MULTILINE)
    return {sections[i]: sections[i + 1] for i in range(1, len(sections), 2)}


def test_errors_doc_every_code_is_documented_with_retryable_and_remedy() -> None:
    documented = _documented_codes()
    assert set(documented) == {str(code) for code in ErrorCode}
    for code, body in documented.items():
        assert "**Remedy:**" in body and "**Meaning:**" in body, code
        retryable = re.search(r"\*\*Retryable:\*\*\s*(yes|no)", body)
        assert retryable, code
        if code in PLANNING_CODES:
            assert retryable.group(1) == "no", code


def test_errors_doc_agrees_with_the_table_on_retryable_failures() -> None:
    documented = _documented_codes()
    for rules in TABLE.values():
        for rule in rules.values():
            if isinstance(rule, Fail) and rule.retryable:
                assert re.search(r"\*\*Retryable:\*\*\s*yes", documented[rule.code]), rule.code


def test_disposition_odd_answer_is_retried_like_a_5xx_and_reconciled_after_a_paid_request() -> None:
    assert decide(errors.OddAnswer("facedub", "html"), Step.POLL) == Retry(0.0)
    assert decide(errors.OddAnswer("facedub", "html"), Step.ACCOUNT) == Retry(0.0)
    paid = decide(errors.OddAnswer("facedub", "html", outcome_unknown=True), Step.SUBMIT)
    assert isinstance(paid, Retry) and paid.reconcile
    assert isinstance(decide(errors.OddAnswer("dublab", "odd record"), Step.RECONCILE), Retry)


def test_disposition_download_failed_is_retried_as_a_download_then_failed_retryable() -> None:
    exc = errors.DownloadFailed("facedub", "too large")
    assert isinstance(decide(exc, Step.DOWNLOAD, 1), Retry)
    assert decide(exc, Step.DOWNLOAD, DOWNLOAD_TRIES) == Fail(ErrorCode.DOWNLOAD_FAILED, retryable=True)


def test_disposition_upload_refused_goes_back_to_the_queue_then_fails_rejected_never_pauses() -> None:
    exc = errors.UploadRefused("dublab", "AccessDenied: Request has expired", status=403)
    for attempt in range(1, UPLOAD_TRIES):
        retry = decide(exc, Step.SUBMIT, attempt)
        assert isinstance(retry, Retry) and not retry.reconcile and retry.after <= 300
    assert decide(exc, Step.SUBMIT, UPLOAD_TRIES) == Fail(ErrorCode.REJECTED, stage=FailStage.UPLOAD)
    assert all(decide(exc, step) != Pause() for step in Step)
