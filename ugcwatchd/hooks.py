"""Notifications on every result and error sidecar (``notify:``): a webhook and/or a command.

They never block the pipeline: each runs as its own task after the sidecar is written, with a time
limit, and a failure is only logged. The webhook gets the sidecar itself as its JSON body.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx

from .providers.http import make_client
from .rules import Notify

log = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 15.0
COMMAND_TIMEOUT = 120.0


class Hooks:
    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = make_client(transport=transport, timeout=httpx.Timeout(WEBHOOK_TIMEOUT))
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, notify: Notify | None, sidecar: Path, document: dict[str, Any]) -> None:
        """Start the rule's hooks for one sidecar, and return at once."""
        if notify is None:
            return
        if notify.webhook:
            self._spawn(self._post(notify.webhook, sidecar, document))
        if notify.command:
            self._spawn(self._run([part.replace("{sidecar}", str(sidecar)) for part in notify.command], sidecar))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, sidecar: Path, document: dict[str, Any]) -> None:
        try:
            response = await self._client.post(url, json=document)
        except httpx.HTTPError as exc:
            log.warning("notify: webhook for %s failed: %s", sidecar.name, type(exc).__name__)
            return
        if response.status_code >= 400:
            log.warning("notify: webhook for %s answered %d", sidecar.name, response.status_code)

    async def _run(self, argv: list[str], sidecar: Path) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("notify: cannot run %s for %s: %s", argv[0], sidecar.name, exc.strerror)
            return
        try:
            _, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning(
                "notify: %s for %s ran longer than %d s and was stopped", argv[0], sidecar.name, COMMAND_TIMEOUT
            )
            return
        if proc.returncode:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            log.warning("notify: %s for %s exited %d %s", argv[0], sidecar.name, proc.returncode, detail[0])

    async def aclose(self, within: float = 5.0) -> None:
        """Give hooks under way a moment to finish; then close."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)
        await self._client.aclose()
