"""From examined files to plans: pairs, batches and dubs, or the item-level error each deserves."""

from __future__ import annotations

import math
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..ledger import Failure
from ..rules import DubLabAction, FaceDubAction, ResolvedRule
from ..states import ErrorCode, FailStage
from .media import MediaInfo
from .options import BadFolderOptions, Targets, folder_targets, rule_targets
from .scan import Seen


@dataclass(frozen=True)
class Candidate:
    """A stable file, fingerprinted and examined once."""

    seen: Seen
    sha256: str
    info: MediaInfo | None
    problem: str | None  # why it is not usable media, when info is None
    stable_at: float  # our monotonic time when it was found stable


@dataclass(frozen=True)
class Plan:
    """One item to record: its inputs and its jobs (name, params), or a failure for all of them."""

    key: str
    inputs: tuple[tuple[str, Candidate], ...]  # (role, file)
    jobs: tuple[tuple[str, dict[str, Any]], ...]
    failure: Failure | None = None
    consumed: tuple[str, ...] = field(default=())  # relative paths this plan takes


def stem_of(rel: str) -> str:
    base, _ = posixpath.splitext(rel)
    return base


# Containers pad a clip by some milliseconds (AAC priming): a 12 s clip measures 12.02 s, not 13 s.
DURATION_TOLERANCE = 0.05


def facedub_duration(action: FaceDubAction, video: MediaInfo) -> int:
    """``auto``: the reference video's length, rounded up, clamped to 1..30."""
    if action.duration != "auto":
        return int(action.duration)
    return max(1, min(30, math.ceil((video.seconds or 1) - DURATION_TOLERANCE)))


def _invalid(c: Candidate, job_names: list[str], message: str | None = None) -> Plan:
    key = stem_of(c.seen.rel)
    return Plan(
        key,
        (("input", c),),
        tuple((name, {}) for name in job_names),
        Failure(FailStage.VALIDATE, ErrorCode.INVALID, message or c.problem or f"{c.seen.rel} is not usable"),
        (c.seen.rel,),
    )


def plan_facedub_stems(
    rule: ResolvedRule, candidates: dict[str, Candidate], settling: set[str], now: float
) -> list[Plan]:
    """``pair_by: stem``: one photo and one video with the same stem (case-insensitive) make a job."""
    action = rule.action
    assert isinstance(action, FaceDubAction)
    plans: list[Plan] = []
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates.values():
        if c.info is None:
            plans.append(_invalid(c, [f"{stem_of(c.seen.rel)}.facedub"]))
        elif c.info.kind == "audio":
            plans.append(
                _invalid(
                    c,
                    [f"{stem_of(c.seen.rel)}.facedub"],
                    f"{c.seen.rel} is audio only; FaceDub needs a photo and a video",
                )
            )
        else:
            groups[stem_of(c.seen.rel).lower()].append(c)
    for members in groups.values():
        photos = sorted((c for c in members if c.info and c.info.kind == "photo"), key=lambda c: c.seen.rel)
        videos = sorted((c for c in members if c.info and c.info.kind == "video"), key=lambda c: c.seen.rel)
        stem = stem_of((photos or videos)[0].seen.rel)
        consumed = tuple(c.seen.rel for c in members)
        job = f"{stem}.facedub"
        if len(photos) > 1 or len(videos) > 1:
            names = ", ".join(c.seen.rel for c in members)
            failure = Failure(
                FailStage.PAIR,
                ErrorCode.AMBIGUOUS_PAIR,
                f"{names} share one name: keep one photo and one video per name",
            )
            plans.append(Plan(stem, tuple(("input", c) for c in members), ((job, {}),), failure, consumed))
        elif photos and videos:
            video = videos[0]
            assert video.info is not None
            params = {"duration": facedub_duration(action, video.info)}
            plans.append(Plan(stem, (("photo", photos[0]), ("video", video)), ((job, params),), None, consumed))
        elif not any(stem_of(rel).lower() == stem.lower() for rel in settling):
            lone = members[0]
            if now - lone.stable_at >= action.pair_timeout:
                wanted = "video" if photos else "photo"
                failure = Failure(
                    FailStage.PAIR, ErrorCode.UNPAIRED, f"{lone.seen.rel} found no {wanted} named {stem}.* in time"
                )
                plans.append(Plan(stem, (("input", lone),), ((job, {}),), failure, consumed))
    return plans


