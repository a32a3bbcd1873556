"""Log search and live tail through the gateway, on real Kafka, PostgreSQL and log-ingest."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.permissions import Permission, Role, allowed
from fnbus.schemas import LogLevel, LogLine
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account, user_key
from tests.integration.obs_support import (
    create_lambda,
    invoke_scope_token,
    line,
    publish,
    stored,
)
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

NOW_MS = int(time.time() * 1000)
MIN_MS = 60_000


@dataclass
class World:
    account: Account
    other: Account
    l1: str
    l2: str
    lines: list[LogLine]  # account's lines, newest first


@pytest.fixture(scope="module")
async def world(settings: Settings, gateway_url: str, run_id: str) -> World:
    account = await create_account(settings, gateway_url, f"logs{run_id}")
    other = await create_account(settings, gateway_url, f"logso{run_id}")
    async with account.client() as c:
        l1 = await create_lambda(c, "search-one")
        l2 = await create_lambda(c, "search-two")
    async with other.client() as c:
        foreign = await create_lambda(c, "search-foreign")
    a1, a2 = "act-one", "act-two"
    lines = [
        line(account.id, l1, "Started order 100%", NOW_MS - 50 * MIN_MS, activation_id=a1, seq=0),
        line(account.id, l1, "debug detail", NOW_MS - 40 * MIN_MS, level=LogLevel.DEBUG,
             activation_id=a1, seq=1),
        line(account.id, l1, "console.log says hi", NOW_MS - 30 * MIN_MS, level=LogLevel.LOG,
             activation_id=a1, seq=2),
        line(account.id, l2, "disk almost FULL", NOW_MS - 20 * MIN_MS, level=LogLevel.WARN,
             activation_id=a2, seq=0),
        line(account.id, l2, "order 100 failed", NOW_MS - 10 * MIN_MS, level=LogLevel.ERROR,
             activation_id=a2, seq=1),
    ]
    foreign_line = line(other.id, foreign, "order 100 in another account", NOW_MS - 5 * MIN_MS)
    await publish(settings, [*lines, foreign_line])
    await stored(settings, "SELECT count(*) FROM log_lines WHERE account_id = ANY($1::text[])",
                 [account.id, other.id], expect=6)
    return World(account, other, l1, l2, sorted(lines, key=lambda x: -x.ts_ms))


async def search(world: World, params: Any, key: str | None = None) -> httpx.Response:
    async with world.account.client(key) as c:
        return await c.get("/logs", params=params)


async def messages(world: World, params: Any) -> list[str]:
    r = await search(world, params)
    assert r.status_code == 200, r.text
    return [i["message"] for i in r.json()["items"]]


def expected(world: World, keep: Any) -> list[str]:
    return [x.message for x in world.lines if keep(x)]


async def test_no_filter_newest_first_own_account_only(world: World) -> None:
    r = await search(world, {})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["message"] for i in body["items"]] == expected(world, lambda x: True)
    assert body["next_cursor"] is None
    first = body["items"][0]
    assert set(first) >= {"activation_id", "lambda_id", "level", "message", "ts_ms", "seq"}


async def test_lambda_filter_single_and_repeated(world: World) -> None:
    assert await messages(world, {"lambda_id": world.l2}) == expected(
        world, lambda x: x.lambda_id == world.l2)
    both = await messages(world, [("lambda_id", world.l1), ("lambda_id", world.l2)])
    assert both == expected(world, lambda x: True)
    assert await messages(world, {"lambda_id": "no-such-lambda"}) == []


async def test_levels_filter_info_includes_console_log(world: World) -> None:
    assert await messages(world, {"levels": "info"}) == ["console.log says hi",
                                                        "Started order 100%"]
    assert await messages(world, {"levels": "warn,error"}) == ["order 100 failed",
                                                              "disk almost FULL"]
    assert await messages(world, [("levels", "debug"), ("levels", "error")]) == [
        "order 100 failed", "debug detail"]
    r = await search(world, {"levels": "verbose"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_level"


async def test_since_until_epoch_ms_and_iso(world: World) -> None:
    since, until = NOW_MS - 45 * MIN_MS, NOW_MS - 15 * MIN_MS
    want = expected(world, lambda x: since <= x.ts_ms < until)
    assert len(want) == 3
    assert await messages(world, {"since": since, "until": until}) == want
    iso = {"since": datetime.fromtimestamp(since / 1000, UTC).isoformat(),
           "until": datetime.fromtimestamp(until / 1000, UTC).isoformat().replace("+00:00", "Z")}
    assert await messages(world, iso) == want
    r = await search(world, {"since": NOW_MS - 8 * 24 * 3600 * 1000})
    assert r.status_code == 422 and r.json()["error"]["code"] == "beyond_retention"
    r = await search(world, {"since": "yesterday"})
    assert r.status_code == 422


async def test_text_search_substring_case_insensitive(world: World) -> None:
    assert await messages(world, {"q": "full"}) == ["disk almost FULL"]
    assert await messages(world, {"q": "order 100"}) == ["order 100 failed",
                                                        "Started order 100%"]
    # LIKE wildcards in q are literal characters.
    assert await messages(world, {"q": "100%"}) == ["Started order 100%"]
    assert await messages(world, {"q": "ord_r"}) == []
    assert await messages(world, {"q": "order", "lambda_id": world.l1}) == ["Started order 100%"]


async def test_nul_in_a_filter_is_422(world: World) -> None:
    r = await search(world, {"q": "a\x00b"})
    assert r.status_code == 422, r.text


async def test_activation_filter(world: World) -> None:
    assert await messages(world, {"activation_id": "act-two"}) == expected(
        world, lambda x: x.activation_id == "act-two")


async def test_cursor_pages_through_everything_once(world: World) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        r = await search(world, params)
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [i["message"] for i in body["items"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == expected(world, lambda x: True)
    assert pages == 3
    r = await search(world, {"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"


async def test_account_id_in_query_cannot_widen_the_search(world: World) -> None:
    got = await messages(world, {"account_id": world.other.id})
    assert "order 100 in another account" not in got


async def _sse_events(response: httpx.Response, want: int, timeout_s: float
                      ) -> tuple[list[dict[str, Any]], int]:
    events: list[dict[str, Any]] = []
    comments = 0
    event = None

    async def read() -> None:
        nonlocal comments, event
        async for raw in response.aiter_lines():
            if raw.startswith(":"):
                comments += 1
            elif raw.startswith("event: "):
                event = raw[len("event: "):]
            elif raw.startswith("data: ") and event == "log":
                events.append(json.loads(raw[len("data: "):]))
                if len(events) >= want:
                    return

    await asyncio.wait_for(read(), timeout_s)
    return events, comments


async def test_live_tail_receives_new_lines_matching_its_filter(
    world: World, settings: Settings, gateway_url: str
) -> None:
    headers = {"Authorization": f"Bearer {world.account.admin_key}",
               "Accept": "text/event-stream"}
    url = f"{gateway_url}/api/v1/accounts/{world.account.id}/logs/stream"
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as c, c.stream(
            "GET", url, headers=headers,
            params={"lambda_id": world.l1, "heartbeat_s": 0.5}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        await asyncio.sleep(1.0)  # the tail has taken its starting point
        now = int(time.time() * 1000)
        await publish(settings, [
            line(world.account.id, world.l2, "other lambda, not for this tail", now),
            line(world.account.id, world.l1, "tail me", now + 1),
        ])
        events, comments = await _sse_events(r, 1, timeout_s=30)
    assert [e["message"] for e in events] == ["tail me"]
    assert events[0]["lambda_id"] == world.l1
    assert comments >= 1  # ": connected" and heartbeats


async def test_live_tail_refuses_bad_filters_and_plain_requests(world: World) -> None:
    async with world.account.client() as c:
        r = await c.get("/logs/stream", params={"levels": "loud"},
                        headers={"Accept": "text/event-stream"})
        assert r.status_code == 422
        r = await c.get("/logs/stream")  # no Accept: text/event-stream
        assert r.status_code == 406 and r.json()["error"]["code"] == "not_acceptable"


@pytest.mark.parametrize("role", list(Role))
async def test_permission_matrix(world: World, role: Role) -> None:
    key = await user_key(world.account, f"logs-{role.name.lower()}", [role.value])
    r = await search(world, {}, key)
    assert r.status_code == (200 if allowed({role}, Permission.LOGS_READ) else 403), r.text


async def test_without_logs_read_403(world: World, gateway_url: str) -> None:
    token = await invoke_scope_token(world.account, gateway_url, "logs-invoke-client")
    r = await search(world, {}, token)
    assert r.status_code == 403, r.text
    async with world.account.client(token) as c:
        r = await c.get("/logs/stream", headers={"Accept": "text/event-stream"})
    assert r.status_code == 403
    # Another account's credentials: 403, nothing of this account's lines.
    async with httpx.AsyncClient(
            base_url=f"{gateway_url}/api/v1/accounts/{world.account.id}",
            headers={"Authorization": f"Bearer {world.other.admin_key}"}) as c:
        r = await c.get("/logs")
    assert r.status_code == 403 and "items" not in r.text


async def test_a_real_invocation_is_searchable_and_counted(world: World) -> None:
    """The invoker's own records: its console.log line in the search, the call in the metrics."""
    code = ("function lambda(input, callback) {\n"
            "  console.log(`e2e marker ${input.payload.n}`);\n"
            "  console.error('e2e problem');\n"
            "  callback(null, 'ok');\n}\n")
    lambda_id = await deploy(world.account, "search-e2e", code)
    r = await invoke(world.account, lambda_id, {"n": 7})
    assert r.status_code == 200, r.text

    async def found() -> list[dict[str, Any]] | None:
        r = await search(world, {"lambda_id": lambda_id, "levels": "info", "q": "E2E MARKER 7"})
        return r.json()["items"] or None

    [item] = await eventually(found, timeout_s=30, what="the lambda's log line in the search")
    assert item["message"] == "e2e marker 7" and item["level"] == "log"

    async def counted() -> dict[str, Any] | None:
        async with world.account.client() as c:
            r = await c.get("/metrics", params={"lambda_id": lambda_id, "last": "1h",
                                                "bucket": "hour"})
        total = sum(i["invocations"]["SUCCEEDED"] for i in r.json()["items"])
        return r.json() if total == 1 else None

    body = await eventually(counted, timeout_s=30, what="the invocation in the metrics")
    assert sum(i["total"] for i in body["items"]) == 1
    r = await search(world, {"lambda_id": lambda_id, "levels": "error"})
    assert [i["message"] for i in r.json()["items"]] == ["e2e problem"]
