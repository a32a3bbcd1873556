"""The scheduler's internal HTTP API, called by the gateway.

Every call carries ``Authorization: Bearer <service token>`` and the caller's
identity headers; the gateway has already checked the permission, this API
checks that the identity belongs to the path's account.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from fnbus.api_models import (
    SCHEDULE_PREVIEW_DEFAULT,
    SCHEDULE_PREVIEW_MAX,
    PreviewIn,
    PreviewOut,
    ScheduleCreate,
    ScheduleOut,
    ScheduleUpdate,
)
from fnbus.internal_api import Who, require_service
from services.scheduler import cron
from services.scheduler.clock import Clock
from services.scheduler.store import Schedules


def _schedules(request: Request) -> Schedules:
    return request.app.state.schedules


SchedulesDep = Annotated[Schedules, Depends(_schedules)]

router = APIRouter(prefix="/internal", dependencies=[Depends(require_service)])
BASE = "/accounts/{account_id}/schedules"


def _preview(clock: Clock, expr: str, count: int, after_ms: int | None) -> PreviewOut:
    normalised = cron.validate(expr)
    times = cron.preview(normalised, clock.now_ms() if after_ms is None else after_ms, count)
    iso = [datetime.fromtimestamp(t / 1000, UTC).isoformat().replace("+00:00", "Z") for t in times]
    return PreviewOut(cron=normalised, next_ms=times, next=iso)


@router.post(BASE + "/preview", response_model=PreviewOut)
async def preview_post(who: Who, body: PreviewIn, request: Request) -> PreviewOut:
    return _preview(request.app.state.clock, body.cron, body.count, body.after_ms)


@router.get(BASE + "/preview", response_model=PreviewOut)
async def preview_get(who: Who, request: Request, cron_expr: Annotated[str, Query(alias="cron")],
                      count: Annotated[int, Query(ge=1, le=SCHEDULE_PREVIEW_MAX)] = SCHEDULE_PREVIEW_DEFAULT,
                      after_ms: int | None = None) -> PreviewOut:
    return _preview(request.app.state.clock, cron_expr, count, after_ms)


@router.get(BASE, response_model=list[ScheduleOut])
async def list_schedules(who: Who, schedules: SchedulesDep) -> list[ScheduleOut]:
    return await schedules.list_all(who.account_id)


@router.post(BASE, response_model=ScheduleOut, status_code=201)
async def create_schedule(who: Who, body: ScheduleCreate, schedules: SchedulesDep) -> ScheduleOut:
    return await schedules.create(who.account_id, body)


@router.get(BASE + "/{schedule_id}", response_model=ScheduleOut)
async def get_schedule(who: Who, schedule_id: str, schedules: SchedulesDep) -> ScheduleOut:
    return await schedules.get(who.account_id, schedule_id)


@router.patch(BASE + "/{schedule_id}", response_model=ScheduleOut)
async def update_schedule(who: Who, schedule_id: str, body: ScheduleUpdate,
                          schedules: SchedulesDep) -> ScheduleOut:
    return await schedules.update(who.account_id, schedule_id, body)


@router.delete(BASE + "/{schedule_id}", status_code=204)
async def delete_schedule(who: Who, schedule_id: str, schedules: SchedulesDep) -> Response:
    await schedules.delete(who.account_id, schedule_id)
    return Response(status_code=204)
