"""Deploy and invoke end to end: real Kafka, PostgreSQL and Docker containers."""

from __future__ import annotations

import asyncio
import time

import docker
import httpx
import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import deploy, invoke, wait_deployed
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

NODE_HELLO = """function lambda(input, callback) {
  console.info("hello from", process.env.BRAND_ID);
  callback(null, { hello: input.payload.name, brand: process.env.BRAND_ID,
                   greeting: process.env.GREETING, headers: input.headers });
}
"""
PY_HELLO = '''def handler(input):
    import os
    print("hello from python")
    return {"hello": input["payload"]["name"], "brand": os.environ["BRAND_ID"]}
'''


@pytest.fixture(scope="module")
async def tenant(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"inv{run_id}")


@pytest.fixture(scope="module")
async def hello(tenant: Account) -> str:
    return await deploy(tenant, "hello-node", NODE_HELLO, env={"GREETING": "hi"})


async def test_node_hello_world_sync(tenant: Account, hello: str) -> None:
    r = await invoke(tenant, hello, {"name": "world"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == {"hello": "world", "brand": tenant.id, "greeting": "hi",
                              "headers": [{"key": "X-Test", "value": "1"}]}
    assert body["outcome"] == "SUCCEEDED"
    assert [(e["level"], e["message"]) for e in body["logs"]] == [("info", f"hello from {tenant.id}")]
    # The second call finds the container warm.
    again = (await invoke(tenant, hello, {"name": "again"})).json()
    assert again["result"]["hello"] == "again" and again["cold_start"] is False


async def test_node_hello_world_async_then_read_back(tenant: Account, hello: str) -> None:
    r = await invoke(tenant, hello, {"name": "later"}, **{"async": "true"})
    assert r.status_code == 202, r.text
    activation_id = r.json()["activation_id"]
    async with tenant.client() as c:
        async def record() -> dict | None:
            got = await c.get(f"/activations/{activation_id}")
            return got.json() if got.status_code == 200 else None

        activation = await eventually(record, timeout_s=30, what="activation record")
        assert activation["outcome"] == "SUCCEEDED"
        assert activation["result"]["hello"] == "later"

        async def logs() -> list | None:
            got = await c.get(f"/activations/{activation_id}/logs")
            return got.json()["items"] if got.status_code == 200 and got.json()["items"] else None

        lines = await eventually(logs, timeout_s=30, what="log lines")
        assert lines[0]["message"] == f"hello from {tenant.id}" and lines[0]["level"] == "info"


async def test_python_hello_world(tenant: Account) -> None:
    lambda_id = await deploy(tenant, "hello-py", PY_HELLO, runtime="python")
    r = await invoke(tenant, lambda_id, {"name": "snake"})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"hello": "snake", "brand": tenant.id}
    assert r.json()["logs"][0]["message"] == "hello from python"


async def test_callback_error_and_thrown_error(tenant: Account, gateway_url: str) -> None:
    failing = await deploy(tenant, "fails", "function lambda(input, callback) {\n"
                                            "  callback(new Error('bad input'));\n}\n")
    throwing = await deploy(tenant, "throws", "function lambda(input, callback) {\n"
                                              "  throw new TypeError('boom');\n}\n")
    r = await invoke(tenant, failing, {})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "com.liveperson.faas.handler.custom-failure"
    assert r.json()["error"]["message"] == "bad input"
    r = await invoke(tenant, throwing, {})
    assert r.status_code == 502, r.text
    assert r.json()["error"]["code"] == "com.liveperson.faas.handler.runtime-exception"
    assert "boom" in r.json()["error"]["message"]

    # The original platform's external API: same lambdas, its status 901 and body.
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {tenant.admin_key}"}) as c:
        r = await c.post(f"/api/account/{tenant.id}/lambdas/{failing}/invoke",
                         params={"v": "1", "skillId": "", "externalSystem": ""},
                         json={"timestamp": int(time.time() * 1000), "headers": [], "payload": {}})
        assert r.status_code == 901, r.text
        assert r.json() == {"errorCode": "com.liveperson.faas.handler.custom-failure",
                            "errorMsg": "bad input"}


async def test_lp_api_success_and_not_deployed(tenant: Account, hello: str,
                                               gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url,
                                 headers={"Authorization": f"Bearer {tenant.admin_key}",
                                          "X-Request-ID": "req-1"}) as c:
        r = await c.post(f"/api/account/{tenant.id}/lambdas/{hello}/invoke", params={"v": "1"},
                         json={"timestamp": 0, "headers": [], "payload": {"name": "lp"}})
        assert r.status_code == 200 and r.json()["hello"] == "lp"
        async with tenant.client() as mc:
            draft = (await mc.post("/lambdas", json={"name": "never-deployed",
                                                     "code": NODE_HELLO})).json()["id"]
        r = await c.post(f"/api/account/{tenant.id}/lambdas/{draft}/invoke", params={"v": "1"},
                         json={"headers": [], "payload": {}})
        assert r.status_code == 404, r.text
    r = await invoke(tenant, draft, {})
    assert r.status_code == 409 and r.json()["error"]["code"] == "lambda_not_deployed"


@pytest.mark.parametrize("name,code", [
    ("never-calls-back", "function lambda(input, callback) {\n  console.log('waiting');\n}\n"),
    ("loops-forever", "function lambda(input, callback) {\n  while (true) {}\n}\n"),
])
async def test_killed_at_the_limit(tenant: Account, name: str, code: str) -> None:
    lambda_id = await deploy(tenant, name, code)
    started = time.monotonic()
    r = await invoke(tenant, lambda_id, {}, timeout_ms=1500)
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "com.liveperson.faas.handler.executiontime-exceeded"
    assert 1.4 <= elapsed < 10
    # The killed container is never reused: the next call is a cold start.
    again = await invoke(tenant, lambda_id, {}, timeout_ms=1500)
    assert again.status_code == 504 and again.json()["cold_start"] is True


@pytest.mark.slow
async def test_the_real_30_second_limit(tenant: Account) -> None:
    lambda_id = await deploy(tenant, "sleeps-long", "function lambda(input, callback) {\n"
                                                    "  setTimeout(() => callback(null, 'late'), 60000);\n}\n")
    started = time.monotonic()
    r = await invoke(tenant, lambda_id, {})
    elapsed = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert 30 <= elapsed < 40, elapsed


async def test_side_effects_do_not_outlive_the_timeout(tenant: Account) -> None:
    """A timer that would call back after the kill never produces a result."""
    code = ("function lambda(input, callback) {\n"
            "  setTimeout(() => callback(null, 'too late'), 2500);\n}\n")
    lambda_id = await deploy(tenant, "late-callback", code)
    r = await invoke(tenant, lambda_id, {}, timeout_ms=1000)
    assert r.status_code == 504, r.text
    await asyncio.sleep(2.5)
    r = await invoke(tenant, lambda_id, {}, timeout_ms=4000)
    assert r.status_code == 200 and r.json()["result"] == "too late"


async def test_fork_bomb_and_memory_hog_are_contained(tenant: Account, hello: str,
                                                      platform: dict[str, str]) -> None:
    fork_bomb = """function lambda(input, callback) {
  const { spawn } = require('child_process');
  let n = 0, errors = 0;
  for (let i = 0; i < 500; i++) {
    try { spawn('/bin/sh', ['-c', 'sleep 30']).on('error', () => errors++); n++; } catch (e) { errors++; }
  }
  setTimeout(() => callback(null, { spawned: n, errors }), 1000);
}
"""
    hog = """function lambda(input, callback) {
  const chunks = [];
  while (true) { chunks.push(Buffer.alloc(16 * 1024 * 1024, 1)); }
}
"""
    bomb_id = await deploy(tenant, "fork-bomb", fork_bomb)
    hog_id = await deploy(tenant, "memory-hog", hog)
    r = await invoke(tenant, bomb_id, {}, timeout_ms=8000)
    # Either the pids limit refuses the spawns or the call is cut at the limit; never a hang.
    assert r.status_code in (200, 502, 504), r.text
    if r.status_code == 200:
        assert r.json()["result"]["errors"] > 0
    r = await invoke(tenant, hog_id, {}, timeout_ms=15000)
    assert r.status_code == 502, r.text
    assert "memory" in r.json()["error"]["message"].lower()
    # The invoker is healthy and other lambdas still run.
    async with httpx.AsyncClient() as c:
        assert (await c.get(f"{platform['invoker']}/healthz")).status_code == 200
    ok = await invoke(tenant, hello, {"name": "still here"})
    assert ok.status_code == 200 and ok.json()["result"]["hello"] == "still here"


async def test_no_network_inside_the_sandbox(tenant: Account) -> None:
    code = """function lambda(input, callback) {
  const net = require('net');
  const s = net.connect({ host: '127.0.0.1', port: 9092 });
  s.on('connect', () => callback(null, 'connected'));
  s.on('error', (e) => callback(null, 'failed: ' + e.code));
}
"""
    lambda_id = await deploy(tenant, "tries-network", code)
    r = await invoke(tenant, lambda_id, {}, timeout_ms=5000)
    assert r.status_code == 200, r.text
    assert r.json()["result"].startswith("failed:")


async def test_accounts_never_share_a_container(settings: Settings, gateway_url: str,
                                                run_id: str) -> None:
    code = "function lambda(input, callback) { callback(null, require('os').hostname()); }\n"
    a = await create_account(settings, gateway_url, f"sharea{run_id}")
    b = await create_account(settings, gateway_url, f"shareb{run_id}")
    la = await deploy(a, "whoami", code)
    lb = await deploy(b, "whoami", code)
    hosts_a = {(await invoke(a, la, {})).json()["result"] for _ in range(3)}
    hosts_b = {(await invoke(b, lb, {})).json()["result"] for _ in range(3)}
    assert len(hosts_a) == 1 and len(hosts_b) == 1  # warm reuse within an account's lambda
    assert hosts_a.isdisjoint(hosts_b)


async def test_syntax_error_fails_the_deployment_with_its_line(tenant: Account) -> None:
    async with tenant.client() as c:
        r = await c.post("/lambdas", json={"name": "broken", "code":
                                           "function lambda(input, callback) {\n  let x = ;\n}\n"})
        lambda_id = r.json()["id"]
        assert (await c.post(f"/lambdas/{lambda_id}/deployments")).status_code == 202

        async def failed() -> dict | None:
            body = (await c.get(f"/lambdas/{lambda_id}")).json()
            return body if body["deployment_state"] == "Failed" else None

        body = await eventually(failed, timeout_s=60, what="Failed deployment")
        assert body["state"] == "Draft"
        assert "line 2" in body["deployment_cause"]
        assert "SyntaxError" in body["deployment_cause"]


async def test_redeploy_serves_new_code_and_test_invocation(tenant: Account) -> None:
    async with tenant.client() as c:
        r = await c.post("/lambdas", json={"name": "versioned",
                                           "template_id": "controllerbot_messaging_conversation_end"})
        lambda_id = r.json()["id"]
        await c.post(f"/lambdas/{lambda_id}/deployments")
        await wait_deployed(c, lambda_id)
        # Test invocation with the event's sample payload.
        r = await c.post(f"/lambdas/{lambda_id}/test")
        assert r.status_code == 200, r.text
        assert r.json()["result"] == [{"type": "systemMessage", "text": "Welcome!"}]
        assert "conversation" in r.json()["logs"][0]["message"]

        new_code = "function lambda(input, callback) { callback(null, 'v2'); }\n"
        await c.patch(f"/lambdas/{lambda_id}", json={"code": new_code})
        assert (await c.get(f"/lambdas/{lambda_id}")).json()["state"] == "Modified"
        await c.post(f"/lambdas/{lambda_id}/deployments")
        await wait_deployed(c, lambda_id)

        # The registry reports Deployed as it announces the change on Kafka; the gateway's
        # cache applies it a moment later (milliseconds; more on a loaded machine).
        async def serves_v2() -> bool:
            r = await c.post(f"/lambdas/{lambda_id}/test", json={"payload": {}})
            assert r.status_code == 200, r.text
            return bool(r.json()["result"] == "v2")

        await eventually(serves_v2, timeout_s=10, interval_s=0.05, what="the new version served")

        r = await c.delete(f"/lambdas/{lambda_id}/deployments")
        assert r.status_code == 200, r.text
        r = await c.post(f"/lambdas/{lambda_id}/test")
        assert r.status_code == 409, r.text


async def test_invoke_bad_input(tenant: Account, hello: str) -> None:
    async with tenant.client() as c:
        r = await c.post(f"/lambdas/{hello}/invoke", content=b"{oops",
                         headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        r = await c.post(f"/lambdas/{hello}/invoke", json={"headers": "nope"})
        assert r.status_code == 422, r.text
        r = await c.post(f"/lambdas/{hello}/invoke", params={"timeout_ms": 999_999}, json={})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_timeout"
        r = await c.post("/lambdas/00000000-0000-0000-0000-000000000000/invoke", json={})
        assert r.status_code == 404, r.text
        r = await c.post(f"/lambdas/{hello}/invoke",
                         content=b'{"payload": "' + b"x" * 1_100_000 + b'"}',
                         headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text


async def test_log_limit_marks_truncation(tenant: Account) -> None:
    code = ("function lambda(input, callback) {\n"
            "  for (let i = 0; i < 15; i++) console.info('line ' + i);\n"
            "  callback(null, 'done');\n}\n")
    lambda_id = await deploy(tenant, "chatty", code)
    r = await invoke(tenant, lambda_id, {})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "done" and body["logs_truncated"] is True
    messages = [e["message"] for e in body["logs"]]
    assert messages[:10] == [f"line {i}" for i in range(10)]
    assert len(messages) == 11 and body["logs"][10]["level"] == "warn"
    assert "limit" in messages[10].lower() and "5" in messages[10]


async def test_declared_dependencies_are_installed_into_the_image(tenant: Account) -> None:
    """npm and PyPI packages are installed at deploy time (the container has no network)."""
    node_code = ("function lambda(input, callback) {\n"
                 "  const isNumber = require('is-number');\n"
                 "  callback(null, [isNumber(input.payload.a), isNumber(input.payload.b)]);\n}\n")
    node_id = await deploy(tenant, "with-npm-dep", node_code, dependencies={"is-number": "7.0.0"},
                           timeout_s=180)
    r = await invoke(tenant, node_id, {"a": "42", "b": "forty-two"})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == [True, False]

    py_code = "import six\n\ndef handler(input):\n    return six.__version__\n"
    py_id = await deploy(tenant, "with-pip-dep", py_code, runtime="python",
                         dependencies={"six": "1.16.0"}, timeout_s=180)
    r = await invoke(tenant, py_id, {})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "1.16.0"


async def test_unknown_dependency_fails_the_deployment(tenant: Account) -> None:
    async with tenant.client() as c:
        r = await c.post("/lambdas", json={
            "name": "bad-dep", "code": "function lambda(input, callback) { callback(null, 1); }\n",
            "dependencies": {"fnbus-no-such-package-7f3a": "1.0.0"}})
        lambda_id = r.json()["id"]
        await c.post(f"/lambdas/{lambda_id}/deployments")

        async def failed() -> dict | None:
            body = (await c.get(f"/lambdas/{lambda_id}")).json()
            return body if body["deployment_state"] == "Failed" else None

        body = await eventually(failed, timeout_s=180, what="Failed deployment")
        assert "dependencies" in body["deployment_cause"]


def _containers(settings: Settings, **labels: str) -> list[docker.models.containers.Container]:
    client = docker.DockerClient(base_url=settings.docker_host)
    owner = settings.instance_id or "invoker-local"
    wanted = [f"fnbus.invoker={owner}", *(f"{k}={v}" for k, v in labels.items())]
    return list(client.containers.list(filters={"label": wanted}))


async def _replacements(platform: dict[str, str]) -> float:
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{platform['invoker']}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("fnbus_container_replacements_total"))


async def test_dead_prewarmed_containers_are_replaced_before_a_call_needs_them(
        settings: Settings, tenant: Account, platform: dict[str, str]) -> None:
    """Containers die behind the invoker's back (OOM killer, an operator's docker rm).

    The pool notices an idle container's runner going away and replaces it, so no
    call is handed a dead container and nothing is reported as a failure.
    """
    await eventually(lambda: _async(bool(_containers(settings, **{"fnbus.prewarmed": "true"}))),
                     timeout_s=30, what="a pre-warmed container")
    killed = {c.id for c in _containers(settings, **{"fnbus.prewarmed": "true"})}
    for container in _containers(settings, **{"fnbus.prewarmed": "true"}):
        container.kill()
    # Replaced within the pool's reap interval (5 s), without any call.
    await eventually(lambda: _async(any(c.id not in killed for c in
                                        _containers(settings, **{"fnbus.prewarmed": "true"}))),
                     timeout_s=30, what="a new pre-warmed container")
    before = await _replacements(platform)
    lambda_id = await deploy(tenant, "after-kill", "function lambda(input, callback) {\n"
                                                   "  callback(null, 'alive');\n}\n")
    r = await invoke(tenant, lambda_id, {})
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "alive"
    assert await _replacements(platform) == before  # nobody was handed a dead container


async def test_a_dead_warm_container_is_not_blamed_on_the_function(tenant: Account, settings: Settings) -> None:
    lambda_id = await deploy(tenant, "warm-kill", "function lambda(input, callback) {\n"
                                                  "  callback(null, require('os').hostname());\n}\n")
    first = await invoke(tenant, lambda_id, {})
    assert first.status_code == 200, first.text
    # The hostname is the container's short id (a pre-warmed container keeps its labels).
    (container,) = [c for c in _containers(settings) if c.id.startswith(first.json()["result"])]
    container.kill()
    await asyncio.sleep(0.5)
    second = await invoke(tenant, lambda_id, {})
    # A new container answers; the function is not reported as failing.
    assert second.status_code == 200, second.text
    assert second.json()["result"] != first.json()["result"]
    assert second.json()["cold_start"] is True


async def _async(value: bool) -> bool:
    return value
