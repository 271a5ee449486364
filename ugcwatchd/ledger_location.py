"""Where the ledger lives, and the one place the daemon and every command open it.

The default is the SQLite file in the state folder. ``ledger:`` in the rules file, else ``UGCWATCHD_LEDGER``,
names a PostgreSQL database instead. Its password comes from the URL, else from the credential
``ledger_password``, and goes to the driver apart from the URL. No message, log line or output shows a
password: a URL is shown without it (:attr:`Target.shown`), and a driver's text is redacted first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import ConfigError, ConfigProblems, LedgerError, UgcwatchdError
from .settings import Settings, ledger_password

if TYPE_CHECKING:
    import psycopg

    from .ledger import Ledger
    from .rules import Config

PG_SCHEMES = ("postgresql://", "postgres://")
CONNECT_TIMEOUT = 10
VARIABLE = "UGCWATCHD_LEDGER"
_OPEN_FAILED = "cannot open the PostgreSQL ledger: "  # how ledger/pg.py words a failed connection


def is_pg_url(text: str) -> bool:
    return text.startswith(PG_SCHEMES)


@dataclass(frozen=True)
class Target:
    """A PostgreSQL database: the URL, the password to add (if the URL has none), a name to show, and what
    named the URL (for messages)."""

    url: str
    password: str | None
    shown: str
    named: str = "the --to URL"

    @classmethod
    def parse(
        cls, url: str, settings: Settings, env: Mapping[str, str] | None = None, *, named: str = "the --to URL"
    ) -> Target:
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(url)
        except Exception:  # psycopg's text may echo the URL, password included
            raise ConfigError(
                f"{named} is not a valid PostgreSQL URL", remedy="write it as postgresql://USER@HOST[:PORT]/DATABASE"
            ) from None
        given = parts.get("password")
        password = str(given) if given else ledger_password(settings, env)
        user, host, port = str(parts.get("user") or ""), str(parts.get("host") or "localhost"), parts.get("port")
        at = f"{user}@" if user else ""
        shown = f"postgresql://{at}{host}{f':{port}' if port else ''}/{parts.get('dbname', '')}"
        return cls(url, None if given else password, shown, named)

    def secrets(self) -> list[str]:
        """The password, as written and as a URL spells it: what must never be shown."""
        from psycopg.conninfo import conninfo_to_dict

        found = [self.password or "", str(conninfo_to_dict(self.url).get("password") or "")]
        return [s for word in found if word for s in (word, quote(word, safe=""))]

    def redact(self, text: str) -> str:
        for secret in self.secrets():
            text = text.replace(secret, "***")
        return " ".join(text.split())

    def connect(self, timeout: int = CONNECT_TIMEOUT) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit), or the error a person reads (:func:`connect_error`)."""
        import psycopg

        try:
            return psycopg.connect(self.url, password=self.password, connect_timeout=timeout, autocommit=True)
        except psycopg.Error as exc:
            raise connect_error(exc, self) from None


def connect_error(exc: Exception, target: Target) -> UgcwatchdError:
    """One sentence for a failed connection, without the password; exit 78 when it is the configuration."""
    reason = target.redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    low = str(exc).lower()
    state = getattr(exc, "sqlstate", None)
    if state in ("28P01", "28000") or "password authentication failed" in low or "no password supplied" in low:
        return ConfigError(
            f"the PostgreSQL server at {target.shown} refused the login",
            remedy="check the user and the password (in the URL, or the credential ledger_password)",
        )
    if "connection option" in low or ("invalid" in low and "dsn" in low):
        return ConfigError(
            f"{target.named} is not valid: {reason}", remedy="write it as postgresql://USER@HOST[:PORT]/DATABASE"
        )
    if state == "3D000" or ("database" in low and "does not exist" in low):
        return ConfigError(
            f"the database of {target.shown} does not exist", remedy="create it (createdb) or correct the URL"
        )
    if state == "42501" or "permission denied" in low:
        return ConfigError(
            f"the PostgreSQL user of {target.shown} may not create or write the ledger's tables: {reason}",
            remedy="grant it CREATE on the database, or make it the database's owner",
        )
    return UgcwatchdError(
        f"cannot reach the PostgreSQL server at {target.shown}: {reason}",
        remedy="check that it runs and that the host and port are right",
    )


# -- where it is ------------------------------------------------------------------------------------


def rules_ledger(rules: Path, env: Mapping[str, str] | None = None) -> str | None:
    """The ``ledger:`` of the rules file alone, for commands that do not load the rules (``status``): None
    when the file cannot be read or sets none (:func:`~ugcwatchd.rules.load_rules` says why, where loaded)."""
    from pydantic import SecretStr

    from . import yamlsource
    from .rules.values import check_ledger_url

    try:
        source = yamlsource.load(rules.read_text(encoding="utf-8"), str(rules), env)
    except (OSError, UnicodeDecodeError, UgcwatchdError):
        return None
    value = source.data.get("ledger") if isinstance(source.data, dict) else None
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError("expected text: a postgresql:// URL")
        return check_ledger_url(SecretStr(value)).get_secret_value()
    except ValueError as exc:
        raise ConfigProblems([source.problem(("ledger",), str(exc))]) from None


