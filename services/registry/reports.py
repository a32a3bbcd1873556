"""Email-report settings and send-now, internal routes of the registry.

The gateway checks the permission and forwards (``services/gateway/reports.py``);
composition, rendering and sending are :mod:`fnbus.reports`. The periodic sends run in
the scheduler (:class:`fnbus.reports.ReportRunner`).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import APIRouter, Depends, Request

from fnbus import reports
from fnbus.errors import Conflict, UpstreamUnavailable
from fnbus.internal_api import Who, require_service

log = logging.getLogger(__name__)

router = APIRouter(prefix="/internal/accounts/{account_id}/reports",
                   dependencies=[Depends(require_service)])


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.db


@router.get("/settings")
async def get_settings(who: Who, request: Request) -> reports.ReportSettings:
    return await reports.load_settings(_pool(request), who.account_id)


@router.put("/settings")
async def put_settings(body: reports.ReportSettings, who: Who, request: Request
                       ) -> reports.ReportSettings:
    saved = await reports.save_settings(_pool(request), who.account_id, body)
    log.info("report settings saved", extra={"account": who.account_id,
                                             "frequency": body.frequency.value,
                                             "recipients": len(body.recipients)})
    return saved


@router.post("/send-now")
async def send_now(who: Who, request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    try:
        sent = await reports.send_now(_pool(request), settings, reports.HttpMetrics(settings),
                                      reports.SmtpSender(settings), who.account_id)
    except reports.NoRecipients as exc:
        raise Conflict(str(exc), code="no_recipients") from None
    except reports.SendFailed as exc:
        raise UpstreamUnavailable(f"the mail server refused the report: {exc}",
                                  code="smtp_unavailable") from None
    return {"period": sent.period, "recipients": sent.recipients, "message_id": sent.message_id,
            "functions": sent.functions}
