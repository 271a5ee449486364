"""Benchmark: the web console's overview with 10,000 items in the ledger.

Run from the project root: ``.venv/bin/python tests/perf/console_overview.py [--items 10000] [--requests 40]``.
Prints one JSON object and exits 1 when a target is missed. The ledger holds ``--items`` items: finished
work of the last 30 days for three clients (with its charges and events), and 1 % open work in every
waiting state (queued, held for credits or approval, ambiguous, running). The console is served by
uvicorn in this process, as the daemon serves it, and asked over loopback HTTP.
Targets: the overview (``GET /``) in <= 300 ms server time (the median of the ``Server-Timing`` header;
the slowest, and the first, which draws the spend chart before it is cached, are reported too) and
<= 200 KiB transferred (headers and body). The live fragment, searches and an item page are reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.console_history import CLIENTS, seed  # noqa: E402
from ugcwatchd.console import Console  # noqa: E402
from ugcwatchd.ledger import Ledger  # noqa: E402
from ugcwatchd.lifecycle import ProviderState  # noqa: E402
from ugcwatchd.providers.registry import build_provider  # noqa: E402
from ugcwatchd.rules import load_rules  # noqa: E402
from ugcwatchd.settings import Settings  # noqa: E402

TARGETS = {"overview_server_ms": 300.0, "overview_kib": 200.0}


def write_rules(root: Path) -> Path:
    for client in CLIENTS:
        for rule in ("faces", "dub"):
            (root / "clients" / client / rule / "inbox").mkdir(parents=True, exist_ok=True)
    rules = root / "rules.yaml"
    rules.write_text(
        "providers:\n  facedub: {base_url: 'http://127.0.0.1:9', api_key: fdb_bench}\n"
        "  dublab: {base_url: 'http://127.0.0.1:9', api_key: dl_bench}\n"
        f"rules:\n  - {{name: faces, inbox: '{root}/clients/{{client}}/faces/inbox', facedub: {{}}}}\n"
        f"  - {{name: dub, inbox: '{root}/clients/{{client}}/dub/inbox', dublab: {{to: [de, es]}}}}\n"
    )
    return rules


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weight(response: httpx.Response) -> int:
    """Bytes on the wire: the status line, the headers and the body."""
    head = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n") + 2
    head += sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
    return head + response.num_bytes_downloaded


async def measure(client: httpx.AsyncClient, url: str, count: int) -> dict[str, Any]:
    server, wall, sizes = [], [], []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(url)
        wall.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        server.append(float(response.headers["server-timing"].split("dur=")[1]))
        sizes.append(weight(response))
    return {
        "server_ms_median": round(statistics.median(server), 1),
        "server_ms_max": round(max(server), 1),
        "wall_ms_median": round(statistics.median(wall), 1),
        "kib": round(max(sizes) / 1024, 1),
    }


async def bench(items: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ugcwatchd-console-") as folder:
        root = Path(folder)
        started = time.perf_counter()
        open_items = max(1, items // 100)
        seed(root / "state", root, items=items - open_items, now=time.time(), open_items=open_items)
        built = round(time.perf_counter() - started, 1)
        config = load_rules(write_rules(root), {})
        providers = {}
        for name, key in (("facedub", "fdb_bench"), ("dublab", "dl_bench")):
            block = config.providers.settings(name)
            providers[name] = ProviderState(name, build_provider(name, block, SecretStr(key)), block, remaining=5000)
        console = Console(
            lambda: Ledger(root / "state" / "ledger.sqlite3"), lambda: providers, lambda: config, Settings()
        )
        port = free_port()
        await console.start(f"127.0.0.1:{port}")
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                # The first opens the console's ledger connection and draws the spend chart (then cached).
                first = await client.get("/")
                report = {
                    "items": items,
                    "ledger_built_seconds": built,
                    "overview_first_server_ms": float(first.headers["server-timing"].split("dur=")[1]),
                    "overview": await measure(client, "/", requests),
                    "live_fragment": await measure(client, "/live/overview", requests),
                    "search_by_name": await measure(client, "/items?name=clip00999", requests // 4 or 1),
                    "search_rare_term": await measure(client, "/items?name=nothing-like-it", requests // 4 or 1),
                    "item_page": await measure(client, f"/items/{items // 2}", requests // 4 or 1),
                }
        finally:
            await console.stop()
            for ps in providers.values():
                await ps.provider.aclose()
    overview = report["overview"]
    report["targets"] = TARGETS
    slowest = max(overview["server_ms_median"], report["overview_first_server_ms"])
    report["ok"] = slowest <= TARGETS["overview_server_ms"] and overview["kib"] <= TARGETS["overview_kib"]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    report = asyncio.run(bench(args.items, args.requests))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
