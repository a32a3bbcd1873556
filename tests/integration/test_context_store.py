"""The Conversation Context store: public API with permissions, TTL and purge on real
PostgreSQL, and a lambda's ``context.*`` toolbelt calls against the real registry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from fnbus.config import Settings
from fnbus.db import create_pool
from fnbus.egress import Egress, EgressPolicy
from fnbus.runner_protocol import ToolbeltCallError
from services.invoker import toolbelt_lp
from services.registry.context import ContextStore, purge_loop
from tests.integration.mgmt_support import Account, create_account, user_key
from tests.support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"ctx{run_id}")


@pytest.fixture(scope="module")
async def keys(tenant: Account) -> dict[str, str]:
    return {role: await user_key(tenant, f"ctx-{role.lower()}", [f"FaaS-{role}"])
            for role in ("Admin", "Developer", "Invocation")}


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    db = await create_pool(settings.database_url, min_size=1, max_size=2, migrate=False)
    yield db
    await db.close()


def ctx(account: Account, key: str | None = None) -> httpx.AsyncClient:
    c = account.client(key)
    c.base_url = c.base_url.join(f"/api/v1/accounts/{account.id}/context")
    return c


def props(ns: str, session: str = "__default__") -> str:
    return f"/namespaces/{ns}/sessions/{session}/properties"


async def test_every_operation_over_the_public_api(tenant: Account, keys: dict[str, str]) -> None:
    async with ctx(tenant, keys["Invocation"]) as c:
        r = await c.post("/namespaces", json={"name": "orders"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "orders" and r.json()["ttl_s"] is None
        again = await c.post("/namespaces", json={"name": "orders", "ttl_s": 3600})
        assert again.status_code == 200, again.text  # exists: answered, TTL now the default
        assert again.json()["ttl_s"] == 3600
        assert again.json()["created_ms"] == r.json()["created_ms"]
        assert [n["name"] for n in (await c.get("/namespaces")).json()] == ["orders"]
        assert (await c.get("/namespaces/orders")).json()["ttl_s"] == 3600

        value = {"items": [1, 2, {"sku": "A-1"}], "total": 12.5, "paid": False, "note": None}
        r = await c.put(props("orders", "conv-1"), json={"properties": {"cart": value, "n": 1}})
        assert r.status_code == 200, r.text
        assert r.json() == {"cart": value, "n": 1}
        r = await c.patch(props("orders", "conv-1"), json={"properties": {"n": 2, "state": "x"}})
        assert r.json() == {"cart": value, "n": 2, "state": "x"}  # merged, nothing removed
        r = await c.put(props("orders", "conv-1"), json={"properties": {"n": 3}})
        assert r.json()["cart"] == value  # set merges too, as on the original

        r = await c.get(props("orders", "conv-1"), params=[("name", "n"), ("name", "nope")])
        assert r.json() == {"n": 3}
        r = await c.get(props("orders", "conv-1") + "/cart")
        assert r.json() == {"name": "cart", "value": value}
        r = await c.get(props("orders", "conv-1") + "/nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "property_not_found"

        await c.put(props("orders"), json={"properties": {"shared": True}})
        assert (await c.get(props("orders", "__default__"))).json() == {"shared": True}
        assert (await c.get("/namespaces/orders/sessions")).json() == ["__default__", "conv-1"]

        r = await c.delete(props("orders", "conv-1") + "/state")
        assert r.status_code == 204, r.text
        assert (await c.delete(props("orders", "conv-1") + "/state")).status_code == 204
        assert "state" not in (await c.get(props("orders", "conv-1"))).json()
        r = await c.delete("/namespaces/orders/sessions/conv-1")
        assert r.status_code == 204, r.text
        assert (await c.get(props("orders", "conv-1"))).json() == {}
        assert (await c.get(props("orders"))).json() == {"shared": True}

        r = await c.delete("/namespaces/orders")
        assert r.status_code == 204, r.text
        r = await c.get(props("orders"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "namespace_not_found"


async def test_unknown_namespace_is_404_with_the_error_envelope(tenant: Account) -> None:
    async with ctx(tenant) as c:
        for method, path, body in (
                ("GET", "/namespaces/ghost", None),
                ("DELETE", "/namespaces/ghost", None),
                ("GET", "/namespaces/ghost/sessions", None),
                ("GET", props("ghost"), None),
                ("PUT", props("ghost"), {"properties": {"a": 1}}),
                ("PATCH", props("ghost", "s1"), {"properties": {"a": 1}}),
                ("GET", props("ghost") + "/a", None),
                ("DELETE", props("ghost") + "/a", None),
                ("DELETE", "/namespaces/ghost/sessions/s1", None)):
            r = await c.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.json()["error"]["code"] == "namespace_not_found", (method, path)
            assert "ghost" in r.json()["error"]["message"]


async def test_bad_input_is_refused(tenant: Account) -> None:
    async with ctx(tenant) as c:
        assert (await c.post("/namespaces", json={"name": "valid_ns-1"})).status_code == 201
        bad = [
            ("POST", "/namespaces", {"name": "has space"}),
            ("POST", "/namespaces", {"name": "x" * 101}),
            ("POST", "/namespaces", {"name": "faas"}),  # reserved
            ("POST", "/namespaces", {"name": "__internal"}),  # reserved
            ("POST", "/namespaces", {"name": "ok", "ttl_s": 0}),
            ("POST", "/namespaces", {"name": "ok", "extra": 1}),
            ("PUT", props("valid_ns-1"), {"properties": {}}),
            ("PUT", props("valid_ns-1"), {"properties": {"big": "x" * (64 * 1024)}}),
            ("PUT", props("valid_ns-1"), {"properties": {f"p{i}": i for i in range(101)}}),
            ("PUT", props("valid_ns-1"), {"properties": {"a": 1}, "ttl_s": -5}),
            ("PUT", props("valid_ns-1"), {"properties": {"bad\nname": 1}}),
            ("PUT", props("valid_ns-1"), ["not", "an", "object"]),
            ("GET", "/namespaces/bad%20name", None),
            ("GET", props("valid_ns-1", "s%3Fx"), None),  # '?' in a session id
        ]
        for method, path, body in bad:
            r = await c.request(method, path, json=body)
            assert r.status_code == 422, (method, path, r.text)
            assert r.json()["error"]["code"] == "invalid_request", (method, path, r.text)
        r = await c.put(props("valid_ns-1"), content=b"{not json",
                        headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        r = await c.post("/namespaces", json={"name": "faas"})
        assert "reserved" in r.json()["error"]["message"]


async def test_permissions(tenant: Account, keys: dict[str, str], settings: Settings,
                           gateway_url: str, run_id: str) -> None:
    async with ctx(tenant, keys["Developer"]) as dev:
        assert (await dev.post("/namespaces", json={"name": "perm"})).status_code == 201
        r = await dev.put(props("perm"), json={"properties": {"a": 1}})
        assert r.status_code == 200, r.text
    async with ctx(tenant, keys["Admin"]) as admin:  # reads, but does not write
        assert (await admin.get(props("perm"))).json() == {"a": 1}
        for method, path, body in (("POST", "/namespaces", {"name": "nope"}),
                                   ("PUT", props("perm"), {"properties": {"a": 2}}),
                                   ("DELETE", props("perm") + "/a", None),
                                   ("DELETE", "/namespaces/perm", None)):
            r = await admin.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "permission_denied"
            assert "context.create-edit-delete" in r.json()["error"]["message"]
    other = await create_account(settings, gateway_url, f"ctxo{run_id}")
    async with ctx(tenant, other.admin_key) as stranger:
        r = await stranger.get("/namespaces")
        assert r.status_code == 403 and r.json()["error"]["code"] == "wrong_account"
    async with ctx(other) as theirs:  # the same name elsewhere is another namespace
        assert (await theirs.get(props("perm"))).status_code == 404
    async with ctx(tenant, "not-a-key") as anonymous:
        assert (await anonymous.get("/namespaces")).status_code == 401


async def test_ttl_expires_on_read_and_the_purge_removes_rows(
        tenant: Account, pool: asyncpg.Pool) -> None:
    async with ctx(tenant) as c:
        assert (await c.post("/namespaces", json={"name": "ttl", "ttl_s": 1})).status_code == 201
        await c.put(props("ttl", "s"), json={"properties": {"by_namespace": 1}})
        await c.put(props("ttl", "s"), json={"properties": {"own": 2}, "ttl_s": 3600})
        assert (await c.post("/namespaces", json={"name": "keep"})).status_code == 201
        await c.put(props("keep", "s"), json={"properties": {"forever": 3}})
        await c.put(props("keep", "s"), json={"properties": {"short": 4}, "ttl_s": 1})
        assert (await c.get(props("keep", "s"))).json() == {"forever": 3, "short": 4}

        await asyncio.sleep(1.3)
        assert (await c.get(props("ttl", "s"))).json() == {"own": 2}
        assert (await c.get(props("keep", "s"))).json() == {"forever": 3}
        r = await c.get(props("keep", "s") + "/short")
        assert r.status_code == 404 and r.json()["error"]["code"] == "property_not_found"

        # Expired rows are still stored until the purge; the purge takes only them.
        count = "SELECT count(*) FROM context_properties WHERE account_id = $1"
        assert await pool.fetchval(count, tenant.id) >= 4
        store = ContextStore(pool)
        task = asyncio.create_task(purge_loop(store, interval_s=0.05))
        try:
            async def purged() -> bool:
                return await pool.fetchval(
                    count + " AND expires_at <= now()", tenant.id) == 0
            await eventually(purged, timeout_s=10, what="expired context rows purged")
        finally:
            task.cancel()
        names = {r["name"] for r in await pool.fetch(
            "SELECT name FROM context_properties WHERE account_id = $1", tenant.id)}
        assert {"own", "forever"} <= names and not {"by_namespace", "short"} & names

        # A rewrite restarts the clock.
        await c.put(props("keep", "s"), json={"properties": {"again": 5}, "ttl_s": 2})
        await asyncio.sleep(1.2)
        await c.patch(props("keep", "s"), json={"properties": {"again": 6}, "ttl_s": 2})
        await asyncio.sleep(1.2)
        assert (await c.get(props("keep", "s"))).json()["again"] == 6


async def test_the_purge_deletes_in_batches_until_none_is_left(
        tenant: Account, pool: asyncpg.Pool) -> None:
    async with ctx(tenant) as c:
        assert (await c.post("/namespaces", json={"name": "batches"})).status_code == 201
        for session in ("a", "b", "c"):
            r = await c.put(props("batches", session),
                            json={"properties": {"x": 1, "y": 2}, "ttl_s": 1})
            assert r.status_code == 200, r.text
        await c.put(props("batches", "a"), json={"properties": {"z": 3}})
    await asyncio.sleep(1.2)
    assert await ContextStore(pool).purge_expired(batch=2) >= 6
    rows = await pool.fetch("SELECT session_id, name FROM context_properties "
                            "WHERE account_id = $1 AND namespace = 'batches'", tenant.id)
    assert [(r["session_id"], r["name"]) for r in rows] == [("a", "z")]


async def test_the_purge_uses_the_expiry_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT ctid FROM context_properties WHERE expires_at <= now() LIMIT 100"))
    assert "context_properties_expiry" in plan, plan


# -- the toolbelt's context.* against the real registry -------------------------------------
@pytest.fixture
async def toolbelt(settings: Settings, registry_url: str
                   ) -> AsyncIterator[Any]:
    async with Egress(EgressPolicy()) as egress, httpx.AsyncClient(
            base_url=registry_url,
            headers={"Authorization": f"Bearer {settings.service_token}"}) as registry:
        async def call(account: Account, method: str, *args: Any) -> Any:
            return await toolbelt_lp.handle(
                f"context.{method}", list(args), account_id=account.id, lambda_id="lambda-ctx",
                deadline=time.monotonic() + 20, registry=registry, egress=egress,
                settings=settings)
        yield call


async def test_toolbelt_context_methods(tenant: Account, toolbelt: Any) -> None:
    created = await toolbelt(tenant, "createNamespace", "lambdas", {"ttl": 600})
    assert created["namespace"] == created["name"] == "lambdas"
    assert created["ttl"] == created["ttlSecond"] == 600
    assert isinstance(created["createdAt"], int) and created["createdAt"] > 1.7e12
    assert (await toolbelt(tenant, "createNamespace", "lambdas"))["namespace"] == "lambdas"
    listed = await toolbelt(tenant, "getListOfNamespaces")
    assert {"name": "lambdas", "createdAt": created["createdAt"], "ttl": 600,
            "ttlSecond": 600} in listed

    assert await toolbelt(tenant, "setPropertiesInNamespace", "lambdas",
                          {"a": 1, "b": {"c": [True]}}) == {"ok": True}
    assert await toolbelt(tenant, "updatePropertiesInNamespace", "lambdas", {"a": 2},
                          "conv-9", 30) == {"ok": True}
    assert await toolbelt(tenant, "getAllPropertiesInSession", "lambdas") == \
        {"a": 1, "b": {"c": [True]}}
    assert await toolbelt(tenant, "getAllPropertiesInSession", "lambdas", "__default__") == \
        {"a": 1, "b": {"c": [True]}}
    assert await toolbelt(tenant, "getAllPropertiesInSession", "lambdas", "conv-9") == {"a": 2}
    assert await toolbelt(tenant, "getSelectedPropertiesInSession", "lambdas",
                          ["b", "zzz"]) == {"b": {"c": [True]}}
    assert await toolbelt(tenant, "getSelectedPropertiesInSession", "lambdas", []) == {}
    assert await toolbelt(tenant, "getPropertyInSession", "lambdas", "a", "conv-9") == 2
    assert await toolbelt(tenant, "getPropertyInSession", "lambdas", "missing") is None
    assert await toolbelt(tenant, "deletePropertyInSession", "lambdas", "a") == {"deleted": True}
    assert await toolbelt(tenant, "getPropertyInSession", "lambdas", "a") is None
    assert await toolbelt(tenant, "deleteSession", "lambdas", "conv-9") == {"deleted": True}
    assert await toolbelt(tenant, "getAllPropertiesInSession", "lambdas", "conv-9") == {}

    # What the lambda wrote, an external system reads over the API (and the other way).
    async with ctx(tenant) as c:
        assert (await c.get(props("lambdas"))).json() == {"b": {"c": [True]}}
        await c.patch(props("lambdas", "conv-api"), json={"properties": {"from": "bot"}})
    assert await toolbelt(tenant, "getPropertyInSession", "lambdas", "from", "conv-api") == "bot"

    assert await toolbelt(tenant, "deleteNamespace", "lambdas") == {"deleted": True}
    assert await toolbelt(tenant, "deleteNamespace", "lambdas") == {"deleted": True}


async def test_toolbelt_context_errors(tenant: Account, toolbelt: Any) -> None:
    for method, args in (("getAllPropertiesInSession", ["nowhere"]),
                         ("getPropertyInSession", ["nowhere", "a"]),
                         ("getSelectedPropertiesInSession", ["nowhere", []]),
                         ("setPropertiesInNamespace", ["nowhere", {"a": 1}]),
                         ("deletePropertyInSession", ["nowhere", "a"]),
                         ("deleteSession", ["nowhere", "s"])):
        with pytest.raises(ToolbeltCallError) as info:
            await toolbelt(tenant, method, *args)
        assert info.value.code == "namespace_not_found", method
    await toolbelt(tenant, "createNamespace", "errs")
    for method, args in (("createNamespace", ["bad name"]),
                         ("createNamespace", ["faas"]),
                         ("createNamespace", ["ok2", {"ttl": "soon"}]),
                         ("setPropertiesInNamespace", ["errs", {}]),
                         ("setPropertiesInNamespace", ["errs", {"a": 1}, "s/1"]),
                         ("setPropertiesInNamespace", ["errs", {"a": "x" * 70_000}]),
                         ("setPropertiesInNamespace", ["errs", {"a": 1}, None, 0]),
                         ("getSelectedPropertiesInSession", ["errs", "a"]),
                         ("getPropertyInSession", ["errs", 5]),
                         ("getAllPropertiesInSession", [None])):
        with pytest.raises(ToolbeltCallError) as info:
            await toolbelt(tenant, method, *args)
        assert info.value.code == "bad_request", (method, info.value.message)
    with pytest.raises(ToolbeltCallError) as info:
        await toolbelt(tenant, "getListOfSessions", "errs")
    assert info.value.code == "unknown_method"


async def test_toolbelt_context_is_per_account(tenant: Account, toolbelt: Any, settings: Settings,
                                               gateway_url: str, run_id: str) -> None:
    other = await create_account(settings, gateway_url, f"ctxp{run_id}")
    await toolbelt(tenant, "createNamespace", "private")
    await toolbelt(tenant, "setPropertiesInNamespace", "private", {"secret": "mine"})
    with pytest.raises(ToolbeltCallError) as info:
        await toolbelt(other, "getAllPropertiesInSession", "private")
    assert info.value.code == "namespace_not_found"
    assert all(n["name"] != "private" for n in await toolbelt(other, "getListOfNamespaces"))


# -- end to end: lambdas in real containers count in the store ----------------------------------
NODE_COUNTER = r"""function lambda(input, callback) {
  count(input.payload).then((out) => callback(null, out), (err) => callback(err));
}

