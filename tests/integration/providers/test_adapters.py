"""The provider adapters the daemon uses: slots, limits, refresh, fetch, and reconciliation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from ugcwatchd.errors import Transient
from ugcwatchd.providers.base import Intent, JobSpec, Provider, Reconciled, RemoteState
from ugcwatchd.providers.dublab import DubLab, DubLabClient
from ugcwatchd.providers.facedub import DOCUMENTED_WINDOWS, FaceDub, FaceDubClient
from ugcwatchd.providers.limits import RateWindows
from ugcwatchd.sandbox import Sandbox

from ..conftest import DL_KEY, FD_KEY, SandboxFactory

pytestmark = pytest.mark.anyio
FAST_WINDOW = 6  # seconds: the documented limits, in a tenth of the time


class Hooks:
    """Stands where the ledger will: remembers the last intent announced before a paid request."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, str | None]] = []
        self.sent_at = 0.0

    async def submitting(self, stage: str, remote_id: str | None) -> None:
        self.stages.append((stage, remote_id))
        self.sent_at = time.time()
        self.body_sent_at: float | None = None

    async def sent(self) -> None:
        self.body_sent_at = time.time()

    async def created(self, state: RemoteState) -> None:
        self.created_state = state

    def intent(self, spec: JobSpec) -> Intent:
        stage, remote_id = self.stages[-1]
        return Intent(spec, self.sent_at, stage, remote_id)


def facedub_adapter(sandbox: Sandbox, **kw: object) -> FaceDub:
    client = FaceDubClient(
        sandbox.urls["facedub"],
        SecretStr(FD_KEY),
        windows=RateWindows(DOCUMENTED_WINDOWS, window_seconds=FAST_WINDOW),
        retry_base=0.01,
    )
    return FaceDub(client, slot_poll=0.2, **kw)  # type: ignore[arg-type]


def dublab_adapter(sandbox: Sandbox) -> DubLab:
    return DubLab(DubLabClient(sandbox.urls["dublab"], SecretStr(DL_KEY), retry_base=0.01))


def face_spec(media: dict[str, Path], token: str, duration: int) -> JobSpec:
    return JobSpec(token, (media["jpeg"], media["video.mp4"]), {"duration": duration})


def dub_spec(media: dict[str, Path], token: str, to: str = "de") -> JobSpec:
    params = {"to": to, "from": "auto", "seconds": 3.02, "content_type": "video/mp4", "studio_quality": False}
    return JobSpec(token, (media["video.mp4"],), params)


def stats(sandbox: Sandbox, service: str) -> dict[str, object]:
    answer: dict[str, object] = httpx.get(f"{sandbox.urls[service]}/sandbox/stats").json()
    return answer


async def drive(provider: Provider, specs: list[JobSpec]) -> dict[str, str]:
    """Submit each spec once, as the daemon will: reconcile unknown outcomes, never blindly resend."""
    owned: set[str] = set()
    result: dict[str, str] = {}
    for spec in specs:
        intent: Intent | None = None
        while spec.token not in result:
            if intent is None:
                hooks = Hooks()
                try:
                    remote_id = await provider.submit(spec, hooks)
                except Transient as exc:
                    if exc.outcome_unknown:
                        intent = hooks.intent(spec)
                    continue
                result[spec.token] = remote_id
            else:
                try:
                    found = await provider.reconcile(intent, owned)
                except Transient:
                    continue
                if found.outcome == "none":
                    intent = None
                    continue
                assert found.outcome == "adopt", found
                assert found.remote_id is not None
                result[spec.token] = found.remote_id
            owned.add(result[spec.token])
    return result


# -- FaceDub ------------------------------------------------------------------------------------------


