"""The deployer's queue order and offset commits (pure logic)."""

from __future__ import annotations

import pytest

from services.deployer.queue import DeployQueue, Job, OffsetTracker


def job(account: str, lambda_id: str, n: int = 0) -> Job[str]:
    return Job(account, lambda_id, f"{account}/{lambda_id}/{n}")


def test_a_slot_is_always_left_for_other_accounts() -> None:
    q: DeployQueue[str] = DeployQueue(2)
    hostile = [job("a", f"l{i}") for i in range(3)]
    for j in hostile:
        q.push(j)
    first = q.take()
    assert first is hostile[0]
    assert q.take() is None  # a's second deploy waits although a slot is free
    late = job("b", "m")
    q.push(late)
    assert q.take() is late
    assert q.running == 2 and len(q) == 4


def test_one_lambda_runs_one_deploy_at_a_time_in_arrival_order() -> None:
    q: DeployQueue[str] = DeployQueue(3)
    x1, y1, x2 = job("a", "x", 1), job("a", "y", 1), job("a", "x", 2)
    for j in (x1, y1, x2):
        q.push(j)
    assert q.take() is x1
    assert q.take() is y1
    q.done(y1)
    assert q.take() is None  # x2 waits for x1, not because of a's cap
    q.done(x1)
    assert q.take() is x2


def test_accounts_take_turns() -> None:
    q: DeployQueue[str] = DeployQueue(2)
    for i in range(3):
        q.push(job("a", f"a{i}"))
    for i in range(3):
        q.push(job("b", f"b{i}"))
    order = []
    while len(q):
        started = [j for j in iter(q.take, None)]
        for j in started:
            order.append(j.account_id)
            q.done(j)
    assert order == ["a", "b", "a", "b", "a", "b"]


def test_one_slot_serves_everyone_in_turn() -> None:
    q: DeployQueue[str] = DeployQueue(1)
    a, b = job("a", "x"), job("b", "y")
    q.push(a)
    q.push(b)
    assert q.take() is a and q.take() is None
    q.done(a)
    assert q.take() is b
    with pytest.raises(ValueError):
        DeployQueue(0)


def test_commits_stop_at_the_oldest_offset_in_hand() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 11, 12):
        t.began("p0", offset)
    assert t.finished("p0", 11) == 10  # 10 still running: redelivered if we die
    assert t.finished("p0", 12) == 10
    assert t.finished("p0", 10) == 13
    t.began("p1", 5)
    t.forget("p1")
    assert t.finished("p1", 5) is None