def ledger_url(settings: Settings, config: Config | None, rules: Path | None = None) -> tuple[str, str] | None:
    """The PostgreSQL URL of the ledger and what named it; None for the SQLite ledger in the state folder.

    ``ledger:`` of the loaded ``config`` (or, without one, of the ``rules`` file), else ``UGCWATCHD_LEDGER``.
    """
    if config is not None and config.ledger:
        return config.ledger, f"ledger: in {config.file}"
    found = rules_ledger(rules) if config is None and rules is not None else None
    if found:
        return found, f"ledger: in {rules}"
    text = settings.ledger.get_secret_value().strip() if settings.ledger is not None else ""
    if not text:
        return None
    if not is_pg_url(text):
        raise ConfigError(f"{VARIABLE} must be a postgresql:// URL", remedy="e.g. postgresql://ugcwatchd@db/ugcwatchd")
    return text, VARIABLE


def pg_target(
    settings: Settings, config: Config | None, rules: Path | None = None, env: Mapping[str, str] | None = None
) -> Target | None:
    """The PostgreSQL database of the ledger, with its password; None for SQLite."""
    found = ledger_url(settings, config, rules)
    if found is None:
        return None
    url, named = found
    return Target.parse(url, settings, env, named=named)


def ledger_secrets(settings: Settings, config: Config | None) -> list[str]:
    """What the logs must mask: the ledger's password, in either spelling (none for SQLite)."""
    target = pg_target(settings, config)
    return target.secrets() if target is not None else []


def cache_place(settings: Settings, rules: Path) -> tuple[Path | str, str | None]:
    """Where the language list is cached, before the rules are loaded: (the SQLite file or the URL, password).

    Never fails: a ``ledger:`` that cannot be used falls back to the state folder (loading the rules says why).
    """
    from .ledger import FILE_NAME

    try:
        target = pg_target(settings, None, rules)
    except UgcwatchdError:
        target = None
    if target is None:
        return settings.resolved_state_dir() / FILE_NAME, None
    return target.url, target.password


# -- opening it -------------------------------------------------------------------------------------


def schema_of(target: Target) -> int | None:
    """The ledger schema version the database holds (None: no ledger there yet); or the error to show."""
    import psycopg

    conn = target.connect()
    try:
        with conn:
            row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            if not (row and row[0]):
                return None
            found = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    except psycopg.Error as exc:
        raise connect_error(exc, target) from None
    return int(found[0]) if found and found[0] is not None else None


def schema_report(target: Target) -> tuple[str, str | None]:
    """For ``check``: a line on the database's ledger, and what is wrong with it (None: nothing).

    A database that cannot be reached at all raises (exit 1), as a provider that cannot be reached does.
    """
    from .ledger.pg_schema import PG_SCHEMA_VERSION as KNOWN

    head = f"ledger {target.shown} ({target.named})"
    try:
        version = schema_of(target)
    except ConfigError as exc:
        return f"{head}: not usable", str(exc)
    if version is None:
        return f"{head}: reachable, no ledger yet (the daemon creates it, schema {KNOWN})", None
    if version > KNOWN:
        return f"{head}: schema {version}", (
            f"the ledger in {target.shown} is at schema {version}, newer than this ugcwatchd's {KNOWN} "
            "(upgrade ugcwatchd on every host that shares it)"
        )
    if version < KNOWN:
        return f"{head}: schema {version}; the daemon upgrades it to {KNOWN} at start", None
    return f"{head}: schema {version}, current", None


def open_ledger(settings: Settings, config: Config | None, *, create: bool, rules: Path | None = None) -> Ledger:
    """The ledger, where ``config`` (or the ``rules`` file, or ``UGCWATCHD_LEDGER``) says it is.

    ``create``: the daemon's, made (SQLite) or brought to this version's schema when needed. Without it
    (the commands that only read or answer), none is ever created: no SQLite ledger in the state folder, or a
    PostgreSQL database that holds none, is a configuration error (exit 78) saying where it looked.
    """
    from .ledger import Ledger

    target = pg_target(settings, config, rules)
    if target is None:
        return Ledger.open(settings.resolved_state_dir() if create else settings.existing_state_dir())
    if not create and schema_of(target) is None:
        raise ConfigError(
            f"no ledger found: the PostgreSQL database {target.shown} ({target.named}) holds none",
            remedy="start the daemon with it once, or copy a ledger there with `ugcwatchd migrate --to`",
        )
    try:
        return Ledger(target.url, password=target.password)
    except LedgerError as exc:
        if exc.message.startswith(_OPEN_FAILED):
            raise connect_error(LedgerError(exc.message.removeprefix(_OPEN_FAILED)), target) from None
        raise LedgerError(target.redact(exc.message), remedy=exc.remedy) from None


def command_ledger(rules: str | None) -> Ledger:
    """The daemon's ledger for an operator's command (``-c RULES`` or not): never created here (exit 78)."""
    settings = Settings.from_env()
    return open_ledger(settings, None, create=False, rules=settings.rules_path(rules))


def shown_place(settings: Settings, config: Config | None) -> str:
    """The ledger's place for a person: the SQLite file, or the URL without its password."""
    target = pg_target(settings, config)
    if target is None:
        from .ledger import FILE_NAME

        return str(settings.resolved_state_dir() / FILE_NAME)
    return target.shown
