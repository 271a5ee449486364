"""Planning and recording: from the stable candidates of one inbox to items in the ledger.

Planning groups the candidates by the rule's action (stems, batch folders, dubs); recording names the
jobs, catches duplicates of delivered work and adds the item, planned or failed, to the ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..ledger import Earlier, Failure, InputFile, ItemSettings, JobDetail, Ledger, PlannedJob
from ..names import fit_job_name
from ..outbox.files import Anchor
from ..providers.registry import estimate_params
from ..rules import FaceDubAction, Inbox
from ..states import ErrorCode, FailStage, HoldReason, JobState
from .group import Candidate, Plan, plan_dublab, plan_facedub_batch, plan_facedub_stems
from .stability import Stability

# Ingestion's lines keep the logger name they have always had: journal filters and tests name it.
log = logging.getLogger("ugcwatchd.inbox.ingest")
OUTPUT_SUFFIXES = (".result.json", ".error.json", ".status.json", ".mp4")


# -- planning ---------------------------------------------------------------------------------------


def plan_inbox(
    inbox: Inbox, candidates: dict[str, Candidate], stability: Stability, *, batches: bool, now: float
) -> list[Plan]:
    """The items the stable ``candidates`` of ``inbox`` make now, by its rule's action."""
    rule = inbox.rule
    settling = {rel for rel in stability.unsettled()}
    if isinstance(rule.action, FaceDubAction):
        if not batches:
            return plan_facedub_stems(rule, candidates, settling, now)
        return _batch_plans(inbox, candidates, stability, now, settling)
    return plan_dublab(rule, candidates)


def _batch_plans(
    inbox: Inbox, candidates: dict[str, Candidate], stability: Stability, now: float, settling: set[str]
) -> list[Plan]:
    rule = inbox.rule
    action = rule.action
    assert isinstance(action, FaceDubAction)
    by_folder: dict[str, list[Candidate]] = defaultdict(list)
    for rel, c in candidates.items():
        by_folder[rel.split("/", 1)[0]].append(c)
    plans: list[Plan] = []
    for folder, members in by_folder.items():
        if any(rel.startswith(folder + "/") for rel in settling):
            continue
        if action.done_marker:
            if not (inbox.path / folder / action.done_marker).is_file():
                continue
        elif now - stability.changed_since(folder + "/") < rule.behaviour.stable_after:
            continue
        plans += plan_facedub_batch(
            rule, folder, [m for m in members if posixpath.basename(m.seen.rel) != action.done_marker]
        )
    return plans


# -- recording --------------------------------------------------------------------------------------


