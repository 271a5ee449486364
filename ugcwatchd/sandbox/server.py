"""Serving the three sandbox services from one uvicorn server on three loopback ports."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .common import DropFilter, FaultInjector, RequestStats, SandboxConfig, error
from .dublab import DubLab
from .facedub import FaceDub
from .uploads import Uploads, UploadSigner, s3_error

SERVICES = ("facedub", "dublab", "uploads")


def _json_errors(render: Callable[[int, str], Response]) -> dict[Any, Any]:
    """Exception handlers so that no answer is ever an HTML page or a traceback."""

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return render(exc.status_code, exc.detail)

    async def crash(request: Request, exc: Exception) -> Response:
        return render(500, "Internal server error")

    return {HTTPException: http_error, Exception: crash}


def _app(routes: list[Route], render: Callable[[int, str], Response]) -> Starlette:
    return Starlette(routes=routes, exception_handlers=_json_errors(render))


def _json_render(status: int, message: str) -> Response:
    return error(status, message)


def _xml_render(status: int, message: str) -> Response:
    codes = {404: "NoSuchKey", 405: "MethodNotAllowed", 500: "InternalError", 502: "BadGateway"}
    return s3_error(status, codes.get(status, "InvalidRequest"), message)


class Sandbox:
    """The FaceDub, DubLab and upload services, bound to ``port``, ``port+1`` and ``port+2``.

    With ``port=0`` each service gets a free port of its own; ``urls`` says which.
    """

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._data = tempfile.TemporaryDirectory(prefix="ugcwatchd-sandbox-")
        rng = random.Random(config.seed)
        self.stats = {name: RequestStats() for name in SERVICES}
        signer = UploadSigner(config.clock, config.upload_expires)
        self.facedub = FaceDub(config, self.stats["facedub"])
        self.dublab = DubLab(config, signer, self.stats["dublab"])
        self.uploads = Uploads(signer, Path(self._data.name), self.dublab.on_upload, self.stats["uploads"])
        self._signer = signer
        services: list[tuple[list[Route], Callable[[int, str], Response], Callable[[Scope], str]]] = [
            (self.facedub.routes(), _json_render, FaceDub.route_of),
            (self.dublab.routes(), _json_render, DubLab.route_of),
            (self.uploads.routes(), _xml_render, Uploads.route_of),
        ]
        self._apps: list[ASGIApp] = [
            FaultInjector(
                _app(routes, render),
                config.fail_rate,
                rng,
                lambda status, render=render: render(
                    status, "Internal server error" if status == 500 else "Bad gateway"
                ),  # type: ignore[misc]
                self.stats[name],
                route_of,
            )
            for name, (routes, render, route_of) in zip(SERVICES, services, strict=True)
        ]
        self._sockets = [self._bind(offset) for offset in range(len(SERVICES))]
        self.urls = {name: self._url(sock) for name, sock in zip(SERVICES, self._sockets, strict=True)}
        self.facedub.public_url = self.urls["facedub"]
        signer.public_url = self.urls["uploads"]
        self._by_port = {sock.getsockname()[1]: app for sock, app in zip(self._sockets, self._apps, strict=True)}
        logging.getLogger("uvicorn.error").addFilter(DropFilter())
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._dispatch,
                interface="asgi3",
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
        )
        self._thread: threading.Thread | None = None

    def _bind(self, offset: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio turns Nagle off only for sockets that say they are TCP,
        # and with Nagle on every answer waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port + offset if self.config.port else 0))
        except OSError:
            sock.close()
            for opened in getattr(self, "_sockets", []):
                opened.close()
            raise
        sock.listen(128)
        sock.set_inheritable(True)
        return sock

    def _url(self, sock: socket.socket) -> str:
        host, port = sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._by_port[scope["server"][1]](scope, receive, send)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until told to stop (SIGINT/SIGTERM in the main thread, or :meth:`stop`)."""
        try:
            server_task = asyncio.create_task(self._server.serve(sockets=self._sockets))
            # uvicorn tells readiness only through a flag, so it is polled.
            while not self._server.started and not server_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if self._server.started and on_ready is not None:
                on_ready()
            await server_task
        finally:
            self.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._data.cleanup()

    # -- in-process use (tests, the demo) -------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Sandbox:
        """Serve from a background thread; returns once all three ports answer."""
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve(ready.set)), name="sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"the sandbox did not start within {timeout} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(config: SandboxConfig, announce: Callable[[str], None] = print) -> None:
    """`ugcwatchd sandbox`: bind, print one line per service, serve until SIGINT/SIGTERM."""
    sandbox = Sandbox(config)
    # uvicorn stops gracefully on SIGTERM, then re-raises it to the handler it found: make that a clean exit.
    signal.signal(signal.SIGTERM, _exit_cleanly)

    def ready() -> None:
        for name in SERVICES:
            announce(f"{name} {sandbox.urls[name]}")

    asyncio.run(sandbox.serve(ready))


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
