"""Quote documents and the answer files beside them, on real files."""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import replace
from pathlib import Path

from tests.support import wait_for
from ugcwatchd.ledger import InputFile, Item, Job, JobDetail
from ugcwatchd.outbox.quotes import (
    find_answers,
    item_stem,
    marker_path,
    quote_document,
    quote_path,
    stem_of,
    write_missing,
)
from ugcwatchd.states import HoldReason, ItemState, JobState

ITEM = Item(7, "dub", "dublab", "/in", "/out", "clip", ItemState.PLANNED, None, None, {"client": "acme"})


def job(job_id: int, name: str, **params: object) -> Job:
    detail = JobDetail(held=HoldReason.APPROVAL)
    return Job(
        job_id,
        7,
        f"ugc-{job_id:012x}",
        name,
        "dublab",
        f"k{job_id}",
        params,
        None,
        JobState.HELD,
        None,
        None,
        None,
        0,
        detail,
    )


def test_quotes_stem_is_the_job_name_without_its_last_tag() -> None:
    assert [stem_of(n) for n in ("clip.de", "sub/clip.de", "a.b.facedub", "clip-2.es")] == [
        "clip",
        "sub/clip",
        "a.b",
        "clip-2",
    ]
    assert item_stem(["sub/clip.de", "sub/clip.es"]) == "sub/clip"
    # A batch's jobs are named per pair; its answer files carry the batch's own name, as its refusal would.
    assert item_stem(["b/alice+dance.facedub", "b/alice+walk.facedub"]) == "b/b"


def test_quotes_document_names_the_whole_drop_and_how_to_answer() -> None:
    dub = {"from": "auto", "seconds": 7.2, "content_type": "video/mp4"}
    jobs = [
        job(1, "clip.de", to="de", studio_quality=True, **dub),
        job(2, "clip.es", to="es", studio_quality=False, **dub),
    ]
    odd = InputFile("media", "/in/caf\udce9.mp4", "caf\udce9.mp4", "ab" * 32, 1234, 1, "video/mp4", 7.2)
    document = quote_document(ITEM, jobs, jobs[1], [odd], 10, 1_800_000_000.0, 1_800_000_060.0)
    assert document == {
        "ugcwatchd": 1,
        "kind": "quote",
        "rule": "dub",
        "provider": "dublab",
        "item": 7,
        "job": "clip.es",
        "parts": {"client": "acme"},
        "inputs": [{"name": "caf\\xe9.mp4", "sha256": "ab" * 32, "bytes": 1234}],
        "jobs": [
            {"job": "clip.de", "request": {"from": "auto", "to": "de", "studio_quality": True}, "estimate": 16},
            {"job": "clip.es", "request": {"from": "auto", "to": "es", "studio_quality": False}, "estimate": 8},
        ],
        "estimate": 24,
        "unit": "seconds",
        "approve_above": 10,
        "state": "held",
        "held_reason": "awaiting approval",
        "answer": {
            "approve_file": "clip.approve",
            "reject_file": "clip.reject",
            "approve_command": "ugcwatchd approve 7",
            "reject_command": "ugcwatchd reject 7",
        },
        "message": "this drop would cost about 24 seconds (approve_above: 10): create clip.approve next to this "
        "file (or run `ugcwatchd approve 7`) to send it, or clip.reject to refuse it",
        "created_at": "2027-01-15T08:00:00Z",
        "updated_at": "2027-01-15T08:01:00Z",
    }
    pair = job(3, "sub/alice.facedub", duration=12)
    facedub = quote_document(replace(ITEM, provider="facedub"), [pair], pair, [], 1, 0, 0)
    assert (facedub["estimate"], facedub["unit"]) == (3, "credits")
    assert facedub["jobs"] == [{"job": "sub/alice.facedub", "request": {"duration": 12}, "estimate": 3}]
    assert facedub["answer"]["approve_file"] == "alice.approve"  # next to the quote, in sub/


