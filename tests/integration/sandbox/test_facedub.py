"""The sandbox's FaceDub API against its document (seeds/000), one test per documented rule."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.support import ManualClock, wait_for
from ugcwatchd.sandbox import Sandbox
from ugcwatchd.sandbox.media import probe_duration

from ..conftest import FD_KEY, FD_KEY2, SandboxFactory, facedub

JOB_FIELDS = {"id", "status", "stage", "output_url", "created_at", "error", "duration_seconds", "credits_charged"}


def post_job(
    client: httpx.Client,
    media: dict[str, Path],
    *,
    photo: str = "jpeg",
    video: str = "video.mp4",
    duration: str | None = "10",
) -> httpx.Response:
    files = {
        "character_photo": (media[photo].name, media[photo].read_bytes()),
        "reference_video": (media[video].name, media[video].read_bytes()),
    }
    data = {} if duration is None else {"duration": duration}
    return client.post("/jobs", files=files, data=data)


def finish_jobs(clock: ManualClock) -> None:
    clock.advance(10.0)


# -- authentication ---------------------------------------------------------------------------------


def test_facedub_without_key_answers_401(sandbox: Sandbox) -> None:
    r = httpx.get(f"{sandbox.urls['facedub']}/usage")
    assert r.status_code == 401
    assert "error" in r.json()


@pytest.mark.parametrize("header", ["Bearer fdb_not_a_real_key", "fdb_test_user_one", "Basic fdb_test_user_one"])
def test_facedub_with_wrong_key_or_scheme_answers_401(sandbox: Sandbox, header: str) -> None:
    r = httpx.get(f"{sandbox.urls['facedub']}/usage", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["error"] == "Invalid API key"


@pytest.mark.parametrize("setting", [{"plan": "pro"}, {"suspended": True}])
def test_facedub_account_without_agency_plan_or_suspended_answers_403(
    sandbox: Sandbox, setting: dict[str, object]
) -> None:
    with facedub(sandbox) as fd:
        assert fd.post("/sandbox/account", json=setting).status_code == 200
        for method, path in (("GET", "/usage"), ("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/api-keys")):
            r = fd.request(method, path)
            assert r.status_code == 403, (method, path)
            assert "Forbidden" in r.json()["error"]


# -- creating jobs ----------------------------------------------------------------------------------


def test_facedub_create_job_answers_documented_fields(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as fd:
        r = post_job(fd, media, duration="10")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"job_id", "status", "credits_charged", "is_overage"}
    assert body["status"] == "queued"
    assert body["credits_charged"] == 2  # the document's example: 10 s costs 2 credits
    assert body["is_overage"] is False


def test_facedub_duration_defaults_to_5_seconds(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as fd:
        created = post_job(fd, media, duration=None).json()
        job = fd.get(f"/jobs/{created['job_id']}").json()
    assert job["duration_seconds"] == 5
    assert created["credits_charged"] == 1


@pytest.mark.parametrize("duration", ["0", "31", "-1", "2.5", "ten", ""])
def test_facedub_duration_outside_1_to_30_answers_400(sandbox: Sandbox, media: dict[str, Path], duration: str) -> None:
    with facedub(sandbox) as fd:
        r = post_job(fd, media, duration=duration)
        assert r.status_code == 400
        assert "duration" in r.json()["error"]
        assert fd.get("/jobs").json() == []


@pytest.mark.parametrize("duration", ["1", "30"])
def test_facedub_duration_bounds_are_accepted(sandbox: Sandbox, media: dict[str, Path], duration: str) -> None:
    with facedub(sandbox) as fd:
        assert post_job(fd, media, duration=duration).status_code == 200


@pytest.mark.parametrize("photo", ["jpeg", "png", "webp"])
def test_facedub_photo_in_each_documented_format_is_accepted(
    sandbox: Sandbox, media: dict[str, Path], photo: str
) -> None:
    with facedub(sandbox) as fd:
        assert post_job(fd, media, photo=photo).status_code == 200


@pytest.mark.parametrize(
    ("photo", "video", "word"),
    [
        ("notes.mp4", "video.mp4", "character_photo"),
        ("jpeg", "jpeg", "reference_video"),
        ("jpeg", "notes.mp4", "reference_video"),
        ("jpeg", "truncated.mp4", "reference_video"),
        ("jpeg", "voice.mp3", "reference_video"),
    ],
)
def test_facedub_invalid_media_answers_400(
    sandbox: Sandbox, media: dict[str, Path], photo: str, video: str, word: str
) -> None:
    with facedub(sandbox) as fd:
        r = post_job(fd, media, photo=photo, video=video)
    assert r.status_code == 400
    assert word in r.json()["error"]


def test_facedub_missing_file_fields_answer_400(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as fd:
        only_photo = fd.post("/jobs", files={"character_photo": ("p.jpg", media["jpeg"].read_bytes())})
        nothing = fd.post("/jobs", data={"duration": "5"})
        as_json = fd.post("/jobs", json={"duration": 5})
    assert only_photo.status_code == 400 and "reference_video" in only_photo.json()["error"]
    assert nothing.status_code == 400 and "character_photo" in nothing.json()["error"]
    assert as_json.status_code == 400


# -- job lifecycle ----------------------------------------------------------------------------------


def test_facedub_job_moves_queued_processing_completed(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd:
        job_id = post_job(fd, media, duration="4").json()["job_id"]
        seen = []
        for _ in range(11):
            job = fd.get(f"/jobs/{job_id}").json()
            seen.append((job["status"], job["stage"]))
            clock.advance(1.0)
    assert set(job) == JOB_FIELDS
    assert seen[0] == ("queued", "queued")
    assert {"processing"} == {s for s, _ in seen[2:10]}
    assert [st for s, st in seen[2:10] if s == "processing"][1] == "analyzing_motion"
    assert "generating_views" in {st for _, st in seen}
    assert seen[-1] == ("completed", "done")
    assert job["error"] is None and job["output_url"].startswith("http://127.0.0.1:")


def test_facedub_completed_job_serves_real_mp4_of_its_duration(
    sandbox: Sandbox, media: dict[str, Path], tmp_path: Path
) -> None:
    with facedub(sandbox) as fd:
        job_id = post_job(fd, media, duration="6").json()["job_id"]
        job = wait_for(
            lambda: (j := fd.get(f"/jobs/{job_id}").json())["status"] == "completed" and j, what="completion"
        )
    download = httpx.get(job["output_url"])  # a CDN link: no API key
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert int(download.headers["content-length"]) == len(download.content)
    out = tmp_path / "out.mp4"
    out.write_bytes(download.content)
    assert probe_duration(out) == pytest.approx(6, abs=0.2)


def test_facedub_output_url_is_null_until_completed(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd:
        job_id = post_job(fd, media).json()["job_id"]
        clock.advance(5)
        assert fd.get(f"/jobs/{job_id}").json()["output_url"] is None


def test_facedub_failed_job_reports_error(timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]) -> None:
    with facedub(timed_sandbox) as fd:
        fd.post("/sandbox/account", json={"fail_jobs": True})
        job_id = post_job(fd, media).json()["job_id"]
        finish_jobs(clock)
        job = fd.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed"
    assert job["error"]
    assert job["output_url"] is None


def test_facedub_job_of_another_user_answers_404(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as mine, facedub(sandbox, FD_KEY2) as theirs:
        job_id = post_job(mine, media).json()["job_id"]
        r = theirs.get(f"/jobs/{job_id}")
        assert r.status_code == 404
        assert theirs.get("/jobs").json() == []
        assert mine.get("/jobs/000000000000").status_code == 404


def test_facedub_list_is_newest_first_and_capped_at_50(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    ids = []
    with facedub(timed_sandbox) as fd:
        for _ in range(51):
            ids.append(post_job(fd, media, duration="1").json()["job_id"])
            clock.advance(10.0)  # the job completes and the POST window slides on
        listed = fd.get("/jobs").json()
    assert len(listed) == 50
    assert [j["id"] for j in listed] == ids[::-1][:50]
    assert all(set(j) == JOB_FIELDS for j in listed)


# -- concurrency, credits, rate limits --------------------------------------------------------------


def test_facedub_third_concurrent_job_answers_429_until_one_completes(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd, facedub(timed_sandbox, FD_KEY2) as other:
        assert post_job(fd, media).status_code == 200
        clock.advance(3)  # the second job is queued while the first processes: both count
        assert post_job(fd, media).status_code == 200
        third = post_job(fd, media)
        assert third.status_code == 429
        assert third.headers["Retry-After"] == "7"
        assert post_job(other, media).status_code == 200  # per user
        clock.advance(7)
        assert post_job(fd, media).status_code == 200


def test_facedub_credits_are_charged_and_overage_flagged(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd:
        fd.post("/sandbox/account", json={"credits_limit": 3})
        first = post_job(fd, media, duration="10").json()  # 2 credits of 3
        finish_jobs(clock)
        second = post_job(fd, media, duration="10").json()  # 2 credits, 1 left: overage
        usage = fd.get("/usage").json()
    assert first["is_overage"] is False
    assert second["is_overage"] is True and second["credits_charged"] == 2
    assert usage == {
        "plan": "agency",
        "credits_used": 4,
        "credits_limit": 3,
        "bonus_credits": 0,
        "credits_remaining": 0,
    }


def test_facedub_usage_answers_documented_fields(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        usage = fd.get("/usage").json()
    assert usage == {
        "plan": "agency",
        "credits_used": 0,
        "credits_limit": 150,
        "bonus_credits": 0,
        "credits_remaining": 150,
    }


def test_facedub_post_jobs_window_is_10_per_minute_and_slides(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd, facedub(timed_sandbox, FD_KEY2) as other:
        for _ in range(10):
            assert post_job(fd, media, duration="1").status_code == 200
            clock.advance(10.0 / 2)  # keep the two job slots free: a job takes 10 s
        refused = post_job(fd, media, duration="1")
        assert refused.status_code == 429
        # The first POST was 50 s ago: it leaves the window in 10 s.
        assert refused.headers["Retry-After"] == "10"
        assert post_job(other, media, duration="1").status_code == 200
        clock.advance(9.5)
        assert post_job(fd, media, duration="1").status_code == 429
        clock.advance(0.6)
        assert post_job(fd, media, duration="1").status_code == 200


def test_facedub_get_jobs_window_is_60_per_minute_for_list_and_detail(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with facedub(timed_sandbox) as fd:
        job_id = post_job(fd, media).json()["job_id"]
        for i in range(60):
            assert fd.get("/jobs" if i % 2 else f"/jobs/{job_id}").status_code == 200
        assert fd.get("/jobs").status_code == 429
        r = fd.get(f"/jobs/{job_id}")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) == 60
        assert fd.get("/usage").status_code == 200  # another class


def test_facedub_other_endpoints_window_is_120_per_minute(timed_sandbox: Sandbox, clock: ManualClock) -> None:
    with facedub(timed_sandbox) as fd:
        for i in range(120):
            assert fd.get("/usage" if i % 2 else "/api-keys").status_code == 200
        r = fd.get("/usage")
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"
        clock.advance(60)
        assert fd.get("/usage").status_code == 200


# -- API keys ---------------------------------------------------------------------------------------


def test_facedub_api_key_is_shown_once_and_listed_by_prefix(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        created = fd.post("/api-keys", json={"name": "Production Key"}).json()
        listed = fd.get("/api-keys").json()
    assert set(created) == {"id", "name", "key", "prefix", "created_at"}
    assert created["key"].startswith("fdb_") and created["prefix"] == created["key"][:12]
    assert created["name"] == "Production Key" and created["id"].startswith("key_")
    assert len(listed) == 2
    assert all("key" not in k for k in listed)
    assert created["key"] not in json.dumps(listed)
    with facedub(sandbox, created["key"]) as new:
        assert new.get("/usage").status_code == 200


def test_facedub_sixth_active_key_answers_400(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        made = [fd.post("/api-keys", json={"name": f"k{i}"}) for i in range(4)]
        assert all(r.status_code == 200 for r in made)
        sixth = fd.post("/api-keys", json={"name": "one too many"})
        assert sixth.status_code == 400 and "5" in sixth.json()["error"]
        assert fd.delete(f"/api-keys/{made[0].json()['id']}").status_code == 200
        assert fd.post("/api-keys", json={"name": "after a revoke"}).status_code == 200


def test_facedub_revoked_key_answers_401(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        created = fd.post("/api-keys", json={"name": "short-lived"}).json()
        assert fd.delete(f"/api-keys/{created['id']}").json() == {"id": created["id"], "revoked": True}
        assert created["id"] not in {k["id"] for k in fd.get("/api-keys").json()}
    with facedub(sandbox, created["key"]) as revoked:
        assert revoked.get("/usage").status_code == 401


def test_facedub_revoking_unknown_or_foreign_key_answers_404(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd, facedub(sandbox, FD_KEY2) as other:
        theirs = other.post("/api-keys", json={"name": "theirs"}).json()
        assert fd.delete(f"/api-keys/{theirs['id']}").status_code == 404
        assert fd.delete("/api-keys/key_nope").status_code == 404


def test_facedub_api_key_without_name_answers_400(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        assert fd.post("/api-keys", json={}).status_code == 400
        assert fd.post("/api-keys", content=b"{not json").status_code == 400


# -- SSE stream -------------------------------------------------------------------------------------


def test_facedub_stream_requires_a_jwt_not_an_api_key(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as fd:
        job_id = post_job(fd, media).json()["job_id"]
        assert fd.get(f"/jobs/{job_id}/stream").status_code == 401
        assert fd.get(f"/jobs/{job_id}/stream", params={"token": FD_KEY}).status_code == 401
        token = fd.post("/sandbox/token").json()["token"]
        assert fd.get(f"/jobs/{job_id}/stream", params={"token": token + "x"}).status_code == 401


def test_facedub_stream_sends_each_change_until_completed(make_sandbox: SandboxFactory, media: dict[str, Path]) -> None:
    sandbox = make_sandbox(job_seconds=2.0)  # long enough to see several stages even on a loaded machine
    with facedub(sandbox) as fd:
        job_id = post_job(fd, media).json()["job_id"]
        token = fd.post("/sandbox/token").json()["token"]
        events = []
        # No API key on the stream: EventSource cannot set headers.
        with httpx.stream(
            "GET", f"{sandbox.urls['facedub']}/jobs/{job_id}/stream", params={"token": token}, timeout=10
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
    assert events[0]["status"] in ("queued", "processing")
    assert events[-1]["status"] == "completed" and events[-1]["output_url"]
    assert len(events) >= 3
    assert all(set(e) == JOB_FIELDS for e in events)


def test_facedub_stream_of_another_users_job_answers_404(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with facedub(sandbox) as fd, facedub(sandbox, FD_KEY2) as other:
        job_id = post_job(fd, media).json()["job_id"]
        token = other.post("/sandbox/token").json()["token"]
        assert httpx.get(f"{sandbox.urls['facedub']}/jobs/{job_id}/stream", params={"token": token}).status_code == 404


# -- answers are always JSON ------------------------------------------------------------------------


def test_facedub_unknown_route_and_method_answer_json(sandbox: Sandbox) -> None:
    with facedub(sandbox) as fd:
        missing = fd.get("/nope")
        wrong = fd.put("/usage")
    assert missing.status_code == 404 and "error" in missing.json()
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_facedub_concurrent_submissions_never_exceed_two_running(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(job_seconds=5.0)
    answers: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        with facedub(sandbox) as fd:
            status = post_job(fd, media, duration="1").status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200, 200] + [429] * 6


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage"), ("multipart/form-data", b"no boundary at all")],
)
def test_facedub_malformed_multipart_answers_400_json(sandbox: Sandbox, content_type: str, body: bytes) -> None:
    with facedub(sandbox) as fd:
        r = fd.post("/jobs", headers={"Content-Type": content_type}, content=body)
    assert r.status_code == 400
    assert r.json()["error"]
