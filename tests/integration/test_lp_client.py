"""LpClient and CsdsClient on the host: toolbelt_lp.handle against the real registry,
a fake CSDS and a fake LivePerson service on 127.0.0.1, through the real egress engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from fnbus.egress import Egress, EgressPolicy
from fnbus.runner_protocol import ToolbeltCallError
from services.invoker import toolbelt_lp
from services.invoker.oauth1 import Credentials
from tests.integration.mgmt_support import Account, create_account
from tests.lp_fakes import FakeCsds, FakeLpService, serve

pytestmark = pytest.mark.integration

APP_KEY = Credentials(consumer_key="app-key-1", consumer_secret="app-secret-1",
                      token="access-token-1", token_secret="access-secret-1")
APP_KEY_JSON = json.dumps({"appKey": APP_KEY.consumer_key, "secret": APP_KEY.consumer_secret,
                           "accessToken": APP_KEY.token,
                           "accessTokenSecret": APP_KEY.token_secret})


@dataclass
class World:
    account: Account
    csds: FakeCsds
    lp: FakeLpService
    settings: Settings
    registry: httpx.AsyncClient
    egress: Egress

    async def call(self, method: str, *args: Any, deadline_s: float = 20.0,
                   account_id: str | None = None, settings: Settings | None = None) -> Any:
        return await toolbelt_lp.handle(
            method, list(args), account_id=account_id or self.account.id, lambda_id="lambda-lp",
            deadline=time.monotonic() + deadline_s, registry=self.registry, egress=self.egress,
            settings=settings or self.settings)


async def _set_app_key(account: Account, value: str) -> None:
    async with account.client() as c:
        r = await c.put("/secrets/lp-faas-default-app-key", json={"value": value})
        assert r.status_code == 200, r.text


@pytest.fixture
async def world(settings: Settings, gateway_url: str, registry_url: str,
                run_id: str) -> AsyncIterator[World]:
    account = await create_account(settings, gateway_url, f"lpc{run_id}{time.monotonic_ns() % 10**6}")
    await _set_app_key(account, APP_KEY_JSON)
    lp = FakeLpService(APP_KEY)
    async with serve(lp.app()) as lp_url:
        lp.url = lp_url
        csds = FakeCsds({account.id: {"msgHist": lp_url, "agentVep": lp_url.removeprefix("http://"),
                                      "odd": "not a url at all://"}})
        async with serve(csds.app()) as csds_url:
            csds.url = csds_url
            policy = EgressPolicy(exempt_cidrs=(ip_network("127.0.0.0/8"),))
            async with Egress(policy) as egress, httpx.AsyncClient(
                    base_url=registry_url,
                    headers={"Authorization": f"Bearer {settings.service_token}"}) as registry:
                toolbelt_lp.CSDS.clear()
                yield World(account, csds, lp, settings.model_copy(update={"csds_url": csds_url}),
                            registry, egress)


async def test_csds_resolves_a_service_and_caches_the_answer(world: World) -> None:
    value = await world.call("csds.resolve", "msgHist")
    assert value == {"service": "msgHist", "domain": world.lp.url.removeprefix("http://")}
    assert (await world.call("csds.resolve", "msgHist")) == value
    assert world.csds.hits == 1


async def test_lp_request_is_signed_with_the_app_key_and_needs_no_allowlist(world: World) -> None:
    value = await world.call("lp.request", {
        "method": "POST", "service": "msgHist",
        "path": "/messaging_history/api/account/1/conversations/search?offset=0&limit=5",
        "headers": {"content-type": "application/json"}, "body": json.dumps({"status": ["OPEN"]}),
        "body_encoding": "utf8", "timeout_ms": 5000})
    assert value["status"] == 200, value
    assert value["body_encoding"] == "utf8"
    body = json.loads(value["body"])
    assert body["signed"] is True and body["consumer_key"] == APP_KEY.consumer_key
    assert body["path"] == "/messaging_history/api/account/1/conversations/search"
    assert body["query"] == "offset=0&limit=5"
    assert json.loads(body["body"]) == {"status": ["OPEN"]}
    assert value["url"].startswith(world.lp.url + "/messaging_history/")
    assert value["headers"]["content-type"].startswith("application/json")


async def test_form_bodies_are_part_of_the_signature(world: World) -> None:
    value = await world.call("lp.request", {
        "method": "POST", "service": "msgHist", "path": "form",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": "a=1&b=two+words"})
    assert value["status"] == 200, value
    assert json.loads(value["body"])["signed"] is True


async def test_a_base_uri_without_scheme_means_https(world: World) -> None:
    # agentVep's baseURI is host:port only: the client must speak TLS to it, which the
    # plain-HTTP fake does not answer.
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "GET", "service": "agentVep", "path": "/x",
                                        "timeout_ms": 3000})
    assert info.value.code in ("tls_error", "connect_error"), info.value.message
    assert world.lp.seen == [] or all(s.path != "/x" for s in world.lp.seen)


async def test_the_lambdas_own_authorization_is_kept(world: World) -> None:
    value = await world.call("lp.request", {"method": "GET", "service": "msgHist", "path": "/me",
                                            "headers": {"Authorization": "Bearer lambda-token"}})
    assert value["status"] == 200, value
    assert json.loads(value["body"])["authorization"] == "Bearer lambda-token"


async def test_redirects_are_not_followed(world: World) -> None:
    value = await world.call("lp.request", {"method": "GET", "service": "msgHist",
                                            "path": "/redirect"})
    assert value["status"] == 302
    assert value["headers"]["location"] == "http://example.org/"


async def test_a_path_cannot_leave_the_services_host(world: World) -> None:
    value = await world.call("lp.request", {"method": "GET", "service": "msgHist",
                                            "path": "@example.org/x"})
    assert value["status"] == 200
    assert json.loads(value["body"])["path"] == "/@example.org/x"
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "GET", "service": "msgHist",
                                        "path": "/a b\r\nX-Injected: 1"})
    assert info.value.code == "bad_request"


async def test_unknown_service_refetches_then_is_not_found(world: World,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolbelt_lp, "CSDS", toolbelt_lp.CsdsCache(min_refetch_s=0))
    await world.call("csds.resolve", "msgHist")
    assert world.csds.hits == 1
    # A service added to CSDS after the first answer is found by refetching on the miss.
    world.csds.services[world.account.id]["leBotAgent"] = world.lp.url
    assert (await world.call("csds.resolve", "leBotAgent"))["service"] == "leBotAgent"
    assert world.csds.hits == 2
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("csds.resolve", "noSuchService")
    assert info.value.code == "service_not_found"
    assert "noSuchService" in info.value.message
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("csds.resolve", "odd")  # an unusable baseURI is left out
    assert info.value.code == "service_not_found"


async def test_an_account_csds_does_not_know(world: World) -> None:
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("csds.resolve", "msgHist", account_id="nobody-here")
    assert info.value.code == "service_not_found"


async def test_without_csds_lp_services_are_not_available(world: World) -> None:
    plain = world.settings.model_copy(update={"csds_url": ""})
    for method, args in (("csds.resolve", ["msgHist"]),
                         ("lp.request", [{"method": "GET", "service": "msgHist", "path": "/"}])):
        with pytest.raises(ToolbeltCallError) as info:
            await world.call(method, *args, settings=plain)
        assert info.value.code == "not_available"
        assert "CSDS" in info.value.message


async def test_an_app_key_that_is_not_json_is_a_clear_error_without_its_value(world: World) -> None:
    await _set_app_key(world.account, "plain-random-value-xyz")
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "GET", "service": "msgHist", "path": "/"})
    assert info.value.code == "bad_request"
    assert "lp-faas-default-app-key" in info.value.message and "appKey" in info.value.message
    assert "plain-random-value-xyz" not in info.value.message
    assert world.lp.seen == []


async def test_a_deleted_app_key_is_secret_not_found(world: World) -> None:
    async with world.account.client() as c:
        r = await c.delete("/secrets/lp-faas-default-app-key")
        assert r.status_code == 204, r.text
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "GET", "service": "msgHist", "path": "/"})
    assert info.value.code == "secret_not_found"


async def test_the_invocations_deadline_bounds_the_call(world: World) -> None:
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "GET", "service": "msgHist", "path": "/"},
                         deadline_s=-1)
    assert info.value.code == "timeout"


async def test_bad_arguments_and_unknown_methods(world: World) -> None:
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"method": "TRACE", "service": "msgHist", "path": "/"})
    assert info.value.code == "bad_request"
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.request", {"service": "msgHist", "path": "/", "headers": {"x": {}}})
    assert info.value.code == "bad_request"
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("csds.resolve", "bad service/name")
    assert info.value.code == "bad_request"
    with pytest.raises(ToolbeltCallError) as info:
        await world.call("lp.somethingElse")
    assert info.value.code == "unknown_method"


# -- end to end: a Node lambda in a real container ------------------------------------------
LP_LAMBDA = r"""function lambda(input, callback) {
  run().then((out) => callback(null, out),
             (err) => callback(null, { failed: err.code || err.name, message: err.message }));
}

