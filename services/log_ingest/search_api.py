"""Internal API for the log search, its live tail and the invocation metrics.

Every route needs ``Authorization: Bearer <FNBUS_SERVICE_TOKEN>``; ``account_id``
is required everywhere so no caller reads across tenants by leaving it out. The
gateway forwards its public ``…/logs``, ``…/logs/stream`` and ``…/metrics`` here;
other services (the email reports) call the same routes. See docs/observability.md.

- ``GET /internal/search/logs`` — filters ``lambda_id`` (repeatable), ``levels``
  (repeatable or comma-separated: debug, info, warn, error; ``info`` includes the
  original's ``log``), ``since``/``until`` (epoch ms or ISO 8601, at most
  ``retention_days`` back), ``q`` (substring, case-insensitive), ``activation_id``,
  ``trace_id`` (the W3C trace id of an invocation: all its lines, every attempt),
  ``limit`` (1–1000, default 100), ``cursor`` → ``{"items", "next_cursor"}``,
  newest first.
- ``GET /internal/search/logs/stream`` — the same filters (no paging) as
  Server-Sent Events: ``event: log`` per new line, a comment as heartbeat.
- ``GET /internal/metrics`` — ``lambda_id``, ``last`` (1h, 24h, 7d), ``bucket``
  (minute, hour, day) → JSON, or CSV with ``Accept: text/csv``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from fnbus.errors import NotFound, Unprocessable
from fnbus.internal_api import require_service
from services.log_ingest import rollups
from services.log_ingest.records import log_item
from services.log_ingest.rollups import Grain, Window
from services.log_ingest.search import BadCursor, Cursor, LogFilter, SearchStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
TAIL_POLL_S = 0.5
TAIL_HEARTBEAT_S = 15.0
TAIL_BATCH = 500
# Lines may commit out of ingest_id order (two batches in flight); the tail looks
# back this long before it treats an ingest_id as settled.
TAIL_SETTLE_S = 5.0
# A tail ends after this long with a retry hint; EventSource clients reconnect by
# themselves, and a shutting-down server is not held open by forgotten tails.
TAIL_MAX_S = 3600.0
TAIL_RETRY_MS = 1000
PUBLIC_LEVELS = ("debug", "info", "warn", "error")
# Stored level names per public level: the original's console.log is an info line.
STORED_LEVELS = {"debug": ("debug",), "info": ("info", "log"), "warn": ("warn",),
                 "error": ("error",)}


def _store(request: Request) -> SearchStore:
    store: SearchStore = request.app.state.search_store
    return store


Store = Annotated[SearchStore, Depends(_store)]
AccountId = Annotated[str, Query(min_length=1)]

def _no_nul(request: Request) -> None:
    # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the query.
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise Unprocessable(f"{key}: NUL characters are not allowed", code="invalid_parameter")


router = APIRouter(prefix="/internal", dependencies=[Depends(require_service), Depends(_no_nul)])


def parse_time(name: str, value: str | None) -> datetime | None:
    """Epoch milliseconds or ISO 8601 (naive means UTC) → aware datetime."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if text.lstrip("-").isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise Unprocessable(f"{name}: expected epoch milliseconds or ISO 8601, got {value!r}",
                            code="invalid_time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def stored_levels(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "log":
                name = "info"
            if name not in STORED_LEVELS:
                raise Unprocessable(f"levels: unknown level {name!r}; one of "
                                    f"{', '.join(PUBLIC_LEVELS)}", code="invalid_level")
            out += [s for s in STORED_LEVELS[name] if s not in out]
    return out


def log_filter(store: SearchStore, account_id: str, lambda_id: list[str], levels: list[str],
               since: str | None, until: str | None, q: str | None,
               activation_id: str | None, trace_id: str | None = None) -> LogFilter:
    start = parse_time("since", since)
    end = parse_time("until", until)
    oldest = datetime.now(UTC) - timedelta(days=store.retention_days)
    if start is not None and start < oldest - timedelta(minutes=1):
        raise Unprocessable(f"since: at most {store.retention_days} days back",
                            code="beyond_retention")
    if start is not None and end is not None and end < start:
        raise Unprocessable("until is before since", code="invalid_time")
    return LogFilter(account_id=account_id, lambda_ids=tuple(lambda_id),
                     levels=tuple(stored_levels(levels)), since=start, until=end,
                     q=q or None, activation_id=activation_id or None,
                     trace_id=trace_id.lower() if trace_id else None)


