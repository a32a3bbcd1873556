"""Helpers for end-to-end invocation tests: deploy a lambda and wait until it is Productive."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.mgmt_support import Account
from tests.support import eventually


async def deploy(account: Account, name: str, code: str, *, runtime: str = "nodejs",
                 timeout_s: float = 90, **extra: Any) -> str:
    """Create ``name`` and deploy it; return its id once Productive (fail on Failed)."""
    async with account.client() as c:
        r = await c.post("/lambdas", json={"name": name, "code": code, "runtime": runtime, **extra})
        assert r.status_code == 201, r.text
        lambda_id = str(r.json()["id"])
        r = await c.post(f"/lambdas/{lambda_id}/deployments")
        assert r.status_code == 202, r.text
        await wait_deployed(c, lambda_id, timeout_s)
    return lambda_id


async def wait_deployed(c: httpx.AsyncClient, lambda_id: str, timeout_s: float = 90) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        body = (await c.get(f"/lambdas/{lambda_id}")).json()
        if body["deployment_state"] == "Failed":
            raise AssertionError(f"deployment failed: {body['deployment_cause']}")
        return body if body["state"] == "Productive" and body["deployment_state"] == "Deployed" \
            else None

    return await eventually(done, timeout_s=timeout_s, interval_s=0.2, what="Productive")


async def invoke(account: Account, lambda_id: str, payload: Any = None,
                 **params: Any) -> httpx.Response:
    async with account.client() as c:
        return await c.post(f"/lambdas/{lambda_id}/invoke", params=params,
                            json={"headers": [{"key": "X-Test", "value": "1"}], "payload": payload},
                            timeout=90)
