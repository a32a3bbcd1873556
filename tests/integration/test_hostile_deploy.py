"""Hostile code at deploy time, on the real platform (issue 11, defects 3 and 7).

A top-level endless loop fails its own deployment after the smoke-init deadline
and does not hold up another account's deploy; a timer started at load time dies
with the smoke-init container; dependency specs other than registry versions are
refused; a lambda keeps the images of its last five versions only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import docker
import httpx
import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import invoke, wait_deployed
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

GOOD = "function lambda(input, callback) {\n  callback(null, 'fine');\n}\n"
ENDLESS = "function lambda(input, callback) {\n  callback(null, 1);\n}\nwhile (true) {}\n"
TIME_BOMB = """function lambda(input, callback) {
  callback(null, 'tick');
}
(function again() { setTimeout(again, 5); })();
"""


@pytest.fixture(scope="module")
async def hostile(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"hostile{run_id}")


@pytest.fixture(scope="module")
async def victim(settings: Settings, gateway_url: str, run_id: str) -> Account:
    return await create_account(settings, gateway_url, f"victim{run_id}")


async def create(c: httpx.AsyncClient, name: str, code: str, **extra: Any) -> str:
    r = await c.post("/lambdas", json={"name": name, "code": code, "runtime": "nodejs", **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def start_deploy(c: httpx.AsyncClient, lambda_id: str) -> str:
    r = await c.post(f"/lambdas/{lambda_id}/deployments")
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def wait_final(c: httpx.AsyncClient, lambda_id: str, timeout_s: float = 60) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        body: dict[str, Any] = (await c.get(f"/lambdas/{lambda_id}")).json()
        return body if body["deployment_state"] in ("Deployed", "Failed") else None

    return await eventually(final, timeout_s=timeout_s, interval_s=0.1, what="a final state")


async def test_endless_loop_fails_after_the_deadline_and_blocks_no_other_account(
        settings: Settings, hostile: Account, victim: Account) -> None:
    deadline_s = settings.deploy_init_timeout_ms / 1000
    async with hostile.client() as h, victim.client() as v:
        loop_id = await create(h, "endless", ENDLESS)
        good_id = await create(v, "good", GOOD)
        t0 = time.monotonic()
        await start_deploy(h, loop_id)
        await asyncio.sleep(1.0)
        t1 = time.monotonic()
        await start_deploy(v, good_id)
        good = await wait_deployed(v, good_id, timeout_s=60)
        t_good = time.monotonic() - t1
        bad = await wait_final(h, loop_id)
        # The good deploy is done long before the endless loop's deadline.
        assert good["deployment_state"] == "Deployed"
        assert t_good < deadline_s / 2, f"the other account's deploy took {t_good:.1f} s"
        t_bad = time.monotonic() - t0
        assert bad["deployment_state"] == "Failed"
        assert f"did not finish loading within {deadline_s:g} s" in bad["deployment_cause"]
        assert deadline_s <= t_bad < deadline_s + 8, f"the endless loop failed after {t_bad:.1f} s"
        deployments = (await h.get(f"/lambdas/{loop_id}/deployments")).json()
        assert deployments[0]["state"] == "Failed"
        assert "did not finish loading" in deployments[0]["cause"]
        # Its smoke-init container is gone.
        client = docker.DockerClient(base_url=settings.docker_host)
        left = await asyncio.to_thread(client.containers.list, all=True, filters={
            "label": f"fnbus.smoke={deployments[0]['id']}"})
        assert left == []
        # And the good lambda answers.
        r = await invoke(victim, good_id, {})
        assert r.status_code == 200 and r.json()["result"] == "fine", r.text


async def test_a_time_bomb_dies_with_the_smoke_init_container(
        settings: Settings, hostile: Account) -> None:
    async with hostile.client() as h:
        lambda_id = await create(h, "time-bomb", TIME_BOMB)
        deployment_id = await start_deploy(h, lambda_id)
        await wait_deployed(h, lambda_id, timeout_s=60)
    client = docker.DockerClient(base_url=settings.docker_host)
    left = await asyncio.to_thread(client.containers.list, all=True,
                                   filters={"label": f"fnbus.smoke={deployment_id}"})
    assert left == [], "the smoke-init container outlived the deployment"


@pytest.mark.parametrize("spec", ["git+https://github.com/lodash/lodash.git",
                                  "https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz",
                                  "github:lodash/lodash", "lodash/lodash", "file:../../etc"])
async def test_git_url_and_path_dependencies_are_refused_on_save(hostile: Account, spec: str) -> None:
    async with hostile.client() as h:
        r = await h.post("/lambdas", json={"name": "deps", "code": GOOD, "runtime": "nodejs",
                                           "dependencies": {"lodash": spec}})
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "lodash" in message and spec in message, message


async def test_a_path_dependency_is_refused_when_saved(hostile: Account) -> None:
    # The deployer refuses it too (tests/unit/test_dependencies.py); the API says so first.
    async with hostile.client() as h:
        r = await h.post("/lambdas", json={"name": "dots", "code": GOOD, "runtime": "nodejs",
                                           "dependencies": {"secret": ".."}})
    assert r.status_code == 422, r.text
    assert "dependency 'secret': '..' is a local path" in r.json()["error"]["message"]


async def test_only_the_last_five_deployments_keep_an_image(
        settings: Settings, hostile: Account) -> None:
    client = docker.DockerClient(base_url=settings.docker_host)
    async with hostile.client() as h:
        lambda_id = await create(h, "many-versions", GOOD)
        for n in range(1, 8):
            if n > 1:
                r = await h.patch(f"/lambdas/{lambda_id}", json={"code": GOOD.replace("fine", f"v{n}")})
                assert r.status_code == 200, r.text
            await start_deploy(h, lambda_id)
            await wait_deployed(h, lambda_id, timeout_s=60)
        images = await asyncio.to_thread(client.api.images,
                                         filters={"label": f"fnbus.lambda={lambda_id}"})
        versions = sorted(int(i["Labels"]["fnbus.version"]) for i in images)
        current = (await h.get(f"/lambdas/{lambda_id}")).json()["deployed_version"]
        assert len(images) == 5, versions
        assert versions == list(range(current - 4, current + 1))
        r = await invoke(hostile, lambda_id, {})
        assert r.status_code == 200 and r.json()["result"] == "v7", r.text


async def test_a_cold_container_whose_code_never_loads_is_killed_after_the_deadline(
        settings: Settings, hostile: Account) -> None:
    # Loads fine at the smoke init, then loops at load time from `hang_at` on:
    # the invoker's cold init meets the endless loop.
    hang_at = int(time.time() * 1000) + 6000
    code = ("function lambda(input, callback) {\n  callback(null, 'never');\n}\n"
            f"if (Date.now() > {hang_at}) {{ while (true) {{}} }}\n")
    async with hostile.client() as h:
        lambda_id = await create(h, "late-loop", code)
        await start_deploy(h, lambda_id)
        await wait_deployed(h, lambda_id, timeout_s=60)
    await asyncio.sleep(max(0.0, hang_at / 1000 - time.time()) + 0.5)
    t0 = time.monotonic()
    r = await invoke(hostile, lambda_id, {})
    took = time.monotonic() - t0
    body = r.json()
    assert (r.status_code, body["outcome"], body["error"]["code"]) == (
        502, "CODING_FAILURE", "com.liveperson.faas.handler.runtime-exception"), r.text
    assert "InitTimeout: the code did not finish loading within 10 s" in body["error"]["message"]
    assert 10 <= took < 18, f"the call answered after {took:.1f} s"
    client = docker.DockerClient(base_url=settings.docker_host)
    left = await asyncio.to_thread(client.containers.list, all=True, filters={
        "label": [f"fnbus.lambda={lambda_id}", f"fnbus.invoker={settings.instance_id}"]})
    assert left == [], "the container that never finished loading is still there"
