"""``ugcwatchd check``: validate the rules and the folders, show what the daemon would watch."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import ValidationError

from . import languages, yamlsource
from .errors import AuthRejected, ConfigError, Problem, RateLimited, Transient, UgcwatchdError
from .inbox.mounts import creatable_below
from .inbox.options import rule_targets
from .ledger.facts import write_languages
from .ledger_location import cache_place, pg_target, schema_report
from .live_languages import refresh, use_cached
from .providers import registry
from .rules import Config, DubLabAction, FaceDubAction, Inbox, Providers, ResolvedRule
from .settings import ApiKey, Settings, api_key, state_dir_problem, unreadable_credential


@dataclass
class Report:
    """What ``check`` found: lines to show, warnings, and problems that make it fail."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


def folder_problem(path: Path, *, write: bool, purpose: str) -> str | None:
    """Why ``path`` cannot serve as a folder we read (and, with ``write``, change), or None."""
    if not path.exists():
        return f"{path} does not exist (create it, or mount the share it lives on)"
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{path} is not readable by {_user()}"
    if write and not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by {_user()}, which it must be {purpose}"
    return None


def creatable_problem(path: Path, purpose: str) -> str | None:
    """Why ``path`` can neither be used nor created when first needed, or None."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe == path:
        return folder_problem(path, write=True, purpose=purpose)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return f"{path} does not exist and cannot be created: {probe} is not a writable folder for {_user()}"
    return None


def created_by_run(inbox: Inbox) -> bool:
    """The outbox is missing and ``run`` creates it: its parent is a folder on the inbox's own device.

    (A folder on another device may be a bare mount point whose share is offline: ``run`` never writes there.)
    """
    return creatable_below(inbox.outbox, inbox.path) is not None


def _outbox_problem(inbox: Inbox) -> str | None:
    base = creatable_below(inbox.outbox, inbox.path)
    if base is not None:
        return folder_problem(base, write=True, purpose=f"to create the outbox {inbox.outbox}")
    return folder_problem(inbox.outbox, write=True, purpose="to write results and sidecars")


def _problem(config: Config, rule: ResolvedRule, key: str, message: str) -> Problem:
    """A problem with ``key`` of ``rule``, at the line that set it; a default is shown at the rule's own
    ``outbox`` or ``inbox`` line, which the defaulted folder derives from."""
    path = rule.key_path(key)
    if path in config.source.value_marks:
        return config.problem(path, message)
    anchor = next(
        (
            p
            for p in (("rules", rule.index, "outbox"), ("rules", rule.index, "inbox"))
            if p in config.source.value_marks
        ),
        ("rules", rule.index),
    )
    at = config.problem(anchor, message)
    return Problem(at.file, at.line, at.column, f"rules[{rule.index}].{key}", message)


def _check_inbox(config: Config, inbox: Inbox, report: Report) -> None:
    rule = inbox.rule
    moves = rule.behaviour.on_success != "keep" or rule.behaviour.on_failure != "keep"
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("inbox", lambda: folder_problem(inbox.path, write=moves, purpose="to move inputs out after their outcome")),
        ("outbox", lambda: _outbox_problem(inbox)),
    ]
    if rule.behaviour.on_success == "archive":
        checks.append(("archive_dir", lambda: creatable_problem(inbox.archive_dir, "to archive inputs")))
    if rule.behaviour.on_failure == "move":
        checks.append(("failed_dir", lambda: creatable_problem(inbox.failed_dir, "to keep failed inputs")))
    for key, check in checks:
        message = check()
        if message is not None:
            report.problems.append(_problem(config, rule, key, message))


def _describe_action(rule: ResolvedRule) -> str:
    action = rule.action
    if isinstance(action, FaceDubAction):
        text = f"facedub: pair_by {action.pair_by}, duration {action.duration}"
        if action.pair_by == "folder":
            text += f", at most {action.max_jobs_per_folder} jobs a folder" + (
                f", done_marker {action.done_marker}" if action.done_marker else ""
            )
        else:
            text += f", pair_timeout {_seconds(action.pair_timeout)}"
        return text
    assert isinstance(action, DubLabAction)
    folders = ", or as each subfolder names (options_from_folders)" if action.options_from_folders else ""
    return f"dublab: {action.from_} -> {rule_targets(action).describe()}{folders}"


def _describe_rule(rule: ResolvedRule, inboxes: list[Inbox], report: Report) -> None:
    b = rule.behaviour
    report.lines.append(f"rule {rule.name!r} (rules[{rule.index}]): {_describe_action(rule)}")
    report.lines.append(f"  inbox pattern {rule.pattern}, matching {', '.join(rule.match)}")
    report.lines.append(
        f"  stable_after {_seconds(b.stable_after)}, watch_mode {b.watch_mode}, "
        f"rescan_every {_seconds(b.rescan_every)}, "
        f"recursive {'yes' if b.recursive else 'no'}, on_success {b.on_success}, on_failure {b.on_failure}, "
        f"reprocess_duplicates {'yes' if b.reprocess_duplicates else 'no'}, duplicates {b.duplicates}"
    )
    if rule.is_glob and not inboxes:
        report.warnings.append(
            f"rule {rule.name!r}: no folder matches {rule.pattern} yet (new matches are picked up while running)"
        )
    for inbox in inboxes:
        report.lines.append(f"  inbox   {inbox.path}")
        report.lines.append(f"    outbox  {inbox.outbox}" + (" (will be created)" if created_by_run(inbox) else ""))
        if b.on_success == "archive":
            report.lines.append(f"    archive {inbox.archive_dir}")
        if b.on_failure == "move":
            report.lines.append(f"    failed  {inbox.failed_dir}")


def provider_keys(config: Config, settings: Settings, unusable: dict[str, str] | None = None) -> dict[str, ApiKey]:
    """The key of each provider that some rule uses; a key that cannot be used goes to ``unusable`` (why)."""
    keys: dict[str, ApiKey] = {}
    for p in sorted({rule.provider for rule in config.rules}):
        try:
            keys[p] = api_key(p, config.providers.settings(p).api_key, settings)
        except ConfigError as exc:
            if unusable is None:
                raise
            unusable[p] = str(exc)
    return keys


def _check_state_dir(settings: Settings, report: Report, mountinfo: str | None) -> None:
    state_dir = settings.resolved_state_dir()
    report.lines.append(f"state folder {state_dir}")
    problem = state_dir_problem(state_dir, mountinfo)
    if problem is not None:
        report.problems.append(Problem("environment", None, None, "", problem))


def _check_ledger(config: Config, settings: Settings, report: Report) -> None:
    """A PostgreSQL ledger: reachable with its password, at a schema this ugcwatchd knows."""
    try:
        target = pg_target(settings, config)
    except ConfigError as exc:
        report.problems.append(_ledger_problem(config, str(exc)))
        return
    if target is None:
        return
    line, problem = schema_report(target)
    report.lines.append(line)
    if problem is not None:
        report.problems.append(_ledger_problem(config, problem))


def _ledger_problem(config: Config, message: str) -> Problem:
    """At the rules file's ``ledger:`` when it sets one, else at ``UGCWATCHD_LEDGER``."""
    if config.ledger:
        return config.problem(("ledger",), message)
    return Problem("environment", None, None, "UGCWATCHD_LEDGER", message)