def test_quotes_written_once_with_the_sidecars_mode(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    assert write_missing(tmp_path, {"sub/clip.de": {"kind": "quote", "n": 1}}) == 1
    path = quote_path(tmp_path, "sub/clip.de")
    assert path == tmp_path / "sub" / "clip.de.quote.json"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    # Already there: kept as it is (its time tells an answer from a file left before it), even across restarts.
    assert write_missing(tmp_path, {"sub/clip.de": {"kind": "quote", "n": 2}}) == 0
    assert json.loads(path.read_text())["n"] == 1
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["clip.de.quote.json"]  # no temporary file left


def _quote(outbox: Path, *names: str) -> None:
    write_missing(outbox, {name: {"kind": "quote"} for name in names})


def test_quotes_answers_beside_the_quote_count(tmp_path: Path) -> None:
    names = ["clip.de", "clip.es"]
    assert find_answers(tmp_path, names) is None
    _quote(tmp_path, *names)
    assert find_answers(tmp_path, names) is None
    marker_path(tmp_path, "clip", "approve").touch()
    found = find_answers(tmp_path, names)
    assert found is not None and found.approve == tmp_path / "clip.approve" and found.reject is None
    marker_path(tmp_path, "clip", "reject").touch()
    found = find_answers(tmp_path, names)
    assert found is not None and found.taken == (tmp_path / "clip.approve", tmp_path / "clip.reject")
    assert found.stale == ()


def test_quotes_answer_without_a_quote_or_not_a_file_counts_for_nothing(tmp_path: Path) -> None:
    (tmp_path / "clip.approve").touch()
    assert find_answers(tmp_path, ["clip.de"]) is None  # the quote is written first; then this one is stale
    (tmp_path / "other.approve").mkdir()
    _quote(tmp_path, "other.de")
    assert find_answers(tmp_path, ["other.de"]) is None


def test_quotes_answer_left_before_the_quote_is_stale(tmp_path: Path) -> None:
    marker = tmp_path / "clip.reject"
    marker.touch()
    left = marker.stat().st_ctime_ns
    probe = tmp_path / "probe"

    def later() -> bool:  # the filesystem's clock has moved past the marker's change time
        probe.write_bytes(b"x")
        return probe.stat().st_ctime_ns > left

    wait_for(later, timeout=5, what="the filesystem clock to tick")
    _quote(tmp_path, "clip.de")
    found = find_answers(tmp_path, ["clip.de"])
    assert found is not None and found.taken == () and found.stale == (marker,)
    marker.unlink()
    marker.touch()  # made again, after the quote: now it is an answer
    found = find_answers(tmp_path, ["clip.de"])
    assert found is not None and found.reject == marker and found.stale == ()


def test_quotes_odd_client_folder_and_long_batch_folder_give_names_that_can_be_written() -> None:
    odd = replace(ITEM, parts={"client": "ac\udcffme"})
    clip = job(1, "clip.de", to="de", seconds=3.0)
    assert quote_document(odd, [clip], clip, [], None, 0, 0)["parts"] == {"client": "ac\\xffme"}
    folder = "b." + "x" * 248  # a batch folder is not shortened like a job name: its answer file must be
    stem = item_stem([f"{folder}/a+v.facedub", f"{folder}/b+v.facedub"])
    assert stem.startswith(f"{folder}/b.xx") and len(os.fsencode(posixpath.basename(stem) + ".approve")) <= 255
    pair = job(2, f"{folder}/a+v.facedub", duration=5)
    document = quote_document(
        replace(ITEM, provider="facedub"), [pair, job(3, f"{folder}/b+v.facedub", duration=5)], pair, [], 1, 0, 0
    )
    assert document["answer"]["approve_file"] == f"{posixpath.basename(stem)}.approve"


def test_quotes_answer_with_old_times_or_judged_stale_before_is_stale_whatever_its_ctime(tmp_path: Path) -> None:
    _quote(tmp_path, "clip.de")
    marker = tmp_path / "clip.approve"
    marker.touch()
    hour_ago = marker.stat().st_mtime - 3600
    os.utime(marker, (hour_ago, hour_ago))  # a copy keeping an old file's times: its ctime is new, its mtime not
    found = find_answers(tmp_path, ["clip.de"])
    assert found is not None and found.taken == () and found.stale == (marker,)
    skewed = quote_path(tmp_path, "clip.de").stat().st_mtime - 60  # a client clock a minute behind still answers
    os.utime(marker, (skewed, skewed))
    found = find_answers(tmp_path, ["clip.de"])
    assert found is not None and found.approve == marker
    st = marker.stat()
    found = find_answers(tmp_path, ["clip.de"], {(st.st_dev, st.st_ino, st.st_mtime_ns)})
    assert found is not None and found.taken == () and found.stale_ids == {(st.st_dev, st.st_ino, st.st_mtime_ns)}