const { Toolbelt, LpServices } = require('lp-faas-toolbelt');

async function run() {
  const lpClient = Toolbelt.LpClient();
  const echoed = await lpClient('GET', LpServices.MSG_HIST, '/echo/me', { qs: { a: 1 }, json: true });
  const conversation = await Toolbelt.ConversationUtil().getConversationById('conv-42');
  const domain = await Toolbelt.CsdsClient().get(LpServices.MSG_HIST);
  let unknown;
  try { await Toolbelt.CsdsClient().get('noSuchService'); } catch (err) { unknown = err.code; }
  return { echoed, conversation, domain, unknown };
}
"""


@pytest.mark.usefixtures("platform")
async def test_a_node_lambda_calls_lp_services_through_the_fakes(
        world: World, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration.invoke_support import deploy, invoke

    # The invoker reads the operator's CSDS setting for every call: point it at the fake.
    monkeypatch.setattr(settings, "csds_url", world.csds.url)
    lambda_id = await deploy(world.account, "lp-client-e2e", LP_LAMBDA)
    r = await invoke(world.account, lambda_id, {})
    assert r.status_code == 200, r.text
    out = r.json()["result"]
    assert "failed" not in out, out
    assert out["echoed"]["signed"] is True and out["echoed"]["consumer_key"] == APP_KEY.consumer_key
    assert out["echoed"]["path"] == "/echo/me" and out["echoed"]["query"] == "a=1"
    record = out["conversation"]["conversationHistoryRecords"][0]
    assert record["info"]["conversationId"] == "conv-42" and record["signed"] is True
    assert out["domain"] == world.lp.url.removeprefix("http://")
    assert out["unknown"] == "service_not_found"
    seen = [s.path for s in world.lp.seen]
    assert "/echo/me" in seen
    assert f"/messaging_history/api/account/{world.account.id}/conversations/conversation/search" \
        in seen
