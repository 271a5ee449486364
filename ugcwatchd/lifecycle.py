"""The lifecycle of jobs (DESIGN §6, §7, §8): dispatch, reconcile, poll and deliver.

Each step commits its transition to the ledger before the side effect it licenses: the intent before
a paid request, the result sidecar before ``delivered``, every sidecar before the inputs move.
Nothing here raises into the scheduler: a failure is classified, recorded, and tried again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import AuthRejected, OutOfCredits, ProviderError, RateLimited, Rejected, Transient
from .hooks import Hooks
from .ledger import TERMINAL_JOB_STATES, Item, Job, Ledger, StaleTransition
from .outbox import base_sidecar, delete_input, iso, move_input, remove, sidecar_path, write_json
from .providers.base import Intent, JobSpec, Provider, RemoteState
from .providers.http import backoff
from .providers.transfer import FileChanged
from .rules import Config, DubLabProvider, FaceDubProvider, ResolvedRule

log = logging.getLogger(__name__)
AUTH_RECHECK = 300.0  # DESIGN §7.1: a paused provider's key is re-checked every 5 minutes
ACCOUNT_EVERY = 30.0  # credits are read this often, and on every poll while work waits for them
LOST_AFTER = (3, 60.0)  # 404 three times over a minute: the job is lost remotely
STAGE_NAMES = {"create": "submit", "init": "submit", "upload": "upload", "start": "start"}
SUBMISSIONS_AT_ONCE = {"facedub": 1, "dublab": 2}  # FaceDub's adapter waits for its own slots


@dataclass
class ProviderState:
    """What the daemon knows of one provider right now."""

    name: str
    provider: Provider
    settings: FaceDubProvider | DubLabProvider
    paused: str | None = None
    paused_since: float = 0.0
    remaining: int | None = None  # credits (FaceDub) or seconds (DubLab) at the last check
    reserved: int = 0  # estimates of submissions since that check
    last_poll_ok: float | None = None
    account_checked: float = 0.0
    submitting: set[int] = field(default_factory=set)


class _Hooks:
    """Commits the intent to the ledger right before each paid request (DESIGN §6)."""

    def __init__(self, ledger: Ledger, job: Job, clock: Callable[[], float], estimate: int) -> None:
        self.ledger = ledger
        self.job = job
        self.clock = clock
        self.estimate = estimate
        self.stage: str | None = None

    async def submitting(self, stage: str, remote_id: str | None) -> None:
        first = self.stage is None
        self.stage = stage
        fields: dict[str, Any] = {"stage": stage, "sent_at": self.clock()}
        if remote_id is not None:
            fields["remote_id"] = remote_id
        if first:
            # The estimate goes with the intent: daily budgets add up what was sent, not what was planned.
            fields["attempts"] = self.job.attempts + 1
            fields["estimate"] = self.estimate
        self.job = self.ledger.move_job(self.job.id, "submitting", expect=("queued", "submitting"), **fields)


class Lifecycle:
    """Moves every job from queued to a terminal sidecar; one instance per daemon."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        providers: dict[str, ProviderState],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.providers = providers
        self.clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_written: dict[int, str] = {}
        self.hooks = Hooks()

    def _notify(self, item: Item, sidecar: Path, document: dict[str, Any]) -> None:
        rule = self.rule(item.rule)
        self.hooks.fire(rule.notify if rule else self.config.notify, sidecar, document)

    def rule(self, name: str) -> ResolvedRule | None:
        return next((r for r in self.config.rules if r.name == name), None)

    # -- specs and estimates ----------------------------------------------------------------------

    def spec(self, job: Job) -> JobSpec:
        taken = self.ledger.inputs_of(job.item_id)
        inputs = {i.role: Path(i.path) for i in taken}
        by_rel = {i.name: Path(i.path) for i in taken}
        if job.provider == "facedub":
            if "photo" in job.params:  # a batch job names its pair
                files = (by_rel[job.params["photo"]], by_rel[job.params["video"]])
            else:
                files = (inputs["photo"], inputs["video"])
            return JobSpec(job.token, files, {"duration": job.params["duration"]})
        return JobSpec(job.token, (inputs["media"],), job.params)

    def _estimate(self, ps: ProviderState, job: Job) -> int:
        return job.estimate if job.estimate is not None else ps.provider.estimate(self.spec(job))

    def _spent_today(self, provider: str) -> int:
        midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return self.ledger.estimated_since(provider, midnight)

    def hold_reason(self, ps: ProviderState, job: Job) -> str | None:
        """Why ``job`` must wait for credits or the daily budget, or None (DESIGN §7.1)."""
        estimate = self._estimate(ps, job)
        settings = ps.settings
        budget = (
            settings.daily_credit_budget if isinstance(settings, FaceDubProvider) else settings.daily_seconds_budget
        )
        if budget is not None and self._spent_today(ps.name) + estimate > budget:
            return "budget"
        overage_ok = isinstance(settings, FaceDubProvider) and settings.allow_overage
        if not overage_ok and ps.remaining is not None and ps.remaining - ps.reserved < estimate:
            return "credits"
        return None

    # -- account ----------------------------------------------------------------------------------

    async def refresh_account(self, ps: ProviderState) -> None:
        """Credits left; a refused key pauses the provider, a good one resumes it."""
        try:
            account = await ps.provider.account()
        except AuthRejected as exc:
            self._pause(ps, str(exc))
            return
        except ProviderError as exc:
            log.warning("%s: cannot read the credits now: %s", ps.name, exc)
            return
        if ps.paused:
            log.info("%s: the key is accepted again; resuming", ps.name)
        ps.paused = None
        ps.remaining, ps.reserved, ps.account_checked = account.remaining, 0, self.clock()

    def _pause(self, ps: ProviderState, why: str) -> None:
        if not ps.paused:
            log.error("%s: paused, all its work held: %s", ps.name, why)
        ps.paused, ps.paused_since = why, self.clock()

    # -- dispatch ---------------------------------------------------------------------------------

    def _due(self, job: Job) -> bool:
        return float(job.detail.get("retry_at", 0.0)) <= self.clock()

    async def dispatch(self) -> None:
        """Start submissions and reconciliations that are due; release held work that may go."""
        for ps in self.providers.values():
            if ps.paused:
                if self.clock() - ps.paused_since >= AUTH_RECHECK:
                    ps.paused_since = self.clock()
                    await self.refresh_account(ps)
                continue
            self._release_held(ps)
            unresolved = [j for j in self.ledger.jobs_in("submitting", provider=ps.name) if j.id not in ps.submitting]
            for job in unresolved:
                if self._due(job):
                    self._start(ps, job, self._reconcile(ps, job))
            if unresolved and ps.name == "facedub":
                # FaceDub is reconciled by time and duration alone: a second unknown outcome beside the
                # first could make both ambiguous. Resolve it before anything new is sent.
                continue
            for job in self.ledger.jobs_in("queued", provider=ps.name):
                if len(ps.submitting) >= SUBMISSIONS_AT_ONCE.get(ps.name, 1):
                    break
                if job.id in ps.submitting or not self._due(job):
                    continue
                reason = self.hold_reason(ps, job)
                if reason is not None:
                    self.ledger.move_job(job.id, "held", expect="queued", detail={**job.detail, "held": reason})
                    log.info("%s: held %s: %s", ps.name, job.name, reason)
                    continue
                self._start(ps, job, self._submit(ps, job))

    def _release_held(self, ps: ProviderState) -> None:
        for job in self.ledger.jobs_in("held", provider=ps.name):
            if job.detail.get("held") in ("credits", "budget") and self.hold_reason(ps, job) is None:
                detail = {k: v for k, v in job.detail.items() if k != "held"}
                self.ledger.move_job(job.id, "queued", expect="held", detail=detail)
                log.info("%s: %s may go again", ps.name, job.name)

    def _start(self, ps: ProviderState, job: Job, work: Any) -> None:
        ps.submitting.add(job.id)

        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s: %s: unexpected error; it is tried again later", ps.name, job.name)
                self._retry_later(self.ledger.job(job.id), 60.0)
            finally:
                ps.submitting.discard(job.id)

        task = asyncio.create_task(run(), name=f"{ps.name}:{job.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _retry_later(self, job: Job, seconds: float) -> None:
        self._annotate(job, retry_at=self.clock() + seconds)

    async def _submit(self, ps: ProviderState, job: Job) -> None:
        spec = self.spec(job)
        estimate = self._estimate(ps, job)
        hooks = _Hooks(self.ledger, job, self.clock, estimate)
        try:
            remote_id = await ps.provider.submit(spec, hooks)
        except FileChanged as exc:
            self._fail(hooks.job, "upload", "input_changed", str(exc), retryable=True)
        except Rejected as exc:
            self._fail(hooks.job, STAGE_NAMES.get(hooks.stage or "", "submit"), "rejected", str(exc), exc=exc)
        except AuthRejected as exc:
            self._pause(ps, str(exc))
            self._back_to_queue(hooks.job, 0.0)
        except OutOfCredits as exc:
            self._hold(hooks.job, "credits", str(exc))
        except RateLimited as exc:
            self._back_to_queue(hooks.job, exc.retry_after or 10.0)
        except Transient as exc:
            attempts = max(1, hooks.job.attempts)
            if exc.outcome_unknown and hooks.job.state == "submitting":
                log.warning(
                    "%s: %s: outcome unknown (%s); reconciling before anything is sent again", ps.name, job.name, exc
                )
                self._retry_later(hooks.job, backoff(attempts, base=2.0))
            else:
                self._back_to_queue(hooks.job, backoff(attempts, base=2.0))
        except ProviderError as exc:
            self._fail(hooks.job, STAGE_NAMES.get(hooks.stage or "", "submit"), "refused", str(exc), exc=exc)
        else:
            ps.reserved += estimate
            self.ledger.move_job(
                job.id,
                "submitted",
                expect="submitting",
                remote_id=remote_id,
                detail={**hooks.job.detail, "submitted_at": self.clock()},
            )
            self._item_running(job.item_id)
            log.info("%s: submitted %s as %s", ps.name, job.name, remote_id)

    def _back_to_queue(self, job: Job, wait: float) -> None:
        if job.state == "submitting":
            self.ledger.move_job(
                job.id, "queued", expect="submitting", detail={**job.detail, "retry_at": self.clock() + wait}
            )
        else:
            self._retry_later(job, wait)

    def _hold(self, job: Job, reason: str, message: str) -> None:
        log.info("%s: held: %s", job.name, message)
        self.ledger.move_job(
            job.id, "held", expect=("queued", "submitting", "submitted"), detail={**job.detail, "held": reason}
        )

    def _item_running(self, item_id: int) -> None:
        if self.ledger.item(item_id).state == "planned":
            self.ledger.move_item(item_id, "running")

    async def _reconcile(self, ps: ProviderState, job: Job) -> None:
        intent = Intent(self.spec(job), job.sent_at or self.clock(), job.stage or "create", job.remote_id)
        owned = self.ledger.remote_ids(ps.name) - ({job.remote_id} if job.remote_id else set())
        try:
            found = await ps.provider.reconcile(intent, owned)
        except AuthRejected as exc:
            self._pause(ps, str(exc))
            return
        except OutOfCredits as exc:
            self._hold(job, "credits", str(exc))
            return
        except ProviderError as exc:
            self._retry_later(job, backoff(max(1, job.attempts), base=5.0))
            log.warning("%s: %s: cannot reconcile yet: %s", ps.name, job.name, exc)
            return
        if found.outcome == "adopt" and found.remote_id:
            self.ledger.move_job(
                job.id,
                "submitted",
                expect="submitting",
                remote_id=found.remote_id,
                detail={**job.detail, "adopted": True},
            )
            self._item_running(job.item_id)
            log.info("%s: %s: found the job it had started: %s", ps.name, job.name, found.remote_id)
        elif found.outcome == "none":
            self.ledger.move_job(
                job.id, "queued", expect="submitting", detail={k: v for k, v in job.detail.items() if k != "retry_at"}
            )
            log.info("%s: %s: the interrupted submission never arrived; it will be sent again", ps.name, job.name)
        else:
            detail = {**job.detail, "candidates": list(found.candidates), "held": "ambiguous"}
            self.ledger.move_job(job.id, "ambiguous", expect="submitting", detail=detail)
            log.error(
                "%s: %s: cannot tell which remote job is ours (%s); held for the operator",
                ps.name,
                job.name,
                ", ".join(found.candidates) or "list too short",
            )

    # -- polling ----------------------------------------------------------------------------------

    async def poll(self, name: str) -> None:
        """Refresh every submitted job of one provider with one list call."""
        ps = self.providers[name]
        if ps.paused:
            return
        waiting = any(j.detail.get("held") in ("credits", "budget") for j in self.ledger.jobs_in("held", provider=name))
        if waiting or self.clock() - ps.account_checked >= ACCOUNT_EVERY:
            await self.refresh_account(ps)
        jobs = [j for j in self.ledger.jobs_in("submitted", provider=name) if j.remote_id]
        if not jobs:
            ps.last_poll_ok = self.clock()
            return
        try:
            states = await ps.provider.refresh([j.remote_id for j in jobs if j.remote_id])
        except AuthRejected as exc:
            self._pause(ps, str(exc))
            return
        except ProviderError as exc:
            log.warning("%s: poll failed, tried again at the next one: %s", name, exc)
            return
        ps.last_poll_ok = self.clock()
        for job in jobs:
            state = states.get(job.remote_id or "")
            if state is not None:
                self._observe(job, state)

    def _observe(self, job: Job, state: RemoteState) -> None:
        remote = asdict(state)
        if state.state == "completed":
            self.ledger.move_job(
                job.id,
                "remote_done",
                expect="submitted",
                detail={**job.detail, "remote": remote, "completed_at": self.clock()},
            )
        elif state.state == "failed":
            message = state.error or "the provider reports the job failed"
            self._fail(
                job,
                "poll",
                "remote_failed",
                f"{job.provider} could not make {job.name}: {message}",
                provider_error=state.error,
                retryable=True,
            )
        elif state.state == "missing":
            misses = [*job.detail.get("missing", []), self.clock()]
            count, window = LOST_AFTER
            if len(misses) >= count and misses[-1] - misses[0] >= window:
                self._fail(
                    job,
                    "poll",
                    "lost_remotely",
                    f"{job.provider} no longer knows job {job.remote_id}",
                    http_status=404,
                    retryable=True,
                )
            else:
                self._annotate(job, missing=misses)
        elif job.detail.get("remote") != remote:
            self._annotate(job, remote=remote)

    def _annotate(self, job: Job, **values: Any) -> None:
        self.ledger.annotate_job(job.id, {**job.detail, **values})

    def _fail(
        self,
        job: Job,
        stage: str,
        code: str,
        message: str,
        *,
        exc: ProviderError | None = None,
        provider_error: str | None = None,
        http_status: int | None = None,
        retryable: bool = False,
    ) -> None:
        detail = {
            **job.detail,
            "stage": stage,
            "code": code,
            "message": message,
            "http_status": exc.status if exc else http_status,
            "provider_error": exc.provider_error if exc else provider_error,
            "retryable": retryable,
        }
        current = self.ledger.job(job.id).state
        self.ledger.move_job(job.id, "failed", expect=current, detail=detail)
        log.warning("%s: %s failed at %s: %s", job.provider, job.name, stage, message)

    # -- delivery ---------------------------------------------------------------------------------

    def _inputs(self, item_id: int) -> list[dict[str, Any]]:
        return [{"name": i.name, "sha256": i.sha256, "bytes": i.bytes} for i in self.ledger.inputs_of(item_id)]

    def _sidecar(self, job: Job, item: Item, kind: str, state: str) -> dict[str, Any]:
        return base_sidecar(
            kind=kind,
            rule=item.rule,
            provider=job.provider,
            job=job.name,
            inputs=self._inputs(item.id),
            remote_id=job.remote_id,
            state=state,
            created_at=self.ledger.job_created(job.id),
            updated_at=self.clock(),
        )

    async def deliver(self) -> None:
        """Results and errors into the outbox, status sidecars kept current, inputs moved last."""
        for job in self.ledger.jobs_in("remote_done"):
            if self._due(job):
                await self._deliver_result(job)
        for job in self.ledger.failed_jobs_of_open_items():
            if not job.detail.get("sidecar"):
                self._write_error(job)
        for job in self.ledger.jobs_in("queued", "submitting", "submitted", "held", "ambiguous"):
            self._write_status(job)
        for item in self.ledger.items_in("planned", "running", "held"):
            self._finish_item(item)

    async def _deliver_result(self, job: Job) -> None:
        item = self.ledger.item(job.item_id)
        outbox = Path(item.outbox)
        ps = self.providers.get(job.provider)
        remote = RemoteState(**job.detail["remote"])
        output = None
        if remote.output_url and ps is not None:
            target = outbox / f"{job.name}.mp4"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                await ps.provider.fetch(remote, target)
                output = target.name
            except Rejected as exc:
                self._fail(job, "download", "download_refused", str(exc), exc=exc)
                return
            except ProviderError as exc:
                tries = int(job.detail.get("download_tries", 0)) + 1
                if tries >= 8:
                    self._fail(job, "download", "download_failed", str(exc), exc=exc, retryable=True)
                else:
                    self._annotate(job, download_tries=tries, retry_at=self.clock() + backoff(tries, base=2.0))
                return
        document = self._sidecar(job, item, "result", "delivered")
        document.update(
            {
                "output": output,
                "output_url": remote.output_url,
                "credits_charged": remote.credits_charged,
                "billed_seconds": remote.billed_seconds,
                "submitted_at": iso(job.detail.get("submitted_at")),
                "completed_at": iso(job.detail.get("completed_at")),
            }
        )
        write_json(sidecar_path(outbox, job.name, "result"), document)
        remove(sidecar_path(outbox, job.name, "status"))
        self._notify(item, sidecar_path(outbox, job.name, "result"), document)
        self.ledger.move_job(
            job.id, "delivered", expect="remote_done", detail={**job.detail, "sidecar": "result", "output": output}
        )
        log.info("%s: delivered %s%s", job.provider, job.name, f" ({output})" if output else "")

    def _write_error(self, job: Job) -> None:
        item = self.ledger.item(job.item_id)
        outbox = Path(item.outbox)
        document = self._sidecar(job, item, "error", "failed")
        d = job.detail
        document.update(
            {
                "stage": d.get("stage"),
                "code": d.get("code"),
                "message": d.get("message"),
                "http_status": d.get("http_status"),
                "provider_error": d.get("provider_error"),
                "retryable": bool(d.get("retryable", False)),
                "attempts": job.attempts,
            }
        )
        if d.get("code") == "duplicate":
            document.update(
                {
                    "earlier_sidecar": d.get("earlier_sidecar"),
                    "earlier_remote_id": d.get("earlier_remote_id"),
                    "earlier_job": d.get("earlier_job"),
                }
            )
        write_json(sidecar_path(outbox, job.name, "error"), document)
        remove(sidecar_path(outbox, job.name, "status"))
        self._notify(item, sidecar_path(outbox, job.name, "error"), document)
        self.ledger.annotate_job(job.id, {**d, "sidecar": "error"})

    def _write_status(self, job: Job) -> None:
        item = self.ledger.item(job.item_id)
        remote = job.detail.get("remote") or {}
        held = job.detail.get("held")
        ps = self.providers.get(job.provider)
        if ps is not None and ps.paused and not held:
            held = "paused"
        document = self._sidecar(job, item, "status", job.state)
        document.update(
            {"stage": remote.get("stage") or job.stage, "progress": remote.get("progress"), "held_reason": held}
        )
        fingerprint = repr({k: v for k, v in document.items() if k != "updated_at"})
        if self._status_written.get(job.id) == fingerprint:
            return
        write_json(sidecar_path(Path(item.outbox), job.name, "status"), document)
        self._status_written[job.id] = fingerprint

    def _finish_item(self, item: Item) -> None:
        jobs = self.ledger.jobs_of(item.id)
        if not jobs or not all(j.state in TERMINAL_JOB_STATES and j.detail.get("sidecar") for j in jobs):
            return
        ok = all(j.state == "delivered" for j in jobs)
        rule = self.rule(item.rule)
        if rule is not None:
            self._dispose(item, rule, ok)
        try:
            self.ledger.move_item(item.id, "delivered" if ok else "failed")
        except StaleTransition:
            return
        for job in jobs:
            self._status_written.pop(job.id, None)
        log.info("rule %s: %s %s", item.rule, "delivered" if ok else "failed", item.key)

    def _dispose(self, item: Item, rule: ResolvedRule, ok: bool) -> None:
        """Inputs leave the inbox only now, every sidecar written (DESIGN §8)."""
        inbox = rule.inbox_at(Path(item.inbox))
        action = rule.behaviour.on_success if ok else rule.behaviour.on_failure
        for taken in self.ledger.inputs_of(item.id):
            source = Path(taken.path)
            try:
                st = source.stat()
            except FileNotFoundError:
                continue  # already dealt with before a crash, or removed by a person
            if (st.st_size, st.st_mtime_ns) != (taken.bytes, taken.mtime_ns):
                log.warning("rule %s: %s changed since it was taken; it is left where it is", item.rule, source)
                continue
            if action == "archive":
                move_input(source, inbox.archive_dir, taken.name)
            elif action == "move":
                move_input(source, inbox.failed_dir, taken.name)
            elif action == "delete":
                delete_input(source)

    # -- shutdown and status ----------------------------------------------------------------------

    async def drain(self, within: float) -> None:
        """Let submissions under way finish; whatever is cut off is reconciled at the next start."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=within)

    def status_line(self, inboxes: int) -> str:
        counts: dict[str, int] = {}
        for job in self.ledger.jobs_in("queued", "submitting", "submitted", "remote_done", "held", "ambiguous"):
            counts[job.state] = counts.get(job.state, 0) + 1
        running = counts.get("submitting", 0) + counts.get("submitted", 0) + counts.get("remote_done", 0)
        held = counts.get("held", 0) + counts.get("ambiguous", 0)
        reasons = [
            f"{ps.name}: {'auth' if ps.paused else ''}".rstrip(": ") for ps in self.providers.values() if ps.paused
        ]
        text = f"{inboxes} inboxes, {running} running, {counts.get('queued', 0)} queued, {held} held"
        if reasons:
            text += f" ({', '.join(reasons)} paused)"
        return text
