"""Public schedules endpoints under /api/v1, forwarded to the scheduler's internal API.

The scheduler owns the schedules and their rules (cron, payload size, productive
lambdas, ten scheduled functions per account); the gateway checks credentials
and the permission, validates the body's shape and passes the answer through.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from fnbus.api_models import PreviewIn, PreviewOut, ScheduleCreate, ScheduleOut, ScheduleUpdate
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1")
SCHEDULES = "/accounts/{account_id}/schedules"


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
