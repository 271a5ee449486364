"""Watching every inbox of every rule: globs re-expanded, watchdog observers set up, ticks and rescans scheduled.

Each concrete inbox gets its own :class:`~ugcwatchd.inbox.ingest.InboxIngest`; events from watchdog's thread
only make it look again sooner, and an inbox that cannot be watched (inotify limits, network shares) is polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..errors import LedgerError
from ..ledger import Ledger
from ..owner import CHECK_EVERY, Claimant, InboxClaim
from ..rules import Config, Inbox
from ..states import OPEN_ITEM_STATES
from .mounts import filesystem_of, mount_table, needs_polling

if TYPE_CHECKING:
    from .ingest import InboxIngest

# Ingestion's lines keep the logger name they have always had: journal filters and tests name it.
log = logging.getLogger("ugcwatchd.inbox.ingest")


class _ShutdownNoise(logging.Filter):
    """watchdog logs an ERROR when an emitter is polled once more after its inotify handle closed at
    shutdown (watchdog PR #963): harmless, and alarming in a journal. Only that line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_ShutdownNoise())


class _Events(FileSystemEventHandler):
    """watchdog's thread hands each event's paths to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, target: InboxIngest) -> None:
        self.loop = loop
        self.target = target

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path:
                try:
                    self.loop.call_soon_threadsafe(self.target.on_event, os.fsdecode(path))
                except RuntimeError:
                    return  # the loop is closing: shutdown is under way


class Ingestion:
    """Every inbox of every rule: globs re-expanded, watches set up, ticks and rescans scheduled.

    With ``claims`` (the daemon passes itself; off by default), each inbox gets a claim file that is
    kept fresh, and files are taken only from inboxes this daemon holds (see ``ugcwatchd.owner``).
    """

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        *,
        clock: Callable[[], float] = time.monotonic,
        claims: Claimant | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.claimant = claims
        self.inboxes: dict[tuple[int, Path], InboxIngest] = {}
        self._said: dict[Path, str] = {}  # the trouble last logged per inbox
        self.claims: dict[Path, InboxClaim] = {}  # one per folder, however many rules watch it
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._claims_job: object | None = None  # the scheduled claims step, to remove it at stop if still ours

    def _mode_polls(self, inbox: Inbox, table: list[tuple[str, str]]) -> bool:
        mode = inbox.rule.behaviour.watch_mode
        if mode == "auto":
            fstype = filesystem_of(inbox.path, table) if inbox.path.exists() else None
            return needs_polling(fstype)
        return mode == "poll"

    def refresh(self) -> None:
        """Expand the inbox globs again: new matches get watched; vanished ones pause themselves."""
        # Imported here: ingest re-exports this module's Ingestion, so a top-level import would be circular.
        from .ingest import InboxIngest

        table = mount_table()
        for rule in self.config.rules:
            for inbox in rule.inboxes():
                key = (rule.index, inbox.path)
                if key in self.inboxes:
                    continue
                polls = self._mode_polls(inbox, table)
                ingest = InboxIngest(inbox, self.ledger, poll=polls, clock=self.clock, claim=self._claim(inbox.path))
                self.inboxes[key] = ingest
                if not ingest.poll:
                    self._watch(ingest)
                log.info("rule %s: watching %s (%s)", rule.name, inbox.path, "polling" if ingest.poll else "events")

    def _claim(self, folder: Path) -> InboxClaim | None:
        if self.claimant is None:
            return None
        claim = self.claims.get(folder)
        if claim is None:
            claim = self.claims[folder] = InboxClaim(folder, self.claimant)
            claim.refresh()  # claimed at once; files are taken once it is confirmed, a moment later
        return claim

    async def refresh_claims(self) -> None:
        """Keep our claims fresh, take free or stale ones, and notice other daemons' claims."""
        claims = list(self.claims.values())

        def refresh_all() -> None:  # one worker thread, so hashing and scans keep the others
            for claim in claims:
                claim.refresh()

        await asyncio.to_thread(refresh_all)

    def _watch(self, ingest: InboxIngest) -> None:
        if self._loop is None or not ingest.inbox.path.is_dir():
            ingest.poll, ingest.scan_every = (
                True,
                min(ingest.scan_every, max(1.0, ingest.rule.behaviour.stable_after / 2)),
            )
            return
        if self._observer is None:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        try:
            recursive = ingest.scanner.depth != 1
            self._observer.schedule(_Events(self._loop, ingest), str(ingest.inbox.path), recursive=recursive)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                log.warning(
                    "cannot watch %s: the inotify limit is reached; polling it instead. Raise the limit with "
                    "`sysctl fs.inotify.max_user_watches=524288` (and max_user_instances) to get events back",
                    ingest.inbox.path,
                )
            else:
                log.warning("cannot watch %s (%s); polling it instead", ingest.inbox.path, exc.strerror)
            ingest.poll = True
            ingest.scan_every = min(
                ingest.rule.behaviour.rescan_every, max(1.0, ingest.rule.behaviour.stable_after / 2)
            )

    async def tick(self) -> int:
        recorded = 0
        for ingest in list(self.inboxes.values()):
            try:
                recorded += await ingest.tick()
                self._said.pop(ingest.inbox.path, None)
            except LedgerError:
                raise  # the ledger out of reach: the daemon says so once, for every step
            except Exception as exc:
                # One inbox's trouble must never stop the others, nor the daemon; said once (with its
                # trace) until it changes, not on every tick (a full disk would flood the journal).
                what = f"{type(exc).__name__}: {exc}"
                if self._said.get(ingest.inbox.path) != what:
                    self._said[ingest.inbox.path] = what
                    log.exception(
                        "rule %s: ingestion of %s failed; it is tried again", ingest.rule.name, ingest.inbox.path
                    )
        return recorded

    def tick_every(self) -> float:
        shortest = min((r.behaviour.stable_after for r in self.config.rules), default=5.0)
        return max(0.1, min(1.0, shortest / 4))

    def jobs(self) -> list[tuple[Callable[[], Any], float, str]]:
        """The periodic work to schedule: (function, every seconds, id)."""
        rescan = min((r.behaviour.rescan_every for r in self.config.rules), default=60.0)
        claims = [(self.refresh_claims, CHECK_EVERY, "ingest-claims")] if self.claimant is not None else []
        return [(self.tick, self.tick_every(), "ingest-tick"), (self.refresh, rescan, "ingest-globs"), *claims]

    def start(
        self, scheduler: AsyncIOScheduler, wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None
    ) -> None:
        """Watch the inboxes and schedule ingestion on the daemon's scheduler (call within the loop)."""
        self._loop = asyncio.get_running_loop()
        self._scheduler = scheduler
        self.refresh()
        options: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
        for func, every, job_id in self.jobs():
            step = wrap(func) if wrap else func
            # replace_existing: a reload may start the next Ingestion before this one's jobs are gone.
            scheduler.add_job(step, "interval", seconds=every, id=job_id, replace_existing=True, **options)
            if job_id == "ingest-claims":
                self._claims_job = step

    def stop(self) -> None:
        """Stop watching and delete our claims (the claims job is removed first, if it is still ours)."""
        if self._scheduler is not None and self._claims_job is not None:
            job = self._scheduler.get_job("ingest-claims")
            if job is not None and job.func is self._claims_job:
                with contextlib.suppress(JobLookupError):
                    job.remove()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        # An inbox with work still open keeps its claim: this daemon (restarting) takes it back at once,
        # and another one waits for it to go stale instead of taking files whose jobs are under way here.
        busy = {item.inbox for item in self.ledger.items_in(*OPEN_ITEM_STATES)}
        for folder, claim in self.claims.items():
            if str(folder) not in busy:
                claim.release()
