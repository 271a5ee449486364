"""Ingestion: from files in inboxes to planned items in the ledger.

Ingestion never calls a provider. Each concrete inbox is scanned (fully every ``rescan_every``, or
often in poll mode), its settling files re-observed on every tick, each stable file examined and
fingerprinted once, grouped by its rule, and recorded: a planned item, or an item-level failure
(invalid, unpaired, duplicate) that delivery will turn into error sidecars.

This module holds the ingestion of one inbox; planning and recording are in ``record``, and the
watching and scheduling of every inbox (:class:`Ingestion`, re-exported here) in ``watch``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InputTaken, LedgerError
from ..ledger import Ledger
from ..owner import InboxClaim
from ..rules import DubLabAction, FaceDubAction, Inbox
from ..states import ItemState
from .fingerprint import sha256_of
from .group import Candidate, Plan
from .media import InvalidMedia, inspect
from .mounts import creatable_below
from .record import Recorder, plan_inbox
from .scan import Scanner, Seen
from .stability import Stability
from .watch import Ingestion

__all__ = ["InboxIngest", "Ingestion"]

log = logging.getLogger(__name__)
_GONE = {errno.ENOENT, errno.ENOTDIR}
_FOLDER_PAUSE = "nothing fails, it resumes when the folder returns"
_CLAIM_PAUSE = "nothing is taken from it"


def _folder_state(path: Path) -> str | None:
    """None when ``path`` is a usable folder, else why not."""
    try:
        if path.is_symlink():
            # Replaced by a link (to anywhere): taking files there would move someone else's files.
            return f"{path} is now a symbolic link, not the folder the rule watches"
        if not path.is_dir():
            return f"{path} is missing" if not path.exists() else f"{path} is not a folder"
        os.listdir(path)
    except OSError as exc:
        return f"{path} is {'missing' if exc.errno in _GONE else 'unreachable'} ({exc.strerror})"
    return None


class Replaced(Exception):
    """The file at a path is not the one that was observed there."""


def _same_file(seen: Seen) -> None:
    """Raise :class:`Replaced` unless the file at ``seen``'s path is the one observed (OSError if gone)."""
    st = os.lstat(seen.file)
    if (st.st_size, st.st_mtime_ns, st.st_ino) != seen.signature:
        raise Replaced(seen.rel)


