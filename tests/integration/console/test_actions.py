"""The console's actions over real HTTP against a real ledger: each does what the command does, is
recorded as an event naming the console, and a refused one changes nothing."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

from ugcwatchd.inbox.fingerprint import sha256_of
from ugcwatchd.ledger import Failure, InputFile, JobDetail, PlannedJob
from ugcwatchd.states import ErrorCode, FailStage, HoldReason, ItemState, JobState

from .conftest import Served, logged_in


def _item(served: Served, name: str, *, detail: JobDetail | None = None, files: bool = False) -> int:
    inbox = served.config.rules[0].inboxes()[0]
    inputs = []
    for role, suffix in (("photo", "jpg"), ("video", "mp4")):
        path = inbox.path / f"{name}.{suffix}"
        if files:
            path.write_bytes(f"{name} {role}".encode())
        st = path.stat() if files else None
        inputs.append(
            InputFile(role, str(path), path.name, sha256_of(path) if files else "ab" * 32, st.st_size if st else 1,
                      st.st_mtime_ns if st else 1, inode=st.st_ino if st else None)
        )  # fmt: skip
    item = served.ledger.add_item(
        rule="faces", provider="facedub", inbox=str(inbox.path), outbox=str(inbox.outbox), key=name, inputs=inputs,
        jobs=[PlannedJob(f"{name}.facedub", f"k-{name.encode(errors='surrogateescape').hex()}", {"duration": 10}, 2,
                         state=JobState.HELD if detail else JobState.QUEUED, detail=detail or JobDetail())],
    )  # fmt: skip
    return item.id


def _post(served: Served, path: str, **form: str) -> str:
    """Post as a logged-in operator; the message the next page shows."""
    client, csrf = logged_in(served)
    with closing(client):
        done = client.post(path, data={"csrf": csrf, "next": "/items", **form})
        assert done.status_code == 303 and done.headers["location"] == "/items"
        page = client.get("/items").text
    start = page.index('<p class="flash" role="status">') + len('<p class="flash" role="status">')
    return page[start : page.index("</p>", start)]


def _ambiguous(served: Served, name: str) -> int:
    item = _item(served, name)
    job = served.ledger.jobs_of(item)[0]
    served.ledger.move_job(job.id, JobState.SUBMITTING, sent_at=1.0)
    detail = job.detail.but(held=HoldReason.AMBIGUOUS, candidates=("cand-a", "cand-b"))
    served.ledger.move_job(job.id, JobState.AMBIGUOUS, detail=detail)
    return job.id


def test_console_retry_queues_a_failed_item_again_and_names_the_console(served: Served) -> None:
    item = _item(served, "alice", files=True)
    job = served.ledger.jobs_of(item)[0]
    served.ledger.move_job(
        job.id, JobState.FAILED, detail=JobDetail(failure=Failure(FailStage.POLL, ErrorCode.REMOTE_FAILED, "gone"))
    )
    served.ledger.move_item(item, ItemState.FAILED)
    assert _post(served, f"/items/{item}/retry") == f"item {item}: alice.facedub queued again"
    assert served.ledger.job(job.id).state == JobState.QUEUED and served.ledger.item(item).state == ItemState.PLANNED
    assert served.ledger.timeline(item)[-1].kind == "console: retry"
    refused = _post(served, f"/items/{item}/retry")
    assert refused.startswith("Refused: item") and "no failed job to retry" in refused


def test_console_approve_and_reject_answer_a_quote_as_the_console(served: Served) -> None:
    waiting = JobDetail(held=HoldReason.APPROVAL)
    yes, no = _item(served, "yes", detail=waiting), _item(served, "no", detail=waiting)
    assert "approved yes.facedub" in _post(served, f"/items/{yes}/approve")
    assert "rejected no.facedub" in _post(served, f"/items/{no}/reject")
    assert served.ledger.jobs_of(yes)[0].state == JobState.QUEUED
    rejected = served.ledger.jobs_of(no)[0]
    assert rejected.state == JobState.FAILED and rejected.failure is not None
    assert rejected.failure.code == ErrorCode.REJECTED_BY_OPERATOR
    for item, kind in ((yes, "item approved"), (no, "item rejected")):
        event = next(e for e in served.ledger.timeline(item) if e.kind == kind)
        assert event.detail is not None and event.detail["by"] == "console"
    assert "it was approved by console" in _post(served, f"/items/{yes}/approve")  # answered already: refused


def test_console_adopt_takes_a_named_candidate_and_refuses_one_already_owned(served: Served) -> None:
    first, second = _ambiguous(served, "first"), _ambiguous(served, "second")
    assert "is not one of the candidates" in _post(served, f"/jobs/{first}/adopt", remote_id="elsewhere")
    assert "adopted facedub job cand-a" in _post(served, f"/jobs/{first}/adopt", remote_id="cand-a")
    adopted = served.ledger.job(first)
    assert adopted.state == JobState.SUBMITTED and adopted.remote_id == "cand-a" and adopted.detail.adopted
    assert served.ledger.item(adopted.item_id).state == ItemState.RUNNING
    event = served.ledger.timeline(adopted.item_id)[-1]
    assert event.kind == "console: adopt" and event.detail == {"by": "console", "job": "first.facedub",
                                                                "remote_id": "cand-a"}  # fmt: skip
    before = served.ledger.job(second)
    refused = _post(served, f"/jobs/{second}/adopt", remote_id="cand-a")
    assert refused == f"Refused: facedub job cand-a already belongs to job {first} (first.facedub)"
    assert served.ledger.job(second) == before
    assert "is submitted, not ambiguous" in _post(served, f"/jobs/{first}/adopt", remote_id="cand-b")


def test_console_resubmit_needs_the_confirmation_that_nothing_was_created(served: Served) -> None:
    job = _ambiguous(served, "clip")
    assert "tick the box" in _post(served, f"/jobs/{job}/resubmit")
    assert served.ledger.job(job).state == JobState.AMBIGUOUS
    assert "queued to be sent again" in _post(served, f"/jobs/{job}/resubmit", confirm="yes")
    again = served.ledger.job(job)
    assert again.state == JobState.QUEUED and again.remote_id is None and not again.detail.candidates


def test_console_item_page_shows_its_sidecars_and_which_are_missing(served: Served) -> None:
    item = _item(served, "caf\udce9", files=False)
    outbox = Path(served.ledger.item(item).outbox)
    outbox.mkdir(parents=True)
    name = "caf\udce9.facedub"
    (outbox / f"{name}.status.json").write_text(json.dumps({"kind": "status", "note": "<script>x</script>"}))
    with served.client() as client:
        page = client.get(f"/items/{item}").text
    assert "caf\\xe9.facedub.status.json" in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>x</script>" not in page
    other = _item(served, "bob")
    with served.client() as client:
        assert "no sidecar in the outbox" in client.get(f"/items/{other}").text
