"""Delivery: results and errors into the outbox, status sidecars kept current, inputs moved last.

Every job is delivered on its own: an error delivering one is recorded on that job, logged once,
and tried again with backoff, while the others go on. Inputs leave the inbox only after every job
of their item has its terminal sidecar.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import ProviderError, StaleTransition
from ..inbox.fingerprint import sha256_if_same
from ..ledger import InputFile, Item, ItemSettings, Job
from ..lifecycle.context import Work
from ..lifecycle.disposition import AUTH_RECHECK, Fail, Pause, Retry, Step, decide, foreseen
from ..states import TERMINAL_JOB_STATES, FailStage, HoldReason, ItemState, JobState
from .files import Anchor, delete_input, ensure_folder, move_input, remove, write_json
from .quotes import QUOTE
from .sidecars import Document, Subject, error_document, result_document, status_document

# Delivery logs under the lifecycle's name, as it always has: operators filter journal lines by it.
log = logging.getLogger("ugcwatchd.lifecycle")
STATUS_STATES = (
    JobState.QUEUED,
    JobState.SUBMITTING,
    JobState.SUBMITTED,
    JobState.REMOTE_DONE,
    JobState.HELD,
    JobState.AMBIGUOUS,
)


@dataclass
class _Trouble:
    """A job whose delivery keeps failing: how often, until when to leave it, and what was said."""

    count: int
    until: float
    message: str


def _intact(inputs: list[InputFile]) -> set[str]:
    """The inputs that are still the files taken, with the content taken (run in a worker thread)."""
    return {
        taken.path
        for taken in inputs
        if sha256_if_same(Path(taken.path), taken.bytes, taken.mtime_ns, taken.inode) == taken.sha256
    }


def _anchor(item: Item, kind: str) -> Anchor | None:
    """Where writing into the item's ``kind`` folder is safe (None for items planned before anchors)."""
    found = item.settings.anchors.get(kind) if item.settings else None
    return Anchor(*found) if found else None


def _ensure(item: Item, kind: str, folder: Path) -> None:
    """``folder`` exists, and is below the very folder the rule resolved: never on a bare mount point."""
    ensure_folder(folder, _anchor(item, kind))


