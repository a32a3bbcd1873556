"""Public log search, live tail and invocation metrics, forwarded to log-ingest.

The gateway checks the caller and the permission, then hands the query to
log-ingest's internal API (``/internal/search/logs``, ``…/stream``,
``/internal/metrics``) with the account id from the path, never from the query.
Errors of log-ingest (422 for a bad filter, 404 for another account's lambda)
reach the caller as they are. See docs/observability.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from enum import Enum
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from fnbus.api_models import ErrorOut
from fnbus.errors import ApiError, UpstreamUnavailable
from fnbus.identity import Identity
from fnbus.permissions import Permission as P
from services.gateway.auth import require
from services.gateway.routes import ERRORS

router = APIRouter()

SSE = "text/event-stream"


class NotAcceptable(ApiError):
    status = 406
    code = "not_acceptable"


# The tail never ends by itself: only a caller that asks for an event stream gets one
# (browsers' EventSource always does), so a generic client is not left hanging.
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"description": "Server-Sent Events", "content": {SSE: {"schema": {"type": "string"}}}},
    406: {"model": ErrorOut, "description": f"the request's Accept does not include {SSE}"},
}


class Last(str, Enum):
    H1 = "1h"
    H24 = "24h"
    D7 = "7d"


class Bucket(str, Enum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


def _client(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.log_ingest
    return client


def _params(request: Request, account_id: str) -> httpx.QueryParams:
    # The path names the account; an account_id in the query is ignored, not forwarded.
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "account_id"]
    return httpx.QueryParams([*items, ("account_id", account_id)])


async def _forward(request: Request, path: str, account_id: str) -> Response:
    accept = request.headers.get("accept", "application/json")
    try:
        r = await _client(request).get(path, params=_params(request, account_id),
                                       headers={"Accept": accept})
    except httpx.HTTPError:
        raise UpstreamUnavailable("log-ingest unavailable", code="log_ingest_unavailable") from None
    if r.status_code >= 500:
        raise UpstreamUnavailable(f"log-ingest answered {r.status_code}")
    return Response(r.content, status_code=r.status_code,
                    media_type=r.headers.get("content-type", "application/json"))


@router.get("/api/v1/accounts/{account_id}/logs", responses=ERRORS,
            description=f"Requires permission `{P.LOGS_READ.value}`. Search log lines, newest "
                        "first, at most the retention window (7 days) back. Pass `next_cursor` "
                        "as `cursor` for the next page.",
            openapi_extra={"x-permission": P.LOGS_READ.value})
async def search_logs(
    account_id: str, request: Request, who: Identity = Depends(require(P.LOGS_READ)),
    lambda_id: Annotated[list[str] | None, Query(description="repeatable")] = None,
    levels: Annotated[list[str] | None, Query(
        description="debug, info, warn, error; repeatable or comma-separated")] = None,
    since: Annotated[str | None, Query(description="epoch ms or ISO 8601")] = None,
    until: Annotated[str | None, Query(description="epoch ms or ISO 8601")] = None,
    q: Annotated[str | None, Query(max_length=500, description="substring of the message")] = None,
    activation_id: str | None = None,
    trace_id: Annotated[str | None, Query(
        max_length=64, description="W3C trace id (32 hex): every line of one invocation, "
                                   "all attempts; see the traceparent of its response")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> Response:
    return await _forward(request, "/internal/search/logs", account_id)


@router.get("/api/v1/accounts/{account_id}/logs/stream", responses=STREAM_RESPONSES,
            description=f"Requires permission `{P.LOGS_READ.value}`. Live tail as Server-Sent "
                        "Events: `event: log` with a log line as `data`, comments as heartbeats. "
                        f"Send `Accept: {SSE}` (406 otherwise).",
            openapi_extra={"x-permission": P.LOGS_READ.value},
            response_class=StreamingResponse)
async def stream_logs(
    account_id: str, request: Request, who: Identity = Depends(require(P.LOGS_READ)),
    lambda_id: Annotated[list[str] | None, Query(description="repeatable")] = None,
    levels: Annotated[list[str] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
    activation_id: str | None = None,
    trace_id: Annotated[str | None, Query(max_length=64, description="W3C trace id")] = None,
    heartbeat_s: Annotated[float, Query(ge=0.5, le=300)] = 15.0,
) -> Response:
    if SSE not in request.headers.get("accept", ""):
        raise NotAcceptable(f"the live tail is an event stream: send 'Accept: {SSE}'")
    client = _client(request)
    upstream = client.build_request("GET", "/internal/search/logs/stream",
                                    params=_params(request, account_id),
                                    timeout=httpx.Timeout(10.0, read=None))
    try:
        r = await client.send(upstream, stream=True)
    except httpx.HTTPError:
        raise UpstreamUnavailable("log-ingest unavailable", code="log_ingest_unavailable") from None
    if r.status_code != 200:
        body = await r.aread()
        await r.aclose()
        if r.status_code >= 500:
            raise UpstreamUnavailable(f"log-ingest answered {r.status_code}")
        return Response(body, status_code=r.status_code,
                        media_type=r.headers.get("content-type", "application/json"))

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in r.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # log-ingest went away: end the stream; the client reconnects
        finally:
            await r.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/api/v1/accounts/{account_id}/metrics", responses=ERRORS,
            description=f"Requires permission `{P.REPORTING_READ.value}`. Invocations per "
                        "bucket by state, duration percentiles, cold starts, retries and dead "
                        "letters, from rollups. JSON, or CSV with `Accept: text/csv`.",
            openapi_extra={"x-permission": P.REPORTING_READ.value})
async def get_metrics(
    account_id: str, request: Request, who: Identity = Depends(require(P.REPORTING_READ)),
    lambda_id: str | None = None, last: Last = Last.H24, bucket: Bucket = Bucket.HOUR,
) -> Any:
    return await _forward(request, "/internal/metrics", account_id)
