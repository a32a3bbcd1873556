"""Retry policies on real Kafka: attempt counts and spacing, dead letters, drops, sync calls."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import Account, create_account
from tests.integration.test_events_support import (
    FAILS,
    activations,
    send_event,
    set_policy,
    wait_activations,
)
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

COMMAND = "conversational_command"


async def _dead_letters(account: Account, lambda_id: str) -> list[dict]:
    async with account.client() as c:
        r = await c.get("/dead-letters", params={"lambda_id": lambda_id})
        assert r.status_code == 200, r.text
        return list(r.json())


def _gaps(runs: list[dict]) -> list[int]:
    return [b["started_ms"] - a["finished_ms"] for a, b in zip(runs, runs[1:], strict=False)]


async def test_fixed_policy_attempts_spacing_and_dead_letter(settings: Settings, gateway_url: str,
                                                             run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"rtfixed{run_id}")
    policy = await set_policy(account, "http", max_attempts=3, backoff="fixed",
                              initial_delay_ms=700, max_delay_ms=700,
                              retry_on=["function_error"], on_exhausted="dead_letter")
    assert policy["overridden"] is True and policy["max_attempts"] == 3
    lambda_id = await deploy(account, "fails", FAILS)
    r = await invoke(account, lambda_id, {"n": 1}, **{"async": "true"})
    assert r.status_code == 202, r.text
    activation_id = r.json()["activation_id"]
    runs = await wait_activations(settings, account.id, lambda_id, 3)
    assert [a["attempt"] for a in runs] == [1, 2, 3]
    assert {a["activation_id"] for a in runs} == {activation_id}
    assert all(600 <= g < 3000 for g in _gaps(runs)), _gaps(runs)
    letters = await eventually(lambda: _dead_letters(account, lambda_id), timeout_s=20,
                               what="dead letter")
    assert len(letters) == 1
    assert letters[0]["attempt"] == 3 and letters[0]["activation_id"] == activation_id
    assert letters[0]["last_error"]["message"] == "always fails"
    await asyncio.sleep(2)
    assert len(await activations(settings, account.id, lambda_id)) == 3  # no fourth attempt


async def test_exponential_policy_for_events(settings: Settings, gateway_url: str,
                                             run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"rtexp{run_id}")
    await set_policy(account, "event", max_attempts=4, backoff="exponential",
                     initial_delay_ms=300, max_delay_ms=1000, jitter=0,
                     retry_on=["function_error"])
    lambda_id = await deploy(account, "fails-on-event", FAILS, event_id=COMMAND)
    await send_event(settings, COMMAND, account.id, {"x": 1})
    runs = await wait_activations(settings, account.id, lambda_id, 4)
    assert [a["attempt"] for a in runs] == [1, 2, 3, 4]
    gaps = _gaps(runs)
    for gap, expected in zip(gaps, (300, 600, 1000), strict=True):
        assert expected - 50 <= gap < expected + 2000, gaps
    await eventually(lambda: _dead_letters(account, lambda_id), timeout_s=20, what="dead letter")


async def test_drop_logs_and_keeps_nothing(settings: Settings, gateway_url: str, run_id: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.invoker.retries")
    account = await create_account(settings, gateway_url, f"rtdrop{run_id}")
    await set_policy(account, "http", max_attempts=2, backoff="fixed", initial_delay_ms=200,
                     max_delay_ms=200, retry_on=["function_error"], on_exhausted="drop")
    lambda_id = await deploy(account, "dropped", FAILS)
    r = await invoke(account, lambda_id, {}, **{"async": "true"})
    activation_id = r.json()["activation_id"]
    runs = await wait_activations(settings, account.id, lambda_id, 2)
    assert [a["attempt"] for a in runs] == [1, 2]

    async def dropped() -> list | None:
        lines = [rec for rec in caplog.records if rec.getMessage() == "invocation dropped after failing"
                 and getattr(rec, "activation_id", None) == activation_id]
        return lines or None

    lines = await eventually(dropped, timeout_s=10, what="drop log line")
    assert "none left" in lines[0].reason  # type: ignore[attr-defined]
    await asyncio.sleep(1.5)
    assert await _dead_letters(account, lambda_id) == []


async def test_defaults_messaging_events_do_not_repeat_and_sync_calls_never_retry(
        settings: Settings, gateway_url: str, run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"rtdef{run_id}")
    async with account.client() as c:
        r = await c.get("/retry-policies/event")
        assert r.json()["max_attempts"] == 1 and r.json()["overridden"] is False
        assert (await c.get("/retry-policies/http")).json()["max_attempts"] == 3
        assert (await c.get("/retry-policies/nope")).status_code == 404
        r = await c.put("/retry-policies/http", json={"max_attempts": 11})
        assert r.status_code == 422, r.text
        r = await c.put("/retry-policies/http", json={"max_delay_ms": 300_001})
        assert r.status_code == 422, r.text
        r = await c.put("/retry-policies/http", json={"initial_delay_ms": 5000, "max_delay_ms": 1000})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_retry_policy"
    await set_policy(account, "http", max_attempts=5, backoff="fixed", initial_delay_ms=200,
                     max_delay_ms=200, retry_on=["function_error"])
    lambda_id = await deploy(account, "fails-default", FAILS, event_id=COMMAND)
    r = await invoke(account, lambda_id, {})
    assert r.status_code == 502  # synchronous: the answer at once, no retry
    await send_event(settings, COMMAND, account.id, {"x": 1})
    await eventually(lambda: _dead_letters(account, lambda_id), timeout_s=20, what="dead letter")
    await asyncio.sleep(1.5)
    runs = await activations(settings, account.id, lambda_id)
    assert sorted((a["source"], a["attempt"]) for a in runs) == [("event", 1), ("http", 1)]
    async with account.client() as c:
        r = await c.delete("/retry-policies/http")
        assert r.status_code == 200 and r.json()["overridden"] is False
