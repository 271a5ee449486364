"""Sidecars say what was asked, for whom, and what was paid (the request, the parts, the charge)."""

from __future__ import annotations

from typing import Any

import pytest

from ugcwatchd.ledger import Failure, Item, Job, JobDetail
from ugcwatchd.lifecycle.poll import keeping_charge
from ugcwatchd.outbox.sidecars import Subject, error_document, request_of, result_document, status_document
from ugcwatchd.providers.base import RemoteState
from ugcwatchd.states import ErrorCode, FailStage, ItemState, JobState

DUB = {"to": "de", "from": "auto", "studio_quality": True, "seconds": 4.2, "content_type": "video/mp4"}


def subject(provider: str, params: dict[str, Any], detail: JobDetail, parts: dict[str, str]) -> Subject:
    item = Item(1, "rule", provider, "/srv/acme/in", "/srv/acme/out", "k", ItemState.RUNNING, None, parts=parts)
    job = Job(1, 1, "ugc-000000000001", "clip.x", provider, "d", params, 2, JobState.FAILED, None, "r1", 1.0, 1, detail)
    return Subject(item, job, [], 1.0)


@pytest.mark.parametrize(
    ("params", "request_"),
    [
        ({"duration": 7}, {"duration": 7}),
        ({"duration": 5, "photo": "a.jpg", "video": "b.mp4"}, {"duration": 5}),  # a batch job's pair is ours
        (DUB, {"from": "auto", "to": "de", "studio_quality": True}),
        ({**DUB, "studio_quality": ["de"], "to": "es"}, {"from": "auto", "to": "es", "studio_quality": False}),
    ],
)
def test_sidecar_request_is_what_the_job_asked_its_provider(params: dict[str, Any], request_: dict[str, Any]) -> None:
    assert request_of(params) == request_


def test_sidecar_every_kind_carries_request_and_parts() -> None:
    s = subject("dublab", DUB, JobDetail(), {"client": "acme"})
    for document in (result_document(s, None, 2.0), error_document(s, 2.0), status_document(s, False, 2.0)):
        assert document["request"] == {"from": "auto", "to": "de", "studio_quality": True}
        assert document["parts"] == {"client": "acme"}
    assert subject("facedub", {"duration": 3}, JobDetail(), {}).item.parts == {}
    assert status_document(subject("facedub", {"duration": 3}, JobDetail(), {}), False, 2.0)["parts"] == {}


def test_sidecar_error_of_a_job_charged_before_it_failed_says_the_charge_and_the_overage() -> None:
    failure = Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, "no face", True)
    charged = RemoteState("r1", "failed", credits_charged=2, is_overage=True)
    document = error_document(subject("facedub", {"duration": 7}, JobDetail(failure=failure, remote=charged), {}), 2.0)
    assert (document["credits_charged"], document["is_overage"]) == (2, True)
    nothing = error_document(subject("facedub", {"duration": 7}, JobDetail(failure=failure), {}), 2.0)
    assert (nothing["credits_charged"], nothing["is_overage"]) == (None, None)


def test_sidecar_result_of_dublab_has_no_overage_and_facedub_keeps_it() -> None:
    dub = RemoteState("r1", "completed", credits_charged=8, billed_seconds=4)
    document = result_document(subject("dublab", DUB, JobDetail(remote=dub), {}), None, 2.0)
    assert (document["credits_charged"], document["billed_seconds"], document["is_overage"]) == (8, 4, None)
    face = RemoteState("r1", "completed", credits_charged=1, is_overage=False)
    assert (
        result_document(subject("facedub", {"duration": 3}, JobDetail(remote=face), {}), "x.mp4", 2.0)["is_overage"]
        is False
    )


def test_poll_keeping_charge_keeps_what_a_later_record_leaves_out() -> None:
    created = RemoteState("r1", "queued", credits_charged=2, is_overage=True)
    listed = RemoteState("r1", "failed", error="no face")
    assert keeping_charge(created, listed) == RemoteState(
        "r1", "failed", error="no face", credits_charged=2, is_overage=True
    )
    assert keeping_charge(created, RemoteState("r1", "completed", credits_charged=3)).credits_charged == 3
    assert keeping_charge(created, RemoteState("r2", "failed")) == RemoteState("r2", "failed")  # another job
    assert keeping_charge(None, listed) == listed
