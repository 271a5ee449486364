"""The resolved configuration: rules with defaults applied, paths made absolute, and their concrete inboxes.

Also the checks that need the folders themselves: two rules watching one folder, or a rule taking another's
output as its input.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import Problem
from ..yamlsource import PathKey, Source
from .model import BEHAVIOUR_FIELDS, Behaviour, Budget, DubLabAction, FaceDubAction, Notify, Providers

BUILT_IN_TEMPLATES = frozenset({"outbox", "inbox", "name"})
# A named part of an inbox pattern: `{client}` matches one path segment (like `*`) and names it.
PART = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Inbox:
    """One concrete watched folder of a rule, with the folders its results go to."""

    rule: ResolvedRule
    path: Path
    outbox: Path
    archive_dir: Path
    failed_dir: Path
    # derived from the path; left out of equality and hashing (a dict is not hashable)
    parts: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def parts_label(self) -> str:
        """The named parts as one short text (``client=acme``), or ``""``."""
        return ",".join(f"{k}={v}" for k, v in self.parts.items())


@dataclass(frozen=True)
class ResolvedRule:
    """A rule with defaults applied, paths absolute, and its action and provider named."""

    index: int
    name: str
    pattern: str
    outbox: str
    behaviour: Behaviour
    action: FaceDubAction | DubLabAction
    match: tuple[str, ...]
    notify: Notify | None
    explicit: frozenset[str]  # the keys the rule set itself, not inherited from defaults
    approve_above: int | None = None  # a drop estimated above this waits for an operator
    budget: Budget | None = None  # per concrete inbox (per client)

    def key_path(self, key: str) -> PathKey:
        """Where ``key`` of this rule was written: in the rule, or in ``defaults``."""
        inherited = key in BEHAVIOUR_FIELDS and key not in self.explicit
        return ("defaults", key) if inherited else ("rules", self.index, key)

    @property
    def provider(self) -> Literal["facedub", "dublab"]:
        return "facedub" if isinstance(self.action, FaceDubAction) else "dublab"

    @property
    def part_names(self) -> tuple[str, ...]:
        """The named parts of the inbox pattern, in order (``("client",)``)."""
        return tuple(dict.fromkeys(PART.findall(self.pattern)))

    @property
    def glob_pattern(self) -> str:
        """The inbox pattern as a glob: each named part matches like ``*``."""
        return PART.sub("*", self.pattern)

    @property
    def is_glob(self) -> bool:
        return glob.has_magic(self.glob_pattern)

    def inboxes(self) -> list[Inbox]:
        """The concrete inboxes now: every folder the pattern matches (the path itself if not a glob)."""
        if not self.is_glob:
            return [self.inbox_at(Path(self.pattern))]
        found = sorted(p for p in glob.glob(self.glob_pattern) if os.path.isdir(p) and not os.path.islink(p))
        return [self.inbox_at(Path(p)) for p in found]

    def parts_of(self, path: Path) -> dict[str, str]:
        """The values of the named parts in ``path`` (empty when the pattern names none or does not match)."""
        names = self.part_names
        if not names:
            return {}
        regex, seen = "", set()
        for n, piece in enumerate(PART.split(self.pattern)):
            if n % 2 == 0:
                regex += re.escape(piece).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            elif piece in seen:
                regex += f"(?P={piece})"
            else:
                seen.add(piece)
                regex += f"(?P<{piece}>[^/]+)"
        found = re.fullmatch(regex, str(path))
        return {k: v for k, v in found.groupdict().items()} if found else {}

    def inbox_at(self, path: Path) -> Inbox:
        parts = self.parts_of(path)
        values = {**parts, "inbox": str(path), "name": path.name}
        outbox = absolute(self.outbox.format(**values), path)
        values["outbox"] = str(outbox)
        return Inbox(
            self,
            path,
            outbox,
            absolute(self.behaviour.archive_dir.format(**values), path),
            absolute(self.behaviour.failed_dir.format(**values), path),
            parts,
        )


@dataclass(frozen=True)
class Config:
    """A loaded, validated rules file."""

    file: Path
    source: Source
    providers: Providers
    rules: tuple[ResolvedRule, ...]
    metrics_listen: str | None
    notify: Notify | None
    console_listen: str | None = None  # HOST:PORT of the web console, or None (off)
    # a postgresql:// URL (it may hold a password: never in a repr), or None: SQLite in the state folder
    ledger: str | None = field(default=None, repr=False)
    lease_ttl: float = 30.0  # seconds: a daemon that stops renewing its leases loses them after this

    def inboxes(self) -> list[Inbox]:
        return [inbox for rule in self.rules for inbox in rule.inboxes()]

    def problem(self, path: PathKey, message: str) -> Problem:
        return self.source.problem(path, message)


def absolute(path: str, base: Path) -> Path:
    """``path`` with ``~`` expanded, relative to ``base`` unless absolute, normalized."""
    expanded = Path(os.path.expanduser(path))
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base / expanded))


# -- rule names ---------------------------------------------------------------------------------------


def name_from(inbox: str) -> str:
    """A rule name made from the last two literal parts of its inbox path."""
    parts = [
        p for p in Path(inbox).parts if not glob.has_magic(p) and not PART.search(p) and p not in ("/", "~", ".", "..")
    ]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts[-2:])).strip("-.")
    return slug or "rule"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2`` (then -3, …) when it is taken."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


# -- overlaps -----------------------------------------------------------------------------------------


def find_overlaps(config: Config, inboxes: list[Inbox]) -> list[Problem]:
    """Two rules watching one folder, or a folder inside another that already takes its subfolders."""
    problems = []
    outputs: dict[Path, tuple[str, str]] = {}
    for inbox in inboxes:
        for kind, folder in (
            ("outbox", inbox.outbox),
            ("archive folder", inbox.archive_dir),
            ("failed folder", inbox.failed_dir),
        ):
            outputs.setdefault(folder, (inbox.rule.name, kind))
    for n, a in enumerate(inboxes):
        where = ("rules", a.rule.index, "inbox")
        if a.path in outputs:
            owner, kind = outputs[a.path]
            problems.append(
                config.problem(
                    where, f"{a.path} is the {kind} of rule {owner!r}; the daemon never takes its own output as input"
                )
            )
        for b in inboxes[n + 1 :]:
            if a.rule.index == b.rule.index and a.path == b.path:
                continue
            if a.path == b.path:
                problems.append(
                    config.problem(
                        ("rules", b.rule.index, "inbox"), f"{b.path} is already watched by rule {a.rule.name!r}"
                    )
                )
            else:
                for outer, inner in ((a, b), (b, a)):
                    action = outer.rule.action
                    takes_subfolders = (
                        outer.rule.behaviour.recursive
                        or (isinstance(action, FaceDubAction) and action.pair_by == "folder")
                        or (isinstance(action, DubLabAction) and action.options_from_folders)
                    )
                    if takes_subfolders and inner.path.is_relative_to(outer.path):
                        problems.append(
                            config.problem(
                                ("rules", inner.rule.index, "inbox"),
                                f"{inner.path} is inside {outer.path}, "
                                f"which rule {outer.rule.name!r} already takes with its subfolders",
                            )
                        )
    return problems
