"""The console's life in the daemon: uvicorn serving the Starlette app on the daemon's own event loop.

The server installs no signal handlers (the daemon's SIGTERM stops it), binds its socket before it is
announced (so a taken address is an error at start, or a refused reload), and is stopped within a
few seconds. Ledger work runs in one worker thread with a ledger handle of its own: a page never holds
up the event loop, and SQLite's WAL (or PostgreSQL) lets it read while the daemon writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from pydantic import SecretStr
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import UgcwatchdError
from ..ledger import Ledger
from ..providers.registry import budget_unit
from ..settings import Settings, console_token
from .auth import Sessions, is_loopback, split_host
from .views import ProviderView, Spend, spend

if TYPE_CHECKING:
    from ..lifecycle import ProviderState
    from ..rules import Config

log = logging.getLogger("ugcwatchd.console")
T = TypeVar("T")
STOP_WITHIN = 3.0  # seconds for open requests to finish at shutdown; the daemon's stop budget allows it
CONNECTIONS_MAX = 64  # open at once; more are closed at once, so browsers cannot use up the daemon's files
REQUEST_WAIT = 10.0  # seconds a new connection has to send its request's head


class ConsoleError(UgcwatchdError):
    """The console cannot serve where it is asked to."""


@dataclass(frozen=True)
class Prepared:
    """A reload's console settings, checked and bound, ready to replace the running ones."""

    listen: str | None
    token: SecretStr | None
    sock: socket.socket | None  # a new listening socket, when the address changes


def snapshot(providers: Mapping[str, ProviderState]) -> list[ProviderView]:
    """A read-only copy of the providers' live state, taken on the event loop."""
    return [
        ProviderView(
            name=ps.name,
            unit=budget_unit(ps.name),
            paused=ps.paused,
            remaining=ps.remaining,
            slots=getattr(ps.settings, "max_concurrent_jobs", None),
            daily_budget=ps.settings.daily_budget,
            allows_overage=ps.settings.allows_overage,
            last_poll_ok=ps.last_poll_ok,
        )
        for ps in providers.values()
    ]


def bind(listen: str) -> socket.socket:
    """A listening socket on ``HOST:PORT`` (``[::1]:8790`` for IPv6)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio turns Nagle off only for sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConsoleError(
            f"cannot serve the web console on {listen}: {why}",
            remedy="choose another console_listen, or stop what uses that address",
        ) from None
    sock.setblocking(False)
    return sock


class Console:
    """The web console of one daemon."""

    def __init__(
        self,
        open_ledger: Callable[[], Ledger],
        providers: Callable[[], Mapping[str, ProviderState]],
        config: Callable[[], Config],
        settings: Settings,
    ) -> None:
        """``open_ledger``: a handle of the console's own on the daemon's ledger (``Ledger.reopen``)."""
        self.open_ledger = open_ledger
        self.providers = providers
        self.config = config
        self.settings = settings
        self.token: SecretStr | None = None
        self.sessions = Sessions()
        self.listen: str | None = None
        self.open_reads = True  # read pages without logging in: only when listening on loopback
        self._pool: ThreadPoolExecutor | None = None
        self._ledger: Ledger | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._spend: tuple[object, list[Spend]] | None = None
        self._app: Any = None

    # -- serving ------------------------------------------------------------------------------------

    async def start(self, listen: str | None) -> None:
        """Serve on ``listen`` (nothing when None); the token is read now, a bad one is a configuration error."""
        if listen is None:
            return
        await self.apply(self.prepare(listen))

    def prepare(self, listen: str | None) -> Prepared:
        """Check a (re)load's console settings before anything changes: the token, and the new address bound."""
        token = console_token(self.settings) if listen is not None else None
        sock = bind(listen) if listen is not None and listen != self.listen else None
        return Prepared(listen, token, sock)

    def discard(self, prepared: Prepared) -> None:
        """A prepared change that will not be applied (the reload was refused for another reason)."""
        if prepared.sock is not None:
            prepared.sock.close()

    async def apply(self, prepared: Prepared) -> None:
        """Take a prepared change: a new token ends every session; a new address restarts the server."""
        if (prepared.token and prepared.token.get_secret_value()) != (self.token and self.token.get_secret_value()):
            self.sessions.clear()
        self.token = prepared.token
        if prepared.listen == self.listen:
            return
        await self._stop_server()
        self.listen = prepared.listen
        if prepared.listen is not None and prepared.sock is not None:
            await self._serve(prepared.listen, prepared.sock)

    async def _serve(self, listen: str, sock: socket.socket) -> None:
        from .app import build_app  # the app imports this module's Console

        if self._app is None:
            self._app = build_app(self)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="console")
        self.open_reads = is_loopback(split_host(listen))
        config = uvicorn.Config(
            self._app,
            http=_Guarded,
            lifespan="off",
            log_config=None,  # the daemon's logging stays as it is
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=1,
        )
        server = _Server(config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name="console")
        deadline = time.monotonic() + 10
        # uvicorn tells readiness only through a flag.
        while not server.started and not self._task.done() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if not server.started:
            await self._stop_server()
            raise ConsoleError(f"the web console on {listen} did not start")
        where = "read pages open on loopback" if self.open_reads else "every page behind the token"
        if self.token is None:
            where += "; no console token is set, so actions are off"
            if not self.open_reads:
                log.warning("web console on %s: no console token is set, so every page is locked", listen)
        log.info("web console on http://%s/ (%s)", listen, where)

    async def _stop_server(self) -> None:
        server, task = self._server, self._task
        self._server, self._task = None, None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WITHIN)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def stop(self) -> None:
        """Stop serving and close the console's ledger connection (SIGTERM: within a few seconds)."""
        await self._stop_server()
        self.listen = None
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, self._close_ledger), 2)
            pool.shutdown(wait=False)

    def _close_ledger(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    # -- the ledger, in the console's thread ---------------------------------------------------------

    def _with_ledger(self, work: Callable[[Ledger], T]) -> T:
        if self._ledger is None:
            self._ledger = self.open_ledger()
        return work(self._ledger)

    async def ledger_work(self, work: Callable[[Ledger], T]) -> T:
        """Run ``work`` with the console's ledger connection, in the console's one worker thread."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="console")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._with_ledger, work)

    def views(self) -> list[ProviderView]:
        return snapshot(self.providers())

    def spend(self, ledger: Ledger, providers: list[str]) -> list[Spend]:
        """The 30-day spend, drawn again only when something was charged (the tally moved) or the day turned."""
        key = (date.today(), ledger.charged_totals(), tuple(providers))
        if self._spend is None or self._spend[0] != key:
            self._spend = (key, spend(ledger, providers))
        return self._spend[1]


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: the daemon's SIGTERM stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # what uvicorn before 0.29 called instead
        return


class _Guarded(H11Protocol):
    """uvicorn's HTTP/1.1 with a cap on connections and a deadline for the first request's head.

    uvicorn waits forever for a request that never comes: a client that connects and sends nothing, or
    trickles its headers, holds one of the daemon's file descriptors; a few hundred of them from the LAN
    and the daemon could not open its inputs or reach its providers.
    """

    _counted = False
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= CONNECTIONS_MAX:
            transport.close()
            return
        self._counted = True
        super().connection_made(transport)  # type: ignore[arg-type]
        self._deadline = self.loop.call_later(REQUEST_WAIT, self._no_request)

    def _no_request(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._counted:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._counted:
            super().data_received(data)
