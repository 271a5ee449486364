"""Any name a filesystem allows goes through ingestion to a sidecar: never an exception, never a path
outside the outbox, never a sidecar name the filesystem refuses."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ugcwatchd.inbox.ingest import InboxIngest
from ugcwatchd.ledger import Ledger
from ugcwatchd.names import NAME_MAX, shown
from ugcwatchd.outbox.sidecars import sidecar_path
from ugcwatchd.rules import load_rules

# Bytes a POSIX file name may hold: anything but '/' and NUL; ".." and "." are not files.
names = st.binary(min_size=1, max_size=NAME_MAX - 4).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")
)


def _ingest_once(root: Path, raw: bytes, video: Path) -> tuple[Ledger, Path]:
    (root / "in").mkdir()
    (root / "out").mkdir()
    rules = root / "rules.yaml"
    rules.write_text(
        "defaults: {stable_after: 0s, rescan_every: 1s, ignore: []}\n"
        f"rules:\n  - {{name: dub, inbox: {root}/in, outbox: {root}/out, match: ['*'], dublab: {{to: [de]}}}}\n"
    )
    config = load_rules(rules, {})
    name = os.fsdecode(raw + b".mp4") if len(raw) + 4 <= NAME_MAX else os.fsdecode(raw)
    shutil.copy(video, root / "in" / name)
    ledger = Ledger.open(root / "state")
    inbox = InboxIngest(config.inboxes()[0], ledger, poll=True)
    for _ in range(3):
        asyncio.run(inbox.tick())
    return ledger, root / "out"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=names)
def test_odd_names_any_file_name_reaches_a_sidecar_inside_the_outbox(raw: bytes, media: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ledger, outbox = _ingest_once(Path(folder), raw, media["video.mp4"])
        try:
            jobs = [job for item in ledger.items_in("planned") for job in ledger.jobs_of(item.id)]
            if raw.startswith(b"."):
                assert jobs == []  # hidden files are never input
                return
            assert len(jobs) == 1
            (job,) = jobs
            for kind in ("status", "result", "error"):
                path = sidecar_path(outbox, job.name, kind)
                temp = path.with_name(f".{path.name}.0123abcd.tmp")
                assert os.path.normpath(path).startswith(str(outbox) + os.sep)
                assert len(os.fsencode(temp.name)) <= NAME_MAX
            shown(job.name).encode("utf-8")
            (taken,) = ledger.inputs_of(job.item_id)
            assert os.fsencode(Path(taken.path).name).startswith(raw[: NAME_MAX - 4])
        finally:
            ledger.close()