@router.get("/search/logs")
async def search_logs(
    store: Store, account_id: AccountId,
    lambda_id: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
    levels: Annotated[list[str], Query()] = [],  # noqa: B006
    since: str | None = None, until: str | None = None,
    q: Annotated[str | None, Query(max_length=500)] = None,
    activation_id: str | None = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    f = log_filter(store, account_id, lambda_id, levels, since, until, q, activation_id,
                   trace_id)
    try:
        after = Cursor.decode(cursor) if cursor else None
    except BadCursor as exc:
        raise Unprocessable(str(exc), code="invalid_cursor") from None
    rows, nxt = await store.search(f, limit=limit, cursor=after)
    return {"items": [log_item(r) for r in rows],
            "next_cursor": nxt.encode() if nxt is not None else None}


def _sse(event: str, data: dict[str, Any], event_id: int) -> bytes:
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n".encode()


async def tail_events(request: Request, store: SearchStore, f: LogFilter, *,
                      poll_s: float = TAIL_POLL_S, heartbeat_s: float = TAIL_HEARTBEAT_S,
                      settle_s: float = TAIL_SETTLE_S, max_s: float = TAIL_MAX_S
                      ) -> AsyncIterator[bytes]:
    """SSE bytes: lines stored from now on that match ``f``, until the client leaves
    (or ``max_s`` passed).

    Ids are taken as settled only ``settle_s`` after they were first seen: until
    then the tail re-reads from below them, so a batch that committed late (with
    lower ids) is not skipped; lines already sent are remembered and not repeated.
    """
    floor = await store.newest_ingest_id(f.account_id)
    sent: dict[tuple[str, int], int] = {}
    marks: deque[tuple[float, int]] = deque()
    last_beat = started = time.monotonic()
    yield f"retry: {TAIL_RETRY_MS}\n: connected\n\n".encode()
    while not await request.is_disconnected() and time.monotonic() - started < max_s:
        rows = await store.tail(f, after_ingest_id=floor, limit=TAIL_BATCH)
        for row in rows:
            key = (row["activation_id"], row["seq"])
            if key in sent:
                continue
            sent[key] = row["ingest_id"]
            yield _sse("log", log_item(row), row["ingest_id"])
        now = time.monotonic()
        top = max([floor, *sent.values()])
        if len(rows) >= TAIL_BATCH:
            floor = rows[-1]["ingest_id"]  # a flood: move on rather than re-read one page
        marks.append((now, top))
        while marks and now - marks[0][0] >= settle_s:
            floor = max(floor, marks.popleft()[1])
        sent = {k: v for k, v in sent.items() if v > floor}
        if now - last_beat >= heartbeat_s:
            last_beat = now
            yield b": heartbeat\n\n"
        await asyncio.sleep(poll_s)


@router.get("/search/logs/stream")
async def stream_logs(
    request: Request, store: Store, account_id: AccountId,
    lambda_id: Annotated[list[str], Query()] = [],  # noqa: B006
    levels: Annotated[list[str], Query()] = [],  # noqa: B006
    q: Annotated[str | None, Query(max_length=500)] = None,
    activation_id: str | None = None,
    trace_id: Annotated[str | None, Query(max_length=64)] = None,
    heartbeat_s: Annotated[float, Query(ge=0.5, le=300)] = TAIL_HEARTBEAT_S,
) -> StreamingResponse:
    f = log_filter(store, account_id, lambda_id, levels, None, None, q, activation_id,
                   trace_id)
    return StreamingResponse(
        tail_events(request, store, f, heartbeat_s=heartbeat_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def metrics_series(store: SearchStore, account_id: str, lambda_id: str | None,
                         window: Window, grain: Grain, now: datetime | None = None
                         ) -> dict[str, Any]:
    """The metrics answer as a dict (the JSON body); raises NotFound for a foreign lambda."""
    if lambda_id is not None and not await store.lambda_exists(account_id, lambda_id):
        raise NotFound(f"lambda {lambda_id} not found", code="lambda_not_found")
    now = now or datetime.now(UTC)
    starts = rollups.bucket_starts(now, window, grain)
    rows = await store.rollup_rows(account_id, lambda_id, grain, starts[0])
    items = rollups.series(rows, starts, grain)
    dead = await store.dead_letters(account_id, lambda_id, grain, starts[0])
    for start, it in zip(starts, items, strict=True):
        it["dead_letters"] = dead.get(start, 0)
    return {"account_id": account_id, "lambda_id": lambda_id, "last": window.value,
            "bucket": grain.value, "items": items}


@router.get("/metrics")
async def get_metrics(
    request: Request, store: Store, account_id: AccountId, lambda_id: str | None = None,
    last: Window = Window.H24, bucket: Grain = Grain.HOUR,
) -> Response:
    body = await metrics_series(store, account_id, lambda_id or None, last, bucket)
    if "text/csv" in request.headers.get("accept", ""):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(rollups.CSV_COLUMNS)
        writer.writerows(rollups.csv_rows(body["items"], lambda_id))
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return Response(json.dumps(body), media_type="application/json")
