"""Answers to quotes on a real ledger: approve, reject, the refusals, `status`, `retry` and the CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.ledgers import MakeLedger, use_for_commands
from ugcwatchd import cli
from ugcwatchd.approvals import answer_items, approve, awaiting, not_awaiting, reject
from ugcwatchd.errors import ExitCode, UsageError
from ugcwatchd.ledger import InputFile, JobDetail, Ledger, PlannedJob
from ugcwatchd.ops import print_status, retry, status
from ugcwatchd.rules import load_rules
from ugcwatchd.states import ErrorCode, FailStage, HoldReason, ItemState, JobState

WAITING = JobDetail(held=HoldReason.APPROVAL)


def add(ledger: Ledger, key: str, langs: tuple[str, ...] = ("de", "es"), detail: JobDetail = WAITING) -> int:
    """A DubLab drop of a 7.2 s clip as ingestion records it: one job per language, held as ``detail`` says."""
    state = JobState.HELD if detail.held else JobState.QUEUED
    item = ledger.add_item(
        rule="dub",
        provider="dublab",
        inbox="/in",
        outbox="/out",
        key=key,
        inputs=[InputFile("media", f"/in/{key}.mp4", f"{key}.mp4", "ab" * 32, 1234, 1, "video/mp4", 7.2)],
        jobs=[
            PlannedJob(
                f"{key}.{lang}",
                f"k-{key}-{lang}",
                {"to": lang, "from": "auto", "studio_quality": lang == "de", "seconds": 7.2},
                state=state,
                detail=detail,
            )
            for lang in langs
        ],
        parts={"client": "acme"},
    )
    return item.id


@pytest.fixture
def ledger(make_ledger: MakeLedger) -> Ledger:
    """The ledger on each backend."""
    return make_ledger()


def test_approve_item_awaiting_queues_its_jobs_and_records_who(ledger: Ledger) -> None:
    item_id = add(ledger, "clip")
    decision = approve(ledger, item_id, by="file clip.approve")
    jobs = ledger.jobs_of(item_id)
    assert [(j.state, j.held) for j in jobs] == [(JobState.QUEUED, None)] * 2
    assert decision.approved and (decision.estimate, decision.unit) == (16 + 8, "seconds")  # de is studio: 2 x 8
    assert decision.line == "item 1: approved clip.de, clip.es (about 24 seconds): queued"
    events = ledger.events(item_id)
    assert ("item approved", {"by": "file clip.approve", "jobs": [j.id for j in jobs]}) in events
    assert [kind for kind, _ in events].count("job held -> queued") == 2
    assert awaiting(ledger) == []


def test_reject_item_awaiting_fails_its_jobs_not_retryable(ledger: Ledger) -> None:
    item_id = add(ledger, "clip", ("de",))
    decision = reject(ledger, item_id)
    (job,) = ledger.jobs_of(item_id)
    assert not decision.approved and job.state == JobState.FAILED and job.held is None
    failure = job.failure
    assert failure is not None
    assert (failure.stage, failure.code, failure.retryable) == (
        FailStage.APPROVAL,
        ErrorCode.REJECTED_BY_OPERATOR,
        False,
    )
    assert failure.message == "the quote of about 16 seconds was rejected by an operator (command); nothing was sent"
    assert ("item rejected", {"by": "command", "jobs": [job.id]}) in ledger.events(item_id)
    # Delivery may finish it now: no job of it is open any longer.
    assert [i.id for i in ledger.finishable_items()] == [item_id]


def test_awaiting_other_holds_and_queued_work_are_not_awaiting_approval(ledger: Ledger) -> None:
    waiting = add(ledger, "clip")
    add(ledger, "credits", detail=JobDetail(held=HoldReason.CREDITS))
    add(ledger, "queued", detail=JobDetail())
    assert [(item.id, [j.name for j in jobs]) for item, jobs in awaiting(ledger)] == [(waiting, ["clip.de", "clip.es"])]


def test_approve_item_not_awaiting_says_why(ledger: Ledger) -> None:
    queued = add(ledger, "queued", detail=JobDetail())
    answered = add(ledger, "clip")
    reject(ledger, answered, by="file clip.reject")
    assert not_awaiting(ledger, 99) == "there is no item 99"
    assert not_awaiting(ledger, queued) == f"item {queued} is not awaiting approval (it is planned; its jobs: queued)"
    assert (
        not_awaiting(ledger, answered)
        == f"item {answered} is not awaiting approval: it was rejected by file clip.reject"
    )
    with pytest.raises(UsageError, match=r"it was rejected by file clip\.reject") as caught:
        approve(ledger, answered)
    assert caught.value.exit_code == ExitCode.USAGE
    assert ledger.jobs_of(answered)[0].state == JobState.FAILED


def test_answer_items_one_wrong_number_changes_nothing(ledger: Ledger) -> None:
    first, second = add(ledger, "a"), add(ledger, "b")
    with pytest.raises(UsageError, match="there is no item 7; nothing was approved"):
        answer_items(ledger, [first, 7, second], approved=True)
    assert len(awaiting(ledger)) == 2
    decisions = answer_items(ledger, [first, second, first], approved=True)
    assert [d.item.id for d in decisions] == [first, second] and awaiting(ledger) == []


def test_retry_rejected_item_is_refused_a_new_drop_gets_a_new_quote(tmp_path: Path, ledger: Ledger) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - {{name: dub, inbox: {tmp_path}/in, dublab: {{to: [de, es]}}}}\n")
    item_id = add(ledger, "clip")
    reject(ledger, item_id)
    with pytest.raises(UsageError, match="rejected_by_operator") as caught:
        retry(ledger, load_rules(rules), [item_id])
    assert caught.value.remedy == "drop the input again to get a new quote"
    assert {j.state for j in ledger.jobs_of(item_id)} == {JobState.FAILED}
    assert ledger.item(item_id).state == ItemState.PLANNED  # nothing moved: delivery still ends it


def test_status_awaiting_items_with_their_estimates(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    add(ledger, "clip")
    add(ledger, "short", ("es",))
    add(ledger, "queued", detail=JobDetail())
    report = status(ledger)
    assert [(w["item"], w["jobs"], w["estimate"], w["unit"], w["parts"]) for w in report["awaiting_approval"]] == [
        (1, ["clip.de", "clip.es"], 24, "seconds", {"client": "acme"}),
        (2, ["short.es"], 8, "seconds", {"client": "acme"}),
    ]
    print_status(report)
    out = capsys.readouterr().out
    assert "awaiting approval: 2 items\n" in out
    assert "  item 1 client=acme dub/clip: clip.de, clip.es (about 24 seconds)\n" in out


def test_cli_approve_and_reject_print_a_line_per_item_or_exit_2(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_for_commands(ledger, monkeypatch, tmp_path)
    first, second, third = add(ledger, "a"), add(ledger, "b", ("de",)), add(ledger, "c", ("es",))
    assert cli.main(["approve", str(first), str(second)]) == ExitCode.OK
    assert capsys.readouterr().out.splitlines() == [
        "item 1: approved a.de, a.es (about 24 seconds): queued",
        "item 2: approved b.de (about 16 seconds): queued",
    ]
    assert cli.main(["reject", str(second), str(third)]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "item 2 is not awaiting approval: it was approved by command; nothing was rejected" in err
    assert "Traceback" not in err and awaiting(ledger)[0][0].id == third
    assert cli.main(["reject", str(third)]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("item 3: rejected c.es (about 8 seconds)")


def test_approve_racing_reject_from_two_connections_exactly_one_answer_counts(
    make_ledger: MakeLedger, ledger: Ledger
) -> None:
    # The daemon's desk and an operator's command each have their own connection to the one ledger.
    other = make_ledger()
    outcomes: list[tuple[str, str]] = []
    try:
        for round_ in range(20):
            item_id = add(ledger, f"clip{round_}")
            barrier = threading.Barrier(2)

            def answer(on: Ledger, verb: str, item_id: int = item_id, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(timeout=10)
                try:
                    (approve if verb == "approve" else reject)(on, item_id, by=verb)
                    outcomes.append((verb, "won"))
                except UsageError:
                    outcomes.append((verb, "refused"))

            threads = [
                threading.Thread(target=answer, args=(ledger, "approve")),
                threading.Thread(target=answer, args=(other, "reject")),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            won = [verb for verb, result in outcomes[-2:] if result == "won"]
            assert len(won) == 1, outcomes[-2:]
            states = {j.state for j in ledger.jobs_of(item_id)}
            assert states == ({JobState.QUEUED} if won == ["approve"] else {JobState.FAILED})
            answers = [kind for kind, _ in ledger.events(item_id) if kind in ("item approved", "item rejected")]
            assert answers == ["item approved" if won == ["approve"] else "item rejected"]
    finally:
        other.close()
