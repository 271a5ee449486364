"""The overview as JSON (``/overview.json``): what the page shows, for scripts and monitoring."""

from __future__ import annotations

from typing import Any

from ..names import shown
from .views import Overview


def overview_json(o: Overview) -> dict[str, Any]:
    """Counts, providers with their forecast (``done_in`` seconds, ``done_at`` wall-clock), running work,
    held work in words, recent failures."""
    return {
        "at": o.at,
        "items": o.items,
        "jobs": o.jobs,
        "providers": [
            {
                "name": p.view.name,
                "unit": p.view.unit,
                "paused": p.view.paused,
                "remaining": p.view.remaining,
                "jobs": p.jobs,
                "typical_run": p.times.run if p.times else None,
                "done_in": p.forecast.done_in,
                "done_at": None if p.forecast.done_in is None else o.at + p.forecast.done_in,
            }
            for p in o.providers
        ],
        "running": [
            {
                "item": r.item.id,
                "job": shown(r.job.name),
                "provider": r.job.provider,
                "state": r.job.state,
                "stage": r.job.detail.remote.stage if r.job.detail.remote else r.job.stage,
                "progress": r.progress,
                "progress_estimated": r.estimated,
                "done_in": r.eta,
            }
            for r in o.running
        ],
        "held": [
            {"item": g.item.id, "jobs": [shown(j.name) for j in g.jobs], "reason": g.reason, "words": g.words}
            for g in o.held
        ],
        "held_total": o.held_total,
        "recent_failures": [
            {"item": item.id, "job": shown(job.name), "code": job.failure.code if job.failure else None}
            for item, job in o.failures
        ],
    }
