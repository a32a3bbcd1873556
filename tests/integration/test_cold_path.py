"""The invoker's cold path.

1. A burst of calls to a lambda with no warm container grows the pool a few
   containers at a time (pool.place QUEUE): the calls that would each have waited
   for their own container start take the first containers as soon as those are
   free, and every call succeeds.
2. A newly deployed version's code is read from the registry when the deployment
   is announced, not by its first call.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from fnbus.config import Settings
from fnbus.sandbox import LABEL_LAMBDA
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import create_account
from tests.support import eventually

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

ECHO = "function lambda(input, callback) { callback(null, {echo: input.payload}); }\n"
BURST = 12


async def containers_of(lambda_id: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        "docker", "ps", "-a", "-q", "--filter", f"label={LABEL_LAMBDA}={lambda_id}",
        stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return len(out.split())


async def queued_total(invoker_url: str) -> float:
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{invoker_url}/metrics")).text
    match = re.search(r"^fnbus_pool_queued_total (\S+)$", text, re.M)
    assert match, "the invoker exports fnbus_pool_queued_total"
    return float(match.group(1))


async def test_a_burst_on_a_new_lambda_queues_instead_of_starting_a_container_per_call(
        settings: Settings, gateway_url: str, platform: dict[str, str], run_id: str) -> None:
    assert settings.max_starting_per_version == 2
    account = await create_account(settings, gateway_url, f"burst{run_id}")
    lambda_id = await deploy(account, "burst", ECHO)
    before = await queued_total(platform["invoker"])

    async with account.client() as c:
        answers = await asyncio.gather(*(c.post(f"/lambdas/{lambda_id}/invoke", json={"payload": i},
                                                timeout=90) for i in range(BURST)))
    assert [r.status_code for r in answers] == [200] * BURST, [r.text for r in answers]
    assert sorted(r.json()["result"]["echo"] for r in answers) == list(range(BURST))

    # One container per call would be BURST containers; two starts at a time, with the
    # first free container taking the waiting calls, leave far fewer.
    started = await containers_of(lambda_id)
    assert 1 <= started <= BURST // 2, started
    assert await queued_total(platform["invoker"]) > before


async def code_loads(invoker_url: str, how: str) -> float:
    async with httpx.AsyncClient() as c:
        text = (await c.get(f"{invoker_url}/metrics")).text
    match = re.search(rf'^fnbus_invoker_code_loads_total{{how="{how}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_deployed_versions_code_is_read_before_its_first_call(
        settings: Settings, gateway_url: str, platform: dict[str, str], run_id: str) -> None:
    account = await create_account(settings, gateway_url, f"prefetch{run_id}")
    before = await code_loads(platform["invoker"], "prefetch")
    lambda_id = await deploy(account, "prefetched", ECHO)

    async def prefetched() -> bool:
        return await code_loads(platform["invoker"], "prefetch") > before

    # No call was made: the invoker read the code because the version was deployed.
    await eventually(prefetched, timeout_s=20, what="the deployed version's code prefetched")
    async with account.client() as c:
        r = await c.post(f"/lambdas/{lambda_id}/invoke", json={"payload": "first"}, timeout=90)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == {"echo": "first"} and r.json()["cold_start"] is True