def plan_facedub_batch(rule: ResolvedRule, folder: str, members: list[Candidate]) -> list[Plan]:
    """``pair_by: folder``: a complete batch folder yields one job per photo x video."""
    action = rule.action
    assert isinstance(action, FaceDubAction)
    plans: list[Plan] = []
    usable: list[Candidate] = []
    for c in members:
        if c.info is None or c.info.kind == "audio":
            name = f"{stem_of(c.seen.rel)}.facedub"
            plans.append(_invalid(c, [name], None if c.info is None else f"{c.seen.rel} is audio only"))
        else:
            usable.append(c)
    photos = sorted((c for c in usable if c.info and c.info.kind == "photo"), key=lambda c: c.seen.rel)
    videos = sorted((c for c in usable if c.info and c.info.kind == "video"), key=lambda c: c.seen.rel)
    consumed = tuple(c.seen.rel for c in usable)
    every = tuple(("input", c) for c in usable)
    batch_job = f"{folder}/{folder}.facedub"
    if not usable:
        return plans
    if not photos or not videos:
        wanted = "video" if photos else "photo"
        plans.append(
            Plan(
                folder,
                every,
                ((batch_job, {}),),
                Failure(FailStage.PAIR, ErrorCode.UNPAIRED, f"batch {folder} has no {wanted}"),
                consumed,
            )
        )
        return plans
    count = len(photos) * len(videos)
    if count > action.max_jobs_per_folder:
        message = (
            f"batch {folder} would make {count} jobs ({len(photos)} photos x {len(videos)} videos), "
            f"more than max_jobs_per_folder {action.max_jobs_per_folder}"
        )
        plans.append(
            Plan(folder, every, ((batch_job, {}),), Failure(FailStage.PAIR, ErrorCode.TOO_MANY_JOBS, message), consumed)
        )
        return plans
    jobs = []
    for photo in photos:
        for video in videos:
            assert video.info is not None
            pair = f"{posixpath.basename(stem_of(photo.seen.rel))}+{posixpath.basename(stem_of(video.seen.rel))}"
            name = f"{folder}/{pair}.facedub"
            jobs.append(
                (
                    name,
                    {
                        "duration": facedub_duration(action, video.info),
                        "photo": photo.seen.rel,
                        "video": video.seen.rel,
                    },
                )
            )
    roles = tuple((c.info.kind if c.info else "input", c) for c in usable)
    plans.append(Plan(folder, roles, tuple(jobs), None, consumed))
    return plans


def plan_dublab(rule: ResolvedRule, candidates: dict[str, Candidate]) -> list[Plan]:
    """Every video or audio file is an item with one job per target language: the rule's, or those its
    first-level folder names (``options_from_folders``)."""
    action = rule.action
    assert isinstance(action, DubLabAction)
    plans = []
    for c in candidates.values():
        stem = stem_of(c.seen.rel)
        try:
            targets = dublab_targets(action, c.seen.rel)
        except BadFolderOptions as exc:
            # The folder's languages are unknown: one error per file, named after the provider.
            failure = Failure(FailStage.OPTIONS, ErrorCode.BAD_FOLDER_OPTIONS, str(exc))
            plans.append(Plan(stem, (("input", c),), ((f"{stem}.dublab", {}),), failure, (c.seen.rel,)))
            continue
        names = [f"{stem}.{lang}" for lang in targets.codes]
        if c.info is None:
            plans.append(_invalid(c, names))
        elif c.info.kind == "photo":
            plans.append(_invalid(c, names, f"{c.seen.rel} is a photo; DubLab dubs video and audio"))
        elif not c.info.has_audio:
            plans.append(_invalid(c, names, f"{c.seen.rel} has no audio track to dub"))
        else:
            params = {"from": action.from_, "seconds": c.info.seconds, "content_type": c.info.mime}
            jobs = tuple(
                (f"{stem}.{lang}", {"to": lang, **params, "studio_quality": studio})
                for lang, studio in targets.languages
            )
            plans.append(Plan(stem, (("media", c),), jobs, None, (c.seen.rel,)))
    return plans


def dublab_targets(action: DubLabAction, rel: str) -> Targets:
    """The targets of the file at ``rel`` (relative to the inbox); raises :class:`BadFolderOptions`."""
    folder, sep, _ = rel.partition("/")
    if action.options_from_folders and sep:
        return folder_targets(folder, action)
    return rule_targets(action)
