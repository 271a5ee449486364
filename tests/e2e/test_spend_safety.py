"""Never pay twice, never pay for the wrong bytes: each way the daemon once did, replayed end to end.

Every test runs the real daemon (``ugcwatchd run``) and the real sandbox, each in its own process, and
judges by what the sandbox created and charged and by what the outbox holds, not by the daemon's word.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.support import wait_for
from ugcwatchd.ledger import Ledger
from ugcwatchd.lifecycle.disposition import DOWNLOAD_TRIES
from ugcwatchd.providers.dublab import Dub, DubLab, DubLabClient, remote_state
from ugcwatchd.sandbox.media import make_media
from ugcwatchd.states import JobState

from .conftest import SandboxProcess
from .test_cli_ops import cli
from .test_cli_run import DaemonProcess, sidecar

FACEDUB_AUTH = {"Authorization": "Bearer fdb_sandbox"}
DUBLAB_AUTH = {"apikey": "dl_sandbox"}
STARTED = (2, 3, 5)  # DubLab's In Queue, Processing, Completed: a dub that was started
COMPLETED = 5


# -- the world ----------------------------------------------------------------------------------------


def make_world(root: Path, sb: SandboxProcess, rules: str, *, facedub: str = "", dublab: str = "") -> Path:
    """Inboxes and outboxes for ``faces`` and ``dub``, and a rules file with fast settings."""
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox", "staging"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    path = root / "rules.yaml"
    path.write_text(
        "providers:\n"
        f'  facedub: {{base_url: "{sb.urls["facedub"]}", poll_every: 1s{facedub}}}\n'
        f'  dublab: {{base_url: "{sb.urls["dublab"]}", poll_every: 1s{dublab}}}\n'
        "defaults: {stable_after: 0.3s, rescan_every: 1s}\n"
        f"rules:\n{rules}"
    )
    return path


DUB_RULE = "  - {name: dub, inbox: dub/inbox, dublab: {to: [de]}}\n"
FACES_RULE = "  - {name: faces, inbox: faces/inbox, facedub: {}}\n"


def clip(root: Path, name: str, seconds: float, size: int = 64) -> Path:
    """A real clip made in the staging folder (``size`` varies the content at equal length)."""
    path = root / "staging" / name
    make_media(path, seconds, size=(size, size))
    return path


def drop(source: Path, target: Path) -> Path:
    """Put ``source`` at ``target`` in one rename: the inbox never sees a half-written file."""
    staged = source.with_name(f"{source.name}.{os.getpid()}.drop")
    shutil.copy(source, staged)
    os.replace(staged, target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible(folder: Path) -> list[str]:
    """What a person sees in ``folder``: the daemon's hidden claim file is not an input."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def get(sb: SandboxProcess, service: str, path: str, headers: dict[str, str] | None = None) -> Any:
    response = httpx.get(f"{sb.urls[service]}{path}", headers=headers or {}, timeout=10)
    response.raise_for_status()
    return response.json()


def stats(sb: SandboxProcess, service: str) -> dict[str, Any]:
    answer: dict[str, Any] = get(sb, service, "/sandbox/stats")
    return answer


def dubs(sb: SandboxProcess) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = get(sb, "dublab", "/api/v1/dubs", DUBLAB_AUTH)
    return answer


def dublab_seconds(sb: SandboxProcess) -> int:
    return int(get(sb, "dublab", "/api/v1/me", DUBLAB_AUTH)["seconds"])


def set_dublab_account(sb: SandboxProcess, **fields: object) -> None:
    httpx.post(f"{sb.urls['dublab']}/sandbox/account", headers=DUBLAB_AUTH, json=fields, timeout=10).raise_for_status()


def jobs_json(root: Path, rules: Path) -> list[dict[str, Any]]:
    """`jobs --json` (a list of items with their jobs) as one row per job, with its item's id."""
    done = cli(root, rules, "jobs", "--json")
    assert done.returncode == 0, done.stderr
    items: list[dict[str, Any]] = json.loads(done.stdout)
    return [{"item": i["id"], "job": j["name"], **j} for i in items for j in i["jobs"]]


def held(path: Path, reason: str) -> dict[str, object] | None:
    document = sidecar(path)
    return document if document and document.get("held_reason") == reason else None


