"""Settings from the ``UGCWATCHD_*`` environment variables, and where API keys come from.

Keys are held as :class:`~pydantic.SecretStr`, whose ``str`` and ``repr`` are masked, so a key cannot
reach a log line or an error message by accident.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, ConfigProblems, Problem

DEFAULT_RULES = Path("/etc/ugcwatchd/rules.yaml")
SYSTEM_STATE_DIR = Path("/var/lib/ugcwatchd")
SYSTEM_CREDENTIALS_DIR = Path("/etc/ugcwatchd/credentials")
LEDGER_FILE = "ledger.sqlite3"  # ugcwatchd.ledger.FILE_NAME


class Settings(BaseSettings):
    """``UGCWATCHD_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="UGCWATCHD_", extra="ignore", case_sensitive=False)

    config: Path | None = None
    state_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "text", "journal", "json"] = "auto"
    facedub_api_key: SecretStr | None = None
    dublab_api_key: SecretStr | None = None
    console_token: SecretStr | None = None  # the web console's login token (also the credential console_token)
    # A postgresql:// URL: the ledger when the rules file has no `ledger:` (it may hold a password: secret)
    ledger: SecretStr | None = None
    # Where the service keeps its ledger and its keys: read by operator commands run outside the unit.
    # UGCWATCHD_SYSTEM_STATE_DIR and UGCWATCHD_SYSTEM_CREDENTIALS_DIR move them, for tests and packagers.
    system_state_dir: Path = SYSTEM_STATE_DIR
    system_credentials_dir: Path = SYSTEM_CREDENTIALS_DIR

    @classmethod
    def from_env(cls) -> Settings:
        """The settings, or a configuration error naming each bad variable."""
        try:
            return cls()
        except ValidationError as exc:
            problems = [
                Problem("environment", None, None, f"UGCWATCHD_{str(err['loc'][0]).upper()}", err["msg"])
                for err in exc.errors()
            ]
            raise ConfigProblems(problems) from None

    def rules_path(self, given: str | None) -> Path:
        """``-c RULES``, else ``$UGCWATCHD_CONFIG``, else ``/etc/ugcwatchd/rules.yaml``."""
        return Path(given) if given else self.config or DEFAULT_RULES

    def resolved_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """``$UGCWATCHD_STATE_DIR``, else systemd's ``$STATE_DIRECTORY``, else the service's state folder
        (``/var/lib/ugcwatchd``) when it holds a ledger, else the XDG state folder."""
        env = os.environ if env is None else env
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        if env.get("STATE_DIRECTORY"):
            # systemd joins several StateDirectory= entries with ':'; ours is the first.
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        if _holds_ledger(self.system_state_dir):
            return self.system_state_dir
        return self.user_state_dir(env)

    def user_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """``$XDG_STATE_HOME/ugcwatchd``, or ``~/.local/state/ugcwatchd``."""
        env = os.environ if env is None else env
        xdg = env.get("XDG_STATE_HOME")
        base = (
            Path(xdg)
            if xdg and Path(xdg).is_absolute()
            else Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
        )
        return base / "ugcwatchd"

    def existing_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        """The state folder of a ledger that exists, for commands that only read: they never create one.

        None found is a configuration error (exit 78) that says where it looked.
        """
        env = os.environ if env is None else env
        found = self.resolved_state_dir(env)
        try:
            exists = (found / LEDGER_FILE).is_file()
        except PermissionError:
            raise ConfigError(
                f"the ledger in {found} is not readable by {_user()}",
                remedy="run the command as root or as the service user (sudo -u ugcwatchd ugcwatchd ...)",
            ) from None
        if exists:
            return found
        if self.state_dir is not None:
            looked = f"{found} (UGCWATCHD_STATE_DIR)"
        elif env.get("STATE_DIRECTORY"):
            looked = f"{found} ($STATE_DIRECTORY)"
        else:
            looked = f"{self.system_state_dir} (the service's) and {found} ({_user()}'s)"
        raise ConfigError(
            f"no ledger found: looked in {looked}",
            remedy="the daemon has not run yet, or set UGCWATCHD_STATE_DIR to the folder it uses",
        )


@dataclass(frozen=True)
class ApiKey:
    """A provider key and, for messages, where it came from (never the key itself)."""

    value: SecretStr | None
    origin: str

    @property
    def present(self) -> bool:
        return self.value is not None and bool(self.value.get_secret_value())


def api_key(
    provider: str, from_rules: SecretStr | None, settings: Settings, env: Mapping[str, str] | None = None
) -> ApiKey:
    """The key for ``provider``: the rules file, then ``UGCWATCHD_*_API_KEY``, then systemd credentials.

    Surrounding whitespace (a file's or a variable's trailing newline) is dropped. A key with any other
    control character, or any non-ASCII character, cannot go into an HTTP header: that is a configuration
    error naming where the key came from, never the key.
    """
    env = os.environ if env is None else env
    origin = f"providers.{provider}.api_key in the rules file"
    found = _clean(provider, from_rules.get_secret_value() if from_rules is not None else None, origin)
    if found is not None:
        return ApiKey(found, origin)
    variable = f"UGCWATCHD_{provider.upper()}_API_KEY"
    from_env = _env_key(provider, settings, env, variable)
    found = _clean(provider, from_env.get_secret_value() if from_env is not None else None, variable)
    if found is not None:
        return ApiKey(found, variable)
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / f"{provider}_api_key"
        try:
            # Bytes, decoded here: a file in another encoding is a refused key, not a crash.
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(f"cannot read the credential {path}: {exc.strerror}") from None
        origin = f"systemd credential {provider}_api_key"
        found = _clean(provider, text, origin)
        if found is not None:
            return ApiKey(found, origin)
        return ApiKey(None, "not set")
    # Outside the unit (an operator's `check` or `usage` as root): the file LoadCredential= reads.
    path = settings.system_credentials_dir / f"{provider}_api_key"
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return ApiKey(None, "not set")
    origin = f"the credential file {path}"
    found = _clean(provider, text, origin)
    return ApiKey(found, origin) if found is not None else ApiKey(None, "not set")


