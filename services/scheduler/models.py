"""Request and response bodies of the scheduler's internal API (the gateway mirrors them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.scheduler.options import PREVIEW_DEFAULT, PREVIEW_MAX


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str  # a Productive (or Modified) lambda of the account
    cron: str  # five fields, UTC, e.g. "*/5 * * * *"
    payload: Any = None  # the lambda's input payload; at most 8,000 characters as JSON
    enabled: bool = True


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str | None = None
    cron: str | None = None
    payload: Any = None  # only applied when present in the body (null is a value)
    enabled: bool | None = None


class ScheduleOut(BaseModel):
    id: str
    account_id: str
    lambda_id: str
    lambda_name: str | None  # from the lambda cache; None once the lambda is gone
    cron: str
    payload: Any
    enabled: bool
    next_invocation_ms: int | None  # next due minute (UTC epoch ms); None while disabled
    last_invocation_ms: int | None  # due minute of the last fire
    last_state: Literal["success", "failure"] | None  # result of the last finished invocation
    last_outcome: str | None  # SUCCEEDED, CODING_FAILURE, PLATFORM_FAILURE, TIMEOUT, UNKNOWN
    last_error: dict[str, Any] | None
    last_activation_id: str | None
    last_run_ms: int | None  # when the invocation whose result is shown started
    created_ms: int
    updated_ms: int


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str
    count: int = Field(default=PREVIEW_DEFAULT, ge=1, le=PREVIEW_MAX)
    after_ms: int | None = None  # default: now


class PreviewOut(BaseModel):
    cron: str  # normalised
    next_ms: list[int]  # next run times, UTC epoch ms
    next: list[str]  # the same as ISO 8601 UTC
