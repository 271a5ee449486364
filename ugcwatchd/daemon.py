"""The daemon: the one place that wires rules, ledger, ingestion and providers.

One event loop; APScheduler 3.11's AsyncIOScheduler runs every periodic step (in-memory job store,
jobs made at start, coalesced, one instance each); watchdog observers live in their own threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx
import sdnotify
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .console import Console
from .errors import ConfigError, LedgerError, UgcwatchdError, map_os_errors
from .hosts import Membership, SharedAccount
from .inbox.ingest import Ingestion
from .ledger_location import open_ledger
from .lifecycle import Lifecycle, ProviderState
from .live_languages import REFRESH_EVERY, refresh
from .metrics import Metrics
from .owner import Claimant, StateLock
from .providers.registry import build_provider
from .reload import ProviderChanges, current_keys, provider_changes
from .rules import Config, load_rules
from .settings import Settings, api_key
from .states import JobState

log = logging.getLogger(__name__)
JOB_OPTIONS: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
RECENT = 600.0  # paid requests this recent seed the rate windows at start (the widest is a minute)
KEY_RECHECK = 300.0  # a paused provider's key is read again this often: a replaced key file resumes it


def _ascii(text: str) -> str:
    """One short ASCII line for STATUS=: the reason itself, not a heading such as "1 configuration problem:"."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return line.encode("ascii", "replace").decode()[:200]


class Outage:
    """The ledger out of reach (a database restarting, a network cut): said once, not at every tick."""

    def __init__(self) -> None:
        self.said: str | None = None

    def failed(self, exc: LedgerError) -> None:
        if exc.message != self.said:
            log.error("%s; %s", exc.message, exc.remedy or "work waits until it answers again")
            self.said = exc.message

    def ok(self) -> None:
        """The ledger answered (the status report reads it every few seconds)."""
        if self.said is not None:
            log.info("the ledger answers again")
            self.said = None