CONSOLE_TOKEN_MIN = 16  # characters: the token guards paid actions, so a guessable one is refused


def console_token(settings: Settings, env: Mapping[str, str] | None = None) -> SecretStr | None:
    """The web console's token: ``UGCWATCHD_CONSOLE_TOKEN``, else ``$CREDENTIALS_DIRECTORY/console_token``;
    None when neither is set (the console's actions are then off).

    Surrounding whitespace is dropped, as for API keys; a control or non-ASCII character, or a token
    shorter than 16 characters, is a configuration error naming where it came from, never the token.
    """
    env = os.environ if env is None else env
    found = settings.console_token.get_secret_value() if settings.console_token is not None else None
    origin = "UGCWATCHD_CONSOLE_TOKEN"
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if not (found or "").strip() and credentials:
        path = Path(credentials) / "console_token"
        origin = "the systemd credential console_token"
        try:
            found = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            found = None
        except OSError as exc:
            raise ConfigError(f"cannot read the credential {path}: {exc.strerror}") from None
    text = (found or "").strip()
    if not text:
        return None
    what = None
    if not text.isascii():
        what = "contains a non-ASCII character"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        what = "contains a control character"
    elif len(text) < CONSOLE_TOKEN_MIN:
        what = f"is shorter than {CONSOLE_TOKEN_MIN} characters"
    if what is not None:
        raise ConfigError(
            f"the console token from {origin} {what}", remedy="make one with `openssl rand -hex 32` and set it again"
        )
    return SecretStr(text)


LEDGER_PASSWORD = "ledger_password"  # noqa: S105  # the credential's name, not a password


def ledger_password(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The credential ``ledger_password``: ``$CREDENTIALS_DIRECTORY`` under systemd, else the service's
    credential file when this user may read it (as for API keys); None when there is none.

    Surrounding whitespace is dropped; a control character is a configuration error naming the file, never
    the password.
    """
    env = os.environ if env is None else env
    folder = env.get("CREDENTIALS_DIRECTORY")
    path = Path(folder) / LEDGER_PASSWORD if folder else settings.system_credentials_dir / LEDGER_PASSWORD
    try:
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not folder:
            return None  # the service's file, not ours to read: the server will say a password is missing
        raise ConfigError(f"cannot read the credential {path}: {exc.strerror}") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(f"the ledger password from {path} contains a control character", remedy="write it again")
    return text or None


def unreadable_credential(provider: str, settings: Settings) -> Path | None:
    """The service's credential file for ``provider`` when it may exist but cannot be read here, else None.

    The daemon gets it from systemd (``LoadCredential=``), so its absence here says nothing about the unit.
    """
    folder = settings.system_credentials_dir
    path = folder / f"{provider}_api_key"
    try:
        path.stat()
    except PermissionError:
        return path  # the folder is root's: the file may well be there
    except OSError:
        return None
    return None if os.access(path, os.R_OK) else path


def _holds_ledger(folder: Path) -> bool:
    """``folder`` holds a ledger, or may (a folder we may not look into is the service's)."""
    try:
        return (folder / LEDGER_FILE).is_file()
    except PermissionError:
        return True


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _clean(provider: str, text: str | None, origin: str) -> SecretStr | None:
    """``text`` without surrounding whitespace (None when that leaves nothing), or a configuration error."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isascii():
        what = "a non-ASCII character"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        what = "a control character"
    else:
        return SecretStr(text)
    # The key itself, or any part of it, never goes into the message.
    raise ConfigError(
        f"the {provider} API key from {origin} contains {what}, which no API key has",
        remedy="copy the key again from the provider's dashboard",
    )


def _env_key(provider: str, settings: Settings, env: Mapping[str, str], variable: str) -> SecretStr | None:
    """``settings.<provider>_api_key``; for a provider without such a field, the variable itself."""
    field = f"{provider}_api_key"
    if field in Settings.model_fields:
        value = getattr(settings, field)
        assert value is None or isinstance(value, SecretStr)
        return value
    text = env.get(variable)
    return SecretStr(text) if text is not None else None


# -- the state folder -------------------------------------------------------------------------------


def state_dir_problem(path: Path, mountinfo: str | None = None) -> str | None:
    """Why the ledger must not live in ``path`` (a network share), or None.

    ``mountinfo`` is the text of ``/proc/self/mountinfo`` (read when None); the longest mount point that
    holds ``path``, or the folder it will be created in, decides.
    """
    from .inbox.mounts import filesystem_of, is_network_filesystem, mount_table

    fstype = filesystem_of(path, mount_table(mountinfo))
    if not is_network_filesystem(fstype):
        return None
    return (
        f"the state folder {path} is on {fstype}; SQLite's locks are not reliable there: "
        "use a local disk (UGCWATCHD_STATE_DIR)"
    )


def check_state_dir(path: Path, mountinfo: str | None = None) -> None:
    """Refuse a state folder on a network share (exit 78), before the ledger is opened there."""
    problem = state_dir_problem(path, mountinfo)
    if problem is not None:
        raise ConfigError(problem)
