"""Schedules through the gateway on real services: rules, bad input, undeploy, a real fire."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.schemas import LambdaChange, LambdaState, Runtime
from fnbus.topics import Topics
from services.scheduler.store import activation_id
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import HELLO, Account, create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform", "scheduler_url")]

ECHO = "function lambda(input, callback) {\n  callback(null, { got: input.payload });\n}\n"


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"sch{run_id}")


@pytest.fixture(scope="module")
async def echo(tenant: Account) -> str:
    return await deploy(tenant, "scheduled-echo", ECHO)


async def _publish_productive(settings: Settings, account_id: str, n: int) -> list[str]:
    """Lambdas that look deployed on lambda-changes (the scheduler's only view of lambdas)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    async with Producer(settings.kafka_bootstrap) as producer:
        for i, lid in enumerate(ids):
            change = LambdaChange(lambda_id=lid, account_id=account_id, name=f"fake-{i}",
                                  runtime=Runtime.NODEJS, state=LambdaState.PRODUCTIVE,
                                  deployed_version=1, deployed_image="fnbus/fake:1")
            await producer.send(Topics(settings.topic_prefix).lambda_changes, change.to_bytes(),
                                key=lid)
    return ids


async def _listing(c: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await c.get("/schedules")
    assert r.status_code == 200, r.text
    return list(r.json())


async def _refused(c: httpx.AsyncClient, body: dict[str, Any], status: int, code: str) -> dict:
    before = await _listing(c)
    r = await c.post("/schedules", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code, error
    assert await _listing(c) == before  # bad input changes nothing
    return dict(error)


async def test_bad_input_is_refused_and_changes_nothing(
        settings: Settings, gateway_url: str, run_id: str, tenant: Account, echo: str) -> None:
    async with tenant.client() as c:
        error = await _refused(c, {"lambda_id": echo, "cron": "every minute"}, 422, "invalid_cron")
        assert "*/5 * * * *" in error["details"]["examples"]
        assert "0 9 * * 1-5" in error["message"]
        await _refused(c, {"lambda_id": echo, "cron": "61 * * * *"}, 422, "invalid_cron")
        error = await _refused(c, {"lambda_id": echo, "cron": "*/30 * * * * *"}, 422,
                               "cron_seconds_not_allowed")
        assert "once a minute" in error["message"]
        await _refused(c, {"lambda_id": echo, "cron": "* * * * *", "payload": "x" * 8000}, 422,
                       "schedule_payload_too_large")
        r = await c.post("/lambdas", json={"name": "never-deployed", "code": HELLO})
        assert r.status_code == 201, r.text
        await _refused(c, {"lambda_id": r.json()["id"], "cron": "* * * * *"}, 422,
                       "lambda_not_productive")
        await _refused(c, {"lambda_id": str(uuid.uuid4()), "cron": "* * * * *"}, 404,
                       "lambda_not_found")
        await _refused(c, {"lambda_id": echo, "cron": "* * * * *", "color": "red"}, 422,
                       "invalid_request")
        r = await c.get("/schedules/preview", params={"cron": "* * * * * *"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "cron_seconds_not_allowed"

    other = await create_account(settings, gateway_url, f"sco{run_id}")
    async with other.client() as c:
        # Another account's lambda is as unknown as a lambda that does not exist.
        await _refused(c, {"lambda_id": echo, "cron": "* * * * *"}, 404, "lambda_not_found")

    limited = await create_account(settings, gateway_url, f"scl{run_id}")
    lambdas = await _publish_productive(settings, limited.id, 11)
    async with limited.client() as c:
        for lid in lambdas[:10]:
            async def created(lid: str = lid) -> bool:
                r = await c.post("/schedules", json={"lambda_id": lid, "cron": "0 0 1 1 *"})
                return r.status_code == 201
            await eventually(created, timeout_s=10, what="schedule of a fake productive lambda")
        # A second schedule of an already scheduled function does not count again…
        r = await c.post("/schedules", json={"lambda_id": lambdas[0], "cron": "0 12 * * *"})
        assert r.status_code == 201, r.text
        # …an eleventh function does.
        error = await _refused(c, {"lambda_id": lambdas[10], "cron": "0 0 1 1 *"}, 409,
                               "schedule_limit_reached")
        assert error["details"]["max_scheduled_functions"] == 10
        assert len(await _listing(c)) == 11


async def test_schedules_per_lambda_are_capped(settings: Settings, gateway_url: str,
                                               run_id: str) -> None:
    cap = settings.max_schedules_per_lambda
    account = await create_account(settings, gateway_url, f"scp{run_id}")
    first, second = await _publish_productive(settings, account.id, 2)
    async with account.client() as c:
        async def created() -> bool:
            r = await c.post("/schedules", json={"lambda_id": first, "cron": "0 0 1 1 *"})
            return r.status_code == 201
        await eventually(created, timeout_s=10, what="schedule of a fake productive lambda")
        for minute in range(1, cap):
            r = await c.post("/schedules", json={"lambda_id": first, "cron": f"{minute} 0 1 1 *"})
            assert r.status_code == 201, r.text
        # One more of the same function: the account-level limit's status and envelope.
        error = await _refused(c, {"lambda_id": first, "cron": "0 1 1 1 *"}, 409,
                               "lambda_schedule_limit_reached")
        assert error["details"]["max_schedules_per_lambda"] == cap
        # Disabled schedules count too: the cap is on definitions, not on fires.
        await _refused(c, {"lambda_id": first, "cron": "0 1 1 1 *", "enabled": False}, 409,
                       "lambda_schedule_limit_reached")
        # Another function is not affected; moving one of its schedules over is refused.
        async def other_created() -> dict[str, Any] | None:
            r = await c.post("/schedules", json={"lambda_id": second, "cron": "0 0 1 1 *"})
            return r.json() if r.status_code == 201 else None
        moved = await eventually(other_created, timeout_s=10, what="schedule of a second lambda")
        r = await c.patch(f"/schedules/{moved['id']}", json={"lambda_id": first})
        assert r.status_code == 409 and r.json()["error"]["code"] == "lambda_schedule_limit_reached"
        # Deleting one frees a place.
        listing = [s for s in await _listing(c) if s["lambda_id"] == first]
        assert len(listing) == cap
        r = await c.delete(f"/schedules/{listing[0]['id']}")
        assert r.status_code == 204, r.text
        r = await c.patch(f"/schedules/{moved['id']}", json={"lambda_id": first})
        assert r.status_code == 200, r.text


async def test_crud_and_preview(tenant: Account, echo: str) -> None:
    async with tenant.client() as c:
        r = await c.post("/schedules", json={"lambda_id": echo, "cron": "0  9 * * 1-5",
                                             "payload": {"a": 1}, "enabled": False})
        assert r.status_code == 201, r.text
        created = r.json()
        sid = created["id"]
        assert created["cron"] == "0 9 * * 1-5" and created["next_invocation_ms"] is None
        assert created["lambda_name"] == "scheduled-echo" and created["last_state"] is None
        r = await c.patch(f"/schedules/{sid}", json={"enabled": True, "payload": None})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["payload"] is None and body["enabled"] is True
        assert body["next_invocation_ms"] > time.time() * 1000
        r = await c.patch(f"/schedules/{sid}", json={"cron": "*/10 * * * * *"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "cron_seconds_not_allowed"
        assert (await c.get(f"/schedules/{sid}")).json() == body
        r = await c.get("/schedules/preview", params={"cron": "*/15 * * * *", "count": 3})
        assert r.status_code == 200, r.text
        times = r.json()["next_ms"]
        assert len(times) == 3 and all(t % (15 * 60_000) == 0 for t in times)
        r = await c.post("/schedules/preview", json={"cron": "0 0 1 1 *", "after_ms": 0})
        assert r.status_code == 200, r.text
        assert r.json()["next"][:2] == ["1971-01-01T00:00:00Z", "1972-01-01T00:00:00Z"]
        assert (await c.delete(f"/schedules/{sid}")).status_code == 204
        assert (await c.get(f"/schedules/{sid}")).status_code == 404
        assert (await c.delete(f"/schedules/{sid}")).status_code == 404
        assert (await c.get("/schedules/not-a-uuid")).status_code == 404


async def test_undeploy_deletes_its_schedules(tenant: Account) -> None:
    lambda_id = await deploy(tenant, "scheduled-then-undeployed", HELLO)
    async with tenant.client() as c:
        r = await c.post("/schedules", json={"lambda_id": lambda_id, "cron": "0 0 * * *"})
        assert r.status_code == 201, r.text
        assert (await c.delete(f"/lambdas/{lambda_id}/deployments")).status_code in (200, 202)

        async def gone() -> bool:
            return not [s for s in await _listing(c) if s["lambda_id"] == lambda_id]

        await eventually(gone, timeout_s=15, what="schedules of the undeployed lambda deleted")
        r = await c.post("/schedules", json={"lambda_id": lambda_id, "cron": "0 0 * * *"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "lambda_not_productive"


async def test_a_schedule_fires_at_the_next_minute_end_to_end(tenant: Account, echo: str) -> None:
    payload = {"hello": "from the scheduler"}
    async with tenant.client() as c:
        r = await c.post("/schedules", json={"lambda_id": echo, "cron": "* * * * *",
                                             "payload": payload})
        assert r.status_code == 201, r.text
        sid, due = r.json()["id"], r.json()["next_invocation_ms"]
        assert due % 60_000 == 0 and 0 < due - time.time() * 1000 <= 60_000

        async def finished() -> dict[str, Any] | None:
            body = (await c.get(f"/schedules/{sid}")).json()
            return body if body["last_state"] is not None else None

        body = await eventually(finished, timeout_s=max(due / 1000 - time.time(), 0) + 30,
                                interval_s=0.5, what="the scheduled invocation's result")
        assert (await c.delete(f"/schedules/{sid}")).status_code == 204
        assert body["last_state"] == "success" and body["last_outcome"] == "SUCCEEDED", body
        assert body["last_invocation_ms"] == due
        assert body["last_activation_id"] == activation_id(sid, due)
        assert body["next_invocation_ms"] == due + 60_000
        assert due <= body["last_run_ms"] < due + 5_000  # fire lag on a loaded test machine

        async def record() -> dict[str, Any] | None:
            got = await c.get(f"/activations/{body['last_activation_id']}")
            return got.json() if got.status_code == 200 else None

        activation = await eventually(record, timeout_s=30, what="activation record")
        assert activation["result"] == {"got": payload}
        assert activation["source"] == "scheduler"
