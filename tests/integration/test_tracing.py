"""Tracing through the bus and hop timing, on the real stack (Kafka, PostgreSQL, Docker).

One trace id — the caller's ``traceparent`` or a new one — must find everything an
invocation did: the response header, the activation record (every attempt), and
its log lines in the log search, and nothing of another account.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from fnbus.config import Settings
from fnbus.tracing import HOPS, parse_server_timing, parse_traceparent
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import Account, create_account
from tests.integration.test_events_support import (
    ECHO,
    FAILS,
    send_event,
    set_policy,
    wait_activations,
)
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
COMMAND = "conversational_command"
LOGS_THREE = """function lambda(input, callback) {
  console.log(`one ${input.payload.tag}`);
  console.info(`two ${input.payload.tag}`);
  console.error(`three ${input.payload.tag}`);
  callback(null, {tag: input.payload.tag});
}
"""


@dataclass
class World:
    account: Account
    other: Account
    logs: str  # lambda id in account: three log lines per call
    other_logs: str  # the same lambda in the other account
    fails: str  # always fails; http retry policy: 3 attempts


@pytest.fixture(scope="module")
async def world(settings: Settings, gateway_url: str, run_id: str) -> World:
    account = await create_account(settings, gateway_url, f"trace{run_id}")
    other = await create_account(settings, gateway_url, f"traceo{run_id}")
    await set_policy(account, "http", max_attempts=3, backoff="fixed", initial_delay_ms=300,
                     max_delay_ms=300, retry_on=["function_error"], on_exhausted="drop")
    logs = await deploy(account, "trace-logs", LOGS_THREE)
    fails = await deploy(account, "trace-fails", FAILS)
    other_logs = await deploy(other, "trace-logs", LOGS_THREE)
    return World(account, other, logs, other_logs, fails)


def traceparent(trace_id: str = TRACE, span_id: str = CALLER_SPAN, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


async def call(account: Account, lambda_id: str, tag: str, *, header: str | None = None,
               **params: Any) -> httpx.Response:
    headers = {"traceparent": header} if header is not None else {}
    async with account.client() as c:
        return await c.post(f"/lambdas/{lambda_id}/invoke", params=params, headers=headers,
                            json={"payload": {"tag": tag}}, timeout=90)


async def activation(account: Account, activation_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        async with account.client() as c:
            r = await c.get(f"/activations/{activation_id}")
        return r.json() if r.status_code == 200 else None

    return await eventually(found, timeout_s=30, what=f"activation {activation_id}")


async def lines_of_trace(account: Account, trace_id: str, want: int) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]] | None:
        async with account.client() as c:
            r = await c.get("/logs", params={"trace_id": trace_id, "limit": 1000})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        return items if len(items) >= want else None

    return await eventually(found, timeout_s=30, what=f"{want} log lines of trace {trace_id}")


def answered_trace(r: httpx.Response) -> tuple[str, str, str]:
    parsed = parse_traceparent(r.headers.get("traceparent"))
    assert parsed is not None, r.headers
    return parsed.trace_id, parsed.parent_id, parsed.flags


async def test_callers_trace_finds_the_answer_the_activation_and_every_log_line(
        world: World) -> None:
    header = traceparent(flags="00")
    r = await call(world.account, world.logs, "mine", header=header)
    assert r.status_code == 200, r.text
    trace_id, span_id, flags = answered_trace(r)
    # Same trace and flags; the span is the gateway's own, not the caller's.
    assert trace_id == TRACE and flags == "00" and span_id != CALLER_SPAN
    activation_id = r.json()["activation_id"]
    record = await activation(world.account, activation_id)
    assert record["trace_id"] == TRACE

    # The other account uses the same trace id (a caller may do that): its lines are its own.
    r2 = await call(world.other, world.other_logs, "theirs", header=header)
    assert r2.status_code == 200, r2.text
    assert answered_trace(r2)[0] == TRACE

    lines = await lines_of_trace(world.account, TRACE, 3)
    assert sorted(i["message"] for i in lines) == ["one mine", "three mine", "two mine"]
    assert {i["activation_id"] for i in lines} == {activation_id}
    assert {i["trace_id"] for i in lines} == {TRACE}
    assert {i["account_id"] for i in lines} == {world.account.id}
    theirs = await lines_of_trace(world.other, TRACE, 3)
    assert sorted(i["message"] for i in theirs) == ["one theirs", "three theirs", "two theirs"]
    # The activation's own lines carry it too (the per-activation read).
    async with world.account.client() as c:
        own = (await c.get(f"/activations/{activation_id}/logs")).json()["items"]
    assert len(own) == 3 and {i["trace_id"] for i in own} == {TRACE}


@pytest.mark.parametrize("header", [
    None,
    "",
    "not-a-traceparent",
    traceparent(trace_id="0" * 32),
    traceparent(span_id="0" * 16),
    traceparent(trace_id=TRACE.upper()),
    "ff-" + traceparent()[3:],
])
async def test_missing_or_invalid_traceparent_starts_a_new_trace(
        world: World, header: str | None) -> None:
    r = await call(world.account, world.logs, "fresh", header=header)
    assert r.status_code == 200, r.text
    trace_id, _, flags = answered_trace(r)
    assert trace_id not in (TRACE, TRACE.upper(), "0" * 32) and flags == "01"
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    record = await activation(world.account, r.json()["activation_id"])
    assert record["trace_id"] == trace_id


async def test_lp_route_keeps_the_trace_and_times_its_hops(world: World, gateway_url: str) -> None:
    trace_id = "1234567890abcdef1234567890abcdef"
    async with httpx.AsyncClient(base_url=gateway_url, headers={
            "Authorization": f"Bearer {world.account.admin_key}",
            "traceparent": traceparent(trace_id=trace_id)}) as c:
        r = await c.post(f"/api/account/{world.account.id}/lambdas/{world.logs}/invoke",
                         params={"v": "1"}, json={"headers": [], "payload": {"tag": "lp"}},
                         timeout=90)
    assert r.status_code == 200, r.text
    assert r.json() == {"tag": "lp"}
    assert answered_trace(r)[0] == trace_id
    assert set(parse_server_timing(r.headers["server-timing"])) == set(HOPS)
    record = await activation(world.account, r.headers["x-activation-id"])
    assert record["trace_id"] == trace_id


async def test_async_call_carries_the_trace_to_its_activation_and_lines(world: World) -> None:
    trace_id = "abcdefabcdefabcdefabcdefabcdef01"
    r = await call(world.account, world.logs, "later", header=traceparent(trace_id=trace_id),
                   **{"async": "true"})
    assert r.status_code == 202, r.text
    assert answered_trace(r)[0] == trace_id
    assert "server-timing" not in r.headers  # nothing ran yet
    record = await activation(world.account, r.json()["activation_id"])
    assert record["trace_id"] == trace_id
    lines = await lines_of_trace(world.account, trace_id, 3)
    assert sorted(i["message"] for i in lines) == ["one later", "three later", "two later"]


async def test_retry_attempts_stay_in_the_callers_trace(world: World, settings: Settings) -> None:
    trace_id = "feedfacefeedfacefeedfacefeedface"
    r = await call(world.account, world.fails, "retry", header=traceparent(trace_id=trace_id),
                   **{"async": "true"})
    assert r.status_code == 202, r.text
    activation_id = r.json()["activation_id"]
    runs = await wait_activations(settings, world.account.id, world.fails, 3,
                                  where=lambda a: a["activation_id"] == activation_id)
    assert [a["attempt"] for a in runs] == [1, 2, 3]
    assert {a["trace_id"] for a in runs} == {trace_id}


async def test_event_triggered_invocation_gets_a_new_trace(world: World,
                                                            settings: Settings) -> None:
    lambda_id = await deploy(world.account, "trace-on-event", ECHO, event_id=COMMAND)
    await send_event(settings, COMMAND, world.account.id, {"command": "trace"})
    [record] = await wait_activations(settings, world.account.id, lambda_id, 1)
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"] or "")
    assert record["trace_id"] != "0" * 32


async def test_server_timing_has_every_hop_within_the_total(world: World) -> None:
    await call(world.account, world.logs, "warm-up")  # a warm container for the next call
    r = await call(world.account, world.logs, "timed")
    assert r.status_code == 200, r.text
    header = r.headers["server-timing"]
    assert re.fullmatch(r"[a-z]+;dur=\d+\.\d{2}(, [a-z]+;dur=\d+\.\d{2})*", header), header
    hops = parse_server_timing(header)
    assert list(hops) == list(HOPS), header
    assert all(v >= 0 for v in hops.values()), hops
    total = hops["total"]
    for name in ("produce", "queue", "dispatch", "runner", "reply"):
        assert hops[name] <= total, hops
    # The five hops follow one another between the send and the reply (2-decimal rounding).
    assert sum(v for k, v in hops.items() if k != "total") <= total + 0.05, hops
    # The invoker's own hops are on the activation record too, the same figures.
    record = await activation(world.account, r.json()["activation_id"])
    assert set(record["hops_ms"]) == {"dispatch", "runner"}
    for name in ("dispatch", "runner"):
        assert abs(record["hops_ms"][name] - hops[name]) <= 0.006, (record["hops_ms"], hops)


async def test_every_daily_partition_has_the_trace_indexes(world: World, settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        for table in ("activations", "log_lines"):
            rows = await conn.fetch(
                """SELECT c.relname,
                          EXISTS (SELECT 1 FROM pg_indexes i WHERE i.tablename = c.relname
                                  AND i.indexdef LIKE '%(account_id, trace_id%') AS indexed
                   FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
                   WHERE h.inhparent = $1::regclass""", table)
            assert len(rows) >= 2, rows  # the default partition and at least today's
            assert all(r["indexed"] for r in rows), rows
    finally:
        await conn.close()


async def test_invocation_by_event_over_http_keeps_the_callers_trace(world: World) -> None:
    # The other account: its only lambda bound to the event, so the call is synchronous.
    lambda_id = await deploy(world.other, "trace-by-event", ECHO, event_id=COMMAND)
    header = traceparent(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    async with world.other.client() as c:
        r = await c.post(f"/events/{COMMAND}/invoke", headers={"traceparent": header},
                         json={"payload": {"command": "traced"}}, timeout=90)
    assert r.status_code == 200, r.text
    trace_id, span_id, _ = answered_trace(r)
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and span_id != CALLER_SPAN
    record = await activation(world.other, r.json()["activation_id"])
    assert record["lambda_id"] == lambda_id and record["trace_id"] == trace_id
    # Asynchronous by event: the 202 names the trace its activations carry.
    async with world.other.client() as c:
        r = await c.post(f"/events/{COMMAND}/invoke", params={"async": "true"},
                         headers={"traceparent": "not-a-traceparent"},
                         json={"payload": {"command": "traced"}}, timeout=90)
    assert r.status_code == 202, r.text
    trace_id, _, _ = answered_trace(r)
    [invocation] = r.json()["invocations"]
    record = await activation(world.other, invocation["activation_id"])
    assert record["trace_id"] == trace_id
