"""FaceDub's answers as its API document describes them, read strictly: a value of another type is an
odd answer, never coerced."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr

TERMINAL = frozenset({"completed", "failed"})


class _Answer(BaseModel):  # strict: read as documented, never coerced ("10" is not 10, 1.5 not an int)
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class CreatedJob(_Answer):
    job_id: str
    status: str
    credits_charged: int
    is_overage: bool = False


class Job(_Answer):
    id: str
    status: str
    stage: str | None = None
    output_url: str | None = None
    created_at: int
    error: str | None = None
    duration_seconds: int  # required, as documented: reconciliation matches on it
    credits_charged: int | None = None

    @property
    def active(self) -> bool:
        """Queued or processing: holding one of the account's two job slots."""
        return self.status not in TERMINAL


class Usage(_Answer):
    plan: str
    credits_used: int
    credits_limit: int
    bonus_credits: int = 0
    credits_remaining: int


class ApiKeyInfo(_Answer):
    id: str
    name: str
    prefix: str
    created_at: int


class NewApiKey(ApiKeyInfo):
    key: SecretStr