def terminal(outbox: Path, job: str) -> list[str]:
    return [kind for kind in ("result", "error") if (outbox / f"{job}.{kind}.json").exists()]


def settle_inbox(inbox: Path, outbox: Path) -> None:
    """Return once the daemon has taken in everything that happened in ``inbox`` so far.

    A refused file (free: nothing is sent) dropped now is planned only after the daemon observed it,
    by an event or a scan; inotify events come in order and a scan sees the whole folder, so by then the
    daemon has also seen what happened before it (a file moved away).
    """
    (inbox / "sentinel.mp4").write_text("not a video\n")
    wait_for(lambda: sidecar(outbox / "sentinel.de.error.json"), timeout=20, what="the sentinel's refusal")
    wait_for(lambda: not (inbox / "sentinel.mp4").exists(), timeout=10, what="the sentinel moved away")


# -- 1. FaceDub creates the job after answering 504 ---------------------------------------------------


def test_late_creation_after_a_504_is_adopted_not_paid_again(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    """POST /jobs answers 504 and the job appears seconds later: the daemon waits out its grace, finds
    the job and adopts it, instead of concluding "nothing was created" and paying a second time."""
    # --late-create 4, not 3: the first reconciliation comes 1-2 s after the 504 (submit backoff), and it
    # must look before the job exists, even on a loaded machine, or the wait is never exercised.
    sb = sandbox_process("--port", "0", "--job-seconds", "2", "--late-create", "4")
    rules = make_world(tmp_path, sb, FACES_RULE, facedub=", reconcile_grace: 8s")
    outbox = tmp_path / "faces" / "outbox"
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        shutil.copy(media["jpeg"], tmp_path / "faces" / "inbox" / "alice.jpg")
        shutil.copy(media["video.mp4"], tmp_path / "faces" / "inbox" / "alice.mp4")
        wait_for(lambda: "may still create it" in daemon.text(), timeout=20, what="the daemon to wait for FaceDub")
        result = wait_for(lambda: sidecar(outbox / "alice.facedub.result.json"), timeout=40, what="the result")
        wait_for(lambda: visible(outbox / "originals") == ["alice.jpg", "alice.mp4"], timeout=10, what="the archive")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    remote = get(sb, "facedub", "/jobs", FACEDUB_AUTH)
    assert len(remote) == 1, remote  # exactly one job at FaceDub
    assert result["remote_id"] == remote[0]["id"]  # ... and it is the one the daemon delivered
    assert "found the job it had started" in daemon.text()
    counted = stats(sb, "facedub")
    assert counted["jobs_created"] == 1 and counted["jobs_pending"] == 0
    assert counted["answers"]["POST /jobs"] == {"504": 1}, counted["answers"]  # one POST, never a second
    assert terminal(outbox, "alice.facedub") == ["result"]
    assert not list(outbox.glob("alice-2.*")) and not list(outbox.glob("*.status.json"))
    assert get(sb, "facedub", "/usage", FACEDUB_AUTH)["credits_used"] == result["credits_charged"] == 1


# -- 2. the file under a held job is replaced ---------------------------------------------------------


def test_a_file_replaced_while_its_job_is_held_is_never_sent_and_is_a_new_drop(
    tmp_path: Path, sandbox_process: type[SandboxProcess]
) -> None:
    """A dub held for credits is bound to the bytes that were taken: when clip.mp4 is replaced by
    another video, releasing the hold fails the old job ``input_changed`` without sending anything, and
    the new file is a new drop, billed for its own length only."""
    sb = sandbox_process("--port", "0", "--job-seconds", "2", "--dublab-seconds", "2")
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    old, new = clip(tmp_path, "old.mp4", 3), clip(tmp_path, "new.mp4", 5, size=80)
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        drop(old, inbox / "clip.mp4")
        wait_for(lambda: held(outbox / "clip.de.status.json", "credits"), timeout=20, what="the credits hold")
        drop(new, inbox / "clip.mp4")  # same name, other video, other length
        set_dublab_account(sb, seconds=100)

        def replacement_done() -> dict[str, object] | None:
            assert not (outbox / "clip.de.result.json").exists(), "the old job claims it was delivered"
            return sidecar(outbox / "clip-2.de.result.json")

        error = wait_for(lambda: sidecar(outbox / "clip.de.error.json"), timeout=20, what="the old job's error")
        result = wait_for(replacement_done, timeout=30, interval=0.1, what="the replacement's result")
        wait_for(lambda: visible(outbox / "originals") == ["clip.mp4"], timeout=10, what="the archived replacement")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert (error["code"], error["stage"], error["state"], error["retryable"]) == (
        "input_changed",
        "upload",
        "failed",
        True,
    )
    assert error["attempts"] == 0 and error["remote_id"] is None  # refused before any request
    assert error["inputs"][0]["sha256"] == sha256(old)  # type: ignore[index]
    assert terminal(outbox, "clip.de") == ["error"]
    assert result["inputs"][0]["sha256"] == sha256(new)  # type: ignore[index]
    assert result["billed_seconds"] == 5 and result["credits_charged"] == 5
    assert sha256(outbox / "originals" / "clip.mp4") == sha256(new)
    assert visible(inbox) == [] and visible(outbox / "failed") == []
    # At DubLab: one record, one upload, one started dub, and it is the new file's.
    (record,) = dubs(sb)
    assert record["externalStatusId"] == COMPLETED and record["measuredDuration"] == 5
    assert stats(sb, "dublab")["files_created"] == stats(sb, "dublab")["files_started"] == 1
    puts = stats(sb, "uploads")["answers"]
    assert puts == {"PUT /{bucket}/{key}": {"200": 1}}, puts
    assert dublab_seconds(sb) == 100 - 5  # billed for the new file's length only


# -- 3. retry puts back exactly the content that was taken --------------------------------------------


def test_retry_restores_exactly_the_recorded_file(tmp_path: Path, sandbox_process: type[SandboxProcess]) -> None:
    """Two different clip.mp4 fail one after the other (failed/clip.mp4, failed/clip-2.mp4): retrying the
    second puts back the second's bytes (found by hash, not by name), with the daemon stopped or running."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    set_dublab_account(sb, fail_jobs=True)  # every dub fails remotely: remote_failed, retryable
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox, failed = (
        tmp_path / "dub" / "inbox",
        tmp_path / "dub" / "outbox",
        tmp_path / "dub" / "outbox" / "failed",
    )
    first, second = clip(tmp_path, "first.mp4", 3), clip(tmp_path, "second.mp4", 5, size=80)
    state = tmp_path / "state"
    daemon = DaemonProcess(rules, state)
    try:
        drop(first, inbox / "clip.mp4")
        wait_for(lambda: sidecar(outbox / "clip.de.error.json"), timeout=20, what="the first failure")
        wait_for(lambda: (failed / "clip.mp4").exists(), timeout=10, what="the first input in failed/")
        settle_inbox(inbox, outbox)
        drop(second, inbox / "clip.mp4")
        error = wait_for(lambda: sidecar(outbox / "clip-2.de.error.json"), timeout=20, what="the second failure")
        wait_for(lambda: (failed / "clip-2.mp4").exists(), timeout=10, what="the second input in failed/")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert error["code"] == "remote_failed" and error["retryable"] is True, error
    assert sha256(failed / "clip.mp4") == sha256(first) and sha256(failed / "clip-2.mp4") == sha256(second)
    items = {row["job"]: row["item"] for row in jobs_json(tmp_path, rules)}
    set_dublab_account(sb, fail_jobs=False)

    # The daemon stopped: the second item's file goes back, and only it.
    done = cli(tmp_path, rules, "retry", str(items["clip-2.de"]))
    assert done.returncode == 0 and "clip-2.de queued again" in done.stdout, done.stdout + done.stderr
    assert sha256(inbox / "clip.mp4") == sha256(second) == error["inputs"][0]["sha256"]  # type: ignore[index]
    assert sha256(failed / "clip.mp4") == sha256(first) and not (failed / "clip-2.mp4").exists()

    daemon = DaemonProcess(rules, state)
    try:
        result = wait_for(lambda: sidecar(outbox / "clip-2.de.result.json"), timeout=30, what="the retried second")
        wait_for(lambda: visible(outbox / "originals") == ["clip.mp4"], timeout=10, what="the second archived")
        # The daemon running: the first item's file goes back, and is sent as it was.
        done = cli(tmp_path, rules, "retry", str(items["clip.de"]))
        assert done.returncode == 0 and "clip.de queued again" in done.stdout, done.stdout + done.stderr
        again = wait_for(lambda: sidecar(outbox / "clip.de.result.json"), timeout=30, what="the retried first")
        wait_for(lambda: len(visible(outbox / "originals")) == 2, timeout=10, what="the first archived")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert result["billed_seconds"] == 5 and result["inputs"][0]["sha256"] == sha256(second)  # type: ignore[index]
    assert again["billed_seconds"] == 3 and again["inputs"][0]["sha256"] == sha256(first)  # type: ignore[index]
    # DubLab names no result URL: nothing is guessed, nothing downloaded.
    assert result["output"] is None and result["output_url"] is None and not list(outbox.glob("*.mp4"))
    assert sorted(sha256(p) for p in (outbox / "originals").iterdir()) == sorted([sha256(first), sha256(second)])
    assert visible(failed) == ["sentinel.mp4"] and visible(inbox) == []
    assert terminal(outbox, "clip.de") == ["result"] and terminal(outbox, "clip-2.de") == ["result"]
    completed = sorted(d["measuredDuration"] for d in dubs(sb) if d["externalStatusId"] == COMPLETED)
    assert completed == [3, 5]  # each content sent exactly once more, each for its own length


def test_a_file_dropped_again_the_moment_the_old_one_leaves_is_taken_as_itself(
    tmp_path: Path, sandbox_process: type[SandboxProcess]
) -> None:
    """clip.mp4 fails and is moved to failed/; another clip.mp4 is dropped at once (a sync client putting
    back a new version). The new file must be recorded with its own size and hash, and sent: not refused
    as ``input_changed`` because the daemon paired the old file's size, mtime and inode with the new
    file's hash, nor taken a third time (clip-3)."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    set_dublab_account(sb, fail_jobs=True)
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    first, second = clip(tmp_path, "first.mp4", 3), clip(tmp_path, "second.mp4", 5, size=80)
    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        drop(first, inbox / "clip.mp4")
        wait_for(lambda: (outbox / "failed" / "clip.mp4").exists(), timeout=20, interval=0.005, what="first failed")
        drop(second, inbox / "clip.mp4")
        error = wait_for(lambda: sidecar(outbox / "clip-2.de.error.json"), timeout=20, what="the second's sidecar")
        wait_for(lambda: visible(inbox) == [], timeout=20, what="the inbox to empty")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert error["inputs"] == [  # what was taken is one file: the second
        {"name": "clip.mp4", "sha256": sha256(second), "bytes": second.stat().st_size}
    ]
    assert (error["code"], error["attempts"]) == ("remote_failed", 1), error  # sent, and failed remotely
    assert not list(outbox.glob("clip-3.*")), visible(outbox)
    assert visible(outbox / "failed") == ["clip-2.mp4", "clip.mp4"]
    assert sha256(outbox / "failed" / "clip-2.mp4") == sha256(second)


# -- 4. DubLab bills on completion: estimates stay reserved until then --------------------------------


def test_dublab_reservations_never_start_more_than_the_balance_covers(
    tmp_path: Path, sandbox_process: type[SandboxProcess]
) -> None:
    """A balance of 10 s and four 4 s clips at once: DubLab bills only when a dub completes, so the
    balance read during the dubs still says 10; the started dubs' estimates stay reserved, and only as
    many start as the balance covers. The rest are held for credits and the account is never overdrawn."""
    sb = sandbox_process("--port", "0", "--job-seconds", "5", "--dublab-seconds", "10")
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    names = [f"c{n}" for n in range(1, 5)]
    clips = [clip(tmp_path, f"{name}.mp4", 4, size=48 + 16 * n) for n, name in enumerate(names)]
    samples: list[tuple[int, int, int | None]] = []  # (dubs running, the sum of their estimates, balance)

    def settled(balance: bool = True) -> bool:
        running = [d for d in dubs(sb) if d["externalStatusId"] in (2, 3)]
        # The daemon's estimate: the declared length rounded up (DubLab bills the measured whole seconds).
        estimates = sum(math.ceil(d["duration"]) for d in running)
        samples.append((len(running), estimates, dublab_seconds(sb) if balance else None))
        delivered = [n for n in names if (outbox / f"{n}.de.result.json").exists()]
        waiting = [n for n in names if held(outbox / f"{n}.de.status.json", "credits")]
        return len(delivered) == 2 and len(waiting) == 2

    def balance_reads() -> int:
        return int(stats(sb, "dublab")["answers"]["GET /api/v1/me"]["200"])

    daemon = DaemonProcess(rules, tmp_path / "state")
    try:
        for name, source in zip(names, clips, strict=True):
            drop(source, inbox / f"{name}.mp4")
        wait_for(settled, timeout=40, interval=0.2, what="two dubs delivered and two held")
        # The daemon reads the balance on every poll while work is held: let it read the billed balance
        # three more times (the test stops reading it), and the two must still be held.
        reads = balance_reads()
        wait_for(
            lambda: settled(balance=False) and balance_reads() >= reads + 3,
            timeout=20,
            interval=0.3,
            what="three more balance reads by the daemon",
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert samples and max(running for running, _, _ in samples) <= 2, samples
    assert max(estimates for _, estimates, _ in samples) <= 10, samples
    assert min(balance for _, _, balance in samples if balance is not None) >= 0
    records = dubs(sb)
    started = [d for d in records if d["externalStatusId"] in STARTED]
    assert len(started) == 2 and stats(sb, "dublab")["files_started"] == 2, records
    billed = sum(d["measuredDuration"] for d in started if d["externalStatusId"] == COMPLETED)
    assert billed == 8 and dublab_seconds(sb) == 10 - billed  # never overdrawn: nothing clamped at 0
    report = json.loads(cli(tmp_path, rules, "status", "--json").stdout)
    assert sorted(r["held"] for r in report["held"]) == ["credits", "credits"]


# -- 5. a rule renamed while its work is open ---------------------------------------------------------


@pytest.mark.parametrize("how", ["sighup", "restart"])
def test_renaming_a_rule_with_work_open_finishes_it_once(
    tmp_path: Path, sandbox_process: type[SandboxProcess], how: str
) -> None:
    """``dub`` becomes ``dub-de`` while clip.mp4's dub runs: the item finishes under the settings it was
    planned with (its input archived), and the renamed rule does not take clip.mp4 again and pay twice."""
    sb = sandbox_process("--port", "0", "--job-seconds", "6")
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    source, other = clip(tmp_path, "clip.mp4", 3), clip(tmp_path, "other.mp4", 2, size=80)
    state = tmp_path / "state"
    daemon = DaemonProcess(rules, state)
    try:
        drop(source, inbox / "clip.mp4")
        wait_for(
            lambda: (s := sidecar(outbox / "clip.de.status.json")) and s["state"] == "submitted",
            timeout=20,
            what="the dub in flight",
        )
        rules.write_text(rules.read_text().replace("{name: dub,", "{name: dub-de,"))
        if how == "sighup":
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in daemon.text(), timeout=10, what="the reload")
        else:
            assert daemon.stop() == 0, daemon.text()[-3000:]
            daemon = DaemonProcess(rules, state)
            wait_for(lambda: daemon.text().count("ugcwatchd running") == 2, timeout=20, what="the restart")
        assert not (outbox / "clip.de.result.json").exists()  # the rename came while the dub was open
        drop(other, inbox / "other.mp4")  # the renamed rule is live
        result = wait_for(lambda: sidecar(outbox / "clip.de.result.json"), timeout=30, what="clip's result")
        later = wait_for(lambda: sidecar(outbox / "other.de.result.json"), timeout=30, what="other's result")
        wait_for(lambda: visible(outbox / "originals") == ["clip.mp4", "other.mp4"], timeout=10, what="both archived")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert result["rule"] == "dub" and later["rule"] == "dub-de"
    assert sha256(outbox / "originals" / "clip.mp4") == sha256(source)
    assert visible(inbox) == []
    assert not list(outbox.glob("clip-2.*")), visible(outbox)
    assert sorted(row["job"] for row in jobs_json(tmp_path, rules)) == ["clip.de", "other.de"]
    started = [d for d in dubs(sb) if d["externalStatusId"] in STARTED]
    assert sorted(d["measuredDuration"] for d in started) == [2, 3]  # clip's dub once, other's once
    assert stats(sb, "dublab")["files_started"] == 2
    assert "changed since it was taken" not in daemon.text()


# -- 6. a failed download is fetched again, never paid again ------------------------------------------


def test_a_failed_download_is_downloaded_again_never_resubmitted(
    tmp_path: Path, sandbox_process: type[SandboxProcess], media: dict[str, Path]
) -> None:
    """FaceDub finishes the job but its result URL answers 503. The daemon retries it as a download; once
    it gives up (download_failed), ``ugcwatchd retry`` fetches it again rather than paying for a new job.

    The eight download attempts are spaced by a growing backoff (minutes in all): the test lets the
    real daemon fail the first ones, then, with the daemon stopped, records in the ledger that all but
    the last were spent, the way a long-running daemon would have found it.
    """
    sb = sandbox_process("--port", "0", "--job-seconds", "1", "--download-mode", "error")
    rules = make_world(tmp_path, sb, FACES_RULE)
    inbox, outbox = tmp_path / "faces" / "inbox", tmp_path / "faces" / "outbox"
    state = tmp_path / "state"

    def cdn_failures() -> int:
        answers = stats(sb, "facedub")["answers"]
        return sum(by.get("503", 0) for route, by in answers.items() if route.startswith("GET /cdn/"))

    daemon = DaemonProcess(rules, state)
    try:
        shutil.copy(media["jpeg"], inbox / "alice.jpg")
        shutil.copy(media["video.mp4"], inbox / "alice.mp4")
        status = wait_for(
            lambda: (
                (s := sidecar(outbox / "alice.facedub.status.json"))
                and s["stage"] == "download"
                and (s.get("download_attempts") or 0) >= 1
                and s
            ),
            timeout=30,
            what="a failed download",
        )
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert status["state"] == "remote_done" and status["remote_id"]
    assert stats(sb, "facedub")["answers"]["POST /jobs"] == {"200": 1}

    ledger = Ledger.open(state)
    try:
        (job,) = ledger.jobs_in(JobState.REMOTE_DONE)
        ledger.annotate_job(job.id, job.detail.but(download_tries=DOWNLOAD_TRIES - 1, retry_at=None))
    finally:
        ledger.close()

    daemon = DaemonProcess(rules, state)
    try:
        error = wait_for(lambda: sidecar(outbox / "alice.facedub.error.json"), timeout=20, what="download_failed")
        wait_for(lambda: visible(outbox / "failed") == ["alice.jpg", "alice.mp4"], timeout=10, what="failed inputs")
        assert (error["stage"], error["code"], error["retryable"]) == ("download", "download_failed", True)
        assert error["remote_id"] == status["remote_id"]
        (row,) = jobs_json(tmp_path, rules)
        assert row["state"] == "failed"
        fetches = cdn_failures()

        done = cli(tmp_path, rules, "retry", str(row["item"]))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "alice.facedub (downloaded again) queued again" in done.stdout
        (row,) = jobs_json(tmp_path, rules)
        assert (row["state"], row["remote_id"]) == ("remote_done", status["remote_id"])
        wait_for(lambda: cdn_failures() > fetches, timeout=20, what="the download tried again")
        again = wait_for(
            lambda: (s := sidecar(outbox / "alice.facedub.status.json")) and s["stage"] == "download" and s,
            timeout=10,
            what="the status sidecar again",
        )
        assert visible(inbox) == ["alice.jpg", "alice.mp4"]  # put back, and not taken as a new drop
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert again["remote_id"] == status["remote_id"] and again["state"] == "remote_done"
    assert not (outbox / "alice.facedub.error.json").exists()
    (row,) = jobs_json(tmp_path, rules)
    assert row["state"] == "remote_done" and row["job"] == "alice.facedub"
    counted = stats(sb, "facedub")
    assert counted["jobs_created"] == 1 and counted["answers"]["POST /jobs"] == {"200": 1}  # paid once
    assert get(sb, "facedub", "/usage", FACEDUB_AUTH)["credits_used"] == 1
    assert not list(outbox.glob("alice-2.*"))


# -- 7. DubLab: no guessed result URL -----------------------------------------------------------------


def test_a_guessed_dublab_url_is_never_used(tmp_path: Path) -> None:
    """DubLab's document names no result URL. Fields that look like one (a thumbnail, the source, a
    callback) are not the dub: none becomes the output URL, and nothing is fetched."""
    record = {
        "id": "3f1c9a2e-0000-4000-8000-000000000001",
        "name": "clip.ugc-0123456789ab.mp4",
        "externalStatusId": COMPLETED,
        "progressPercentage": 100,
        "measuredDuration": 3,
        "isStudioQuality": False,
        "thumbnailUrl": "https://cdn.dublab.app/thumbs/1.jpg",
        "sourceUrl": "https://cdn.dublab.app/src/clip.mp4",
        "callbackUrl": "http://x",
        "url": "https://cdn.dublab.app/clip.mp4",
        "outputUrl": "https://cdn.dublab.app/out.mp4",
        "resultUrl": "https://cdn.dublab.app/result.mp4",
        "downloadUrl": "https://cdn.dublab.app/dl.mp4",
    }
    state = remote_state(Dub.model_validate(record))
    assert state.output_url is None
    assert (state.state, state.billed_seconds, state.credits_charged) == ("completed", 3, 3)
    for status in (1, 2, 3, 4):
        assert remote_state(Dub.model_validate({**record, "externalStatusId": status})).output_url is None

    async def fetch() -> int | None:
        # Unroutable on purpose: fetching must not even try.
        adapter = DubLab(DubLabClient("http://127.0.0.1:9", SecretStr("dl_sandbox")))
        try:
            return await adapter.fetch(state, tmp_path / "clip.de.mp4")
        finally:
            await adapter.aclose()

    assert asyncio.run(fetch()) is None
    assert not list(tmp_path.glob("*clip*"))  # no output, no partial download


# -- 8. the daily budget after a reload ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["sighup", "restart"])
def test_daily_budget_set_later_counts_what_was_spent_today(
    tmp_path: Path, sandbox_process: type[SandboxProcess], how: str
) -> None:
    """No budget at first; one 3 s dub delivered (estimated 4 s). Then ``daily_seconds_budget: 6`` is set,
    by a reload (SIGHUP) or a restart: the next 3 s clip (4 more) would pass it, so it is held ``budget``,
    counting what was spent before the change (the day's spend is the ledger's, not the process's).

    The restart variant is the control: a restart always read provider settings anew, so if only the
    SIGHUP variant fails, what fails is that a reload does not apply provider settings (budgets)."""
    sb = sandbox_process("--port", "0", "--job-seconds", "1")
    rules = make_world(tmp_path, sb, DUB_RULE)
    inbox, outbox = tmp_path / "dub" / "inbox", tmp_path / "dub" / "outbox"
    state = tmp_path / "state"
    daemon = DaemonProcess(rules, state)
    try:
        drop(clip(tmp_path, "first.mp4", 3), inbox / "first.mp4")
        wait_for(lambda: sidecar(outbox / "first.de.result.json"), timeout=30, what="the first dub")
        text = rules.read_text()
        dublab_line = next(line for line in text.splitlines() if line.startswith("  dublab:"))
        rules.write_text(text.replace(dublab_line, dublab_line.replace("}", ", daily_seconds_budget: 6}")))
        assert "daily_seconds_budget: 6}" in rules.read_text()
        if how == "sighup":
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reloaded" in daemon.text(), timeout=10, what="the reload")
        else:
            assert daemon.stop() == 0, daemon.text()[-3000:]
            daemon = DaemonProcess(rules, state)
            wait_for(lambda: daemon.text().count("ugcwatchd running") == 2, timeout=20, what="the restart")
        drop(clip(tmp_path, "second.mp4", 3, size=80), inbox / "second.mp4")
        status = outbox / "second.de.status.json"
        wait_for(
            lambda: (
                held(status, "budget")
                or (sidecar(status) or {}).get("state") in ("submitting", "submitted")
                or terminal(outbox, "second.de")
            ),
            timeout=20,
            what="the second dub to be held or sent",
        )
        waiting = held(status, "budget")
    finally:
        assert daemon.stop() == 0, daemon.text()[-3000:]
    assert waiting is not None, (
        f"second.de was not held for the budget: {sidecar(status)}, {terminal(outbox, 'second.de')}, "
        f"dubs started: {stats(sb, 'dublab')['files_started']}"
    )
    assert waiting["state"] == "held"
    assert stats(sb, "dublab")["files_started"] == 1
