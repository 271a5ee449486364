"""The rules file: its model, loading with line numbers, and resolution to folders.

``values`` holds the value types and their checks, ``model`` the pydantic model of the file, ``resolve``
the resolved rules and their concrete inboxes, ``load`` the loading that reports every problem at once.
Everything other modules use is importable from here.
"""

from __future__ import annotations

from .load import load_rules
from .model import (
    AUDIO_PATTERNS,
    BEHAVIOUR_FIELDS,
    DEFAULT_IGNORE,
    PHOTO_PATTERNS,
    VIDEO_PATTERNS,
    Behaviour,
    Budget,
    DubLabAction,
    DubLabProvider,
    FaceDubAction,
    FaceDubProvider,
    Notify,
    Providers,
    ProviderSettings,
    Rule,
    RulesFile,
)
from .resolve import PART, Config, Inbox, ResolvedRule, find_overlaps
from .values import (
    ApiUrl,
    Duration,
    SourceLanguage,
    TargetLanguage,
    check_api_url,
    check_listen,
    check_name,
    check_source_language,
    check_target_language,
    check_webhook_url,
    parse_duration,
    parse_facedub_duration,
)

__all__ = [
    "AUDIO_PATTERNS",
    "BEHAVIOUR_FIELDS",
    "DEFAULT_IGNORE",
    "PART",
    "PHOTO_PATTERNS",
    "VIDEO_PATTERNS",
    "ApiUrl",
    "Behaviour",
    "Budget",
    "Config",
    "DubLabAction",
    "DubLabProvider",
    "Duration",
    "FaceDubAction",
    "FaceDubProvider",
    "Inbox",
    "Notify",
    "ProviderSettings",
    "Providers",
    "ResolvedRule",
    "Rule",
    "RulesFile",
    "SourceLanguage",
    "TargetLanguage",
    "check_api_url",
    "check_listen",
    "check_name",
    "check_source_language",
    "check_target_language",
    "check_webhook_url",
    "find_overlaps",
    "load_rules",
    "parse_duration",
    "parse_facedub_duration",
]