async def test_facedub_adapter_burst_of_30_causes_no_429_and_at_most_two_running(
    make_sandbox: SandboxFactory, media: dict[str, Path]
) -> None:
    sandbox = make_sandbox(job_seconds=0.5, rate_window=FAST_WINDOW)
    provider = facedub_adapter(sandbox)
    try:
        ids = await asyncio.gather(*(provider.submit(face_spec(media, f"t{n}", 5), Hooks()) for n in range(30)))
    finally:
        await provider.aclose()
    answers = stats(sandbox, "facedub")["answers"]
    assert isinstance(answers, dict)
    # The sandbox refuses a third running job with a 429: none came, so never more than two ran.
    assert not any("429" in by_status for by_status in answers.values()), answers
    assert answers["POST /jobs"] == {"200": 30}
    assert len(set(ids)) == 30


@pytest.mark.parametrize("seed", [20261122, 3, 41])
async def test_facedub_adapter_fail_rate_batch_never_submits_twice(
    make_sandbox: SandboxFactory, media: dict[str, Path], seed: int
) -> None:
    sandbox = make_sandbox(job_seconds=0.3, rate_window=FAST_WINDOW, fail_rate=0.3, seed=seed)
    provider = facedub_adapter(sandbox)
    specs = [face_spec(media, f"t{n}", n) for n in range(1, 13)]  # distinct durations: unambiguous
    try:
        result = await asyncio.wait_for(drive(provider, specs), timeout=120)
    finally:
        await provider.aclose()
    answers = stats(sandbox, "facedub")
    faults = {k: v for k, v in answers["answers"].items() if "fault" in k}  # type: ignore[union-attr]
    assert any("POST /jobs (fault after)" in k for k in faults), faults  # the case that matters happened
    assert len(set(result.values())) == len(specs)
    assert answers["jobs_created"] == len(specs)  # every job exists once: nothing paid twice


async def test_facedub_adapter_reconcile_adopts_none_or_ambiguous(sandbox: Sandbox, media: dict[str, Path]) -> None:
    provider = facedub_adapter(sandbox)
    try:
        spec = face_spec(media, "t1", 7)
        hooks = Hooks()
        lost = await provider.submit(spec, hooks)  # as if the answer had been lost on the way
        intent = hooks.intent(spec)
        assert await provider.reconcile(intent, owned=set()) == Reconciled("adopt", lost)
        assert (await provider.reconcile(intent, owned={lost})).outcome == "none"
        other = face_spec(media, "t2", 9)
        assert (await provider.reconcile(Intent(other, intent.sent_at, "create"), owned=set())).outcome == "none"
        await asyncio.sleep(0.7)  # the first job completes, freeing its slot
        twin = await provider.submit(face_spec(media, "t3", 7), Hooks())
        found = await provider.reconcile(intent, owned=set())
        assert found.outcome == "ambiguous" and set(found.candidates) == {lost, twin}
        too_early = Intent(spec, intent.sent_at - 3600, "create")
        assert (await provider.reconcile(too_early, owned=set())).outcome == "none"
    finally:
        await provider.aclose()


async def test_facedub_adapter_refresh_fetch_estimate_account(
    sandbox: Sandbox, media: dict[str, Path], tmp_path: Path
) -> None:
    provider = facedub_adapter(sandbox)
    try:
        spec = face_spec(media, "t1", 10)
        assert provider.estimate(spec) == 2 and provider.estimate(face_spec(media, "t", 11)) == 3
        remote_id = await provider.submit(spec, Hooks())
        first = await provider.refresh([remote_id, "000000000000"])
        assert first[remote_id].state in ("queued", "running") and first["000000000000"].state == "missing"
        for _ in range(100):
            state = (await provider.refresh([remote_id]))[remote_id]
            if state.final:
                break
            await asyncio.sleep(0.05)
        assert state.state == "completed" and state.credits_charged == 2
        assert await provider.fetch(state, tmp_path / "out.mp4") == (tmp_path / "out.mp4").stat().st_size
        account = await provider.account()
        assert account.remaining == 148 and "148 of 150" in account.description
    finally:
        await provider.aclose()


# -- DubLab -------------------------------------------------------------------------------------------


