"""Client-side limits that mirror the ones the providers document.

The daemon waits instead of being refused: a sliding one-minute window per endpoint class, and
FaceDub's job slots. A 429 that comes anyway is honoured through its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

# The server stamps a request when it arrives, a little after we count it, and not always equally late:
# an old request that arrived late and a new one that arrives early are less than a window apart for
# the server. Our windows are this much longer than the documented ones, so jitter never trips a 429.
WINDOW_SLACK = 1
# Waiting out a full window, this much more keeps us inside the server's.
SAFETY_MARGIN = 0.25


class RateWindows:
    """Sliding windows (one minute, as documented), one per endpoint class: ``await acquire("POST /jobs")``.

    Each class waits on its own: a POST held off by a 429's ``Retry-After`` never delays a poll.
    """

    def __init__(self, per_window: Mapping[str, int], window_seconds: int = 60) -> None:
        self._items = {name: RateLimitItemPerSecond(n, window_seconds + WINDOW_SLACK) for name, n in per_window.items()}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        # One waiter at a time per class keeps the order of its requests fair (FIFO on the lock).
        self._locks = {name: asyncio.Lock() for name in per_window}
        self._blocked_until: dict[str, float] = {}
        self.waited = 0.0  # total seconds spent waiting for a window, for metrics and benchmarks

    async def acquire(self, endpoint_class: str) -> None:
        """Wait until one more request of ``endpoint_class`` fits in its window, and count it."""
        item = self._items.get(endpoint_class)
        if item is None:
            return
        async with self._locks[endpoint_class]:
            # A 429 that comes while we wait may push the time further: look again after each wait.
            while (blocked := self._blocked_until.get(endpoint_class, 0.0) - time.monotonic()) > 0:
                self.waited += blocked
                await asyncio.sleep(blocked)
            self._blocked_until.pop(endpoint_class, None)
            await self._count(item, endpoint_class)

    async def _count(self, item: RateLimitItemPerSecond, endpoint_class: str) -> None:
        """Wait for room in the window, and count the request in it."""
        while not await self._limiter.hit(item, endpoint_class):
            stats = await self._limiter.get_window_stats(item, endpoint_class)
            pause = max(0.01, stats.reset_time - time.time()) + SAFETY_MARGIN
            self.waited += pause
            await asyncio.sleep(pause)

    async def seed(self, endpoint_class: str, sent: list[float], now: float | None = None) -> None:
        """Count requests made before a restart (wall-clock times), so the window does not start empty.

        ``limits`` cannot backdate an entry, so they are counted as if made now: that errs on the safe
        side, a full window may stay closed for up to one window length after a restart.
        """
        item = self._items.get(endpoint_class)
        if item is None:
            return
        now = time.time() if now is None else now
        window = item.get_expiry()
        recent = sorted(t for t in sent if now - window < t <= now)
        for _ in range(min(len(recent), item.amount)):
            await self._limiter.hit(item, endpoint_class)

    def hold_off(self, endpoint_class: str, seconds: float) -> None:
        """After a 429: the next request of the class waits ``seconds`` (its Retry-After) first."""
        until = time.monotonic() + seconds
        self._blocked_until[endpoint_class] = max(until, self._blocked_until.get(endpoint_class, 0.0))
