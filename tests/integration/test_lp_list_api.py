"""The original platform's lambda list (``getLambdas`` of liveperson-functions-client) on real
services: Draft, Productive and Modified lambdas, the state filter, the response shape and
the authentication the npm client uses (a client-credentials JWT).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import HELLO, Account, create_account, user_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def listed(settings: Settings, platform: dict[str, str], run_id: str
                 ) -> tuple[Account, dict[str, str]]:
    account = await create_account(settings, platform["gateway"], f"lpl{run_id}")
    productive, modified = await asyncio.gather(
        deploy(account, "lp-productive", HELLO, description="in production",
               env={"GREETING": "hi", "A_KEY": "1"}),
        deploy(account, "lp-modified", HELLO, event_id="conversational_command"))
    async with account.client() as c:
        r = await c.patch(f"/lambdas/{modified}", json={"code": HELLO + "// changed\n"})
        assert r.status_code == 200 and r.json()["state"] == "Modified", r.text
        r = await c.post("/lambdas", json={"name": "lp-draft", "code": HELLO,
                                           "dependencies": {"lodash": "^4.17.21"}})
        assert r.status_code == 201, r.text
        draft = r.json()["id"]
    return account, {"Productive": productive, "Modified": modified, "Draft": draft}


def lp(account: Account, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=account.gateway, timeout=30,
                             headers={"Authorization": f"Bearer {token or account.admin_key}"})


async def get_lambdas(account: Account, token: str | None = None, **params: Any) -> httpx.Response:
    async with lp(account, token) as c:
        return await c.get(f"/api/account/{account.id}/lambdas/",
                           params={"userId": "some-user", "v": "1", **params})


async def test_every_lambda_in_the_originals_shape(listed: tuple[Account, dict[str, str]]) -> None:
    account, ids = listed
    r = await get_lambdas(account)
    assert r.status_code == 200, r.text
    by_name = {item["name"]: item for item in r.json()}
    assert set(by_name) == {"lp-draft", "lp-modified", "lp-productive"}
    for state, lambda_id in ids.items():
        item = next(i for i in by_name.values() if i["uuid"] == lambda_id)
        assert item["state"] == state
    item = by_name["lp-productive"]
    assert set(item) >= {"uuid", "version", "name", "description", "state", "runtime", "eventId",
                         "samplePayload", "createdAt", "createdBy", "updatedAt", "updatedBy",
                         "lastDeployment", "implementation", "skills"}
    assert item["description"] == "in production"
    assert item["version"] == 1
    assert item["runtime"]["name"] == "Node.js" and item["runtime"]["uuid"]
    assert item["runtime"]["baseImageName"]
    assert item["implementation"]["code"] == HELLO
    assert item["implementation"]["environmentVariables"] == [
        {"key": "A_KEY", "value": "1"}, {"key": "GREETING", "value": "hi"}]
    assert item["implementation"]["dependencies"] == []
    assert item["lastDeployment"]["deploymentState"] == "Deployed"
    assert item["lastDeployment"]["lambdaVersion"] == 1
    assert item["eventId"] is None and item["samplePayload"] == {}
    for stamp in (item["createdAt"], item["updatedAt"]):
        assert stamp.endswith("Z") and datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    modified = by_name["lp-modified"]
    assert modified["version"] == 2 and modified["lastDeployment"]["lambdaVersion"] == 1
    assert modified["implementation"]["code"].endswith("// changed\n")
    assert modified["eventId"] == "conversational_command"
    assert modified["samplePayload"], "the event's sample payload"
    draft = by_name["lp-draft"]
    assert draft["lastDeployment"] == {}
    assert draft["implementation"]["dependencies"] == [{"key": "lodash", "value": "^4.17.21"}]


async def test_state_filter(listed: tuple[Account, dict[str, str]]) -> None:
    account, ids = listed
    for state, lambda_id in ids.items():
        r = await get_lambdas(account, state=state)
        assert r.status_code == 200, r.text
        assert [i["uuid"] for i in r.json()] == [lambda_id], state
    async with lp(account) as c:  # several states, as the client sends an array
        r = await c.get(f"/api/account/{account.id}/lambdas/",
                        params=[("state", "Draft"), ("state", "Productive"), ("v", "1")])
    assert sorted(i["state"] for i in r.json()) == ["Draft", "Productive"]
    r = await get_lambdas(account, eventId="conversational_command")
    assert [i["uuid"] for i in r.json()] == [ids["Modified"]]
    r = await get_lambdas(account, state="Deployed")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_state"


async def test_authentication_as_the_npm_client_does_it(
        listed: tuple[Account, dict[str, str]], gateway_url: str) -> None:
    account, ids = listed
    async with account.client() as c:
        r = await c.post("/users", json={"name": "lp-list-client", "roles": ["FaaS-Invocation"]})
        r = await c.post(f"/users/{r.json()['id']}/oauth-clients")
        assert r.status_code == 201, r.text
        client_id, secret = r.json()["prefix"], r.json()["secret"]
    async with httpx.AsyncClient(base_url=gateway_url) as c:
        r = await c.post(f"/sentinel/api/account/{account.id}/app/token", params={"v": "2.0"},
                         data={"grant_type": "client_credentials", "client_id": client_id,
                               "client_secret": secret, "scope": "faas.lambda.invoke"})
        assert r.status_code == 200, r.text
        jwt = r.json()["access_token"]
    r = await get_lambdas(account, jwt, state="Productive")
    assert r.status_code == 200, r.text
    assert [i["uuid"] for i in r.json()] == [ids["Productive"]]


async def test_refusals(listed: tuple[Account, dict[str, str]], settings: Settings,
                        run_id: str) -> None:
    account, _ = listed
    async with lp(account, "no-such-key") as c:
        r = await c.get(f"/api/account/{account.id}/lambdas/", params={"v": "1"})
    assert r.status_code == 401
    async with httpx.AsyncClient(base_url=account.gateway) as c:
        assert (await c.get(f"/api/account/{account.id}/lambdas/")).status_code == 401
    other = await create_account(settings, account.gateway, f"lplo{run_id}")
    r = await get_lambdas(account, other.admin_key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_account"
    assert (await get_lambdas(other)).json() == []
    key = await user_key(account, "lp-list-admin", ["FaaS-Admin"])  # lambda.read: all roles
    assert len((await get_lambdas(account, key)).json()) == 3
    async with lp(account) as c:  # without the trailing slash: redirected to the route
        r = await c.get(f"/api/account/{account.id}/lambdas", params={"v": "1"},
                        follow_redirects=True)
    assert r.status_code == 200 and len(r.json()) == 3
