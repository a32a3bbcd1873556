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


# -- the dispatcher's per-account queues (pure bookkeeping; no broker) ---------------------

def _record(offset: int, size: int) -> Any:
    from aiokafka import ConsumerRecord

    return ConsumerRecord(topic="t", partition=0, offset=offset, timestamp=0, timestamp_type=0,
                          key=None, value=b"v" * size, checksum=None, serialized_key_size=0,
                          serialized_value_size=size, headers=())


def _dispatcher(**limits: Any) -> Any:
    from services.invoker.dispatch import Dispatcher

    return Dispatcher("127.0.0.1:1", ["t"], group_id="g", handler=None,  # type: ignore[arg-type]
                      **limits)


def test_a_flooding_account_holds_its_own_budget_and_spills_the_rest() -> None:
    from aiokafka import TopicPartition

    d = _dispatcher(max_held_per_group=10, max_held_bytes_per_group=1_000_000,
                    max_backlog_bytes=10_000_000)
    tp = TopicPartition("t", 0)
    for offset in range(1_500):
        d._enqueue(tp, _record(offset, 1_000), "flood", None)
    assert d.waiting == 1_500 and d.spilled == 1_490
    assert d._held["flood"] == 10 and d._waiting_bytes == 10_000  # values in memory: its budget
    # Another account still gets room for its own records.
    d._enqueue(tp, _record(1_500, 1_000), "quiet", None)
    assert d._held["quiet"] == 1 and d.spilled == 1_490
    # In offset order; values first, then spilled ones (read back by their task).
    taken = [d._next_of("flood") for _ in range(12)]
    assert [w.offset for w in taken] == list(range(12))
    assert all(w.record is not None for w in taken[:10]) and taken[10].record is None
    assert d.waiting == 1_489 and d.spilled == 1_488 and "flood" not in d._held


def test_byte_budgets_spill_big_records() -> None:
    from aiokafka import TopicPartition

    d = _dispatcher(max_held_per_group=100, max_held_bytes_per_group=5_000,
                    max_backlog_bytes=8_000)
    tp = TopicPartition("t", 0)
    for offset in range(4):
        d._enqueue(tp, _record(offset, 2_000), "a", None)  # 2 fit the account's 5,000 bytes
    for offset in range(4, 8):
        d._enqueue(tp, _record(offset, 2_000), "b", None)  # 2 more fit the 8,000 of all accounts
    assert d._held == {"a": 2, "b": 2} and d.spilled == 4 and d._waiting_bytes == 8_000
