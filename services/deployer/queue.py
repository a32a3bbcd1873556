"""Which deploy runs next, and which offsets are safe to commit: pure logic, no I/O.

:class:`DeployQueue` decides the order of deploy requests:

1. at most ``slots`` deploys run at once;
2. the deploys of one lambda run one at a time, in the order they arrived;
3. one account holds at most ``slots - 1`` slots (one when ``slots`` is 1): a
   slot is always left for the other accounts, so a tenant whose builds or smoke
   inits hang cannot hold up everyone else's deploys, even if its requests came
   first;
4. among the accounts with a deploy that may start, the one that started a deploy
   least recently goes first (round robin), whatever the order of arrival.

:class:`OffsetTracker` turns out-of-order completions into Kafka commits: a
partition's offset is committed only up to the oldest deploy still queued or
running, so a deployer that dies loses nothing (the rest is redelivered).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Job(Generic[T]):
    account_id: str
    lambda_id: str
    item: T
    meta: dict[str, Any] = field(default_factory=dict)


class DeployQueue(Generic[T]):
    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        # Accounts with waiting jobs, least recently started first.
        self._waiting: OrderedDict[str, deque[Job[T]]] = OrderedDict()
        self._running: set[Job[T]] = set()
        self._running_lambdas: set[str] = set()
        self._running_per_account: dict[str, int] = {}

    def __len__(self) -> int:
        """Jobs waiting plus running."""
        return sum(len(jobs) for jobs in self._waiting.values()) + len(self._running)

    @property
    def running(self) -> int:
        return len(self._running)

    def push(self, job: Job[T]) -> None:
        self._waiting.setdefault(job.account_id, deque()).append(job)

    @property
    def per_account(self) -> int:
        return max(1, self.slots - 1)

    def _startable(self, jobs: deque[Job[T]]) -> Job[T] | None:
        seen: set[str] = set()
        for job in jobs:
            if job.lambda_id not in seen and job.lambda_id not in self._running_lambdas:
                return job
            seen.add(job.lambda_id)  # later jobs of this lambda wait for this one
        return None

    def take(self) -> Job[T] | None:
        """The next job to start (now counted as running), or None if none may start."""
        if len(self._running) >= self.slots:
            return None
        for account_id, jobs in self._waiting.items():
            if self._running_per_account.get(account_id, 0) >= self.per_account:
                continue
            job = self._startable(jobs)
            if job is None:
                continue
            jobs.remove(job)
            if jobs:
                self._waiting.move_to_end(account_id)
            else:
                del self._waiting[account_id]
            self._running.add(job)
            self._running_lambdas.add(job.lambda_id)
            self._running_per_account[account_id] = self._running_per_account.get(account_id, 0) + 1
            return job
        return None

    def done(self, job: Job[T]) -> None:
        self._running.remove(job)
        self._running_lambdas.discard(job.lambda_id)
        left = self._running_per_account[job.account_id] - 1
        if left:
            self._running_per_account[job.account_id] = left
        else:
            del self._running_per_account[job.account_id]


class OffsetTracker(Generic[T]):
    """Per partition: the offsets in hand, and the offset that is safe to commit."""

    def __init__(self) -> None:
        self._open: dict[T, set[int]] = {}
        self._next: dict[T, int] = {}

    def began(self, partition: T, offset: int) -> None:
        self._open.setdefault(partition, set()).add(offset)
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def finished(self, partition: T, offset: int) -> int | None:
        """Mark ``offset`` done; the partition's commit position (next offset to read).

        None when the partition is no longer ours (see :meth:`forget`).
        """
        if partition not in self._next:
            return None
        open_ = self._open.get(partition, set())
        open_.discard(offset)
        return min(open_) if open_ else self._next[partition]

    def forget(self, partition: T) -> None:
        """The partition was taken away (rebalance): its open offsets will be redelivered elsewhere."""
        self._open.pop(partition, None)
        self._next.pop(partition, None)
