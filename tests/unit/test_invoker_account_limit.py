"""The invoker's per-account concurrency limit (scheduling logic; running is replaced by a sleep)."""

from __future__ import annotations

import asyncio
from typing import Any

from fnbus.schemas import InvocationRequest
from fnbus.topics import Topics
from services.invoker.engine import Invoker


class Recorder(Invoker):
    """The real admission path (`handle`), with execution replaced by a timed sleep."""

    def __init__(self, max_per_account: int, run_s: float) -> None:
        super().__init__(pool=None, producer=None, cache=None, registry=None,  # type: ignore[arg-type]
                         topics=Topics("unit"), instance="unit", default_timeout_ms=30_000,
                         runtime_images={}, max_per_account=max_per_account)
        self.run_s = run_s
        self.running: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.finished: list[tuple[str, float]] = []

    async def execute(self, request: InvocationRequest) -> Any:
        account = request.account_id
        self.running[account] = self.running.get(account, 0) + 1
        self.peak[account] = max(self.peak.get(account, 0), self.running[account])
        await asyncio.sleep(self.run_s)
        self.running[account] -= 1
        self.finished.append((account, asyncio.get_running_loop().time()))
        return None, None, []

    async def publish(self, *args: Any) -> None:
        return None


def req(account: str) -> InvocationRequest:
    return InvocationRequest(account_id=account, lambda_id=f"lam-{account}")


async def test_an_account_never_runs_more_than_its_limit_at_once() -> None:
    invoker = Recorder(max_per_account=2, run_s=0.05)
    await asyncio.gather(*(invoker.handle(req("busy")) for _ in range(7)))
    assert invoker.peak["busy"] == 2
    assert len(invoker.finished) == 7  # waited, not refused: nothing is lost


async def test_a_busy_account_does_not_delay_another_account() -> None:
    invoker = Recorder(max_per_account=1, run_s=0.05)
    busy = [asyncio.create_task(invoker.handle(req("busy"))) for _ in range(5)]
    await asyncio.sleep(0)  # the busy account's five are admitted (one runs, four wait)
    await invoker.handle(req("quiet"))
    await asyncio.gather(*busy)
    order = [account for account, _ in invoker.finished]
    assert invoker.peak == {"busy": 1, "quiet": 1}
    # The quiet account ran beside the first busy run, not behind the five.
    assert order.index("quiet") <= 1, order