async def test_dublab_adapter_submit_names_the_record_by_token(sandbox: Sandbox, media: dict[str, Path]) -> None:
    provider = dublab_adapter(sandbox)
    try:
        hooks = Hooks()
        spec = dub_spec(media, "u1a2b3c4")
        remote_id = await provider.submit(spec, hooks)
        assert [stage for stage, _ in hooks.stages] == ["init", "upload", "start"]
        assert hooks.stages[1][1] == remote_id
        assert provider.estimate(spec) == 4
        assert provider.estimate(JobSpec("t", spec.inputs, {**spec.params, "studio_quality": True})) == 8
        for _ in range(100):
            state = (await provider.refresh([remote_id]))[remote_id]
            if state.final:
                break
            await asyncio.sleep(0.05)
        assert state.state == "completed" and state.billed_seconds == 3 and state.credits_charged == 3
        assert await provider.fetch(state, Path("/nonexistent/never-written")) is None
        dubs = await provider.client.dubs()
        assert dubs[0].name == "video.u1a2b3c4.mp4"
        assert (await provider.account()).remaining == 3600 - 3
    finally:
        await provider.aclose()


async def test_dublab_adapter_reconcile_finishes_an_interrupted_start(sandbox: Sandbox, media: dict[str, Path]) -> None:
    provider = dublab_adapter(sandbox)
    try:
        spec = dub_spec(media, "u5")
        init = await provider.client.init_dub(
            file_type="video/mp4", name=provider.remote_name(spec), source_lang="auto", dest_lang="de"
        )
        await provider.client.upload(init.uploadUrl, media["video.mp4"], "video/mp4")
        # Crashed after sending start-dub, not knowing whether it arrived: it did not.
        found = await provider.reconcile(Intent(spec, time.time(), "start", init.file.id), owned=set())
        assert found.outcome == "adopt" and found.remote_id == init.file.id
        assert (await provider.refresh([init.file.id]))[init.file.id].state in ("queued", "running", "completed")
        assert stats(sandbox, "dublab")["files_started"] == 1
        # Asked again, it adopts the same record and starts nothing new.
        again = await provider.reconcile(Intent(spec, time.time(), "start", init.file.id), owned=set())
        assert again.remote_id == init.file.id and stats(sandbox, "dublab")["files_started"] == 1
    finally:
        await provider.aclose()


async def test_dublab_adapter_reconcile_unstarted_or_unuploaded_means_none(
    sandbox: Sandbox, media: dict[str, Path]
) -> None:
    provider = dublab_adapter(sandbox)
    try:
        spec = dub_spec(media, "u6")
        init = await provider.client.init_dub(
            file_type="video/mp4", name=provider.remote_name(spec), source_lang="auto", dest_lang="de"
        )
        assert (await provider.reconcile(Intent(spec, time.time(), "init"), owned=set())).outcome == "none"
        at_start = Intent(spec, time.time(), "start", init.file.id)
        assert (await provider.reconcile(at_start, owned=set())).outcome == "none"  # 412: never uploaded
        assert stats(sandbox, "dublab")["files_started"] == 0
    finally:
        await provider.aclose()


@pytest.mark.parametrize("seed", [7, 8, 9])
async def test_dublab_adapter_fail_rate_batch_never_starts_twice(
    make_sandbox: SandboxFactory, media: dict[str, Path], seed: int
) -> None:
    sandbox = make_sandbox(job_seconds=0.3, fail_rate=0.3, seed=seed)
    provider = dublab_adapter(sandbox)
    specs = [
        dub_spec(media, f"u{n:04d}", to) for n, to in enumerate(["de", "es", "fr", "it", "ja", "tr", "pl", "nl"] * 2)
    ]
    try:
        result = await asyncio.wait_for(drive(provider, specs), timeout=120)
    finally:
        await provider.aclose()
    answers = stats(sandbox, "dublab")
    faults = [k for k in answers["answers"] if "fault after" in k]  # type: ignore[union-attr]
    assert any("start-dub" in k for k in faults) or any("init-dub" in k for k in faults), faults
    assert len(set(result.values())) == len(specs)
    assert answers["files_started"] == len(specs)  # one paid dub per job, whatever got lost on the way
