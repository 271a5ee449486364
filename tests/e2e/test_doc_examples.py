"""The two API documents' own examples, run as written against ``ugcwatchd sandbox``.

Only the base URL changes; the sandbox is started with the documents' placeholder keys. The texts are
copied from the published documents (seeds/000 and seeds/001). One repair: the FaceDub page as
published shows ``-F "[email protected]"``, a web page's e-mail obfuscation of ``-F "character_photo=@photo.jpg"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import wait_for
from ugcwatchd.sandbox.media import make_media, make_photo

from .conftest import SandboxProcess

FACEDUB_CURL = """\
curl -X POST https://api.facedub.io/jobs \\
-H "Authorization: Bearer fdb_your_key_here" \\
-F "character_photo=@photo.jpg" \\
-F "reference_video=@video.mp4" \\
-F "duration=10"
"""

FACEDUB_PYTHON = """\
import requests
import time
API_KEY = "fdb_your_key_here"
BASE = "https://api.facedub.io"
headers = {"Authorization": f"Bearer {API_KEY}"}
# Create job
with open("photo.jpg", "rb") as photo, open("video.mp4", "rb") as video:
    res = requests.post(
        f"{BASE}/jobs",
        headers=headers,
        files={
            "character_photo": photo,
            "reference_video": video,
        },
        data={"duration": 10},
    )
job = res.json()
print(f"Job created: {job['job_id']}")
# Poll for completion
while True:
    status = requests.get(
        f"{BASE}/jobs/{job['job_id']}",
        headers=headers,
    ).json()
    print(f"Status: {status['status']} — {status['stage']}")
    if status["status"] in ("completed", "failed"):
        break
    time.sleep(5)
if status["status"] == "completed":
    print(f"Download: {status['output_url']}")
"""

DUBLAB_ME = """\
curl -H "apikey: YOUR_API_KEY" \\
  https://dublab.app/api/v1/me
"""

DUBLAB_WORKFLOW = """\
# 1. Create file record and get upload URL
RESPONSE=$(curl -s -X POST https://dublab.app/api/v1/init-dub \\
  -H "apikey: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "fileType": "video/mp4",
    "name": "presentation.mp4",
    "source_lang": "en",
    "dest_lang": "tr",
    "duration": 120
  }')

FILE_ID=$(echo $RESPONSE | jq -r '.file.id')
UPLOAD_URL=$(echo $RESPONSE | jq -r '.uploadUrl')

# 2. Upload the video to S3
curl -X PUT \\
  -H "Content-Type: video/mp4" \\
  --data-binary @presentation.mp4 \\
  "$UPLOAD_URL"

# 3. Start dubbing
curl -X POST https://dublab.app/api/v1/start-dub \\
  -H "apikey: YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d "{\\"fileId\\": \\"$FILE_ID\\"}"

# 4. Check status (poll until externalStatusId = 5)
curl -H "apikey: YOUR_API_KEY" \\
  https://dublab.app/api/v1/dubs
"""


@pytest.fixture
def docs_sandbox(sandbox_process: type[SandboxProcess], tmp_path: Path) -> SandboxProcess:
    make_photo(tmp_path / "photo.jpg")
    make_media(tmp_path / "video.mp4", 4)
    make_media(tmp_path / "presentation.mp4", 3)
    return sandbox_process(
        "--port", "0", "--job-seconds", "2", "--facedub-key", "fdb_your_key_here", "--dublab-key", "YOUR_API_KEY"
    )  # fmt: skip


def bash(script: str, cwd: Path) -> str:
    result = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_doc_facedub_curl_example_creates_a_job(docs_sandbox: SandboxProcess, tmp_path: Path) -> None:
    out = bash(FACEDUB_CURL.replace("https://api.facedub.io", docs_sandbox.urls["facedub"]), tmp_path)
    job = json.loads(out)
    assert job["status"] == "queued" and job["credits_charged"] == 2 and job["is_overage"] is False


def test_doc_facedub_python_example_runs_to_download(docs_sandbox: SandboxProcess, tmp_path: Path) -> None:
    script = FACEDUB_PYTHON.replace("https://api.facedub.io", docs_sandbox.urls["facedub"])
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Job created: ")
    assert "Status: completed — done" in lines
    download = lines[-1].removeprefix("Download: ")
    assert httpx.get(download).headers["content-type"] == "video/mp4"


def test_doc_dublab_me_example_answers_profile(docs_sandbox: SandboxProcess, tmp_path: Path) -> None:
    out = bash(DUBLAB_ME.replace("https://dublab.app", docs_sandbox.urls["dublab"]), tmp_path)
    assert json.loads(out)["seconds"] == 3600


def test_doc_dublab_full_workflow_dubs_the_video(docs_sandbox: SandboxProcess, tmp_path: Path) -> None:
    base = docs_sandbox.urls["dublab"]
    out = bash(DUBLAB_WORKFLOW.replace("https://dublab.app", base), tmp_path)
    assert '{"success":true,' in out.replace(" ", "")

    def completed() -> dict[str, object] | None:
        dubs = httpx.get(f"{base}/api/v1/dubs", headers={"apikey": "YOUR_API_KEY"}).json()
        return dubs[0] if dubs and dubs[0]["externalStatusId"] == 5 else None

    dub = wait_for(completed, timeout=15, what="the dub to complete")
    assert dub["name"] == "presentation.mp4" and dub["duration"] == 120 and dub["measuredDuration"] == 3
