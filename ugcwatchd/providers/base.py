"""The one small interface the daemon talks to; FaceDub and DubLab are adapters behind it.

Providers know nothing of folders or the ledger: the daemon hands them a :class:`JobSpec` and
:class:`SubmitHooks`, and a provider calls ``hooks.submitting`` right before every request that may
cost money, so the daemon can commit its intent first and reconcile the outcome after a crash.

Everything the core decides per provider is asked of the adapter here (:class:`Provider`) or of its
class (:class:`AdapterClass`, found by name in :mod:`ugcwatchd.providers.registry`): the core never
branches on a provider's name. A new provider is one module with its adapter, an entry in the
registry, and its ``providers.NAME`` settings block.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import httpx
    from pydantic import SecretStr

    from ..rules import ProviderSettings
    from .limits import RateWindows

RemoteStateName = Literal["queued", "running", "completed", "failed", "missing"]


@dataclass(frozen=True)
class Fingerprint:
    """The exact bytes a job is bound to: what was examined, hashed and paid for."""

    size: int
    mtime_ns: int
    inode: int | None  # None for inputs recorded before inodes were
    sha256: str


@dataclass(frozen=True)
class InputRef:
    """One input file of an item, as the ledger took it: its role, its name in the inbox, its path."""

    role: str  # "photo", "video", "media": what the rule's pairing made of it
    name: str  # the name batch jobs refer to it by
    path: Path
    fingerprint: Fingerprint | None = None


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
    # What each input must still be when it is sent; a file that differs is never uploaded.
    expected: Mapping[Path, Fingerprint] = field(default_factory=dict)

    def expect(self, path: Path) -> Fingerprint | None:
        return self.expected.get(path)


def expectations(inputs: Sequence[InputRef]) -> dict[Path, Fingerprint]:
    """The fingerprints of the inputs that carry one, by path."""
    return {i.path: i.fingerprint for i in inputs if i.fingerprint is not None}


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
    is_overage: bool | None = None  # FaceDub: the charge went beyond the plan's credits

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
    # The latest creation time a job of ours could have: the body's end plus the provider's grace, or
    # "now" when the body's end is unknown. None: the adapter's own default window.
    until: float | None = None


@dataclass(frozen=True)
class Reconciled:
    """What reconciliation found for an :class:`Intent`: the job to adopt, none, or several candidates."""

    outcome: Literal["adopt", "none", "ambiguous"]
    remote_id: str | None = None
    candidates: tuple[str, ...] = ()


class SubmitHooks(Protocol):
    async def submitting(self, stage: str, remote_id: str | None) -> None:
        """Called right before a request that may cost money; returns once the intent is durable."""

    async def sent(self) -> None:
        """Called once the whole body of a paid request is handed over: the provider may create the
        job from then on, so a reconciliation window is measured from here, not from the intent."""

    async def created(self, state: RemoteState) -> None:
        """Called with what the answer creating the job said of it, when that says more than its id
        (FaceDub's charge and overage at creation): kept with the job before any later poll."""


class Sharing(Protocol):
    """One account used by several daemons (a shared ledger): its limits are counted for all of them."""

    def windows(self, per_window: Mapping[str, int]) -> RateWindows:
        """Rate windows counted for every daemon of the ledger."""

    def mutex(self, purpose: str) -> AbstractAsyncContextManager[object]:
        """A lock held by one daemon of the ledger at a time."""

    def recent(self, name: str, max_age: float) -> Any:
        """An answer another daemon (or this one) kept under ``name`` at most ``max_age`` seconds ago, or None."""

    def keep(self, name: str, value: Any) -> None:
        """Keep an answer (JSON) under ``name`` for the other daemons."""


class Provider(Protocol):
    """What the daemon needs of a provider, and nothing more."""

    name: str
    budget_unit: str
    """What ``estimate``, ``Account.remaining`` and the daily budget count: "credits", "seconds"."""
    submissions_at_once: int
    """How many submissions the daemon may run at once (1 when the adapter waits for its own job slots)."""
    reconcile_serially: bool
    bills_on_completion: bool
    """The provider charges when a job completes (not when it is created): until its billing shows in
    the account, a started job's estimate stays reserved against the balance."""
    """Nothing new is sent while an earlier submission's outcome is unresolved: a provider matched by
    time alone could not tell two unknown outcomes apart."""

    def job_spec(self, token: str, inputs: Sequence[InputRef], params: Mapping[str, Any]) -> JobSpec:
        """The :class:`JobSpec` of a ledger job: its token, the item's inputs, the job's parameters."""

    def estimate(self, spec: JobSpec) -> int:
        """What the job is expected to cost, in ``budget_unit``."""

    async def account(self) -> Account:
        """Credits left and the account's summary; raises AuthRejected when the key is refused."""

    async def languages(self) -> frozenset[str] | None:
        """The language codes the provider accepts now, or None when its jobs take no language."""

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

    def share(self, sharing: Sharing) -> None:
        """Several daemons use this account: count what it limits with ``sharing``, not in this process."""

    async def aclose(self) -> None: ...


class AdapterClass(Protocol):
    """What is asked of an adapter's class, before any client exists: the registry's entries."""

    name: str
    budget_unit: str

    def estimate_params(self, params: Mapping[str, Any]) -> int:
        """What a job with these ledger parameters is expected to cost, in ``budget_unit``."""

    def describe_job(self, params: Mapping[str, Any]) -> str:
        """A job's parameters and expected cost in a few words, for ``plan``."""

    def from_settings(
        self,
        settings: ProviderSettings,
        key: SecretStr,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_answer: Callable[[int], None] | None = None,
    ) -> Provider:
        """The adapter with its client, configured from its ``providers.NAME`` block and its key."""
