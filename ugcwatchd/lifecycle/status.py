"""The one-line summary systemd shows as STATUS=."""

from __future__ import annotations

from collections import Counter

from ..ledger import Ledger
from ..states import RUNNING_JOB_STATES, WAITING_JOB_STATES, JobState
from .context import ProviderState


def status_line(ledger: Ledger, providers: dict[str, ProviderState], inboxes: int) -> str:
    """``3 inboxes, 2 running, 5 queued, 1 held (facedub: auth paused)``: ASCII, short."""
    counts = Counter(ledger.job_counts())  # the ledger's tallies: no job is read
    running = sum(counts[s] for s in RUNNING_JOB_STATES)
    held = sum(counts[s] for s in WAITING_JOB_STATES)
    text = f"{inboxes} inboxes, {running} running, {counts[JobState.QUEUED]} queued, {held} held"
    paused = [f"{ps.name}: auth" for ps in providers.values() if ps.paused]
    if paused:
        text += f" ({', '.join(paused)} paused)"
    return text
