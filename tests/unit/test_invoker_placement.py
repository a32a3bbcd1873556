"""The invoker places a call again when its container fails before the code ran (fake pool)."""

from __future__ import annotations

from typing import Any

import pytest

from fnbus.runner_protocol import RunnerInitError
from fnbus.schemas import InvocationRequest
from fnbus.topics import Topics
from services.invoker.engine import PLACEMENT_ATTEMPTS, Invoker
from services.invoker.pool import VersionKey
from services.invoker.proxy import InitFailed, ProxyError

KEY = VersionKey("acct", "lam", 1)


class FakePool:
    """acquire() fails with the given errors, in order, then hands out a proxy."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def acquire(self, key: VersionKey, runtime: str, image: str, load_code: Any) -> tuple[str, bool]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "proxy", True


def invoker(pool: FakePool) -> Invoker:
    return Invoker(pool=pool, producer=None, cache=None, registry=None,  # type: ignore[arg-type]
                   topics=Topics("unit"), instance="unit", default_timeout_ms=30_000,
                   runtime_images={}, max_per_account=4)


async def test_a_container_that_died_before_the_code_ran_is_replaced() -> None:
    pool = FakePool(ProxyError("runner failed during init: Connection lost"))
    placed = await invoker(pool)._place(InvocationRequest(account_id="acct", lambda_id="lam"), KEY, "nodejs", "img")
    assert placed == ("proxy", True) and pool.calls == 2


async def test_placement_gives_up_after_its_attempts() -> None:
    pool = FakePool(*(ProxyError(f"dead {n}") for n in range(PLACEMENT_ATTEMPTS)))
    with pytest.raises(ProxyError, match=f"dead {PLACEMENT_ATTEMPTS - 1}"):
        await invoker(pool)._place(InvocationRequest(account_id="acct", lambda_id="lam"), KEY, "nodejs", "img")
    assert pool.calls == PLACEMENT_ATTEMPTS


async def test_the_functions_own_load_error_is_not_retried() -> None:
    error = InitFailed(RunnerInitError("SyntaxError", "Unexpected token", line=3))
    pool = FakePool(error)
    with pytest.raises(InitFailed):
        await invoker(pool)._place(InvocationRequest(account_id="acct", lambda_id="lam"), KEY, "nodejs", "img")
    assert pool.calls == 1
