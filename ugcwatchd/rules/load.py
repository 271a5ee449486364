"""Loading the rules file: read, validate and resolve it, reporting every problem at once.

Each problem names its file, line, column and key path, e.g.
``rules.yaml:14:7: rules[1].dublab.to[0]: 'xx' is not a supported language``.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .. import yamlsource
from ..errors import ConfigError, ConfigProblems, Problem
from ..yamlsource import PathKey, Source
from .model import (
    AUDIO_PATTERNS,
    BEHAVIOUR_FIELDS,
    PHOTO_PATTERNS,
    VIDEO_PATTERNS,
    Behaviour,
    DubLabAction,
    FaceDubAction,
    Rule,
    RulesFile,
)
from .resolve import (
    BUILT_IN_TEMPLATES,
    PART,
    Config,
    ResolvedRule,
    absolute,
    find_overlaps,
    name_from,
    unique_name,
)


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
    config = Config(
        path,
        source,
        model.providers,
        rules,
        model.metrics_listen,
        model.notify,
        console_listen=model.console_listen,
        ledger=model.ledger.get_secret_value() if model.ledger is not None else None,
        lease_ttl=model.lease_ttl,
    )
    if not problems:  # the folders can be resolved only once every template is known
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
        name = rule.name or unique_name(name_from(rule.inbox), taken | set(explicit))
        taken.add(name)
        behaviour = model.defaults.model_copy(
            update={k: getattr(rule, k) for k in rule.model_fields_set & BEHAVIOUR_FIELDS}
        )
        action: FaceDubAction | DubLabAction = rule.facedub if rule.facedub is not None else rule.dublab  # type: ignore[assignment]
        pattern = str(absolute(rule.inbox, base))
        match = tuple(rule.match or ()) or (
            PHOTO_PATTERNS + VIDEO_PATTERNS if isinstance(action, FaceDubAction) else VIDEO_PATTERNS + AUDIO_PATTERNS
        )
        problems += _check_parts(rule, behaviour, i, source)
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
                rule.approve_above,
                rule.budget,
            )
        )
    return tuple(resolved)


def _check_parts(rule: Rule, behaviour: Behaviour, index: int, source: Source) -> list[Problem]:
    """A template may use a named part only if the inbox pattern names it; a part may not shadow a built-in."""
    problems = []
    named = set(PART.findall(rule.inbox))
    for shadow in sorted(named & BUILT_IN_TEMPLATES):
        problems.append(
            source.problem(
                ("rules", index, "inbox"), f"{{{shadow}}} is a built-in template; give the named part another name"
            )
        )
    for key in ("outbox", "archive_dir", "failed_dir"):
        own = key == "outbox" or key in rule.model_fields_set
        used = set(PART.findall(getattr(rule if own else behaviour, key))) - BUILT_IN_TEMPLATES
        for unknown in sorted(used - named):
            built_in = BUILT_IN_TEMPLATES - {"outbox"} if key == "outbox" else BUILT_IN_TEMPLATES
            known = ", ".join(f"{{{n}}}" for n in sorted(built_in | named))
            problems.append(
                source.problem(
                    ("rules", index, key) if own else ("defaults", key),
                    f"unknown template {{{unknown}}}: the inbox of rules[{index}] names no such part"
                    f" (known here: {known})",
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