def check_offline(config: Config, settings: Settings, *, mountinfo: str | None = None) -> Report:
    """Everything ``check --offline`` verifies: rules, folders, the state folder, whether keys are configured.

    ``mountinfo`` stands in for ``/proc/self/mountinfo`` (tests).
    """
    report = Report()
    report.lines.append(f"rules file {config.file}: {len(config.rules)} rule{'s' if len(config.rules) != 1 else ''}")
    for rule in config.rules:
        inboxes = rule.inboxes()
        _describe_rule(rule, inboxes, report)
        for inbox in inboxes:
            _check_inbox(config, inbox, report)
    _check_state_dir(settings, report, mountinfo)
    _check_ledger(config, settings, report)
    unusable: dict[str, str] = {}
    keys = provider_keys(config, settings, unusable)
    for provider, why in unusable.items():
        report.problems.append(config.problem(("providers", provider, "api_key"), why))
    for provider, key in keys.items():
        p = config.providers.settings(provider)
        key_text = f"key from {key.origin}" if key.present else "no key"
        report.lines.append(f"provider {provider}: {p.base_url}, {key_text}, poll every {_seconds(p.poll_every)}")
        if not key.present:
            report.warnings.append(_no_key(provider, settings))
    return report


def _no_key(provider: str, settings: Settings) -> str:
    hidden = unreadable_credential(provider, settings)
    if hidden is not None:
        # The unit's LoadCredential= reads it as root: its absence here says nothing about the daemon.
        return (
            f"no {provider} API key readable by {_user()}: the service gets it from {hidden} (LoadCredential=); "
            "run `sudo ugcwatchd check` to verify it"
        )
    return (
        f"no {provider} API key: set UGCWATCHD_{provider.upper()}_API_KEY, providers.{provider}.api_key, "
        f"or the systemd credential {provider}_api_key (the daemon will not start without it)"
    )


