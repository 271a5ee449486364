"""The one small interface the daemon talks to; FaceDub and DubLab are adapters behind it.

Providers know nothing of folders or the ledger: the daemon hands them a :class:`JobSpec` and
:class:`SubmitHooks`, and a provider calls ``hooks.submitting`` right before every request that may
cost money, so the daemon can commit its intent first (DESIGN §6).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

RemoteStateName = Literal["queued", "running", "completed", "failed", "missing"]


@dataclass(frozen=True)
class JobSpec:
    """One remote job the daemon wants: its ledger token, its input files and its parameters.

    FaceDub: ``inputs`` is (photo, video) and ``params`` holds ``duration``.
    DubLab: ``inputs`` is (media,) and ``params`` holds ``to``, ``from``, ``studio_quality``,
    ``seconds`` (the measured length) and ``content_type``.
    """

    token: str
    inputs: tuple[Path, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteState:
    """What the provider says of one job, in the daemon's words."""

    remote_id: str
    state: RemoteStateName
    stage: str | None = None
    progress: float | None = None  # percent, when the provider tells
    output_url: str | None = None
    error: str | None = None
    credits_charged: int | None = None
    billed_seconds: float | None = None

    @property
    def final(self) -> bool:
        return self.state in ("completed", "failed")


@dataclass(frozen=True)
class Account:
    """Credits left (FaceDub credits, DubLab seconds) and a line describing the account."""

    provider: str
    remaining: int
    description: str


@dataclass(frozen=True)
class Intent:
    """A submission whose outcome is unknown, as the ledger recorded it before sending."""

    spec: JobSpec
    sent_at: float  # wall-clock seconds when the intent was committed
    stage: str  # the last stage announced through SubmitHooks
    remote_id: str | None = None


@dataclass(frozen=True)
class Reconciled:
    """What reconciliation found for an :class:`Intent` (DESIGN §6)."""

    outcome: Literal["adopt", "none", "ambiguous"]
    remote_id: str | None = None
    candidates: tuple[str, ...] = ()


class SubmitHooks(Protocol):
    async def submitting(self, stage: str, remote_id: str | None) -> None:
        """Called right before a request that may cost money; returns once the intent is durable."""


class Provider(Protocol):
    """What the daemon needs of a provider, and nothing more."""

    name: str

    def estimate(self, spec: JobSpec) -> int:
        """Credits (FaceDub) or seconds (DubLab) the job is expected to cost."""

    async def account(self) -> Account:
        """Credits left; raises AuthRejected when the key is refused."""

    async def submit(self, spec: JobSpec, hooks: SubmitHooks) -> str:
        """Start the job; the remote id. Waits for rate windows and job slots rather than tripping them."""

    async def refresh(self, remote_ids: Collection[str]) -> dict[str, RemoteState]:
        """The state of each job, from one list call where the API allows."""

    async def fetch(self, state: RemoteState, target: Path) -> int | None:
        """Download the result to ``target`` (bytes written), or None when there is nothing to fetch."""

    async def reconcile(self, intent: Intent, owned: Collection[str]) -> Reconciled:
        """Find the job an interrupted submission may have created; ``owned`` ids belong to other jobs."""

    async def remember(self, sent_at: list[float]) -> None:
        """Paid requests made before a restart (from the ledger), so rate windows start full enough."""

    async def aclose(self) -> None: ...
