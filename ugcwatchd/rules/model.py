"""The rules file's model: one strict pydantic model per block, as the operator writes it.

Every model is strict and forbids unknown keys, so a typo or a wrong type is reported, never guessed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from .values import (
    ApiUrl,
    Duration,
    SourceLanguage,
    TargetLanguage,
    check_ledger_url,
    check_listen,
    check_name,
    check_webhook_url,
    parse_facedub_duration,
    template,
)

DEFAULT_IGNORE = (".*", "~$*", "*.part", "*.tmp", "*.crdownload", "@eaDir", "#recycle", "Thumbs.db", "desktop.ini")
PHOTO_PATTERNS = ("*.jpg", "*.jpeg", "*.png", "*.webp")
VIDEO_PATTERNS = ("*.mp4", "*.mov", "*.m4v", "*.mkv", "*.webm", "*.avi")
AUDIO_PATTERNS = ("*.mp3", "*.wav", "*.m4a", "*.aac", "*.flac", "*.ogg", "*.opus")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=False)


class ProviderSettings(_Strict):
    """What every ``providers.NAME`` block has; the core reads budgets and overage only through this."""

    base_url: ApiUrl
    api_key: SecretStr | None = None
    poll_every: Duration = Field(10.0, ge=1)

    @property
    def daily_budget(self) -> int | None:
        """Today's spend limit in the provider's own unit, or None."""
        return None

    @property
    def allows_overage(self) -> bool:
        """Whether work may go beyond the credits left (the provider bills the difference)."""
        return False

    @property
    def settle_after(self) -> float:
        """How long after a request's body was sent the provider may still create its job."""
        return 0.0


class FaceDubProvider(ProviderSettings):
    base_url: ApiUrl = "https://api.facedub.io"
    max_concurrent_jobs: int = Field(2, ge=1, le=2, description="FaceDub allows 2 concurrent jobs per user")
    poll_every: Duration = Field(10.0, ge=1)
    allow_overage: bool = False
    daily_credit_budget: int | None = Field(None, ge=0)
    # A FaceDub backend may create a job after answering 5xx or timing out: "nothing was created" is
    # concluded only this long after the body was sent, and after two list reads 30 s apart agree.
    reconcile_grace: Duration = Field(120.0, ge=0)
    # A result download larger than this (announced by Content-Length, or counted while reading) or slower
    # than download_timeout overall fails, and is tried again later as a download.
    max_download_bytes: int = Field(20 * 1024**3, ge=1024, le=1024**4)
    download_timeout: Duration = Field(1800.0, ge=1, le=86400)

    @property
    def daily_budget(self) -> int | None:
        return self.daily_credit_budget

    @property
    def settle_after(self) -> float:
        return self.reconcile_grace

    @property
    def allows_overage(self) -> bool:
        return self.allow_overage


class DubLabProvider(ProviderSettings):
    base_url: ApiUrl = "https://dublab.app"
    poll_every: Duration = Field(15.0, ge=1)
    daily_seconds_budget: int | None = Field(None, ge=0)

    @property
    def daily_budget(self) -> int | None:
        return self.daily_seconds_budget


class Providers(_Strict):
    facedub: FaceDubProvider = FaceDubProvider()
    dublab: DubLabProvider = DubLabProvider()

    def settings(self, name: str) -> ProviderSettings:
        """The block of the provider called ``name``."""
        block = getattr(self, name)
        assert isinstance(block, ProviderSettings)
        return block


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
    archive_dir: Annotated[str, template("outbox", "inbox", "name", parts=True)] = "{outbox}/originals"
    failed_dir: Annotated[str, template("outbox", "inbox", "name", parts=True)] = "{outbox}/failed"
    reprocess_duplicates: bool = False
    # per_inbox: content is a duplicate only of work done for the same concrete inbox (the same client)
    duplicates: Literal["per_inbox", "per_rule"] = "per_inbox"


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
    # true | false | the target languages that get studio quality (2x credits)
    studio_quality: bool | list[TargetLanguage] = False
    # a file in a subfolder named like `de+es` or `fr@studio` is dubbed into those languages instead
    options_from_folders: bool = False

    @model_validator(mode="after")
    def _distinct(self) -> DubLabAction:
        repeated = sorted({c for c in self.to if self.to.count(c) > 1})
        if repeated:
            raise ValueError(f"to lists {', '.join(repeated)} more than once")
        if self.from_ in self.to:
            raise ValueError(f"to includes the source language {self.from_!r}")
        if isinstance(self.studio_quality, list):
            stray = sorted(set(self.studio_quality) - set(self.to))
            if stray:
                raise ValueError(f"studio_quality lists {', '.join(stray)}, which to does not")
        return self

    def studio_for(self, lang: str) -> bool:
        """Whether the dub into ``lang`` is made in studio quality."""
        if isinstance(self.studio_quality, bool):
            return self.studio_quality
        return lang in self.studio_quality


class Budget(_Strict):
    """A rule's spend limit per concrete inbox (per client), in its provider's unit."""

    daily: int | None = Field(None, ge=0)
    monthly: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _some(self) -> Budget:
        if self.daily is None and self.monthly is None:
            raise ValueError("a budget needs daily, monthly or both")
        return self


class Rule(Behaviour):
    name: Annotated[str, AfterValidator(check_name)] | None = None
    inbox: str = Field(min_length=1)
    outbox: Annotated[str, template("inbox", "name", parts=True), Field(min_length=1)] = "../outbox"
    match: list[str] | None = Field(None, min_length=1)
    notify: Notify | None = None
    # credits (DubLab: seconds of credit): a drop whose estimate passes this waits for an operator's approval
    approve_above: int | None = Field(None, ge=0)
    budget: Budget | None = None
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
    console_listen: Annotated[str, AfterValidator(check_listen)] | None = None  # the web console; off by default
    notify: Notify | None = None
    # A postgresql:// URL: the ledger several daemons share; None = SQLite in the state folder
    ledger: Annotated[SecretStr, AfterValidator(check_ledger_url)] | None = None
    lease_ttl: Duration = Field(30.0, ge=10, le=600)  # a dead daemon's work is taken over after this
    rules: list[Rule] = Field(min_length=1)
