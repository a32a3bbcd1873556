"""What the scheduler learns from Kafka: results of its invocations, lambdas undeployed.

1. Results: every instance consumes ``activations`` in group
   ``<prefix>-scheduler`` and applies records with ``source=scheduler`` to the
   schedule that fired them (last state, outcome, error, run time).
2. Undeploy: the lambda cache (compacted ``lambda-changes``) tells when a
   lambda is undeployed or deleted; its schedules are deleted, as on the
   original platform. At start, schedules of lambdas the cache no longer shows
   deployed are deleted too (a change may have come while no scheduler ran).
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from fnbus.lambda_cache import LambdaCache
from fnbus.schemas import ActivationRecord, EventSource, LambdaChange
from fnbus.topics import SOURCE_HEADER
from services.scheduler.store import Schedules

log = logging.getLogger(__name__)
_SCHEDULER_SOURCE = EventSource.SCHEDULER.value.encode()


class ResultHandler:
    def __init__(self, schedules: Schedules) -> None:
        self.schedules = schedules

    async def __call__(self, record: ConsumerRecord) -> None:
        if record.value is None:
            return
        source = next((v for k, v in record.headers or () if k == SOURCE_HEADER), None)
        if source is not None and source != _SCHEDULER_SOURCE:
            return  # another source's activation: not parsed at all
        try:
            activation = ActivationRecord.from_bytes(record.value)
        except ValidationError as exc:
            log.error("skipping malformed activation record", extra={"error": str(exc)})
            return
        if activation.source != EventSource.SCHEDULER:
            return
        applied = await self.schedules.record_result(activation)
        log.info("scheduled invocation finished", extra={
            "activation_id": activation.activation_id, "account_id": activation.account_id,
            "lambda_id": activation.lambda_id, "outcome": activation.outcome.value,
            "applied": applied})


class UndeployWatcher:
    """Deletes the schedules of lambdas that are no longer deployed."""

    def __init__(self, cache: LambdaCache, schedules: Schedules) -> None:
        self.cache = cache
        self.schedules = schedules
        self.queue: asyncio.Queue[LambdaChange] = asyncio.Queue()

    def attach(self) -> None:
        self.cache.listeners.append(self.queue)

    def detach(self) -> None:
        if self.queue in self.cache.listeners:
            self.cache.listeners.remove(self.queue)

    def _gone(self, lambda_id: str) -> bool:
        current = self.cache.get(lambda_id)  # the latest state, whatever order changes came in
        return current is None or current.deployed_version is None

    async def reconcile(self) -> int:
        # Changes replayed while the cache caught up are history: judge by final state.
        while not self.queue.empty():
            self.queue.get_nowait()
        deleted = 0
        for lambda_id in await self.schedules.scheduled_lambdas():
            if self._gone(lambda_id):
                deleted += await self.schedules.delete_for_lambda(lambda_id)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Apply changes until ``stop`` is set."""
        while not stop.is_set():
            try:
                change = await asyncio.wait_for(self.queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            if change.deleted or change.deployed_version is None:
                if self._gone(change.lambda_id):
                    try:
                        await self.schedules.delete_for_lambda(change.lambda_id)
                    except Exception:  # noqa: BLE001 - try again shortly
                        log.exception("could not delete schedules of an undeployed lambda",
                                      extra={"lambda_id": change.lambda_id})
                        await asyncio.sleep(1)
                        self.queue.put_nowait(change)
