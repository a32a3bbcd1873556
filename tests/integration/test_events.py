"""Platform events on real Kafka: routing, both content modes, skills, dedupe, quarantine, order."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from fnbus import cloud_events
from fnbus.config import Settings
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import Account, create_account
from tests.integration.test_events_support import (
    ECHO,
    activations,
    quarantined,
    send_event,
    send_many,
    send_raw,
    wait_activations,
)
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

COMMAND = "conversational_command"
NEW_CONVERSATION = "controllerbot_messaging_new_conversation"
ORDERED = """function lambda(input, callback) {
  setTimeout(() => callback(null, { seq: input.payload.seq }), Math.floor(Math.random() * 200));
}
"""


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"ev{run_id}")


@pytest.fixture(scope="module")
async def echo(tenant: Account) -> str:
    return await deploy(tenant, "echo-command", ECHO, event_id=COMMAND)


def _payloads(records: list[dict]) -> list:
    return [a["result"]["payload"] for a in records if a["outcome"] == "SUCCEEDED"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "structured"])
async def test_event_invokes_the_subscribed_lambda(settings: Settings, tenant: Account, echo: str,
                                                   binary: bool) -> None:
    marker = uuid.uuid4().hex
    event_id = await send_event(settings, COMMAND, tenant.id, {"command": "help", "m": marker},
                                binary=binary)
    found = await wait_activations(settings, tenant.id, echo, 1,
                                   where=lambda a: (a["result"] or {}).get("payload", {}).get("m")
                                   == marker)
    record = found[0]
    assert record["source"] == "event" and record["event_id"] == COMMAND
    headers = {h["key"]: h["value"] for h in record["result"]["headers"]}
    assert headers["ce-id"] == event_id and headers["ce-type"] == COMMAND


async def test_a_redelivered_event_invokes_once(settings: Settings, tenant: Account,
                                                echo: str) -> None:
    event_id = str(uuid.uuid4())
    marker = uuid.uuid4().hex
    for binary in (True, False, True):
        await send_event(settings, COMMAND, tenant.id, {"m": marker}, event_id=event_id,
                         binary=binary)
    # A later event proves the duplicates were consumed (one partition per event key is not
    # guaranteed, so give the others a moment too).
    after = uuid.uuid4().hex
    await send_event(settings, COMMAND, tenant.id, {"m": after})
    await wait_activations(settings, tenant.id, echo, 1,
                           where=lambda a: (a["result"] or {}).get("payload", {}).get("m") == after)
    await asyncio.sleep(2)
    runs = [p for p in _payloads(await activations(settings, tenant.id, echo)) if p.get("m") == marker]
    assert len(runs) == 1


async def test_malformed_events_are_quarantined_and_later_events_flow(
        settings: Settings, tenant: Account, echo: str) -> None:
    tag = uuid.uuid4().hex
    await send_raw(settings, f"not a cloud event {tag}".encode())
    await send_event(settings, "no_such_event_type", tenant.id, {"t": tag})
    await send_event(settings, COMMAND, f"nobody-{tag}", {"t": tag})
    await send_raw(settings, b"{" + tag.encode() + b"x" * (1024 * 1024 + 10) + b"}")
    good = uuid.uuid4().hex
    await send_event(settings, COMMAND, tenant.id, {"m": good})
    await wait_activations(settings, tenant.id, echo, 1,
                           where=lambda a: (a["result"] or {}).get("payload", {}).get("m") == good)

    async def four() -> list | None:
        mine = [q for q in await quarantined(settings) if tag in q["raw_value"]]
        return mine if len(mine) >= 4 else None

    reasons = sorted(q["reason"] for q in await eventually(four, timeout_s=20, what="quarantine"))
    assert any(r.startswith("not a CloudEvent") for r in reasons), reasons
    assert any(r.startswith("unknown type: no_such_event_type") for r in reasons), reasons
    assert any(r.startswith(f"unknown account: nobody-{tag}") for r in reasons), reasons
    assert any(r.startswith("oversized") for r in reasons), reasons
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{settings.registry_url}/healthz")).status_code == 200


async def test_skill_filter_and_http_invoke_by_event(settings: Settings, gateway_url: str,
                                                     tenant: Account) -> None:
    lambda_id = await deploy(tenant, "skilled", ECHO, event_id=NEW_CONVERSATION, skills=["42"])
    tag = uuid.uuid4().hex
    for skill in ("7", "42", None):
        await send_event(settings, NEW_CONVERSATION, tenant.id, {"t": tag, "skill": skill},
                         skill_id=skill)
    found = await wait_activations(settings, tenant.id, lambda_id, 1)
    await asyncio.sleep(2)
    found = [p for p in _payloads(await activations(settings, tenant.id, lambda_id))
             if p.get("t") == tag]
    assert [p["skill"] for p in found] == ["42"]

    async with tenant.client() as c:
        r = await c.post(f"/events/{NEW_CONVERSATION}/invoke",
                         json={"payload": {"hi": 1}, "skill_id": "42"})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["payload"] == {"hi": 1}
        r = await c.post(f"/events/{NEW_CONVERSATION}/invoke",
                         json={"payload": {}, "skill_id": "7"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_implemented"
        r = await c.get(f"/events/{NEW_CONVERSATION}/isImplemented")
        assert r.json() == {"implemented": True}
        r = await c.get("/events/bot_connectors_pre_hook/isImplemented")
        assert r.json() == {"implemented": False}
        assert (await c.get("/events/nope/isImplemented")).status_code == 404
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {tenant.admin_key}"}) as c:
        base = f"/api/account/{tenant.id}/events"
        r = await c.get(f"{base}/{NEW_CONVERSATION}/isImplemented", params={"v": "1"})
        assert r.status_code == 200 and r.json() == {"implemented": True}
        r = await c.get(f"{base}/nope/isImplemented", params={"v": "1"})
        assert r.json() == {"implemented": False}
        r = await c.post(f"{base}/{NEW_CONVERSATION}/invoke", params={"v": "1", "skillId": "42"},
                         json={"timestamp": 0, "headers": [], "payload": {"lp": True}})
        assert r.status_code == 200, r.text
        assert r.json()["payload"] == {"lp": True}
        r = await c.post(f"{base}/bot_connectors_pre_hook/invoke", params={"v": "1"},
                         json={"headers": [], "payload": {}})
        assert r.status_code == 404, r.text


async def test_several_lambdas_answer_202(settings: Settings, gateway_url: str, run_id: str
                                          ) -> None:
    account = await create_account(settings, gateway_url, f"evmany{run_id}")
    first = await deploy(account, "one", ECHO, event_id=COMMAND)
    second = await deploy(account, "two", ECHO, event_id=COMMAND)
    async with account.client() as c:
        r = await c.post(f"/events/{COMMAND}/invoke", json={"payload": {"x": 1}})
        assert r.status_code == 202, r.text
        ids = {i["lambda_id"]: i["activation_id"] for i in r.json()["invocations"]}
        assert set(ids) == {first, second}
    for lambda_id in (first, second):
        await wait_activations(settings, account.id, lambda_id, 1)


async def test_same_partition_key_runs_in_order(settings: Settings, tenant: Account) -> None:
    lambda_id = await deploy(tenant, "ordered", ORDERED, event_id=COMMAND)
    conversation = str(uuid.uuid4())
    messages = [cloud_events.make(COMMAND, tenant.id, {"seq": seq}, partition_key=conversation)
                for seq in range(6)]
    # Back to back, keyed by the partition key as the CloudEvents Kafka binding does.
    await send_many(settings, [(m.value, list(m.headers.items()), str(m.key).encode())
                               for m in messages])
    runs = await wait_activations(settings, tenant.id, lambda_id, 6)
    assert [a["result"]["seq"] for a in runs] == list(range(6))
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["started_ms"] >= before["finished_ms"], (before, after)