const { Toolbelt } = require('lp-faas-toolbelt');
const contextClient = Toolbelt.ContextServiceClient({ accountId: process.env.BRAND_ID, apiKey: 'x' });

async function count(p) {
  await contextClient.createNamespace('visits', { ttl: 3600 });
  const previous = await contextClient.getPropertyInSession('visits', 'count', p.conversationId);
  const count = (previous || 0) + 1;
  await contextClient.updatePropertiesInNamespace('visits', { count, by: 'node' }, p.conversationId);
  return { count, session: await contextClient.getAllPropertiesInSession('visits', p.conversationId) };
}
"""

PY_COUNTER = """from lp_faas_toolbelt import Toolbelt


async def handler(input):
    p = input["payload"]
    context = Toolbelt.context_service_client()
    await context.create_namespace("visits", {"ttl": 3600})
    previous = await context.get_property_in_session("visits", "count", p["conversationId"])
    count = (previous or 0) + 1
    await context.update_properties_in_namespace("visits", {"count": count, "by": "python"},
                                                 p["conversationId"])
    return {"count": count,
            "session": await context.get_all_properties_in_session("visits", p["conversationId"])}
"""


@pytest.mark.usefixtures("platform")
async def test_lambdas_count_across_invocations_and_share_with_the_api(tenant: Account) -> None:
    from tests.integration.invoke_support import deploy, invoke

    node, python = await asyncio.gather(
        deploy(tenant, "context-counter-node", NODE_COUNTER),
        deploy(tenant, "context-counter-py", PY_COUNTER, runtime="python"))
    counts = []
    for lambda_id in (node, node, python, node):  # one conversation, both runtimes
        r = await invoke(tenant, lambda_id, {"conversationId": "conv-e2e"})
        assert r.status_code == 200, r.text
        counts.append(r.json()["result"]["count"])
    assert counts == [1, 2, 3, 4]
    assert r.json()["result"]["session"] == {"count": 4, "by": "node"}
    r = await invoke(tenant, python, {"conversationId": "conv-other"})
    assert r.json()["result"] == {"count": 1, "session": {"count": 1, "by": "python"}}
    async with ctx(tenant) as c:  # an external system reads and resets the counter
        assert (await c.get(props("visits", "conv-e2e") + "/count")).json()["value"] == 4
        assert (await c.get("/namespaces/visits")).json()["ttl_s"] == 3600
        await c.put(props("visits", "conv-e2e"), json={"properties": {"count": 40}})
    r = await invoke(tenant, node, {"conversationId": "conv-e2e"})
    assert r.json()["result"]["count"] == 41