class Delivery:
    """The delivery stage; one instance per daemon."""

    def __init__(self, work: Work, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.work = work
        self.monotonic = monotonic
        self._status_written: dict[int, str] = {}
        self._status_seen: dict[int, tuple[Job, bool]] = {}  # the job (and pause) each sidecar was made from
        self._trouble: dict[int, _Trouble] = {}

    async def __call__(self) -> None:
        """Results and errors into the outbox, status sidecars kept current, inputs moved last."""
        ledger = self.work.ledger
        for job in ledger.jobs_in(JobState.REMOTE_DONE):
            if self.work.due(job):
                await self._isolated(job, self._deliver_result)
        for job in ledger.failed_jobs_of_open_items():
            if not job.detail.sidecar:
                await self._isolated(job, self._write_error)
        for job in ledger.jobs_in(*STATUS_STATES):
            await self._isolated(job, self._write_status)
        for item in ledger.finishable_items():
            jobs = ledger.jobs_of(item.id)
            if jobs:
                # An item's trouble (an archive folder that cannot be written) is kept on its first job.
                await self._isolated(jobs[0], partial(self._finish_item, item, jobs))

    async def _isolated(self, job: Job, step: Callable[[Job], Awaitable[None]]) -> None:
        """Run one job's step; its failure is its own."""
        trouble = self._trouble.get(job.id)
        if trouble is not None and self.monotonic() < trouble.until:
            return
        try:
            await step(job)
        except Exception as exc:
            self._troubled(job, exc)
        else:
            if trouble is not None:
                del self._trouble[job.id]
                log.info("%s: %s: delivered again after %d failed tries", job.provider, job.name, trouble.count)

    def _troubled(self, job: Job, exc: Exception) -> None:
        previous = self._trouble.get(job.id)
        count = previous.count + 1 if previous else 1
        disposition = decide(exc, Step.DELIVER, count)
        wait = disposition.after if isinstance(disposition, Retry) else 60.0
        message = str(exc) or type(exc).__name__
        self._trouble[job.id] = _Trouble(count, self.monotonic() + wait, message)
        if previous is None or previous.message != message:
            # Logged once per kind of trouble, not on every tick.
            exc_info = None if foreseen(exc) else exc
            log.warning(
                "%s: %s: cannot deliver now (%s); tried again", job.provider, job.name, message, exc_info=exc_info
            )
            try:
                self.work.note(self.work.ledger.job(job.id), trouble=message)
            except Exception:  # the ledger itself may be what failed; the log line above says enough
                log.debug("cannot record the trouble of %s", job.name, exc_info=True)

    def _subject(self, job: Job, item: Item | None = None) -> Subject:
        ledger = self.work.ledger
        item = item or ledger.item(job.item_id)
        return Subject(item, job, ledger.inputs_of(item.id), ledger.job_created(job.id))

    def _terminal(self, subject: Subject, kind: str, document: Document) -> None:
        """Write a terminal sidecar, drop the status one, and tell the notify hooks."""
        path = subject.path(kind)
        _ensure(subject.item, "outbox", path.parent)
        write_json(path, document)
        remove(subject.path("status"))
        remove(subject.path(QUOTE))  # an answered or ended job's quote goes with its status sidecar
        self.work.notify(subject.item, path, document)

    # -- results ----------------------------------------------------------------------------------

    async def _deliver_result(self, job: Job) -> None:
        w = self.work
        subject = self._subject(job)
        ps = w.providers.get(job.provider)
        remote = job.detail.remote
        output = None
        if remote is not None and remote.output_url and ps is not None:
            target = subject.outbox / f"{job.name}.mp4"
            _ensure(subject.item, "outbox", target.parent)
            try:
                await ps.provider.fetch(remote, target)
            except ProviderError as exc:
                self._download_failed(job, exc)
                return
            output = target.name
        self._terminal(subject, "result", result_document(subject, output, w.clock()))
        detail = job.detail.but(sidecar="result", output=output, trouble=None)
        w.ledger.move_job(job.id, JobState.DELIVERED, expect=JobState.REMOTE_DONE, detail=detail)
        log.info("%s: delivered %s%s", job.provider, job.name, f" ({output})" if output else "")

    def _download_failed(self, job: Job, exc: ProviderError) -> None:
        tries = job.detail.download_tries + 1
        disposition = decide(exc, Step.DOWNLOAD, tries)
        if isinstance(disposition, Fail):
            self.work.fail(
                job, FailStage.DOWNLOAD, disposition.code, str(exc), exc=exc, retryable=disposition.retryable
            )
            return
        if isinstance(disposition, Pause) and (ps := self.work.providers.get(job.provider)) is not None:
            self.work.pause(ps, str(exc))
        # A paused provider's downloads wait like a retry: the next try comes after the key is re-checked.
        wait = disposition.after if isinstance(disposition, Retry) else AUTH_RECHECK
        level = logging.WARNING if tries == 1 else logging.DEBUG  # said once; the status sidecar counts the rest
        log.log(level, "%s: %s: the download failed (%s); it is tried again as a download", job.provider, job.name, exc)
        self.work.note(job, download_tries=tries, retry_at=self.work.clock() + wait)

    # -- errors and status ------------------------------------------------------------------------

    async def _write_error(self, job: Job) -> None:
        subject = self._subject(job)
        self._terminal(subject, "error", error_document(subject, self.work.clock()))
        self.work.note(job, sidecar="error", trouble=None)

    async def _write_status(self, job: Job) -> None:
        ps = self.work.providers.get(job.provider)
        paused = bool(ps and ps.paused)
        if self._status_seen.get(job.id) == (job, paused):
            return  # the same job, the same pause: its sidecar would say what it says
        subject = self._subject(job)
        document = status_document(subject, paused, self.work.clock())
        fingerprint = repr({k: v for k, v in document.items() if k != "updated_at"})
        if self._status_written.get(job.id) != fingerprint:
            path = subject.path("status")
            _ensure(subject.item, "outbox", path.parent)
            write_json(path, document)
            self._status_written[job.id] = fingerprint
            if job.held != HoldReason.APPROVAL:
                remove(subject.path(QUOTE))  # approved: the status sidecar now says what happens instead
        self._status_seen[job.id] = (job, paused)

    # -- closing items ----------------------------------------------------------------------------

    async def _finish_item(self, item: Item, jobs: list[Job], _first: Job) -> None:
        if not all(j.state in TERMINAL_JOB_STATES and j.detail.sidecar for j in jobs):
            return
        ok = all(j.state == JobState.DELIVERED for j in jobs)
        settings = item.settings or self._settings_of_rule(item)
        if settings is not None:
            deleting = (settings.on_success if ok else settings.on_failure) == "delete"
            # A deletion cannot be undone: the content itself must still be the one taken, not merely its
            # size and times (a file rewritten in place with its mtime restored is new work, kept).
            inputs = self.work.ledger.inputs_of(item.id)
            intact = await asyncio.to_thread(_intact, inputs) if deleting else None
            self._dispose(item, settings, ok, intact)
        try:
            self.work.ledger.move_item(item.id, ItemState.DELIVERED if ok else ItemState.FAILED)
        except StaleTransition:
            return
        for job in jobs:
            self._status_written.pop(job.id, None)
            self._status_seen.pop(job.id, None)
        log.log(
            logging.INFO if ok else logging.WARNING,
            "rule %s: %s %s",
            item.rule,
            "delivered" if ok else "failed",
            item.key,
        )

    def _settings_of_rule(self, item: Item) -> ItemSettings | None:
        """For items planned before they carried their settings: the rule's, if it still exists."""
        rule = self.work.rule(item.rule)
        if rule is None:
            return None
        inbox = rule.inbox_at(Path(item.inbox))
        b = rule.behaviour
        return ItemSettings(b.on_success, b.on_failure, str(inbox.archive_dir), str(inbox.failed_dir))

    def _dispose(self, item: Item, settings: ItemSettings, ok: bool, intact: set[str] | None = None) -> None:
        """Inputs leave the inbox only now, every sidecar written, and the ledger says where each went."""
        action = settings.on_success if ok else settings.on_failure
        for taken in self.work.ledger.inputs_of(item.id):
            source = Path(taken.path)
            try:
                st = source.stat()
            except FileNotFoundError:
                continue  # already dealt with before a crash, or removed by a person
            if (st.st_size, st.st_mtime_ns) != (taken.bytes, taken.mtime_ns) or taken.inode not in (None, st.st_ino):
                # Another file now stands there: it is a new drop, and stays for its own turn.
                log.warning("rule %s: %s changed since it was taken; it is left where it is", item.rule, source)
                continue
            if action in ("archive", "move"):
                kind = "archive" if action == "archive" else "failed"
                folder = settings.archive_dir if kind == "archive" else settings.failed_dir
                target = move_input(source, Path(folder), taken.name, _anchor(item, kind))
                self.work.ledger.park_input(item.id, taken.path, str(target) if target else None)
            elif action == "delete":
                if intact is not None and taken.path not in intact:
                    log.warning("rule %s: %s has new content since it was taken; it is not deleted", item.rule, source)
                    continue
                delete_input(source)
