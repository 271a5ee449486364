"""Quotes: what a drop held for approval would cost, and the answer files an operator puts beside them.

Each job held for approval gets ``{job}.quote.json`` naming the whole drop (its jobs, what each asks and
would cost, the total); an operator answers with ``{stem}.approve`` or ``{stem}.reject`` next to it.
Only the files of items that await approval are ever looked at, a few ``stat`` calls each: an outbox is never
listed.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..ledger import InputFile, Item, Job
from ..names import fit_job_name, shown
from ..providers.registry import budget_unit, estimate_params
from ..states import HoldReason, JobState
from .files import iso, write_json
from .sidecars import SIDECAR_VERSION, Document, request_of, sidecar_path

QUOTE = "quote"
APPROVE = "approve"
REJECT = "reject"


def stem_of(job_name: str) -> str:
    """The job name without its last ``.tag``: ``clip.de`` -> ``clip``, ``sub/clip.de`` -> ``sub/clip``."""
    return job_name.rpartition(".")[0] or job_name


def item_stem(job_names: Sequence[str]) -> str:
    """The stem an item's answer files carry: the one its jobs share (``clip`` for ``clip.de`` and
    ``clip.es``); for a batch, whose jobs are ``b/alice+dance.facedub``…, the batch's own ``b/b``.

    A batch folder's name is not shortened like a job name: one too long to take ``.approve`` gives the
    shortened stem (``{first 100 bytes}~{8 hex}``), so that the file the quote names can be created.
    """
    stems = sorted({stem_of(name) for name in job_names})
    if len(stems) == 1:
        stem = stems[0]
    else:
        folder = posixpath.commonpath([posixpath.dirname(s) for s in stems])
        stem = f"{folder}/{posixpath.basename(folder)}" if folder else stems[0]
    return stem_of(fit_job_name(f"{stem}.{APPROVE}"))


def quote_path(outbox: Path, job_name: str) -> Path:
    return sidecar_path(outbox, job_name, QUOTE)


def marker_path(outbox: Path, stem: str, answer: str) -> Path:
    """``{outbox}/{stem}.approve`` or ``.reject``: beside the quotes (a stem may carry subfolders)."""
    return outbox / f"{stem}.{answer}"


def estimate_of(provider: str, jobs: Sequence[Job]) -> int:
    """What ``jobs`` would cost together, in the provider's budget unit."""
    return sum(estimate_params(provider, job.params) for job in jobs)


def quote_document(
    item: Item,
    jobs: Sequence[Job],
    job: Job,
    inputs: Sequence[InputFile],
    approve_above: int | None,
    created_at: float,
    now: float,
) -> Document:
    """The quote sidecar of ``job``, one of ``jobs`` (the item's jobs held for approval)."""
    unit = budget_unit(item.provider)
    estimates = [estimate_params(item.provider, j.params) for j in jobs]
    lines = [
        {"job": shown(j.name), "request": request_of(j.params), "estimate": estimate}
        for j, estimate in zip(jobs, estimates, strict=True)
    ]
    total = sum(estimates)
    stem = posixpath.basename(item_stem([j.name for j in jobs]))
    approve, reject = shown(f"{stem}.{APPROVE}"), shown(f"{stem}.{REJECT}")
    above = f" (approve_above: {approve_above})" if approve_above is not None else ""
    return {
        "ugcwatchd": SIDECAR_VERSION,
        "kind": QUOTE,
        "rule": item.rule,
        "provider": item.provider,
        "item": item.id,
        "job": shown(job.name),
        "parts": {shown(k): shown(v) for k, v in item.parts.items()},
        "inputs": [{"name": shown(i.name), "sha256": i.sha256, "bytes": i.bytes} for i in inputs],
        "jobs": lines,
        "estimate": total,
        "unit": unit,
        "approve_above": approve_above,
        "state": JobState.HELD,
        "held_reason": HoldReason.APPROVAL,
        "answer": {
            "approve_file": approve,
            "reject_file": reject,
            "approve_command": f"ugcwatchd approve {item.id}",
            "reject_command": f"ugcwatchd reject {item.id}",
        },
        "message": f"this drop would cost about {total} {unit}{above}: create {approve} next to this file "
        f"(or run `ugcwatchd approve {item.id}`) to send it, or {reject} to refuse it",
        "created_at": iso(created_at),
        "updated_at": iso(now),
    }


def write_missing(outbox: Path, documents: dict[str, Document]) -> int:
    """Write each job's quote that is not there yet; one already there stays as it is, so that the time it
    was written (which tells an answer from a file left before it) survives a restart. How many were written."""
    written = 0
    for name, document in documents.items():
        target = quote_path(outbox, name)
        if not target.exists():
            write_json(target, document)
            written += 1
    return written


# A file's identity as far as an answer goes: the same file (device, inode) with the same content time.
Identity = tuple[int, int, int]
# How far behind the share's clock the clock of a client that sets a new file's mtime itself may be.
CLOCK_SKEW_NS = 10 * 60 * 10**9


@dataclass(frozen=True)
class AnswerFiles:
    """The answer files found beside an item's quotes: those that count, and those older than the quote."""

    approve: Path | None = None
    reject: Path | None = None
    stale: tuple[Path, ...] = ()
    stale_ids: frozenset[Identity] = frozenset()  # the stale files' identities: stale they stay

    @property
    def taken(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.approve, self.reject) if p is not None)


def _regular(path: Path) -> os.stat_result | None:
    """``path``'s status if it is a regular file (followed if a link), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def find_answers(outbox: Path, job_names: Sequence[str], ignored: Collection[Identity] = ()) -> AnswerFiles | None:
    """The answer files beside the quotes of one item (two ``stat`` calls; more only when one is there).

    Only a file made after the first of the item's quotes answers it: its ctime (which only the share's
    own clock sets: a copy that keeps times cannot) and its mtime (a copy or an old file whose ctime a
    ``chmod -R`` moved keeps an older one; a client clock behind by up to :data:`CLOCK_SKEW_NS` is
    allowed) are both no older than the quote's. Anything else was left for another drop of the same
    name, and this drop's price was never seen. A file in ``ignored`` (judged stale before) stays stale
    while its content time is the same, whatever happens to its ctime. None when there is no answer.
    """
    stem = item_stem(job_names)
    present: dict[str, tuple[Path, os.stat_result]] = {}
    for answer in (APPROVE, REJECT):
        path = marker_path(outbox, stem, answer)
        found = _regular(path)
        if found is not None:
            present[answer] = (path, found)
    if not present:
        return None
    quotes = [st for name in job_names if (st := _regular(quote_path(outbox, name))) is not None]
    if not quotes:
        return None  # no quote to answer yet: it is written first
    ctime, mtime = min(q.st_ctime_ns for q in quotes), min(q.st_mtime_ns for q in quotes)

    def answers(st: os.stat_result) -> bool:
        made_after = st.st_ctime_ns >= ctime and st.st_mtime_ns >= mtime - CLOCK_SKEW_NS
        return made_after and _identity(st) not in ignored

    fresh = {answer: path for answer, (path, st) in present.items() if answers(st)}
    stale = {answer: found for answer, found in present.items() if answer not in fresh}
    ids = frozenset(_identity(st) for _, st in stale.values())
    return AnswerFiles(fresh.get(APPROVE), fresh.get(REJECT), tuple(path for path, _ in stale.values()), ids)


def _identity(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino, st.st_mtime_ns
