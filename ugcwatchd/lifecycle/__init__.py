"""The lifecycle of jobs: dispatch (submit, reconcile, hold), polling, and delivery into the outbox.

Each stage commits its transition to the ledger before the side effect it licenses: the intent before
a paid request, the result sidecar before ``delivered``, every sidecar before the inputs move. Nothing
here raises into the scheduler: what an error means is decided by :mod:`.disposition`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..approvals import ApprovalDesk
from ..hooks import Hooks
from ..ledger import Ledger
from ..outbox.delivery import Delivery
from ..rules import Config
from .context import ProviderState, Work
from .dispatch import Dispatch
from .poll import Poll
from .status import status_line


class Lifecycle:
    """The three stages over one shared :class:`Work`; one instance per daemon."""

    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        providers: dict[str, ProviderState],
        *,
        clock: Callable[[], float] = time.time,
        hooks: Hooks | None = None,
    ) -> None:
        self.work = Work(config, ledger, providers, clock=clock, hooks=hooks)
        self.dispatcher = Dispatch(self.work)
        self.poller = Poll(self.work)
        self.delivery = Delivery(self.work)
        self.desk = ApprovalDesk(self.work)

    # Plain coroutine functions: APScheduler awaits those, not objects with an async __call__.
    async def dispatch(self) -> None:
        await self.dispatcher()

    async def poll(self, name: str) -> None:
        await self.poller(name)

    async def deliver(self) -> None:
        await self.delivery()

    async def answer(self) -> None:
        """Quotes for work awaiting approval, and the answer files beside them."""
        await self.desk()

    @property
    def config(self) -> Config:
        return self.work.config

    @config.setter
    def config(self, config: Config) -> None:
        self.work.config = config

    @property
    def hooks(self) -> Hooks:
        return self.work.hooks

    async def refresh_account(self, ps: ProviderState) -> None:
        await self.work.refresh_account(ps)

    async def drain(self, within: float) -> None:
        await self.dispatcher.drain(within)

    def status_line(self, inboxes: int) -> str:
        return status_line(self.work.ledger, self.work.providers, inboxes)


__all__ = ["Lifecycle", "ProviderState"]
