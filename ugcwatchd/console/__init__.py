"""The web console (``console_listen:``, off by default): the queue, the holds and the spend at a glance,
and the operator's actions (retry, approve or reject, resolve an ambiguous job) from a browser."""

from .server import Console, ConsoleError, Prepared

__all__ = ["Console", "ConsoleError", "Prepared"]
