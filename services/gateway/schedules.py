"""Public schedules endpoints under /api/v1, forwarded to the scheduler's internal API.

The scheduler owns the schedules and their rules (cron, payload size, productive
lambdas, ten scheduled functions per account); the gateway checks credentials
and the permission, validates the body's shape and passes the answer through.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1")
SCHEDULES = "/accounts/{account_id}/schedules"


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str = Field(description="a Productive (or Modified) lambda of the account")
    cron: str = Field(description='five fields, UTC, at most once a minute, e.g. "*/5 * * * *"')
    payload: Any = Field(default=None, description="the lambda's input payload; ≤ 8,000 "
                                                   "characters as JSON")
    enabled: bool = True


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lambda_id: str | None = None
    cron: str | None = None
    payload: Any = Field(default=None, description="applied only when present (null is a value)")
    enabled: bool | None = None


class ScheduleOut(BaseModel):
    id: str
    account_id: str
    lambda_id: str
    lambda_name: str | None
    cron: str
    payload: Any
    enabled: bool
    next_invocation_ms: int | None = Field(description="next due minute, UTC epoch ms")
    last_invocation_ms: int | None = Field(description="due minute of the last fire")
    last_state: Literal["success", "failure"] | None
    last_outcome: str | None
    last_error: dict[str, Any] | None
    last_activation_id: str | None
    last_run_ms: int | None
    created_ms: int
    updated_ms: int


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str
    count: int = Field(default=5, ge=1, le=50)
    after_ms: int | None = None


class PreviewOut(BaseModel):
    cron: str
    next_ms: list[int]
    next: list[str]


op = functools.partial(operation, router)


async def _forward(request: Request, identity: Identity, body: BaseModel | None = None,
                   params: dict[str, Any] | None = None) -> Response:
    return await forward(request.app.state.scheduler, request, identity, body, params)


@op("POST", SCHEDULES + "/preview", P.SCHEDULE_READ, response_model=PreviewOut,
    summary="Next run times of a cron expression (UTC)")
async def preview(account_id: str, body: PreviewIn, request: Request,
                  who: Identity = Depends(require(P.SCHEDULE_READ))) -> Response:
    return await _forward(request, who, body)


@op("GET", SCHEDULES + "/preview", P.SCHEDULE_READ, response_model=PreviewOut,
    summary="Next run times of a cron expression (UTC)")
async def preview_get(account_id: str, request: Request,
                      cron: Annotated[str, Query(description="five-field cron expression")],
                      count: Annotated[int, Query(ge=1, le=50)] = 5,
                      after_ms: int | None = None,
                      who: Identity = Depends(require(P.SCHEDULE_READ))) -> Response:
    params: dict[str, Any] = {"cron": cron, "count": count}
    if after_ms is not None:
        params["after_ms"] = after_ms
    return await _forward(request, who, params=params)


@op("GET", SCHEDULES, P.SCHEDULE_READ, response_model=list[ScheduleOut],
    summary="Schedules with their last and next invocation and last state")
async def list_schedules(account_id: str, request: Request,
                         who: Identity = Depends(require(P.SCHEDULE_READ))) -> Response:
    return await _forward(request, who)


@op("POST", SCHEDULES, P.SCHEDULE_WRITE, status_code=201, response_model=ScheduleOut,
    summary="Schedule a productive lambda")
async def create_schedule(account_id: str, body: ScheduleCreate, request: Request,
                          who: Identity = Depends(require(P.SCHEDULE_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("GET", SCHEDULES + "/{schedule_id}", P.SCHEDULE_READ, response_model=ScheduleOut)
async def get_schedule(account_id: str, schedule_id: str, request: Request,
                       who: Identity = Depends(require(P.SCHEDULE_READ))) -> Response:
    return await _forward(request, who)


@op("PATCH", SCHEDULES + "/{schedule_id}", P.SCHEDULE_WRITE, response_model=ScheduleOut)
async def update_schedule(account_id: str, schedule_id: str, body: ScheduleUpdate,
                          request: Request,
                          who: Identity = Depends(require(P.SCHEDULE_WRITE))) -> Response:
    return await _forward(request, who, body)


@op("DELETE", SCHEDULES + "/{schedule_id}", P.SCHEDULE_WRITE, status_code=204)
async def delete_schedule(account_id: str, schedule_id: str, request: Request,
                          who: Identity = Depends(require(P.SCHEDULE_WRITE))) -> Response:
    return await _forward(request, who)
