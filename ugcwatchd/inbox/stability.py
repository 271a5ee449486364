"""When a file is complete: its size and mtime have not changed across ``stable_after`` of our time.

Only observations count. An event makes us look again sooner; it never makes a file stable. Time is
our monotonic clock, not the file's mtime, so a NAS with a wrong clock cannot make a file look old.
"""

from __future__ import annotations

from dataclasses import dataclass

from .scan import Seen


@dataclass(slots=True)
class _Watched:
    seen: Seen
    since: float  # when this exact signature was first observed
    last: float  # when it was last observed


class Stability:
    def __init__(self, stable_after: float) -> None:
        self.stable_after = stable_after
        self._files: dict[str, _Watched] = {}

    def observe(self, seen: Seen, now: float) -> None:
        watched = self._files.get(seen.rel)
        if watched is not None and watched.seen.signature == seen.signature:
            watched.last = now
        else:
            self._files[seen.rel] = _Watched(seen, now, now)

    def forget(self, rel: str) -> None:
        self._files.pop(rel, None)

    def is_stable(self, rel: str) -> bool:
        """Observed unchanged over at least ``stable_after``; empty files never are (they wait)."""
        watched = self._files.get(rel)
        return watched is not None and watched.seen.size > 0 and watched.last - watched.since >= self.stable_after

    def seen(self, rel: str) -> Seen | None:
        watched = self._files.get(rel)
        return watched.seen if watched else None

    def unsettled(self) -> list[str]:
        """Files still settling (or empty): worth observing again soon."""
        return [rel for rel in self._files if not self.is_stable(rel)]

    def known(self) -> list[str]:
        return list(self._files)

    def changed_since(self, prefix: str) -> float:
        """The latest time a file under ``prefix`` was seen to change (for quiet batch folders)."""
        times = [w.since for rel, w in self._files.items() if rel.startswith(prefix)]
        return max(times) if times else 0.0
