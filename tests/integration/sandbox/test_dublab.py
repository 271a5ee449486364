"""The sandbox's DubLab API against its document (seeds/001), one test per documented rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ManualClock
from ugcwatchd.languages import LANGUAGES
from ugcwatchd.sandbox import Sandbox

from ..conftest import DL_KEY, DL_KEY2, dublab

ME_FIELDS = {
    "id", "email", "name", "username", "firstName", "lastName", "seconds", "defaultDubLang",
    "subscriptionStatus", "subscriptionPlan", "createdAt",
}  # fmt: skip
DUB_FIELDS = {
    "id", "name", "type", "sourceLang", "destLang", "externalStatusId", "progressPercentage",
    "externalErrorMessage", "duration", "measuredDuration", "isStudioQuality", "source", "createdAt",
}  # fmt: skip


def init(client: httpx.Client, **overrides: Any) -> httpx.Response:
    body = {"fileType": "video/mp4", "name": "my-video.mp4", "source_lang": "auto", "dest_lang": "tr", "duration": 3}
    body.update(overrides)
    return client.post("/api/v1/init-dub", json={k: v for k, v in body.items() if v is not None})


def upload(url: str, path: Path, content_type: str = "video/mp4") -> httpx.Response:
    return httpx.put(url, content=path.read_bytes(), headers={"Content-Type": content_type})


def started_dub(client: httpx.Client, path: Path, **overrides: Any) -> str:
    """init-dub, upload, start-dub; the file id."""
    created = init(client, **overrides).json()
    assert upload(created["uploadUrl"], path, overrides.get("fileType", "video/mp4")).status_code == 200
    assert client.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]}).status_code == 200
    return str(created["file"]["id"])


def record(client: httpx.Client, file_id: str) -> dict[str, Any]:
    return next(d for d in client.get("/api/v1/dubs").json() if d["id"] == file_id)


# -- authentication ---------------------------------------------------------------------------------


def test_dublab_without_apikey_answers_401_json(sandbox: Sandbox) -> None:
    r = httpx.get(f"{sandbox.urls['dublab']}/api/v1/me")
    assert r.status_code == 401
    assert "apikey" in r.json()["error"]


def test_dublab_bearer_authorization_is_rejected(sandbox: Sandbox) -> None:
    r = httpx.get(f"{sandbox.urls['dublab']}/api/v1/me", headers={"Authorization": f"Bearer {DL_KEY}"})
    assert r.status_code == 401
    assert "not Authorization: Bearer" in r.json()["error"]


def test_dublab_unknown_apikey_answers_401(sandbox: Sandbox) -> None:
    r = httpx.get(f"{sandbox.urls['dublab']}/api/v1/me", headers={"apikey": "nope"})
    assert r.status_code == 401
    assert r.json() == {"error": "Invalid API key"}


# -- me, langs --------------------------------------------------------------------------------------


def test_dublab_me_answers_documented_profile(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        me = dl.get("/api/v1/me").json()
    assert set(me) == ME_FIELDS
    assert me["seconds"] == 3600
    assert me["firstName"] is None and me["lastName"] is None
    assert me["createdAt"].endswith("Z") and me["createdAt"][10] == "T"


def test_dublab_langs_lists_codes_and_names_and_needs_apikey(sandbox: Sandbox) -> None:
    assert httpx.get(f"{sandbox.urls['dublab']}/api/langs").status_code == 401
    with dublab(sandbox) as dl:
        langs = dl.get("/api/langs").json()
    assert {"code": "en", "name": "English"} in langs
    assert {"code": "tr", "name": "Turkish"} in langs
    assert len(langs) >= 90
    assert "auto" not in {lang["code"] for lang in langs}


# -- init-dub ---------------------------------------------------------------------------------------


def test_dublab_init_dub_answers_file_record_and_upload_url_on_upload_host(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        body = init(dl).json()
    assert set(body) == {"file", "uploadUrl"}
    assert body["file"]["name"] == "my-video.mp4"
    assert body["file"]["source"] == "api"
    assert body["file"]["externalStatusId"] == 1 and body["file"]["internalStatusId"] == 1
    assert body["uploadUrl"].startswith(sandbox.urls["uploads"] + "/")
    assert "X-Amz-Signature=" in body["uploadUrl"] and "X-Amz-Expires=" in body["uploadUrl"]


@pytest.mark.parametrize("missing", ["fileType", "name", "source_lang", "dest_lang"])
def test_dublab_init_dub_without_required_field_answers_400(sandbox: Sandbox, missing: str) -> None:
    with dublab(sandbox) as dl:
        r = init(dl, **{missing: None})
    assert r.status_code == 400
    assert missing in r.json()["error"]


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("dest_lang", "auto", "auto"),
        ("dest_lang", "xx", "dest_lang"),
        ("source_lang", "klingon", "source_lang"),
        ("fileType", "image/png", "fileType"),
        ("fileType", "mp4", "fileType"),
        ("duration", "67", "duration"),
        ("duration", -1, "duration"),
        ("isStudioQuality", "yes", "isStudioQuality"),
    ],
)
def test_dublab_init_dub_with_invalid_field_answers_400(sandbox: Sandbox, field: str, value: object, word: str) -> None:
    with dublab(sandbox) as dl:
        r = init(dl, **{field: value})
    assert r.status_code == 400
    assert word in r.json()["error"]


def test_dublab_init_dub_accepts_auto_source_and_optional_fields_omitted(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        r = init(dl, source_lang="auto", duration=None, fileType="audio/mpeg")
    assert r.status_code == 200


def test_dublab_init_dub_with_invalid_json_answers_400(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        assert dl.post("/api/v1/init-dub", content=b"{oops").status_code == 400
        assert dl.post("/api/v1/init-dub", json=["a", "list"]).status_code == 400


# -- the dub lifecycle ------------------------------------------------------------------------------


def test_dublab_dub_moves_through_documented_statuses(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with dublab(timed_sandbox) as dl:
        created = init(dl).json()
        file_id = created["file"]["id"]
        seen = [record(dl, file_id)["externalStatusId"]]
        upload(created["uploadUrl"], media["video.mp4"])
        seen.append(record(dl, file_id)["externalStatusId"])
        dl.post("/api/v1/start-dub", json={"fileId": file_id})
        progress = []
        for _ in range(11):
            rec = record(dl, file_id)
            seen.append(rec["externalStatusId"])
            progress.append(rec["progressPercentage"])
            clock.advance(1.0)
    assert set(rec) == DUB_FIELDS
    assert seen[:3] == [1, 1, 2]
    assert 3 in seen and seen[-1] == 5
    assert [s for s in seen if s != 1] == sorted(s for s in seen if s != 1)
    assert progress == sorted(progress) and progress[-1] == 100
    assert rec["measuredDuration"] == 3 and rec["duration"] == 3 and rec["externalErrorMessage"] is None


def test_dublab_bills_measured_duration_once_at_completion(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with dublab(timed_sandbox) as dl:
        # The caller claims 60 s; the upload is 7 s long: billing follows the measurement.
        file_id = started_dub(dl, media["long.mp4"], duration=60)
        clock.advance(5)
        assert dl.get("/api/v1/me").json()["seconds"] == 3600
        assert record(dl, file_id)["measuredDuration"] is None
        clock.advance(5)
        assert record(dl, file_id)["measuredDuration"] == 7
        assert dl.get("/api/v1/me").json()["seconds"] == 3600 - 7
        clock.advance(60)
        assert dl.get("/api/v1/me").json()["seconds"] == 3600 - 7


def test_dublab_studio_quality_bills_twice(timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]) -> None:
    with dublab(timed_sandbox) as dl:
        file_id = started_dub(dl, media["voice.mp3"], fileType="audio/mpeg", name="voice.mp3", isStudioQuality=True)
        clock.advance(10)
        rec = record(dl, file_id)
        assert rec["isStudioQuality"] is True and rec["measuredDuration"] == 4
        assert dl.get("/api/v1/me").json()["seconds"] == 3600 - 8


def test_dublab_unreadable_upload_fails_the_dub_unbilled(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with dublab(timed_sandbox) as dl:
        file_id = started_dub(dl, media["notes.mp4"])
        clock.advance(10)
        rec = record(dl, file_id)
        assert rec["externalStatusId"] == 4
        assert rec["externalErrorMessage"]
        assert rec["measuredDuration"] is None
        assert dl.get("/api/v1/me").json()["seconds"] == 3600


def test_dublab_failing_pipeline_reports_status_4(
    timed_sandbox: Sandbox, clock: ManualClock, media: dict[str, Path]
) -> None:
    with dublab(timed_sandbox) as dl:
        dl.post("/sandbox/account", json={"fail_jobs": True})
        file_id = started_dub(dl, media["video.mp4"])
        clock.advance(10)
        assert record(dl, file_id)["externalStatusId"] == 4


def test_dublab_dubs_lists_every_record_newest_first_by_name(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl, dublab(sandbox, DL_KEY2) as other:
        first = init(dl, name="clip.ugc-7f3a.mp4").json()["file"]["id"]
        second = init(dl, name="clip.ugc-9b1c.mp4").json()["file"]["id"]
        init(other, name="theirs.mp4")
        listed = dl.get("/api/v1/dubs").json()
    # A record still uploading is listed, so a client can find it again by the name it chose.
    assert [d["id"] for d in listed] == [second, first]
    assert [d["name"] for d in listed] == ["clip.ugc-9b1c.mp4", "clip.ugc-7f3a.mp4"]
    assert all(d["externalStatusId"] == 1 and d["source"] == "api" for d in listed)


# -- start-dub errors -------------------------------------------------------------------------------


def test_dublab_start_dub_without_file_id_answers_400(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        assert dl.post("/api/v1/start-dub", json={}).status_code == 400


def test_dublab_start_dub_of_unknown_file_answers_404(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        r = dl.post("/api/v1/start-dub", json={"fileId": "ce14fea7-9c5b-0000-0000-000000000000"})
    assert r.status_code == 404 and r.json()["error"]


def test_dublab_start_dub_of_another_users_file_answers_403(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with dublab(sandbox) as dl, dublab(sandbox, DL_KEY2) as other:
        created = init(dl).json()
        upload(created["uploadUrl"], media["video.mp4"])
        r = other.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]})
    assert r.status_code == 403 and "another user" in r.json()["error"]


def test_dublab_start_dub_twice_answers_409(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with dublab(sandbox) as dl:
        file_id = started_dub(dl, media["video.mp4"])
        r = dl.post("/api/v1/start-dub", json={"fileId": file_id})
    assert r.status_code == 409 and r.json()["error"]


def test_dublab_start_dub_before_upload_answers_412(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with dublab(sandbox) as dl:
        created = init(dl).json()
        r = dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]})
        assert r.status_code == 412
        upload(created["uploadUrl"], media["video.mp4"])
        assert dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]}).status_code == 200


def test_dublab_start_dub_with_no_balance_answers_402(sandbox: Sandbox, media: dict[str, Path]) -> None:
    with dublab(sandbox) as dl:
        dl.post("/sandbox/account", json={"seconds": 0})
        created = init(dl).json()  # init-dub does not check the balance
        upload(created["uploadUrl"], media["video.mp4"])
        r = dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]})
        assert r.status_code == 402
        dl.post("/sandbox/account", json={"seconds": 1})  # "only checks that your balance is above zero"
        assert dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]}).status_code == 200


def test_dublab_start_dub_with_backend_down_answers_502_and_can_be_retried(
    sandbox: Sandbox, media: dict[str, Path]
) -> None:
    with dublab(sandbox) as dl:
        dl.post("/sandbox/account", json={"dispatch_down": True})
        created = init(dl).json()
        upload(created["uploadUrl"], media["video.mp4"])
        assert dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]}).status_code == 502
        dl.post("/sandbox/account", json={"dispatch_down": False})
        assert dl.post("/api/v1/start-dub", json={"fileId": created["file"]["id"]}).json() == {
            "success": True,
            "fileId": created["file"]["id"],
        }


def test_dublab_unknown_route_answers_json_404(sandbox: Sandbox) -> None:
    with dublab(sandbox) as dl:
        r = dl.get("/api/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()


def test_dublab_language_table_matches_the_document() -> None:
    assert len(LANGUAGES) == 92
    assert LANGUAGES["he"] == "Hebrew" and LANGUAGES["ht"] == "Haitian Creole" and LANGUAGES["se"] == "Northern Sami"
