"""Settings from the ``UGCWATCHD_*`` environment variables, and where API keys come from.

Keys are held as :class:`~pydantic.SecretStr`, whose ``str`` and ``repr`` are masked, so a key cannot
reach a log line or an error message by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, ConfigProblems, Problem

DEFAULT_RULES = Path("/etc/ugcwatchd/rules.yaml")


class Settings(BaseSettings):
    """``UGCWATCHD_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="UGCWATCHD_", extra="ignore", case_sensitive=False)

    config: Path | None = None
    state_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "text", "journal", "json"] = "auto"
    facedub_api_key: SecretStr | None = None
    dublab_api_key: SecretStr | None = None

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
        """``$UGCWATCHD_STATE_DIR``, else systemd's ``$STATE_DIRECTORY``, else the XDG state folder."""
        env = os.environ if env is None else env
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        if env.get("STATE_DIRECTORY"):
            # systemd joins several StateDirectory= entries with ':'; ours is the first.
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        xdg = env.get("XDG_STATE_HOME")
        base = (
            Path(xdg)
            if xdg and Path(xdg).is_absolute()
            else Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
        )
        return base / "ugcwatchd"


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
    """The key for ``provider``: the rules file, then ``UGCWATCHD_*_API_KEY``, then systemd credentials."""
    env = os.environ if env is None else env
    if from_rules is not None and from_rules.get_secret_value():
        return ApiKey(from_rules, f"providers.{provider}.api_key in the rules file")
    variable = f"UGCWATCHD_{provider.upper()}_API_KEY"
    from_env = _env_key(provider, settings, env, variable)
    if from_env is not None and from_env.get_secret_value():
        return ApiKey(from_env, variable)
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / f"{provider}_api_key"
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(f"cannot read the credential {path}: {exc.strerror}") from None
        if text:
            return ApiKey(SecretStr(text), f"systemd credential {provider}_api_key")
    return ApiKey(None, "not set")


def _env_key(provider: str, settings: Settings, env: Mapping[str, str], variable: str) -> SecretStr | None:
    """``settings.<provider>_api_key``; for a provider without such a field, the variable itself."""
    field = f"{provider}_api_key"
    if field in Settings.model_fields:
        value = getattr(settings, field)
        assert value is None or isinstance(value, SecretStr)
        return value
    text = env.get(variable)
    return SecretStr(text) if text is not None else None