class Recorder:
    """Records the plans of one concrete inbox as items (with their jobs) in the ledger."""

    def __init__(self, inbox: Inbox, ledger: Ledger) -> None:
        self.inbox = inbox
        self.rule = inbox.rule
        self.ledger = ledger
        self._deferred: set[str] = set()  # plans left because their content is under way elsewhere

    def _unique_names(self, names: list[str]) -> list[str]:
        """The job names, or ``{stem}-2.{tag}`` (then -3, …) when another input already has one."""
        taken = self.ledger.job_names_in(str(self.inbox.outbox), {name.rpartition(".")[0] for name in names})
        for n in range(1, 1000):
            tried = (
                names if n == 1 else [f"{stem}-{n}.{tag}" for stem, _, tag in (name.rpartition(".") for name in names)]
            )
            if not any(t in taken or self._on_disk(t) for t in tried):
                return tried
        raise RuntimeError(f"no free job name for {names[0]} in {self.inbox.outbox}")

    def _on_disk(self, name: str) -> bool:
        for suffix in OUTPUT_SUFFIXES:
            try:
                os.stat(self.inbox.outbox / f"{name}{suffix}")
            except FileNotFoundError:
                continue
            except OSError:
                pass  # a name the share refuses to look up is no name to take
            return True
        return False

    def _dedupe_key(self, params: dict[str, Any], shas: list[tuple[str, str]]) -> str:
        settings = {k: v for k, v in params.items() if k not in ("photo", "video")}
        blob = json.dumps(
            {"rule": self.rule.name, "provider": self.rule.provider, "params": settings, "inputs": shas}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _in_flight_elsewhere(self, plan: Plan, names: list[str]) -> Path | None:
        """A status sidecar, not ours, that names this very content: another daemon (one whose claim on
        the inbox lapsed, or that is restarting) has it under way, and taking it again would pay twice."""
        shas = {c.sha256 for _, c in plan.inputs}
        ours = self.ledger.job_names_in(str(self.inbox.outbox), {name.rpartition(".")[0] for name in names})
        for name in names:
            stem, _, tag = name.rpartition(".")
            for n in range(1, 100):
                variant = name if n == 1 else f"{stem}-{n}.{tag}"
                if not self._on_disk(variant):
                    break
                status = self.inbox.outbox / f"{variant}.status.json"
                if variant in ours or not status.exists():
                    continue
                try:
                    taken = {i.get("sha256") for i in json.loads(status.read_bytes()).get("inputs", [])}
                except (OSError, ValueError, AttributeError):
                    continue
                if taken & shas:
                    return status
        return None

    def record(self, plan: Plan) -> bool:
        """Add ``plan`` to the ledger as one item: planned, or failed when every job is refused.

        False when the content is under way elsewhere: it is left for now, and looked at again.
        """
        by_rel = {c.seen.rel: c for _, c in plan.inputs}
        wanted = [fit_job_name(name) for name, _ in plan.jobs]
        elsewhere = self._in_flight_elsewhere(plan, wanted)
        if elsewhere is not None:
            if plan.key not in self._deferred:
                self._deferred.add(plan.key)
                log.warning(
                    "rule %s: %s is under way elsewhere (%s); it is not taken while that job is open",
                    self.rule.name,
                    plan.key,
                    elsewhere,
                )
            return False
        self._deferred.discard(plan.key)
        names = self._unique_names(wanted)
        jobs = []
        for name, (_, params) in zip(names, plan.jobs, strict=True):
            if "photo" in params:
                shas = [("photo", by_rel[params["photo"]].sha256), ("video", by_rel[params["video"]].sha256)]
            else:
                shas = sorted((role, c.sha256) for role, c in plan.inputs)
            key = self._dedupe_key(params, shas)
            jobs.append(self._job(name, key, params, plan))
        jobs = self._approval(jobs)
        inputs = [input_file(role, c) for role, c in plan.inputs]
        failed = all(j.state == JobState.FAILED for j in jobs)
        reason = plan.failure.code if plan.failure else (ErrorCode.DUPLICATE if failed else None)
        # Even a refused item stays open until delivery has written its error sidecars and moved its
        # inputs away; until then its files must not be taken again.
        self.ledger.add_item(
            rule=self.rule.name,
            provider=self.rule.provider,
            inbox=str(self.inbox.path),
            outbox=str(self.inbox.outbox),
            key=plan.key,
            inputs=inputs,
            jobs=jobs,
            reason=reason,
            settings=self._settings(),
            parts=self.inbox.parts,
        )
        verb = f"failed ({reason})" if failed else "planned"
        # An input refused at planning gets an error sidecar: an operator filtering on warnings sees it.
        level = logging.WARNING if failed else logging.INFO
        log.log(level, "rule %s: %s %s: %s", self.rule.name, verb, plan.key, ", ".join(j.name for j in jobs))
        return True

    def _approval(self, jobs: list[PlannedJob]) -> list[PlannedJob]:
        """The jobs, held for an operator's approval when what they would cost passes ``approve_above``."""
        limit = self.rule.approve_above
        going = [j for j in jobs if j.state == JobState.QUEUED]
        if limit is None or not going:
            return jobs
        estimate = sum(estimate_params(self.rule.provider, j.params) for j in going)
        if estimate <= limit:
            return jobs
        waiting = JobDetail(held=HoldReason.APPROVAL)
        return [replace(j, state=JobState.HELD, detail=waiting) if j.state == JobState.QUEUED else j for j in jobs]

    def _settings(self) -> ItemSettings:
        """The rule's disposal settings as they are now, and the folders they write into as they are now."""
        b, inbox = self.rule.behaviour, self.inbox
        folders = {"outbox": inbox.outbox, "archive": inbox.archive_dir, "failed": inbox.failed_dir}
        anchors = {k: (a.path, a.dev, a.ino) for k, folder in folders.items() if (a := Anchor.of(folder))}
        return ItemSettings(b.on_success, b.on_failure, str(inbox.archive_dir), str(inbox.failed_dir), anchors)

    def _job(self, name: str, key: str, params: dict[str, Any], plan: Plan) -> PlannedJob:
        if plan.failure is not None:
            return PlannedJob(name, key, params, state=JobState.FAILED, detail=JobDetail(failure=plan.failure))
        behaviour = self.rule.behaviour
        # per_inbox: only this inbox's own history counts (one client's work is no duplicate of another's).
        mine = str(self.inbox.path) if behaviour.duplicates == "per_inbox" else None
        earlier = None if behaviour.reprocess_duplicates else self.ledger.delivered_job(key, inbox=mine)
        if earlier is None:
            return PlannedJob(name, key, params)
        earlier_item = self.ledger.item(earlier.item_id)
        if earlier_item.inbox != str(self.inbox.path):
            # per_rule, done for another inbox: a sidecar never names another client's folders or files.
            said = f" (remote id {earlier.remote_id})" if earlier.remote_id else ""
            message = (
                f"this content was already processed under rule {self.rule.name!r} for another of its inboxes{said}"
            )
            failure = Failure(FailStage.DUPLICATE, ErrorCode.DUPLICATE, message)
        else:
            sidecar = Path(earlier_item.outbox) / f"{earlier.name}.result.json"
            failure = Failure(
                FailStage.DUPLICATE,
                ErrorCode.DUPLICATE,
                f"this content was already processed under rule {self.rule.name!r}: see {sidecar}",
                earlier=Earlier(earlier.name, str(sidecar), earlier.remote_id),
            )
        return PlannedJob(name, key, params, state=JobState.FAILED, detail=JobDetail(failure=failure))


def input_file(role: str, c: Candidate) -> InputFile:
    """The ledger's record of one input of an item."""
    mime, seconds = (c.info.mime, c.info.seconds) if c.info else (None, None)
    seen = c.seen
    return InputFile(role, seen.file, seen.rel, c.sha256, seen.size, seen.mtime_ns, mime, seconds, seen.ino)
