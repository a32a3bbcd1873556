"""Per-account quotas at the gateway (issue 11, item 9): rate limit and async backlog cap.

Each test starts a second gateway with small limits on its own port, beside the
session's platform (same registry, broker, invoker and database), and calls it the
way a client does: our API and the original platform's, with an account's API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fnbus.config import Settings
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import HELLO, Account, create_account
from tests.support import eventually, free_port, serve_in_loop

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

SLOW_MS = 3000
SLOW = f"function lambda(input, callback) {{ setTimeout(() => callback(null, 'slept'), {SLOW_MS}); }}\n"


@contextlib.asynccontextmanager
async def limited_gateway(settings: Settings, name: str, **limits: Any) -> AsyncIterator[str]:
    from services.gateway.app import create_app

    port = free_port()
    own = settings.model_copy(update={"gateway_port": port,
                                      "instance_id": f"{settings.instance_id}-{name}", **limits})
    async with serve_in_loop(create_app(own), port) as url:
        yield url


def ours(gateway: str, account: Account, lambda_id: str) -> str:
    return f"{gateway}/api/v1/accounts/{account.id}/lambdas/{lambda_id}/invoke"


def lp(gateway: str, account: Account, lambda_id: str) -> str:
    return f"{gateway}/api/account/{account.id}/lambdas/{lambda_id}/invoke?v=1"


async def post(url: str, account: Account, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {account.admin_key}"},
                                 timeout=60) as c:
        return await c.post(url, params=params, json={"headers": [], "payload": {"n": 1}})


def retry_after(r: httpx.Response) -> int:
    value = int(r.headers["Retry-After"])
    assert value >= 1
    return value


async def test_over_the_burst_an_account_gets_429_with_retry_after_on_both_apis(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    a = await create_account(settings, gateway_url, f"qrate{run_id}")
    b = await create_account(settings, gateway_url, f"qother{run_id}")
    hello_a, hello_b = await asyncio.gather(deploy(a, "hello", HELLO), deploy(b, "hello", HELLO))
    # Warm both through the session's gateway: the burst below should not wait on cold starts.
    for account, lambda_id in ((a, hello_a), (b, hello_b)):
        r = await post(ours(gateway_url, account, lambda_id), account)
        assert r.status_code == 200, r.text

    burst = 3
    async with limited_gateway(settings, "qrate", account_invocations_per_s=0.25,
                               account_invocations_burst=burst) as gw:
        for _ in range(burst):
            r = await post(ours(gw, a, hello_a), a)
            assert r.status_code == 200, r.text
            assert r.json()["result"] == "Hello World"

        r = await post(ours(gw, a, hello_a), a)
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= retry_after(r) <= 4

        r = await post(lp(gw, a, hello_a), a)
        assert r.status_code == 429, r.text
        assert r.json()["errorCode"] == "fnbus.quota.rate-limited" and r.json()["errorMsg"]
        wait_s = retry_after(r)

        r = await post(ours(gw, a, hello_a), a, **{"async": "true"})  # async is limited too
        assert r.status_code == 429, r.text

        r = await post(ours(gw, b, hello_b), b)  # another account is unaffected
        assert r.status_code == 200, r.text
        r = await post(lp(gw, b, hello_b), b)
        assert r.status_code == 200, r.text
        assert r.json() == "Hello World"

        await asyncio.sleep(wait_s)
        # One token is back. A caller without the account's key does not spend it.
        intruder = Account(a.id, "not-a-key", a.admin_user_id, gw)
        for _ in range(5):
            r = await post(ours(gw, intruder, hello_a), intruder)
            assert r.status_code == 401, r.text
        r = await post(lp(gw, a, hello_a), a)
        assert r.status_code == 200, r.text
        assert r.json() == "Hello World"

        async with httpx.AsyncClient() as c:
            spec = (await c.get(f"{gw}/openapi.json")).json()
        for path, shape in (("/api/v1/accounts/{account_id}/lambdas/{lambda_id}/invoke", "ErrorOut"),
                            ("/api/account/{accountId}/lambdas/{lambda_id}/invoke", "LpErrorOut"),
                            ("/api/account/{accountId}/events/{eventId}/invoke", "LpErrorOut"),
                            ("/api/v1/accounts/{account_id}/events/{event_id}/invoke", "ErrorOut")):
            declared = spec["paths"][path]["post"]["responses"]["429"]
            assert "Retry-After" in declared["headers"], path
            assert declared["content"]["application/json"]["schema"]["$ref"].endswith(shape)


async def test_async_calls_over_the_backlog_cap_get_429_until_some_finish(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    a = await create_account(settings, gateway_url, f"qlog{run_id}")
    b = await create_account(settings, gateway_url, f"qlogb{run_id}")
    slow, hello, slow_b = await asyncio.gather(
        deploy(a, "slow", SLOW), deploy(a, "hello", HELLO), deploy(b, "slow", SLOW))
    cap = 5
    async with limited_gateway(settings, "qlog", account_async_backlog_max=cap) as gw:
        accepted = []
        for _ in range(cap):
            r = await post(ours(gw, a, slow), a, **{"async": "true"})
            assert r.status_code == 202, r.text
            accepted.append(r.json()["activation_id"])
        started = time.monotonic()

        r = await post(ours(gw, a, slow), a, **{"async": "true"})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "backlog_full"
        assert retry_after(r) >= 1
        # Sync calls are not counted, nor held back; another account has its own backlog.
        r = await post(ours(gw, a, hello), a)
        assert r.status_code == 200, r.text
        r = await post(ours(gw, b, slow_b), b, **{"async": "true"})
        assert r.status_code == 202, r.text

        async def accepted_again() -> httpx.Response | None:
            r = await post(ours(gw, a, slow), a, **{"async": "true"})
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "backlog_full", r.text
                await asyncio.sleep(retry_after(r) - 0.1)
                return None
            return r

        r = await eventually(accepted_again, timeout_s=120, what="a slot freed by a completion")
        assert r.status_code == 202, r.text
        # Freed by a finished run, not by time: the first one takes SLOW_MS at least.
        assert time.monotonic() - started >= SLOW_MS / 1000 - 0.5

        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.admin_key}"}) as c:
            async def finished() -> bool:
                for activation_id in accepted:
                    r = await c.get(f"{gw}/api/v1/accounts/{a.id}/activations/{activation_id}")
                    if r.status_code != 200:
                        return False
                return True

            # The first slot came back because one of the accepted calls finished.
            await eventually(finished, timeout_s=120, what="the accepted calls recorded")
