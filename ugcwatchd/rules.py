"""The rules file (DESIGN §4.2): its model, loading with line numbers, and resolution to folders.

Loading validates the whole file and reports every problem at once, each with its file, line, column
and key path, e.g. ``rules.yaml:14:7: rules[1].dublab.to[0]: 'xx' is not a supported language``.
"""

from __future__ import annotations

import difflib
import glob
import os
import re
import string
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from . import yamlsource
from .errors import ConfigError, ConfigProblems, Problem
from .languages import LANGUAGES
from .urls import https_or_loopback
from .yamlsource import PathKey, Source

DEFAULT_IGNORE = (".*", "~$*", "*.part", "*.tmp", "*.crdownload", "@eaDir", "#recycle", "Thumbs.db", "desktop.ini")
PHOTO_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.webp")
VIDEO_PATTERNS = ("*.mp4", "*.mov", "*.m4v", "*.mkv", "*.webm", "*.avi")
AUDIO_PATTERNS = ("*.mp3", "*.wav", "*.m4a", "*.aac", "*.flac", "*.ogg", "*.opus")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# -- value types --------------------------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """``5s``, ``10m``, ``1h``, ``1h30m``, ``250ms`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: use 5s, 10m, 1h or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip() and _DURATION.sub("", value.strip().replace(" ", "")) == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(value.replace(" ", "")))
    elif isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        seconds = float(value)
    else:
        raise ValueError(f"{value!r} is not a duration: use 5s, 10m, 1h or a number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _language_hint(code: str) -> str:
    by_name = {name.lower(): c for c, name in LANGUAGES.items()}
    if code.lower() in by_name:
        return f" (did you mean '{by_name[code.lower()]}'?)"
    close = difflib.get_close_matches(code.lower(), LANGUAGES, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_target_language(code: str) -> str:
    if code == "auto":
        raise ValueError("'auto' is not a dub target: auto-detection is only for from")
    if code not in LANGUAGES:
        raise ValueError(f"{code!r} is not a supported language{_language_hint(code)}")
    return code


def check_source_language(code: str) -> str:
    if code != "auto" and code not in LANGUAGES:
        raise ValueError(f"{code!r} is not a supported language or 'auto'{_language_hint(code)}")
    return code


def check_api_url(url: str) -> str:
    if https_or_loopback(url):
        return url.rstrip("/")
    raise ValueError(f"{url!r} is not an https URL (plain http is allowed only on loopback, for the sandbox)")


def check_webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    raise ValueError(f"{url!r} is not an http(s) URL")


def check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:9464")
    return value


def check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a rule name: use letters, digits, '.', '_' and '-'")
    return value


def parse_facedub_duration(value: object) -> object:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 30):
        return value
    raise ValueError(f"{value!r} is not 'auto' or a whole number of seconds from 1 to 30")


def _template(*allowed: str) -> AfterValidator:
    """A path template that may use only the ``allowed`` placeholders."""

    def check(text: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid template: {exc}") from None
        unknown = sorted(fields - set(allowed))
        if unknown:
            known = ", ".join(f"{{{a}}}" for a in allowed)
            raise ValueError(f"unknown template {{{unknown[0]}}} (known here: {known})")
        return text

    return AfterValidator(check)


ApiUrl = Annotated[str, AfterValidator(check_api_url)]
TargetLanguage = Annotated[str, AfterValidator(check_target_language)]
SourceLanguage = Annotated[str, AfterValidator(check_source_language)]


# -- the model ----------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


class FaceDubProvider(_Strict):
    base_url: ApiUrl = "https://api.facedub.io"
    api_key: SecretStr | None = None
    max_concurrent_jobs: int = Field(2, ge=1, le=2, description="FaceDub allows 2 concurrent jobs per user")
    poll_every: Duration = Field(10.0, ge=1)
    allow_overage: bool = False
    daily_credit_budget: int | None = Field(None, ge=0)


class DubLabProvider(_Strict):
    base_url: ApiUrl = "https://dublab.app"
    api_key: SecretStr | None = None
    poll_every: Duration = Field(15.0, ge=1)
    daily_seconds_budget: int | None = Field(None, ge=0)


class Providers(_Strict):
    facedub: FaceDubProvider = FaceDubProvider()
    dublab: DubLabProvider = DubLabProvider()


class Notify(_Strict):
    webhook: Annotated[str, AfterValidator(check_webhook_url)] | None = None
    command: list[str] | None = Field(None, min_length=1)


class Behaviour(_Strict):
    """What ``defaults:`` sets for every rule, and each rule may override."""

    stable_after: Duration = Field(5.0, ge=0)
    watch_mode: Literal["auto", "events", "poll"] = "auto"
    rescan_every: Duration = Field(60.0, ge=1)
    recursive: bool = False
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    on_success: Literal["archive", "delete", "keep"] = "archive"
    on_failure: Literal["move", "keep"] = "move"
    archive_dir: Annotated[str, _template("outbox", "inbox", "name")] = "{outbox}/originals"
    failed_dir: Annotated[str, _template("outbox", "inbox", "name")] = "{outbox}/failed"
    reprocess_duplicates: bool = False


BEHAVIOUR_FIELDS = frozenset(Behaviour.model_fields)


class FaceDubAction(_Strict):
    pair_by: Literal["stem", "folder"] = "stem"
    pair_timeout: Duration = Field(600.0, ge=0)
    done_marker: str | None = None
    max_jobs_per_folder: int = Field(20, ge=1)
    duration: Annotated[Literal["auto"] | int, BeforeValidator(parse_facedub_duration)] = "auto"

    @model_validator(mode="after")
    def _marker_needs_folders(self) -> FaceDubAction:
        if self.done_marker is not None and self.pair_by != "folder":
            raise ValueError("done_marker applies only with pair_by: folder")
        return self


class DubLabAction(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)

    to: list[TargetLanguage] = Field(min_length=1)
    from_: SourceLanguage = Field("auto", alias="from")
    studio_quality: bool = False

    @model_validator(mode="after")
    def _distinct(self) -> DubLabAction:
        repeated = sorted({c for c in self.to if self.to.count(c) > 1})
        if repeated:
            raise ValueError(f"to lists {', '.join(repeated)} more than once")
        if self.from_ in self.to:
            raise ValueError(f"to includes the source language {self.from_!r}")
        return self


class Rule(Behaviour):
    name: Annotated[str, AfterValidator(check_name)] | None = None
    inbox: str = Field(min_length=1)
    outbox: Annotated[str, _template("inbox", "name"), Field(min_length=1)] = "../outbox"
    match: list[str] | None = Field(None, min_length=1)
    notify: Notify | None = None
    facedub: FaceDubAction | None = None
    dublab: DubLabAction | None = None

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        if self.facedub is None and self.dublab is None:
            raise ValueError("a rule needs an action block: facedub or dublab")
        if self.facedub is not None and self.dublab is not None:
            raise ValueError("a rule has exactly one action block, not both facedub and dublab")
        return self


class RulesFile(_Strict):
    providers: Providers = Providers()
    defaults: Behaviour = Behaviour()
    metrics_listen: Annotated[str, AfterValidator(check_listen)] | None = None
    notify: Notify | None = None
    rules: list[Rule] = Field(min_length=1)


# -- resolved configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbox:
    """One concrete watched folder of a rule, with the folders its results go to."""

    rule: ResolvedRule
    path: Path
    outbox: Path
    archive_dir: Path
    failed_dir: Path


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

    def key_path(self, key: str) -> PathKey:
        """Where ``key`` of this rule was written: in the rule, or in ``defaults``."""
        inherited = key in BEHAVIOUR_FIELDS and key not in self.explicit
        return ("defaults", key) if inherited else ("rules", self.index, key)

    @property
    def provider(self) -> Literal["facedub", "dublab"]:
        return "facedub" if isinstance(self.action, FaceDubAction) else "dublab"

    @property
    def is_glob(self) -> bool:
        return glob.has_magic(self.pattern)

    def inboxes(self) -> list[Inbox]:
        """The concrete inboxes now: every folder the pattern matches (the path itself if not a glob)."""
        if not self.is_glob:
            return [self.inbox_at(Path(self.pattern))]
        found = sorted(p for p in glob.glob(self.pattern) if os.path.isdir(p) and not os.path.islink(p))
        return [self.inbox_at(Path(p)) for p in found]

    def inbox_at(self, path: Path) -> Inbox:
        values = {"inbox": str(path), "name": path.name}
        outbox = _absolute(self.outbox.format(**values), path)
        values["outbox"] = str(outbox)
        return Inbox(
            self,
            path,
            outbox,
            _absolute(self.behaviour.archive_dir.format(**values), path),
            _absolute(self.behaviour.failed_dir.format(**values), path),
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

    def inboxes(self) -> list[Inbox]:
        return [inbox for rule in self.rules for inbox in rule.inboxes()]

    def problem(self, path: PathKey, message: str) -> Problem:
        return self.source.problem(path, message)


def _absolute(path: str, base: Path) -> Path:
    expanded = Path(os.path.expanduser(path))
    return Path(os.path.normpath(expanded if expanded.is_absolute() else base / expanded))


def load_rules(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the rules file at ``path``; raises :class:`ConfigProblems`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"rules file {path} does not exist", remedy="pass -c RULES or set UGCWATCHD_CONFIG") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read rules file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    source = yamlsource.load(text, str(path), env)
    if not isinstance(source.data, dict):
        raise ConfigProblems([source.problem((), "the rules file must be a mapping with a 'rules:' list")])
    try:
        model = RulesFile.model_validate(source.data)
    except ValidationError as exc:
        raise ConfigProblems([_problem(source, err) for err in exc.errors()]) from None
    problems: list[Problem] = []
    rules = _resolve_rules(model, path, source, problems)
    config = Config(path, source, model.providers, rules, model.metrics_listen, model.notify)
    problems += find_overlaps(config, config.inboxes())
    if problems:
        raise ConfigProblems(problems)
    return config


def _resolve_rules(model: RulesFile, path: Path, source: Source, problems: list[Problem]) -> tuple[ResolvedRule, ...]:
    base = path.parent.resolve()
    resolved: list[ResolvedRule] = []
    explicit = [r.name for r in model.rules if r.name]
    taken: set[str] = set()
    for i, rule in enumerate(model.rules):
        if rule.name and explicit.count(rule.name) > 1 and rule.name in taken:
            problems.append(source.problem(("rules", i, "name"), f"another rule is already named {rule.name!r}"))
        name = rule.name or _unique(_name_from(rule.inbox), taken | set(explicit))
        taken.add(name)
        behaviour = model.defaults.model_copy(
            update={k: getattr(rule, k) for k in rule.model_fields_set & BEHAVIOUR_FIELDS}
        )
        action: FaceDubAction | DubLabAction = rule.facedub if rule.facedub is not None else rule.dublab  # type: ignore[assignment]
        pattern = str(_absolute(rule.inbox, base))
        match = tuple(rule.match or ()) or (
            PHOTO_PATTERNS + VIDEO_PATTERNS if isinstance(action, FaceDubAction) else VIDEO_PATTERNS + AUDIO_PATTERNS
        )
        resolved.append(
            ResolvedRule(
                i,
                name,
                pattern,
                rule.outbox,
                behaviour,
                action,
                match,
                rule.notify or model.notify,
                frozenset(rule.model_fields_set),
            )
        )
    return tuple(resolved)


def _name_from(inbox: str) -> str:
    parts = [p for p in Path(inbox).parts if not glob.has_magic(p) and p not in ("/", "~", ".", "..")]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts[-2:])).strip("-.")
    return slug or "rule"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    return candidate


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
                    takes_subfolders = outer.rule.behaviour.recursive or (
                        isinstance(outer.rule.action, FaceDubAction) and outer.rule.action.pair_by == "folder"
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


# -- pydantic errors as problems ----------------------------------------------------------------------


def _problem(source: Source, err: ErrorDetails) -> Problem:
    loc: PathKey = tuple(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})" if known else ""
        return source.problem(loc, f"unknown key{hint}", at_key=True)
    if kind == "missing":
        return source.problem(loc, "required key is missing")
    return source.problem(loc, _message(kind, value, err))


def _message(kind: str, value: object, err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"{value!r} is not one of {ctx.get('expected')}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind == "string_type":
        return f"expected text, got {value!r}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {value!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of keys, got {value!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(iter(ctx.values()), "?")
        words = {
            "greater_than_equal": "at least",
            "less_than_equal": "at most",
            "greater_than": "more than",
            "less_than": "less than",
        }
        return f"must be {words[kind]} {bound}, got {value!r}"
    return str(err["msg"])


def _known_keys(loc: PathKey) -> list[str]:
    """The keys allowed by the model at ``loc`` (walking the model types), for "did you mean"."""
    model: Any = RulesFile
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            field = (
                next((f for f in model.model_fields.values() if f.alias == part), None)
                if isinstance(model, type) and issubclass(model, BaseModel)
                else None
            )
        if field is None:
            return []
        model = _model_in(field.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X | None`` or ``tuple[X, ...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
