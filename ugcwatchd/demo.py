"""``ugcwatchd demo``: a self-contained tour against the sandbox, on loopback, in a temporary folder."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from .daemon import Daemon
from .rules import load_rules
from .sandbox import Sandbox, SandboxConfig  # the 'sandbox' extra: the CLI says so when it is missing
from .sandbox.media import make_media, make_photo
from .settings import Settings

JOBS = ("alice.facedub", "pitch.de", "pitch.es", "broken.de", "broken.es")


def _write_world(root: Path, urls: dict[str, str]) -> Path:
    for folder in ("faces/inbox", "faces/outbox", "dub/inbox", "dub/outbox"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rules = root / "rules.yaml"
    rules.write_text(
        f"""\
# The demo's rules: the sandbox stands in for the paid services.
providers:
  facedub: {{base_url: "{urls["facedub"]}", api_key: fdb_sandbox, poll_every: 1s}}
  dublab: {{base_url: "{urls["dublab"]}", api_key: dl_sandbox, poll_every: 1s}}
defaults: {{stable_after: 1s, rescan_every: 2s}}
rules:
  - name: faces
    inbox: faces/inbox
    facedub: {{pair_by: stem}}
  - name: dub
    inbox: dub/inbox
    dublab: {{to: [de, es]}}
"""
    )
    make_photo(root / "faces" / "inbox" / "alice.jpg")
    make_media(root / "faces" / "inbox" / "alice.mp4", 4)
    make_media(root / "dub" / "inbox" / "pitch.mp4", 3)
    (root / "dub" / "inbox" / "broken.mp4").write_text("not a video, whatever its name says\n")
    return rules


def _final(root: Path) -> dict[str, Path]:
    found = {}
    for job in JOBS:
        outbox = root / ("faces" if job.endswith("facedub") else "dub") / "outbox"
        for kind in ("result", "error"):
            if (outbox / f"{job}.{kind}.json").exists():
                found[job] = outbox / f"{job}.{kind}.json"
    return found


async def _run(root: Path, rules: Path, within: float) -> dict[str, Path]:
    settings = Settings(  # its own SQLite ledger, whatever UGCWATCHD_LEDGER says: the demo touches nothing real
        state_dir=root / "state",
        facedub_api_key=SecretStr("fdb_sandbox"),
        dublab_api_key=SecretStr("dl_sandbox"),
        ledger=None,
    )
    daemon = Daemon(load_rules(rules), settings)
    task = asyncio.create_task(daemon.run())
    deadline = time.monotonic() + within
    originals = [root / "faces" / "outbox" / "originals", root / "dub" / "outbox" / "originals"]
    while time.monotonic() < deadline and not task.done():
        if len(_final(root)) == len(JOBS) and all(p.exists() for p in originals):
            break
        await asyncio.sleep(0.25)
    daemon.stopping.set()
    await task
    return _final(root)


def run_demo(folder: Path | None = None, within: float = 60.0) -> int:
    root = folder or Path(tempfile.mkdtemp(prefix="ugcwatchd-demo-"))
    with Sandbox(SandboxConfig(port=0, job_seconds=2.0)) as sandbox:
        urls = sandbox.urls
        print(f"sandbox: facedub {urls['facedub']}, dublab {urls['dublab']}, uploads {urls['uploads']}")
        rules = _write_world(root, sandbox.urls)
        print(f"demo folder: {root}")
        print("dropped: faces/inbox/alice.jpg + alice.mp4 (a FaceDub pair), dub/inbox/pitch.mp4 (to de, es),")
        print("         dub/inbox/broken.mp4 (a text file named .mp4: refused before anything is paid)")
        started = time.monotonic()
        final = asyncio.run(_run(root, rules, within))
        print(f"after {time.monotonic() - started:.1f} s:")
        for job in JOBS:
            if job not in final:
                print(f"  {job}: no final sidecar")
                continue
            doc = json.loads(final[job].read_text())
            if doc["kind"] == "result":
                extra = f", output {doc['output']}" if doc.get("output") else ""
                print(f"  {job}: delivered, {doc['credits_charged']} credits{extra}  ({final[job].relative_to(root)})")
            else:
                print(f"  {job}: error at {doc['stage']} ({doc['code']}): {doc['message']}")
        archived = sorted(p.name for p in root.glob("*/outbox/originals/*"))
        failed = sorted(p.name for p in root.glob("*/outbox/failed/*"))
        print(f"inputs archived: {', '.join(archived) or 'none'}; moved to failed: {', '.join(failed) or 'none'}")
    return 0 if len(final) == len(JOBS) else 1
