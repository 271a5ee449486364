"""The sandbox's rehearsal knobs: late creation, held answers, odd answers, Retry-After, downloads, expiry.

Each knob is off by default (the document tests cover that); here each is switched on over real HTTP.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ManualClock, wait_for
from ugcwatchd import cli
from ugcwatchd.sandbox import DOWNLOAD_MODES, Sandbox, SandboxConfig

from ..conftest import FD_KEY, SandboxFactory, dublab, facedub

INIT = {"fileType": "video/mp4", "name": "clip.mp4", "source_lang": "auto", "dest_lang": "de"}


def post_job(client: httpx.Client, media: dict[str, Path], duration: str = "1") -> httpx.Response:
    files = {
        "character_photo": ("photo.jpg", media["jpeg"].read_bytes()),
        "reference_video": ("video.mp4", media["video.mp4"].read_bytes()),
    }
    return client.post("/jobs", files=files, data={"duration": duration})


def outcome(send: Any) -> str:
    try:
        return str(send().status_code)
    except httpx.TransportError:
        return "dropped"


def stats(sandbox: Sandbox, service: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{sandbox.urls[service]}/sandbox/stats").json()
    return answer


def uploaded_dub(sandbox: Sandbox, media: dict[str, Path]) -> str:
    """A DubLab file record with its upload done, ready for start-dub."""
    with dublab(sandbox) as dl:
        init = dl.post("/api/v1/init-dub", json=INIT).json()
    put = httpx.put(init["uploadUrl"], content=media["video.mp4"].read_bytes(), headers={"Content-Type": "video/mp4"})
    assert put.status_code == 200
    file_id: str = init["file"]["id"]
    return file_id


# -- --late-create ----------------------------------------------------------------------------------


def test_late_create_post_jobs_answers_504_and_creates_job_later(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(clock=clock, job_seconds=10.0, late_create=30.0)
    asked_at = clock()
    with facedub(sandbox) as fd:
        r = post_job(fd, media, duration="10")
        assert r.status_code == 504 and "error" in r.json()
        assert fd.get("/jobs").json() == []
        assert fd.get("/usage").json()["credits_used"] == 0
        clock.advance(29.0)
        assert fd.get("/jobs").json() == []
        clock.advance(1.0)
        jobs = fd.get("/jobs").json()
        assert len(jobs) == 1
        assert jobs[0]["created_at"] == int(asked_at + 30.0) and jobs[0]["status"] == "queued"
        assert jobs[0]["duration_seconds"] == 10 and jobs[0]["credits_charged"] == 2
        assert fd.get("/usage").json()["credits_used"] == 2
        assert fd.get(f"/jobs/{jobs[0]['id']}").json()["status"] == "queued"
        # Invalid requests are still refused at once, and never created.
        bad = fd.post("/jobs", data={"duration": "5"})
        assert bad.status_code == 400
        clock.advance(60.0)
        assert len(fd.get("/jobs").json()) == 1


def test_late_create_with_fail_rate_strikes_only_after_effect_faults(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(clock=clock, job_seconds=10.0, late_create=1000.0, fail_rate=0.5, seed=4)
    with facedub(sandbox) as fd:
        seen: Counter[str] = Counter()
        for _ in range(30):
            seen[outcome(lambda: post_job(fd, media))] += 1
            clock.advance(11.0)  # the job completes and the POST window never fills
    assert seen["200"] and seen["504"] and set(seen) <= {"200", "500", "502", "504", "dropped"}
    before = stats(sandbox, "facedub")
    assert before["answers"]["POST /jobs (fault after)"] == {"504": seen["504"]}
    assert before["jobs_created"] == seen["200"] and before["jobs_pending"] == seen["504"]
    clock.advance(1000.0)
    after = stats(sandbox, "facedub")
    assert after["jobs_created"] == seen["200"] + seen["504"] and after["jobs_pending"] == 0


# -- --answer-delay ---------------------------------------------------------------------------------


def test_answer_delay_post_jobs_job_listed_before_answer_arrives(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(answer_delay=2.0, job_seconds=30.0)
    answers: list[httpx.Response] = []
    with facedub(sandbox) as fd, facedub(sandbox) as observer:
        poster = threading.Thread(target=lambda: answers.append(post_job(fd, media)))
        poster.start()
        listed = wait_for(lambda: observer.get("/jobs").json(), what="the job to exist")
        assert answers == []  # the job exists and is charged; its answer is still held
        assert observer.get("/usage").json()["credits_used"] == 1
        poster.join(10)
    assert answers[0].status_code == 200 and answers[0].json()["job_id"] == listed[0]["id"]


def test_answer_delay_start_dub_dub_started_before_answer_arrives(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(answer_delay=2.0, job_seconds=30.0)
    file_id = uploaded_dub(sandbox, media)
    answers: list[httpx.Response] = []
    with dublab(sandbox) as dl, dublab(sandbox) as observer:
        start = {"fileId": file_id}
        starter = threading.Thread(target=lambda: answers.append(dl.post("/api/v1/start-dub", json=start)))
        starter.start()
        wait_for(lambda: observer.get("/api/v1/dubs").json()[0]["externalStatusId"] != 1, what="the dub to start")
        assert answers == []
        starter.join(10)
    assert answers[0].status_code == 200 and answers[0].json() == {"success": True, "fileId": file_id}


def test_answer_delay_client_gone_mid_answer_job_still_exists(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(answer_delay=2.0)
    impatient = httpx.Client(
        base_url=sandbox.urls["facedub"],
        headers={"Authorization": f"Bearer {FD_KEY}"},
        timeout=httpx.Timeout(10.0, read=0.5),
    )
    with impatient, pytest.raises(httpx.ReadTimeout):
        post_job(impatient, media)  # gives up (as if killed) while its answer is held
    with facedub(sandbox) as fd:
        assert len(wait_for(lambda: fd.get("/jobs").json(), what="the job to exist")) == 1
        assert fd.get("/usage").status_code == 200


# -- --odd-answers ----------------------------------------------------------------------------------

JOB_TYPES = {"id": str, "status": str, "created_at": int, "duration_seconds": int, "credits_charged": int}
USAGE_TYPES = {"plan": str, "credits_used": int, "credits_limit": int, "credits_remaining": int}
DUB_TYPES = {"id": str, "name": str, "externalStatusId": int, "progressPercentage": int, "createdAt": str}
ME_TYPES = {"id": str, "seconds": int}


def kind(r: httpx.Response, types: dict[str, type]) -> str:
    """What an answer of a list/account endpoint is: honest, html, missing (a field) or wrong-type."""
    assert r.status_code == 200
    if r.headers["content-type"].startswith("text/html"):
        return "html"
    body = r.json()
    records = body if isinstance(body, list) else [body]
    if any(name not in record for record in records for name in types):
        return "missing"
    if any(type(record[name]) is not t for record in records for name, t in types.items()):
        return "wrong-type"
    return "honest"


def test_odd_answers_rate_one_spoils_every_list_and_account_answer(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(odd_answers=1.0, seed=5)
    with facedub(sandbox) as fd, dublab(sandbox) as dl:
        job_id = post_job(fd, media).json()["job_id"]
        assert dl.post("/api/v1/init-dub", json=INIT).status_code == 200
        for client, path, types in (
            (fd, "/jobs", JOB_TYPES),
            (fd, "/usage", USAGE_TYPES),
            (dl, "/api/v1/dubs", DUB_TYPES),
            (dl, "/api/v1/me", ME_TYPES),
        ):
            kinds = Counter(kind(client.get(path), types) for _ in range(30))
            assert set(kinds) == {"html", "missing", "wrong-type"}, path
        # Other endpoints keep their honest answers.
        assert kind(fd.get(f"/jobs/{job_id}"), JOB_TYPES) == "honest"
        assert isinstance(dl.get("/api/langs").json(), list)
    answers = stats(sandbox, "facedub")["answers"]
    assert sum(sum(by.values()) for route, by in answers.items() if route.startswith("GET /jobs (odd ")) == 30


def test_odd_answers_share_follows_rate_and_repeats_with_seed(make_sandbox: SandboxFactory) -> None:
    runs = []
    for _ in range(2):
        sandbox = make_sandbox(odd_answers=0.3, seed=9)
        with facedub(sandbox) as fd:
            runs.append([fd.get("/usage") for _ in range(100)])
        sandbox.stop()
    assert [r.text for r in runs[0]] == [r.text for r in runs[1]]
    odd = sum(kind(r, USAGE_TYPES) != "honest" for r in runs[0])
    assert 15 <= odd <= 45


def test_odd_answers_empty_list_becomes_html_or_object(make_sandbox: SandboxFactory) -> None:
    sandbox = make_sandbox(odd_answers=1.0, seed=1)
    with facedub(sandbox) as fd:
        answers = [fd.get("/jobs") for _ in range(20)]
    assert {"html", "object"} == {
        "html" if r.headers["content-type"].startswith("text/html") else "object" for r in answers
    }
    assert all(r.json() == {} for r in answers if r.headers["content-type"] == "application/json")


# -- --retry-after ----------------------------------------------------------------------------------


def test_retry_after_set_every_429_carries_it(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(clock=clock, job_seconds=10.0, retry_after=86400)
    with facedub(sandbox) as fd:
        assert post_job(fd, media).status_code == 200
        assert post_job(fd, media).status_code == 200
        busy = post_job(fd, media)  # a third concurrent job
        assert busy.status_code == 429 and busy.headers["Retry-After"] == "86400"
        for _ in range(60):
            assert fd.get("/jobs").status_code == 200
        limited = fd.get("/jobs")
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "86400"
        clock.advance(60.0)  # only the header lies: the window frees as documented
        assert fd.get("/jobs").status_code == 200


# -- --download-mode --------------------------------------------------------------------------------


def output_url(make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path], mode: str) -> str:
    sandbox = make_sandbox(clock=clock, job_seconds=10.0, download_mode=mode)
    with facedub(sandbox) as fd:
        job_id = post_job(fd, media).json()["job_id"]
        clock.advance(10.0)
        url: str = fd.get(f"/jobs/{job_id}").json()["output_url"]
    return url


def test_download_mode_slow_drips_1kib_every_2s(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    url = output_url(make_sandbox, clock, media, "slow")
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) > 2048
        got, arrivals = 0, []
        for chunk in r.iter_raw():
            got += len(chunk)
            arrivals.append((got, time.monotonic()))
            if got >= 2048:
                break
    assert [n for n, _ in arrivals] == [1024, 2048]
    assert arrivals[1][1] - arrivals[0][1] >= 1.5


def test_download_mode_huge_announces_a_terabyte_and_drips(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    url = output_url(make_sandbox, clock, media, "huge")
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-length"] == "1000000000000"
        first = next(r.iter_raw())
    assert len(first) == 1024 and first[4:8] == b"ftyp"  # the MP4 begins, then it never ends


def test_download_mode_redirect_http_sends_302_to_plain_http_same_server(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    url = output_url(make_sandbox, clock, media, "redirect-http")
    r = httpx.get(url)
    assert r.status_code == 302
    target = httpx.URL(r.headers["location"])
    assert target.scheme == "http" and target.netloc == httpx.URL(url).netloc
    followed = httpx.get(target)
    assert followed.status_code == 200 and followed.headers["content-type"] == "video/mp4"
    assert followed.content[4:8] == b"ftyp"


def test_download_mode_redirect_html_sends_302_without_location(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    url = output_url(make_sandbox, clock, media, "redirect-html")
    r = httpx.get(url, follow_redirects=True)
    assert r.status_code == 302 and "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html") and r.text == "<html>Moved</html>"


def test_download_mode_truncated_closes_before_content_length(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    url = output_url(make_sandbox, clock, media, "truncated")
    got = 0
    with httpx.stream("GET", url, timeout=10) as r:
        announced = int(r.headers["content-length"])
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                got += len(chunk)
    assert 0 < got < announced


def test_download_mode_error_answers_503(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    r = httpx.get(output_url(make_sandbox, clock, media, "error"))
    assert r.status_code == 503 and "error" in r.json()


def test_download_mode_unknown_job_still_answers_404(make_sandbox: SandboxFactory) -> None:
    sandbox = make_sandbox(download_mode="error")
    assert httpx.get(f"{sandbox.urls['facedub']}/cdn/000000000000/0000.mp4").status_code == 404


# -- --upload-expires -------------------------------------------------------------------------------


def test_upload_expires_past_lifetime_answers_s3_access_denied_xml(
    make_sandbox: SandboxFactory, clock: ManualClock, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(clock=clock, upload_expires=30)
    with dublab(sandbox) as dl:
        early, late = (dl.post("/api/v1/init-dub", json=INIT).json()["uploadUrl"] for _ in range(2))
    data, headers = media["video.mp4"].read_bytes(), {"Content-Type": "video/mp4"}
    clock.advance(25.0)
    assert httpx.put(early, content=data, headers=headers).status_code == 200
    clock.advance(6.0)
    r = httpx.put(late, content=data, headers=headers)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/xml")
    error = ET.fromstring(r.text)  # noqa: S314 - our own sandbox's answer
    assert error.tag == "Error"
    assert error.findtext("Code") == "AccessDenied" and error.findtext("Message") == "Request has expired"


# -- the command line and the configuration ---------------------------------------------------------


def configured(monkeypatch: pytest.MonkeyPatch, *args: str) -> SandboxConfig:
    """The SandboxConfig that ``ugcwatchd sandbox ARGS`` would serve (without serving it)."""
    seen: list[SandboxConfig] = []
    monkeypatch.setattr("ugcwatchd.sandbox.run", lambda config, announce: seen.append(config))
    assert cli.main(["sandbox", *args]) == 0
    return seen[0]


def test_cli_sandbox_knobs_reach_sandbox_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = configured(
        monkeypatch,
        *("--late-create", "45", "--answer-delay", "2.5", "--odd-answers", "0.25"),
        *("--retry-after", "86400", "--download-mode", "redirect-html", "--seed", "3"),
    )
    assert (config.late_create, config.answer_delay, config.odd_answers) == (45.0, 2.5, 0.25)
    assert (config.retry_after, config.download_mode, config.seed) == (86400, "redirect-html", 3)


def test_cli_sandbox_without_knobs_keeps_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    config, default = configured(monkeypatch), SandboxConfig()
    for name in ("late_create", "answer_delay", "odd_answers", "retry_after", "download_mode", "fail_rate"):
        assert getattr(config, name) == getattr(default, name), name
    assert (default.late_create, default.answer_delay, default.odd_answers) == (0, 0, 0)
    assert (default.retry_after, default.download_mode) == (None, "normal")
    assert cli._DOWNLOAD_MODES == DOWNLOAD_MODES


@pytest.mark.parametrize(
    "args",
    [
        ["--late-create", "-1"],
        ["--answer-delay", "soon"],
        ["--odd-answers", "1.5"],
        ["--retry-after", "1.5"],
        ["--retry-after", "-1"],
        ["--download-mode", "fast"],
    ],
)
def test_cli_sandbox_knob_with_bad_value_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["sandbox", *args])
    assert exited.value.code == 2
    assert args[0] in capsys.readouterr().err


@pytest.mark.parametrize(
    "knob",
    [
        {"download_mode": "fast"},
        {"odd_answers": 2.0},
        {"late_create": -1.0},
        {"answer_delay": -1.0},
        {"retry_after": -5},
    ],
)
def test_sandbox_config_bad_knob_raises_value_error(knob: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(knob)).split("_")[0]):
        SandboxConfig(**knob)