class InboxIngest:
    """Ingestion of one concrete inbox of one rule.

    With a ``claim`` (the daemon's ingestion passes one; ``plan`` does not), files are taken only while
    this daemon holds the inbox's claim, and a claim held by another daemon pauses the rule.
    """

    def __init__(
        self,
        inbox: Inbox,
        ledger: Ledger,
        *,
        poll: bool,
        clock: Callable[[], float] = time.monotonic,
        claim: InboxClaim | None = None,
        dry_run: bool = False,
    ) -> None:
        self.inbox = inbox
        self.claim = claim
        # `plan`: never create a folder (an outbox made by root would lock out the service).
        self.dry_run = dry_run
        self._troubled: set[str] = set()  # plans whose trouble was logged: said once, not every tick
        self.rule = inbox.rule
        self.ledger = ledger
        self.clock = clock
        behaviour = self.rule.behaviour
        action = self.rule.action
        self.batches = isinstance(action, FaceDubAction) and action.pair_by == "folder"
        # Batch folders and option folders (`de+es@studio`) are read one level down even without `recursive`.
        folders = self.batches or (isinstance(action, DubLabAction) and action.options_from_folders)
        depth = None if behaviour.recursive else (2 if folders else 1)
        self.scanner = Scanner(
            inbox.path,
            ignore=behaviour.ignore,
            match=self.rule.match,
            depth=depth,
            exclude=[inbox.outbox, inbox.archive_dir, inbox.failed_dir],
        )
        self.stability = Stability(behaviour.stable_after)
        self.candidates: dict[str, Candidate] = {}
        self.recorder = Recorder(inbox, ledger)
        self.poll = poll
        # Polling is the only way to learn of changes there: look often, but not more than needed.
        self.scan_every = (
            min(behaviour.rescan_every, max(1.0, behaviour.stable_after / 2)) if poll else behaviour.rescan_every
        )
        self.paused: str | None = None
        self._claim_reason: str | None = None  # why the claim keeps us out, as last checked
        self._paused_by_claim = False
        self._next_scan = 0.0
        self._root_files_reported: set[str] = set()
        self._same_as_before: dict[str, tuple[int, int, int]] = {}  # kept inputs, merely touched

    # -- availability ---------------------------------------------------------------------------

    def _check_available(self) -> str | None:
        self._claim_reason = None
        reason = _folder_state(self.inbox.path)
        if reason is not None:
            return f"inbox {reason}"
        outbox = self.inbox.outbox
        if not outbox.exists():
            if creatable_below(outbox, self.inbox.path) is None:
                # Never write onto a bare mount point: the share the outbox lives on may be offline.
                return f"outbox {outbox} is missing (is its share mounted?)"
            if self.dry_run:
                return None  # the daemon would create it; a dry run only says what would happen
            outbox.mkdir(parents=True, exist_ok=True)
            log.info("rule %s: created the outbox %s", self.rule.name, outbox)
        reason = _folder_state(outbox)
        if reason:
            return f"outbox {reason}"
        # One inbox, one owner: another daemon's fresh claim is one more reason to leave it alone.
        self._claim_reason = self.claim.check() if self.claim is not None else None
        return self._claim_reason

    def _set_paused(self, reason: str | None) -> None:
        by_claim = reason is not None and reason == self._claim_reason
        if reason and reason != self.paused:
            log.error("rule %s: paused: %s; %s", self.rule.name, reason, _CLAIM_PAUSE if by_claim else _FOLDER_PAUSE)
        elif self.paused and not reason:
            back = "is ours now" if self._paused_by_claim else "is back"
            log.info("rule %s: resumed: %s %s", self.rule.name, self.inbox.path, back)
            self._next_scan = 0.0
        self.paused = reason
        self._paused_by_claim = by_claim

    def _ours(self) -> bool:
        """Files may be taken now: no claim is kept (``plan``), or ours is held and confirmed."""
        return self.claim is None or self.claim.held

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
            except Replaced:
                self._look_again(rel)  # another file now, or still being written: it waits its own turn
                continue
            if self._kept_and_unchanged(seen.file, candidate.sha256):
                self._same_as_before[rel] = seen.signature
                continue
            self.candidates[rel] = candidate

    def _kept_and_unchanged(self, path: str, sha256: str) -> bool:
        """The same content at the same path, left in place by ``keep`` after its item finished.

        An input that was moved away (archive, delete, move) and comes back is a new drop: a retry
        after a failure, or a duplicate of a delivered result.
        """
        last = self.ledger.last_use_of(path)
        if last is None or last[1] != sha256:
            return False
        item, _ = last
        kept: dict[str, bool] = {
            ItemState.DELIVERED: self.rule.behaviour.on_success == "keep",
            ItemState.FAILED: self.rule.behaviour.on_failure == "keep",
        }
        return kept.get(item.state, False)

    @staticmethod
    def _examine(seen: Seen, now: float) -> Candidate:
        """Hash and inspect the file, which must be the one observed before and after: an observation
        that went stale (a file moved out and another dropped at its path) never judges a new file."""
        _same_file(seen)
        sha = sha256_of(seen.path)
        try:
            candidate = Candidate(seen, sha, inspect(seen.path), None, now)
        except InvalidMedia as exc:
            candidate = Candidate(seen, sha, None, str(exc), now)
        _same_file(seen)
        return candidate

    def _look_again(self, rel: str) -> None:
        """Replace a stale observation by a fresh one: a changed file starts its stable_after anew."""
        self.candidates.pop(rel, None)
        fresh = self.scanner.stat_one(rel)
        if fresh is None:
            self._forget(rel)
        else:
            self.stability.observe(fresh, self.clock())

    def _still_as_examined(self, plan: Plan) -> bool:
        """Right before recording: every input of ``plan`` is still the file that was examined."""
        stale = [c.seen.rel for _, c in plan.inputs if self.scanner.stat_one(c.seen.rel) != c.seen]
        for rel in stale:
            self._look_again(rel)
        return not stale

    # -- the tick -------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Observe, examine, plan and record; the number of items recorded."""
        self._set_paused(self._check_available())
        if self.paused or not self._ours():
            return 0
        now = self.clock()
        try:
            await self._observe(now)
        except OSError as exc:
            self._set_paused(f"inbox {self.inbox.path} is unreachable ({exc.strerror})")
            return 0
        await self._examine_stable(now)
        plans = plan_inbox(self.inbox, self.candidates, self.stability, batches=self.batches, now=now)
        recorded = 0
        for plan in plans:
            try:
                if not self._still_as_examined(plan) or not self.recorder.record(plan):
                    continue
            except InputTaken as taken:
                # Another daemon on the same share recorded these files first: they are its to work.
                log.info("rule %s: %s: %s", self.rule.name, plan.key, taken)
                for rel in plan.consumed:
                    self.candidates.pop(rel, None)
                continue
            except LedgerError:
                raise  # nothing can be recorded now: the daemon says so once
            except Exception as exc:
                # One plan's trouble (an outbox path the filesystem refuses) never stops the others.
                if plan.key not in self._troubled:
                    self._troubled.add(plan.key)
                    log.error(
                        "rule %s: %s cannot be planned now (%s); it is tried again", self.rule.name, plan.key, exc
                    )
                continue
            recorded += 1
            for rel in plan.consumed:
                self.candidates.pop(rel, None)
        return recorded