def tracked(running: set[asyncio.Task[Any]], outage: Outage, func: Callable[..., Any]) -> Callable[..., Any]:
    """A scheduled step that shutdown can wait for (in ``running`` while it runs), instead of cancelling it;
    a step that cannot reach the ledger does nothing this time (it acts only after a commit)."""

    async def step(*args: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            result = func(*args)
            if asyncio.iscoroutine(result):
                await result
        except LedgerError as exc:
            outage.failed(exc)
        finally:
            running.discard(task)

    return step


def key_now(config: Config, settings: Settings, name: str) -> str | None:
    """The key ``name`` would get now (the credential file, the variable), or None when there is none."""
    try:
        key = api_key(name, config.providers.settings(name).api_key, settings)
    except ConfigError:
        return None
    return key.value.get_secret_value() if key.value is not None and key.present else None


class Notifier:
    """sd_notify: a no-op outside systemd (no NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._systemd = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None

    def send(self, *lines: str) -> None:
        if self._systemd is not None:
            self._systemd.notify("\n".join(lines))


def build_providers(
    config: Config,
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_answer: Callable[[str], Callable[[int], None]] | None = None,
) -> dict[str, ProviderState]:
    """An adapter for each provider some rule uses; a missing key is a configuration error."""
    states: dict[str, ProviderState] = {}
    for name in sorted({rule.provider for rule in config.rules}):
        settings_block = config.providers.settings(name)
        key = api_key(name, settings_block.api_key, settings)
        if key.value is None or not key.present:
            where = f"UGCWATCHD_{name.upper()}_API_KEY, providers.{name}.api_key, or the credential {name}_api_key"
            raise ConfigError(f"no {name} API key", remedy=f"set {where}")
        counted = on_answer(name) if on_answer else None
        provider = build_provider(name, settings_block, key.value, transport=transport, on_answer=counted)
        states[name] = ProviderState(name, provider, settings_block)
    return states


class Daemon:
    def __init__(
        self,
        config: Config,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        stop_within: float = 20.0,
    ) -> None:
        # One state folder, one daemon: locked before the ledger is opened and anything is watched.
        self.state_lock = StateLock(settings.resolved_state_dir()).acquire()
        try:
            self._setup(config, settings, transport, stop_within)
        except BaseException:
            self.state_lock.release()
            raise

    def _setup(
        self, config: Config, settings: Settings, transport: httpx.AsyncBaseTransport | None, stop_within: float
    ) -> None:
        self.config = config
        self.settings = settings
        self.transport = transport
        self.stop_within = stop_within
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self.ledger = open_ledger(settings, config, create=True)
        self.metrics = Metrics(self.ledger.reopen, lambda: self.providers) if config.metrics_listen else None
        self._answers = self.metrics.answer if self.metrics else None
        self.providers = build_providers(config, settings, transport=transport, on_answer=self._answers)
        self.keys = current_keys(config, settings, list(self.providers))
        # Several hosts on one database: only the items this daemon owns by lease are its to work.
        self.membership = (
            Membership(self.ledger, self.state_lock.state_id, config.lease_ttl) if self.ledger.shared else None
        )
        if self.membership is not None:
            self.membership.join()
        self.lifecycle = Lifecycle(config, self.ledger, self.providers)
        self.ingestion = self._ingestion(config)
        self.scheduler = AsyncIOScheduler()
        self._running: set[asyncio.Task[Any]] = set()
        self._outage = Outage()
        self._tracked = partial(tracked, self._running, self._outage)
        self._providers_changing = asyncio.Lock()  # a reload and a key re-check never rebuild at once
        self._refused = ""  # the reason of the last refused reload, until one succeeds
        # The web console reads the providers' live state through this same dict, and the current rules.
        self.console = Console(self.ledger.reopen, lambda: self.providers, lambda: self.config, settings)

    def _ingestion(self, config: Config) -> Ingestion:
        # Claim files keep two ledgers off one inbox; the daemons of one shared ledger claim it together
        # (each file is then claimed as a row, by the one that records it).
        claims = Claimant.shared(self.ledger.ledger_id()) if self.membership else self.state_lock.claimant()
        return Ingestion(config, self.ledger, claims=claims)

    def status(self) -> str:
        return self.lifecycle.status_line(len(self.ingestion.inboxes))

    def _schedule(self) -> None:
        add = self.scheduler.add_job
        add(self._tracked(self.lifecycle.dispatch), "interval", seconds=0.5, id="dispatch", **JOB_OPTIONS)
        add(self._tracked(self.lifecycle.deliver), "interval", seconds=0.5, id="deliver", **JOB_OPTIONS)
        add(self._tracked(self.lifecycle.answer), "interval", seconds=1, id="approvals", **JOB_OPTIONS)
        for name in self.providers:
            self._schedule_poll(name)
        add(self._tracked(self._report), "interval", seconds=5, id="status", **JOB_OPTIONS)
        if self.membership is not None:
            add(self.membership.renew, "interval", seconds=self.membership.every, id="leases", **JOB_OPTIONS)
        add(self._tracked(self.refresh_languages), "interval", seconds=REFRESH_EVERY, id="languages", **JOB_OPTIONS)
        add(self._tracked(self.recheck_keys), "interval", seconds=KEY_RECHECK, id="keys", **JOB_OPTIONS)
        usec = os.environ.get("WATCHDOG_USEC")
        if usec and usec.isdigit() and os.environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid()):
            # From the loop itself: a stuck loop stops the pings, and systemd restarts us.
            add(
                self.notifier.send,
                "interval",
                seconds=int(usec) / 2e6,
                args=["WATCHDOG=1"],
                id="watchdog",
                **JOB_OPTIONS,
            )

    def _report(self) -> None:
        # A refused reload stays in STATUS= until a reload succeeds: `systemctl status` must show it.
        refused = f"reload refused: {self._refused}; " if self._refused else ""
        self.notifier.send(f"STATUS={refused}{self.status()}")
        self._outage.ok()

    async def reload(self) -> None:
        """SIGHUP: load the rules again and apply them, providers included; or refuse, keeping the old whole."""
        async with self._providers_changing:
            await self._reload()

    async def _reload(self) -> None:
        monotonic_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")
        try:
            config = load_rules(self.config.file)
            changes = provider_changes(
                self.providers,
                self.keys,
                config,
                self.settings,
                transport=self.transport,
                on_answer=self._answers,
                in_flight=lambda name: [j.id for j in self.ledger.jobs_in(JobState.SUBMITTING, provider=name)],
                previous=self.config,
            )
            # Last: a new console address is bound here, so a taken one refuses the reload.
            console = self.console.prepare(config.console_listen)
        except UgcwatchdError as exc:
            log.error("reload refused, the old rules stay: %s", exc)
            self._refused = _ascii(str(exc))
            self.notifier.send("READY=1", f"STATUS=reload refused: {self._refused}")
            return
        self._refused = ""
        await self._apply(changes, config)
        await self.console.apply(console)
        for job_id in ("ingest-tick", "ingest-globs"):
            self.scheduler.remove_job(job_id)
        self.ingestion.stop()
        self.config = config
        self.lifecycle.config = config
        self.ingestion = self._ingestion(config)
        self.ingestion.start(self.scheduler, self._tracked)
        log.info("reloaded %s: %d rules; %s", config.file, len(config.rules), changes.describe())
        # Until the next report (5 s): the STATUS line says that the reload took.
        self.notifier.send("READY=1", f"STATUS=reloaded: {self.status()}")

    async def recheck_keys(self) -> None:
        """Every 5 minutes: a paused provider whose key was replaced (the credential file, the variable) gets
        a new adapter, as a reload would build it; the rules file itself is read only on reload."""
        async with self._providers_changing:
            now = {n: key_now(self.config, self.settings, n) for n, ps in self.providers.items() if ps.paused}
            replaced = [n for n, key in now.items() if key not in (None, self.keys[n])]
            if not replaced:
                return
            try:
                changes = provider_changes(
                    self.providers,
                    self.keys,
                    self.config,
                    self.settings,
                    transport=self.transport,
                    on_answer=self._answers,
                    in_flight=lambda name: [j.id for j in self.ledger.jobs_in(JobState.SUBMITTING, provider=name)],
                )
            except UgcwatchdError as exc:
                log.error("%s: the key was replaced but cannot be used now: %s", ", ".join(replaced), exc)
                return
            await self._apply(changes, self.config)
            for name in replaced:
                if self.providers[name].paused:
                    continue  # the new key was refused too: _start_provider paused it again, and said so
                log.info("%s: the replaced key is accepted; resuming", name)

    async def _apply(self, changes: ProviderChanges, config: Config) -> None:
        """Provider settings in place, new adapters swapped in (the old ones closed), polls rescheduled."""
        for name, block in changes.settings.items():
            self.providers[name].settings = block
        for name, fresh in changes.rebuilt.items():
            old = self.providers.get(name)
            await self._start_provider(fresh)
            self.providers[name] = fresh  # the lifecycle and metrics read this same dict
            if old is not None:
                await old.provider.aclose()
        self.keys = current_keys(config, self.settings, list(self.providers))
        for name in changes.polls:
            self._schedule_poll(name)

    async def _start_provider(self, ps: ProviderState) -> None:
        """Seed its rate windows with the paid requests of the last minutes, and read its credits."""
        if self.membership is not None:  # the account's limits are counted with the other daemons
            ps.provider.share(SharedAccount(self.ledger, ps.name))
        since = time.time() - RECENT
        await ps.provider.remember([j.sent_at for j in self.ledger.sent_since(ps.name, since) if j.sent_at])
        await self.lifecycle.refresh_account(ps)

    async def refresh_languages(self) -> None:
        """The providers' language lists, read again and cached: a language added is accepted at once."""
        await refresh({name: ps.provider for name, ps in self.providers.items()}, self.ledger)

    def _schedule_poll(self, name: str) -> None:
        self.scheduler.add_job(
            self._tracked(self.lifecycle.poll),
            "interval",
            seconds=self.providers[name].settings.poll_every,
            args=[name],
            id=f"poll-{name}",
            replace_existing=True,
            **JOB_OPTIONS,
        )

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))

    async def run(self) -> int:
        self._signals()
        for ps in self.providers.values():
            await self._start_provider(ps)
            if ps.paused:  # only a refused key (401/403) pauses a provider: starting would not help
                await self._close()
                origin = api_key(ps.name, ps.settings.api_key, self.settings).origin
                raise ConfigError(
                    f"the {ps.name} API key from {origin} was refused: {ps.paused}",
                    remedy="put the right key there (ugcwatchd check verifies it), then start ugcwatchd again",
                )
        try:  # a listener's address taken: the same sentence and exit code for both, nothing left open
            if self.metrics is not None and self.config.metrics_listen:
                with map_os_errors(
                    f"serve metrics on {self.config.metrics_listen}", in_use="pick another metrics_listen"
                ):
                    self.metrics.serve(self.config.metrics_listen)
                log.info("metrics on http://%s/metrics", self.config.metrics_listen)
            await self.console.start(self.config.console_listen)
        except UgcwatchdError:
            await self._close()
            raise
        await self.refresh_languages()  # before any folder's options are read
        self.scheduler.start()
        self.ingestion.start(self.scheduler, self._tracked)
        self._schedule()
        log.info("ugcwatchd running: %s", self.status())
        self.notifier.send("READY=1", f"STATUS={self.status()}")
        await self.stopping.wait()
        self.notifier.send("STOPPING=1")
        log.info("stopping: no new work; letting work under way finish")
        await self.console.stop()  # no operator's act starts while the rest winds down
        self.scheduler.pause()
        if self._running:
            await asyncio.wait(list(self._running), timeout=self.stop_within / 2)
        self.scheduler.shutdown(wait=False)
        self.ingestion.stop()
        await self.lifecycle.drain(self.stop_within / 2)
        await self._close()
        return 0

    async def _close(self) -> None:
        await self.console.stop()
        await self.lifecycle.hooks.aclose()
        for ps in self.providers.values():
            await ps.provider.aclose()
        if self.metrics is not None:
            self.metrics.close()
        if self.membership is not None:
            self.membership.leave()
        self.ledger.close()
        self.state_lock.release()
