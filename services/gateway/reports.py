"""Email reports on the public API, forwarded to the registry (``services/registry/reports.py``).

Settings are validated here (422 before anything is stored) and again by the registry;
the rules are :class:`fnbus.reports.ReportSettings`.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from fnbus.reports import MAX_RECIPIENTS, ReportSettings
from services.gateway.auth import require
from services.gateway.routes import forward, operation

router = APIRouter(prefix="/api/v1/accounts/{account_id}/reports", tags=["reports"])
op = functools.partial(operation, router)


class SentReport(BaseModel):
    period: str  # 'manual:<time>' for send-now
    recipients: list[str]
    message_id: str
    functions: int  # rows in the report's table


async def _forward(request: Request, identity: Identity, body: Any = None) -> Response:
    return await forward(request.app.state.registry, request, identity, body)


@op("GET", "/settings", P.EMAIL_REPORT_READ, response_model=ReportSettings,
    summary="Email-report settings (recipients, frequency, failure-rate alert)")
async def get_report_settings(account_id: str, request: Request,
                              who: Identity = Depends(require(P.EMAIL_REPORT_READ))) -> Response:
    return await _forward(request, who)


@op("PUT", "/settings", P.EMAIL_REPORT_SETTINGS_WRITE, response_model=ReportSettings,
    summary="Replace the email-report settings",
    more=f"`recipients`: at most {MAX_RECIPIENTS} addresses; `frequency`: daily, weekly or "
         "off; `alert`: {`failure_rate` 0–1, `window_minutes` 1–1440, `min_invocations`} "
         "or null.")
async def put_report_settings(account_id: str, body: ReportSettings, request: Request,
                              who: Identity = Depends(require(P.EMAIL_REPORT_SETTINGS_WRITE))
                              ) -> Response:
    # every field, defaults included: PUT replaces the whole settings
    json = body.model_dump(mode="json")
    path = "/internal" + request.url.path.removeprefix("/api/v1")
    return await request.app.state.registry.forward("PUT", path, identity=who, json=json)


@op("POST", "/send-now", P.EMAIL_REPORT_SETTINGS_WRITE, response_model=SentReport,
    summary="Mail the report to the recipients at once",
    more="Covers the last 24 hours (7 days for weekly reports). 409 `no_recipients` "
         "without recipients; 503 `smtp_unavailable` when the mail server refuses.")
async def send_report_now(account_id: str, request: Request,
                          who: Identity = Depends(require(P.EMAIL_REPORT_SETTINGS_WRITE))
                          ) -> Response:
    return await _forward(request, who)