async def check_online(
    config: Config, settings: Settings, report: Report, *, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    """Verify each used provider's key and show its credits; check languages against the live list."""
    # A key that cannot be used at all was reported by check_offline already.
    for provider, key in provider_keys(config, settings, {}).items():
        where = ("providers", provider, "api_key")
        if key.value is None or not key.present:
            report.problems.append(config.problem(where, f"no {provider} API key, so it cannot be verified"))
            continue
        adapter = registry.build_provider(provider, config.providers.settings(provider), key.value, transport=transport)
        try:
            try:
                account = await adapter.account()
                live = await adapter.languages()
            finally:
                await adapter.aclose()
            report.lines.append(f"{provider}: key accepted; {account.description}")
            if live is not None:
                _check_live_languages(config, provider, live, report)
        except AuthRejected as exc:
            report.problems.append(
                config.problem(
                    where, f"the {provider} key from {key.origin} was refused ({exc.status}): {exc.provider_error}"
                )
            )
        except (Transient, RateLimited) as exc:
            raise UgcwatchdError(
                f"cannot verify the {provider} key: {exc}", remedy="check the network, or use --offline"
            ) from None


def _check_live_languages(config: Config, provider: str, live: frozenset[str], report: Report) -> None:
    """Every target language of ``provider``'s rules must be in the provider's current list."""
    for rule in config.rules:
        if rule.provider == provider and isinstance(rule.action, DubLabAction):
            for n, code in enumerate(rule.action.to):
                if code not in live:
                    path = ("rules", rule.index, provider, "to", n)
                    report.problems.append(config.problem(path, f"{code!r} is not in DubLab's current language list"))


# -- the language list the rules are checked against ------------------------------------------------


def use_languages(rules: Path, settings: Settings, *, online: bool) -> str:
    """Put in use the language list to check the rules against, before they are loaded; what it is, in words.

    Online, each provider whose key is set is asked now, and what it says is cached in the daemon's ledger
    if there is one (never created here). Else, or when that fails, the cached list; else the built-in one.
    Nothing here fails: a provider that cannot be asked is verified, and reported, by :func:`check_online`.
    """
    where, password = cache_place(settings, rules)
    use_cached(where, password)
    place = where if isinstance(where, Path) else "the PostgreSQL ledger"
    said = f"languages: the list cached in {place}" if languages.live() else ""
    providers = _providers_block(rules) if online else None
    if providers is not None:
        for name, codes in asyncio.run(_read_live(providers, settings)).items():
            cached = write_languages(where, name, codes, time.time(), password=password)
            said = f"languages: {name}'s current list ({len(codes)})" + (", cached in the ledger" if cached else "")
    return said or f"languages: the built-in list ({len(languages.BUILT_IN)})"


def _providers_block(rules: Path) -> Providers | None:
    """The ``providers`` block of the rules file alone: the rules are checked against the language list
    the providers give, so they cannot be loaded first. None when it cannot be read (load_rules says why)."""
    try:
        source = yamlsource.load(rules.read_text(encoding="utf-8"), str(rules), None)
        block = source.data.get("providers") if isinstance(source.data, dict) else None
        return Providers.model_validate(block or {})
    except (UgcwatchdError, ValidationError, OSError, UnicodeDecodeError):
        return None


async def _read_live(providers: Providers, settings: Settings) -> dict[str, frozenset[str]]:
    """Each provider's language list, from every provider whose key is set."""
    read: dict[str, frozenset[str]] = {}
    for name in registry.names():
        try:
            key = api_key(name, providers.settings(name).api_key, settings)
        except ConfigError:
            continue
        if key.value is None or not key.present:
            continue
        adapter = registry.build_provider(name, providers.settings(name), key.value)
        try:
            read.update(await refresh({name: adapter}, None, quiet=True))
        finally:
            await adapter.aclose()
    return read
