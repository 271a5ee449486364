"""Ingestion: from files in inboxes to planned items in the ledger.

Ingestion never calls a provider. Each concrete inbox is scanned (fully every ``rescan_every``, or
often in poll mode), its settling files re-observed on every tick, each stable file examined and
fingerprinted once, grouped by its rule, and recorded: a planned item, or an item-level failure
(invalid, unpaired, duplicate) that delivery will turn into error sidecars.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import posixpath
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..ledger import InputFile, Ledger, PlannedJob
from ..rules import Config, FaceDubAction, Inbox
from .fingerprint import sha256_of
from .group import Candidate, Plan, plan_dublab, plan_facedub_batch, plan_facedub_stems
from .media import InvalidMedia, inspect
from .mounts import filesystem_of, mount_table, needs_polling
from .scan import Scanner, Seen
from .stability import Stability

log = logging.getLogger(__name__)


class _ShutdownNoise(logging.Filter):
    """watchdog logs an ERROR when an emitter is polled once more after its inotify handle closed at
    shutdown (watchdog PR #963): harmless, and alarming in a journal. Only that line is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_ShutdownNoise())
OUTPUT_SUFFIXES = (".result.json", ".error.json", ".status.json", ".mp4")
_GONE = {errno.ENOENT, errno.ENOTDIR}


def _folder_state(path: Path) -> str | None:
    """None when ``path`` is a usable folder, else why not."""
    try:
        if not path.is_dir():
            return f"{path} is missing" if not path.exists() else f"{path} is not a folder"
        os.listdir(path)
    except OSError as exc:
        return f"{path} is {'missing' if exc.errno in _GONE else 'unreachable'} ({exc.strerror})"
    return None


class InboxIngest:
    """Ingestion of one concrete inbox of one rule."""

    def __init__(
        self, inbox: Inbox, ledger: Ledger, *, poll: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.inbox = inbox
        self.rule = inbox.rule
        self.ledger = ledger
        self.clock = clock
        behaviour = self.rule.behaviour
        action = self.rule.action
        self.batches = isinstance(action, FaceDubAction) and action.pair_by == "folder"
        depth = None if behaviour.recursive else (2 if self.batches else 1)
        self.scanner = Scanner(
            inbox.path,
            ignore=behaviour.ignore,
            match=self.rule.match,
            depth=depth,
            exclude=[inbox.outbox, inbox.archive_dir, inbox.failed_dir],
        )
        self.stability = Stability(behaviour.stable_after)
        self.candidates: dict[str, Candidate] = {}
        self.poll = poll
        # Polling is the only way to learn of changes there: look often, but not more than needed.
        self.scan_every = (
            min(behaviour.rescan_every, max(1.0, behaviour.stable_after / 2)) if poll else behaviour.rescan_every
        )
        self.paused: str | None = None
        self._next_scan = 0.0
        self._root_files_reported: set[str] = set()
        self._same_as_before: dict[str, tuple[int, int, int]] = {}  # kept inputs, merely touched

    # -- availability ---------------------------------------------------------------------------

    def _check_available(self) -> str | None:
        reason = _folder_state(self.inbox.path)
        if reason is not None:
            return f"inbox {reason}"
        outbox = self.inbox.outbox
        if not outbox.exists():
            parent = outbox.parent
            try:
                same_device = parent.is_dir() and os.stat(parent).st_dev == os.stat(self.inbox.path).st_dev
            except OSError:
                same_device = False
            if not same_device:
                # Never write onto a bare mount point: the share the outbox lives on may be offline.
                return f"outbox {outbox} is missing (is its share mounted?)"
            outbox.mkdir(exist_ok=True)
            log.info("rule %s: created the outbox %s", self.rule.name, outbox)
        reason = _folder_state(outbox)
        return f"outbox {reason}" if reason else None

    def _set_paused(self, reason: str | None) -> None:
        if reason and reason != self.paused:
            log.warning(
                "rule %s: paused: %s; nothing fails, it resumes when the folder returns", self.rule.name, reason
            )
        elif self.paused and not reason:
            log.info("rule %s: resumed: %s is back", self.rule.name, self.inbox.path)
            self._next_scan = 0.0
        self.paused = reason

    # -- observing ------------------------------------------------------------------------------

    def on_event(self, path: str) -> None:
        """A watchdog event: look again at that file soon (events never make a file stable)."""
        try:
            rel = Path(path).relative_to(self.inbox.path).as_posix()
        except ValueError:
            return
        seen = self.scanner.stat_one(rel)
        if seen is None:
            if os.path.isdir(path):
                self._next_scan = 0.0  # a new folder: a scan finds what is in it
            else:
                self._forget(rel)
        elif not self.scanner.ignored(Path(rel).name) and self.scanner.wanted(Path(rel).name):
            self.stability.observe(seen, self.clock())

    def _forget(self, rel: str) -> None:
        self.stability.forget(rel)
        self.candidates.pop(rel, None)

    async def _observe(self, now: float) -> None:
        if now >= self._next_scan:
            found = await asyncio.to_thread(self.scanner.scan)
            for rel in set(self.stability.known()) - set(found):
                self._forget(rel)
            for seen in found.values():
                self.stability.observe(seen, now)
            self._next_scan = now + self.scan_every
        else:
            for rel in self.stability.unsettled():
                again = self.scanner.stat_one(rel)
                if again is None:
                    self._forget(rel)
                else:
                    self.stability.observe(again, now)

    # -- examining ------------------------------------------------------------------------------

    async def _examine_stable(self, now: float) -> None:
        for rel in self.stability.known():
            seen = self.stability.seen(rel)
            if seen is None or not self.stability.is_stable(rel):
                self.candidates.pop(rel, None)
                continue
            known = self.candidates.get(rel)
            if known is not None and known.seen.signature == seen.signature:
                continue
            if self.batches and "/" not in rel:
                if rel not in self._root_files_reported:
                    self._root_files_reported.add(rel)
                    log.warning("rule %s: %s is not in a batch folder; it is left alone", self.rule.name, seen.path)
                continue
            if self._same_as_before.get(rel) == seen.signature:
                continue
            if self.ledger.open_item_with_input(seen.file) is not None:
                continue  # being processed: touching it changes nothing
            try:
                candidate = await asyncio.to_thread(self._examine, seen, now)
            except OSError:
                self._forget(rel)  # gone meanwhile (moved away by delivery, or by a person)
                continue
            if self._kept_and_unchanged(seen.file, candidate.sha256):
                self._same_as_before[rel] = seen.signature
                continue
            self.candidates[rel] = candidate

    def _kept_and_unchanged(self, path: str, sha256: str) -> bool:
        """The same content at the same path, left in place by ``keep`` after its item finished.

        An input that was moved away (archive, delete, move) and comes back is a new drop: a retry
        after a failure (DESIGN §5), or a duplicate of a delivered result.
        """
        last = self.ledger.last_use_of(path)
        if last is None or last[1] != sha256:
            return False
        item, _ = last
        kept = {
            "delivered": self.rule.behaviour.on_success == "keep",
            "failed": self.rule.behaviour.on_failure == "keep",
        }
        return kept.get(item.state, False)

    @staticmethod
    def _examine(seen: Seen, now: float) -> Candidate:
        sha = sha256_of(seen.path)
        try:
            return Candidate(seen, sha, inspect(seen.path), None, now)
        except InvalidMedia as exc:
            return Candidate(seen, sha, None, str(exc), now)

    # -- planning -------------------------------------------------------------------------------

    def _plans(self, now: float) -> list[Plan]:
        settling = {rel for rel in self.stability.unsettled()}
        if isinstance(self.rule.action, FaceDubAction):
            if not self.batches:
                return plan_facedub_stems(self.rule, self.candidates, settling, now)
            return self._batch_plans(now, settling)
        return plan_dublab(self.rule, self.candidates)

    def _batch_plans(self, now: float, settling: set[str]) -> list[Plan]:
        action = self.rule.action
        assert isinstance(action, FaceDubAction)
        by_folder: dict[str, list[Candidate]] = defaultdict(list)
        for rel, c in self.candidates.items():
            by_folder[rel.split("/", 1)[0]].append(c)
        plans: list[Plan] = []
        for folder, members in by_folder.items():
            if any(rel.startswith(folder + "/") for rel in settling):
                continue
            if action.done_marker:
                if not (self.inbox.path / folder / action.done_marker).is_file():
                    continue
            elif now - self.stability.changed_since(folder + "/") < self.rule.behaviour.stable_after:
                continue
            plans += plan_facedub_batch(
                self.rule, folder, [m for m in members if posixpath.basename(m.seen.rel) != action.done_marker]
            )
        return plans

    def _unique_names(self, names: list[str]) -> list[str]:
        """The job names, or ``{stem}-2.{tag}`` (then -3, …) when another input already has one."""
        taken = self.ledger.job_names_in(str(self.inbox.outbox))
        for n in range(1, 1000):
            tried = (
                names if n == 1 else [f"{stem}-{n}.{tag}" for stem, _, tag in (name.rpartition(".") for name in names)]
            )
            if not any(t in taken or self._on_disk(t) for t in tried):
                return tried
        raise RuntimeError(f"no free job name for {names[0]} in {self.inbox.outbox}")

    def _on_disk(self, name: str) -> bool:
        return any((self.inbox.outbox / f"{name}{suffix}").exists() for suffix in OUTPUT_SUFFIXES)

    def _dedupe_key(self, params: dict[str, Any], shas: list[tuple[str, str]]) -> str:
        settings = {k: v for k, v in params.items() if k not in ("photo", "video")}
        blob = json.dumps(
            {"rule": self.rule.name, "provider": self.rule.provider, "params": settings, "inputs": shas}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _record(self, plan: Plan) -> None:
        by_rel = {c.seen.rel: c for _, c in plan.inputs}
        names = self._unique_names([name for name, _ in plan.jobs])
        jobs = []
        for name, (_, params) in zip(names, plan.jobs, strict=True):
            if "photo" in params:
                shas = [("photo", by_rel[params["photo"]].sha256), ("video", by_rel[params["video"]].sha256)]
            else:
                shas = sorted((role, c.sha256) for role, c in plan.inputs)
            key = self._dedupe_key(params, shas)
            jobs.append(self._job(name, key, params, plan))
        inputs = [_input_file(role, c) for role, c in plan.inputs]
        failed = all(j.state == "failed" for j in jobs)
        reason = plan.failure.code if plan.failure else ("duplicate" if failed else None)
        # Even a refused item stays open until delivery has written its error sidecars and moved its
        # inputs away (DESIGN §8); until then its files must not be taken again.
        self.ledger.add_item(
            rule=self.rule.name,
            provider=self.rule.provider,
            inbox=str(self.inbox.path),
            outbox=str(self.inbox.outbox),
            key=plan.key,
            inputs=inputs,
            jobs=jobs,
            reason=reason,
        )
        verb = f"failed ({reason})" if failed else "planned"
        log.info("rule %s: %s %s: %s", self.rule.name, verb, plan.key, ", ".join(j.name for j in jobs))

    def _job(self, name: str, key: str, params: dict[str, Any], plan: Plan) -> PlannedJob:
        if plan.failure is not None:
            detail = {
                "stage": plan.failure.stage,
                "code": plan.failure.code,
                "message": plan.failure.message,
                "retryable": False,
            }
            return PlannedJob(name, key, params, state="failed", detail=detail)
        earlier = None if self.rule.behaviour.reprocess_duplicates else self.ledger.delivered_job(key)
        if earlier is None:
            return PlannedJob(name, key, params)
        earlier_outbox = Path(self.ledger.item(earlier.item_id).outbox)
        sidecar = earlier_outbox / f"{earlier.name}.result.json"
        detail = {
            "stage": "duplicate",
            "code": "duplicate",
            "message": f"this content was already processed under rule {self.rule.name!r}: see {sidecar}",
            "earlier_job": earlier.name,
            "earlier_sidecar": str(sidecar),
            "earlier_remote_id": earlier.remote_id,
            "retryable": False,
        }
        return PlannedJob(name, key, params, state="failed", detail=detail)

    # -- the tick -------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Observe, examine, plan and record; the number of items recorded."""
        self._set_paused(self._check_available())
        if self.paused:
            return 0
        now = self.clock()
        try:
            await self._observe(now)
        except OSError as exc:
            self._set_paused(f"inbox {self.inbox.path} is unreachable ({exc.strerror})")
            return 0
        await self._examine_stable(now)
        plans = self._plans(now)
        for plan in plans:
            self._record(plan)
            for rel in plan.consumed:
                self.candidates.pop(rel, None)
        return len(plans)


def _input_file(role: str, c: Candidate) -> InputFile:
    mime, seconds = (c.info.mime, c.info.seconds) if c.info else (None, None)
    return InputFile(role, c.seen.file, c.seen.rel, c.sha256, c.seen.size, c.seen.mtime_ns, mime, seconds)


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
    """Every inbox of every rule: globs re-expanded, watches set up, ticks and rescans scheduled."""

    def __init__(self, config: Config, ledger: Ledger, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.ledger = ledger
        self.clock = clock
        self.inboxes: dict[tuple[int, Path], InboxIngest] = {}
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _mode_polls(self, inbox: Inbox, table: list[tuple[str, str]]) -> bool:
        mode = inbox.rule.behaviour.watch_mode
        if mode == "auto":
            fstype = filesystem_of(inbox.path, table) if inbox.path.exists() else None
            return needs_polling(fstype)
        return mode == "poll"

    def refresh(self) -> None:
        """Expand the inbox globs again: new matches get watched; vanished ones pause themselves."""
        table = mount_table()
        for rule in self.config.rules:
            for inbox in rule.inboxes():
                key = (rule.index, inbox.path)
                if key in self.inboxes:
                    continue
                ingest = InboxIngest(inbox, self.ledger, poll=self._mode_polls(inbox, table), clock=self.clock)
                self.inboxes[key] = ingest
                if not ingest.poll:
                    self._watch(ingest)
                log.info("rule %s: watching %s (%s)", rule.name, inbox.path, "polling" if ingest.poll else "events")

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
            except Exception:
                # One inbox's trouble must never stop the others, nor the daemon.
                log.exception("rule %s: ingestion of %s failed; it is tried again", ingest.rule.name, ingest.inbox.path)
        return recorded

    def tick_every(self) -> float:
        shortest = min((r.behaviour.stable_after for r in self.config.rules), default=5.0)
        return max(0.1, min(1.0, shortest / 4))

    def jobs(self) -> list[tuple[Callable[[], Any], float, str]]:
        """The periodic work to schedule: (function, every seconds, id)."""
        rescan = min((r.behaviour.rescan_every for r in self.config.rules), default=60.0)
        return [(self.tick, self.tick_every(), "ingest-tick"), (self.refresh, rescan, "ingest-globs")]

    def start(
        self, scheduler: AsyncIOScheduler, wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None
    ) -> None:
        """Watch the inboxes and schedule ingestion on the daemon's scheduler (call within the loop)."""
        self._loop = asyncio.get_running_loop()
        self.refresh()
        options: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 60}
        for func, every, job_id in self.jobs():
            scheduler.add_job(wrap(func) if wrap else func, "interval", seconds=every, id=job_id, **options)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
