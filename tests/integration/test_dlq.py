"""Dead letters through the API: list, inspect, replay one or all, delete, purge, permissions."""

from __future__ import annotations

import uuid

import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import deploy, invoke, wait_deployed
from tests.integration.mgmt_support import create_account, user_key
from tests.integration.test_events_support import FAILS, set_policy, wait_activations
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

FIXED = "function lambda(input, callback) {\n  callback(null, { fixed: input.payload.n });\n}\n"


async def test_dead_letters_replay_and_purge(settings: Settings, gateway_url: str,
                                             run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"dlq{run_id}")
    await set_policy(account, "http", max_attempts=1, retry_on=[])
    lambda_id = await deploy(account, "broken", FAILS)
    other = await deploy(account, "also-broken", FAILS)
    for n in range(3):
        assert (await invoke(account, lambda_id, {"n": n}, **{"async": "true"})).status_code == 202
    for n in range(2):
        assert (await invoke(account, other, {"n": n}, **{"async": "true"})).status_code == 202
    invoker_key = await user_key(account, "invoker", ["FaaS-Invocation"])

    async with account.client() as c:
        async def listed(lid: str, count: int) -> list | None:
            r = await c.get("/dead-letters", params={"lambda_id": lid})
            return r.json() if r.status_code == 200 and len(r.json()) >= count else None

        letters = await eventually(lambda: listed(lambda_id, 3), timeout_s=30, what="3 letters")
        await eventually(lambda: listed(other, 2), timeout_s=30, what="2 letters")
        assert len((await c.get("/dead-letters")).json()) == 5
        one = (await c.get(f"/dead-letters/{letters[0]['id']}")).json()
        assert one["payload"]["n"] in (0, 1, 2) and one["source"] == "http"
        assert "none left" in one["reason"] or "not retried" in one["reason"]
        assert (await c.get(f"/dead-letters/{uuid.uuid4()}")).status_code == 404

        # Fix the code, redeploy, replay one, then the rest.
        await c.patch(f"/lambdas/{lambda_id}", json={"code": FIXED})
        await c.post(f"/lambdas/{lambda_id}/deployments")
        await wait_deployed(c, lambda_id)
        async with account.client(invoker_key) as ic:  # FaaS-Invocation may replay…
            r = await ic.post(f"/dead-letters/{one['id']}/replay")
            assert r.status_code == 200, r.text
            assert r.json()["replayed"] == 1
            replayed = r.json()["invocations"][0]["activation_id"]
            assert (await ic.delete("/dead-letters")).status_code == 403  # …but not purge
        assert (await c.get(f"/dead-letters/{one['id']}")).status_code == 404
        runs = await wait_activations(settings, account.id, lambda_id, 1,
                                      where=lambda a: a["activation_id"] == replayed)
        assert runs[0]["outcome"] == "SUCCEEDED" and runs[0]["result"] == {"fixed": one["payload"]["n"]}

        r = await c.post("/dead-letters/replay", params={"lambda_id": lambda_id})
        assert r.status_code == 200 and r.json()["replayed"] == 2
        new_ids = {i["activation_id"] for i in r.json()["invocations"]}
        done = await wait_activations(settings, account.id, lambda_id, 2,
                                      where=lambda a: a["activation_id"] in new_ids)
        assert all(a["outcome"] == "SUCCEEDED" for a in done)
        assert (await c.get("/dead-letters", params={"lambda_id": lambda_id})).json() == []

        # Delete one, purge the rest; nothing runs.
        rest = (await c.get("/dead-letters")).json()
        assert len(rest) == 2
        assert (await c.delete(f"/dead-letters/{rest[0]['id']}")).status_code == 204
        assert (await c.delete(f"/dead-letters/{rest[0]['id']}")).status_code == 404
        r = await c.delete("/dead-letters")
        assert r.status_code == 200 and r.json() == {"purged": 1}
        assert (await c.get("/dead-letters")).json() == []
        r = await c.post("/dead-letters/replay")
        assert r.status_code == 200 and r.json()["replayed"] == 0
