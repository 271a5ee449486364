"""Where each input went: delivery records its moves, an operator's retry records its return."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from ..names import to_db
from .backend import Connection


class Inputs:
    """Writes about an item's inputs, over the ledger's transactions and event log."""

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _event(self, item_id: int | None, job_id: int | None, kind: str, detail: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    def park_input(self, item_id: int, path: str, parked: str | None) -> None:
        """Record where delivery moved an input (None: it was deleted or left in place)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE inputs SET parked = ? WHERE item_id = ? AND path = ?",
                (to_db(parked) if parked else None, item_id, to_db(path)),
            )
            self._event(item_id, None, "input parked", {"path": path, "parked": parked})

    def rebind_input(self, item_id: int, path: str, size: int, mtime_ns: int, inode: int) -> None:
        """The same content (checked by hash) is back at ``path`` as another file: bind the job to it."""
        with self.transaction() as db:
            db.execute(
                "UPDATE inputs SET bytes = ?, mtime_ns = ?, inode = ?, parked = NULL WHERE item_id = ? AND path = ?",
                (size, mtime_ns, inode, item_id, to_db(path)),
            )
            self._event(item_id, None, "input restored", {"path": path})
