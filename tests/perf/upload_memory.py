"""Benchmark: peak memory of the client while it uploads a 1 GiB file by each upload path.

Run: ``.venv/bin/python tests/perf/upload_memory.py [--size-mib 1024]``. Prints one JSON object.
Target (issue: provider clients): peak RSS grows by less than 32 MiB over the idle process.

The sandbox runs in its own process so that only the client's memory is measured. The file is sparse
(no disk is spent on it); FaceDub's sandbox answers 400 after reading it all, as zeros are no video,
which does not matter here: the whole body has been streamed by then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from ugcwatchd.errors import Rejected
from ugcwatchd.providers.dublab import DubLabClient
from ugcwatchd.providers.facedub import FaceDubClient
from ugcwatchd.sandbox.media import make_photo

MIB = 1024 * 1024


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def start_sandbox() -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ugcwatchd", "sandbox", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    urls = dict(proc.stdout.readline().split() for _ in range(3))
    return proc, urls


async def measure(name: str, upload: object, size: int) -> dict[str, object]:
    reset_peak()
    before = rss_mib("VmRSS")
    started = time.perf_counter()
    try:
        await upload  # type: ignore[misc]
        answer = "200"
    except Rejected as exc:
        answer = f"{exc.status} (expected for zeros: {exc.provider_error})"
    seconds = time.perf_counter() - started
    return {
        "path": name,
        "peak_rss_growth_mib": round(rss_mib("VmHWM") - before, 1),
        "seconds": round(seconds, 2),
        "mib_per_second": round(size / MIB / seconds, 1),
        "answer": answer,
    }


async def main(size_mib: int) -> dict[str, object]:
    proc, urls = start_sandbox()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            big = Path(tmp) / "big.mp4"
            with big.open("wb") as f:
                f.truncate(size_mib * MIB)
            photo = make_photo(Path(tmp) / "photo.jpg")
            async with (
                FaceDubClient(urls["facedub"], SecretStr("fdb_sandbox")) as fd,
                DubLabClient(urls["dublab"], SecretStr("dl_sandbox")) as dl,
            ):
                await fd.usage()  # warm up: connections, imports, pools
                init = await dl.init_dub(file_type="video/mp4", name="big.mp4", source_lang="auto", dest_lang="de")
                idle = rss_mib("VmRSS")
                results = [
                    await measure("facedub multipart POST /jobs", fd.create_job(photo, big, 5), big.stat().st_size),
                    await measure(
                        "dublab presigned PUT", dl.upload(init.uploadUrl, big, "video/mp4"), big.stat().st_size
                    ),
                ]
    finally:
        proc.terminate()
        proc.wait(10)
    worst = max(float(r["peak_rss_growth_mib"]) for r in results)  # type: ignore[arg-type]
    return {
        "benchmark": "upload_memory",
        "file_mib": size_mib,
        "idle_rss_mib": round(idle, 1),
        "results": results,
        "worst_peak_rss_growth_mib": worst,
        "target_mib": 32,
        "met": worst < 32,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    print(json.dumps(asyncio.run(main(parser.parse_args().size_mib)), indent=2))
