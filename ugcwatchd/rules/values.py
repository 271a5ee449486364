"""The value types of the rules file: durations, languages, URLs, listen addresses, names and path templates.

Each check raises ``ValueError`` with the message the operator reads next to the key's line and column.
"""

from __future__ import annotations

import re
import string
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, SecretStr

from .. import languages
from ..urls import https_or_loopback

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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
    close = languages.closest(code)
    return f" (did you mean '{close}'?)" if close else ""


def check_target_language(code: str) -> str:
    """A dub target: checked against the provider's list in use (see ``ugcwatchd.languages``)."""
    if code == "auto":
        raise ValueError("'auto' is not a dub target: auto-detection is only for from")
    if code not in languages.known():
        raise ValueError(f"{code!r} is not a supported language{_language_hint(code)}")
    return code


def check_source_language(code: str) -> str:
    if code != "auto" and code not in languages.known():
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


PART_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template(*allowed: str, parts: bool = False) -> AfterValidator:
    """A path template that may use only the ``allowed`` placeholders (and, with ``parts``, any plain
    ``{word}``: a named part of the inbox pattern, checked against the pattern once the rule is whole)."""

    def check(text: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid template: {exc}") from None
        if parts:
            fields = {f for f in fields if not PART_NAME.fullmatch(f)}
        unknown = sorted(fields - set(allowed))
        if unknown:
            known = ", ".join(f"{{{a}}}" for a in allowed)
            raise ValueError(f"unknown template {{{unknown[0]}}} (known here: {known})")
        return text

    return AfterValidator(check)


ApiUrl = Annotated[str, AfterValidator(check_api_url)]
TargetLanguage = Annotated[str, AfterValidator(check_target_language)]
SourceLanguage = Annotated[str, AfterValidator(check_source_language)]


def check_ledger_url(url: SecretStr) -> SecretStr:
    """``ledger:``: a PostgreSQL URL. The message never repeats the value: it may hold a password."""
    text = url.get_secret_value()
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL, e.g. postgresql://ugcwatchd@db.example/ugcwatchd")
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except Exception:  # psycopg's text may echo the URL, password included
        raise ValueError("is not a valid PostgreSQL URL: write it as postgresql://USER@HOST[:PORT]/DATABASE") from None
    return url
