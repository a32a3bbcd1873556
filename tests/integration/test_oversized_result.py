"""A lambda's oversized output never wedges the invoker (issue 11, defect 1).

Documented behaviour (docs/api.md, services/invoker/engine.py): a result over
``FNBUS_MAX_RESULT_BYTES`` (1 MiB) is the lambda's error
``com.liveperson.faas.handler.result-too-large`` (502 here, 901 on the original
platform's route) and is stored nowhere; a record the broker refuses becomes a
small platform failure; the request is committed, so a restarted invoker does
not run it again, and every other invocation is answered exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.schemas import (
    ActivationRecord,
    ErrorCode,
    EventSource,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
    LambdaChange,
    LambdaState,
    Runtime,
)
from fnbus.topics import Topics, TopicSpec, ensure_topics
from tests.integration.invoke_support import deploy, invoke
from tests.integration.mgmt_support import create_account
from tests.support import eventually, free_port, serve_in_loop

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

HUGE = "function lambda(input, callback) { callback(null, 'x'.repeat(3 * 1024 * 1024)); }\n"
# Over the runner protocol's 16 MiB frame: the runner itself reports it, as the same error.
HUGER = "function lambda(input, callback) { callback(null, 'x'.repeat(17 * 1024 * 1024)); }\n"
# Under the 1 MiB cap, so the invoker publishes it; 500 kB is over the test's reply topic limit.
HALF_MB = "function lambda(input, callback) { callback(null, 'y'.repeat(500 * 1000)); }\n"
NEAR_CAP = "function lambda(input, callback) { callback(null, 'z'.repeat(1000 * 1000)); }\n"
ECHO = "function lambda(input, callback) { callback(null, {echo: input.payload}); }\n"


async def test_a_huge_result_is_a_clear_error_and_the_next_calls_work(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    account = await create_account(settings, gateway_url, f"huge{run_id}")
    huge = await deploy(account, "huge", HUGE)
    echo = await deploy(account, "echo", ECHO)
    near = await deploy(account, "near", NEAR_CAP)

    started = time.monotonic()
    r = await invoke(account, huge)
    took_s = time.monotonic() - started
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["error"]["code"] == ErrorCode.RESULT_TOO_LARGE
    assert "more than the limit of 1048576 bytes" in body["error"]["message"]
    assert "result" not in body
    assert took_s < 20, f"the caller waited {took_s:.1f} s"

    # The original platform's route: the lambda's own error, 901.
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60,
                                 headers={"Authorization": f"Bearer {account.admin_key}"}) as c:
        r = await c.post(f"/api/account/{account.id}/lambdas/{huge}/invoke?v=1",
                         json={"headers": [], "payload": {}})
    assert r.status_code == 901, r.text
    assert r.json()["errorCode"] == ErrorCode.RESULT_TOO_LARGE

    # The activation record keeps the error, not the result.
    activation_id = body["activation_id"]
    async with account.client() as c:
        async def stored() -> dict[str, object] | None:
            got = await c.get(f"/activations/{activation_id}")
            return got.json() if got.status_code == 200 else None

        record = await eventually(stored, timeout_s=30, what="the activation record")
    assert record["outcome"] == "CODING_FAILURE" and record["result"] is None
    assert record["error"]["code"] == ErrorCode.RESULT_TOO_LARGE  # type: ignore[index]

    huger = await deploy(account, "huger", HUGER)
    r = await invoke(account, huger)
    assert r.status_code == 502, r.text[:500]
    assert r.json()["error"]["code"] == ErrorCode.RESULT_TOO_LARGE, r.text[:500]

    r = await invoke(account, echo, {"n": 1})
    assert r.status_code == 200 and r.json()["result"] == {"echo": {"n": 1}}, r.text
    # A result just under the cap travels whole (a reply of ~1 MB plus its envelope).
    r = await invoke(account, near)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["result"] == "z" * 1_000_000


@contextlib.asynccontextmanager
async def invoker(settings: Settings, prefix: str, instance: str) -> AsyncIterator[str]:
    """An invoker service on its own topic space, in this process, until the block ends."""
    from services.invoker.app import create_app

    port = free_port()
    mine = settings.model_copy(update={"topic_prefix": prefix, "instance_id": instance,
                                       "invoker_port": port, "prewarm_per_runtime": 0})
    async with serve_in_loop(create_app(mine), port) as url:
        yield url


async def test_after_a_huge_result_and_a_restart_every_other_call_is_answered_once(
    settings: Settings, gateway_url: str, run_id: str,
) -> None:
    tenant_a = await create_account(settings, gateway_url, f"biga{run_id}")
    tenant_b = await create_account(settings, gateway_url, f"bigb{run_id}")
    huge = await deploy(tenant_a, "huge", HUGE)
    half = await deploy(tenant_a, "half", HALF_MB)
    echo = await deploy(tenant_b, "echo", ECHO)
    owners = {huge: tenant_a.id, half: tenant_a.id, echo: tenant_b.id}

    # A topic space of its own, so only the invokers started here consume it. Its reply
    # topic takes at most 200 kB per record: the 500 kB result is refused by the broker
    # itself, which is what broke the idempotent producer's sequence before.
    topics = Topics(f"{settings.topic_prefix}big")
    reply_topic = topics.replies("big-test")
    await ensure_topics(settings.kafka_bootstrap, [
        *topics.specs(), TopicSpec(reply_topic, 1, configs={"max.message.bytes": "200000"})])

    def request(lambda_id: str, n: int, sync: bool) -> InvocationRequest:
        return InvocationRequest(account_id=owners[lambda_id], lambda_id=lambda_id, version=1,
                                 source=EventSource.HTTP, payload={"n": n},
                                 reply_to=reply_topic if sync else None)

    replies = AIOKafkaConsumer(reply_topic, bootstrap_servers=settings.kafka_bootstrap,
                               auto_offset_reset="earliest")
    await replies.start()
    answers: dict[str, InvocationResult] = {}

    async def answered(ids: set[str]) -> bool:
        batch = await replies.getmany(timeout_ms=200)
        for records in batch.values():
            for record in records:
                reply = InvocationResult.from_bytes(record.value)
                answers[reply.activation_id] = reply
        return ids <= answers.keys()

    first = [request(huge, 0, True), request(half, 0, True)]
    first += [request(echo, n, n % 2 == 0) for n in range(1, 7)]
    second = [request(echo, n, n % 2 == 0) for n in range(7, 13)]
    sent: list[InvocationRequest] = []
    try:
        async with Producer(settings.kafka_bootstrap) as producer:
            for lambda_id, account_id in owners.items():
                change = LambdaChange(lambda_id=lambda_id, account_id=account_id, name=lambda_id,
                                      runtime=Runtime.NODEJS, state=LambdaState.PRODUCTIVE,
                                      deployed_version=1, deployed_image=settings.runtime_image_node)
                await producer.send(topics.lambda_changes, change.to_bytes(), key=lambda_id)

            async def publish(requests: list[InvocationRequest]) -> None:
                for req in requests:
                    await producer.send(topics.invocations, req.to_bytes(), key=req.lambda_id)
                    sent.append(req)

            async with invoker(settings, topics.prefix, f"{run_id}-big1"):
                started = time.monotonic()
                await publish(first)
                sync_ids = {r.activation_id for r in first if r.reply_to}
                await eventually(lambda: answered(sync_ids), timeout_s=90, interval_s=0,
                                 what="every synchronous reply before the restart")
                took_s = time.monotonic() - started

            # The clear errors, and quickly (cold starts included).
            assert took_s < 60, f"answers took {took_s:.1f} s"
            too_large = answers[first[0].activation_id]
            assert too_large.outcome is InvocationOutcome.CODING_FAILURE
            assert too_large.error is not None and too_large.error.code == ErrorCode.RESULT_TOO_LARGE
            assert too_large.result is None
            refused = answers[first[1].activation_id]
            assert refused.outcome is InvocationOutcome.PLATFORM_FAILURE, refused
            assert refused.error is not None and refused.error.code == ErrorCode.PLATFORM
            assert "MessageSizeTooLarge" in refused.error.message and refused.result is None
            for req in first[2:]:
                if req.reply_to:
                    assert answers[req.activation_id].result == {"echo": {"n": req.payload["n"]}}

            # Stopped (the first invoker is gone), more work arrives, a new invoker starts.
            await publish(second)
            async with invoker(settings, topics.prefix, f"{run_id}-big2"):
                sync_ids = {r.activation_id for r in second if r.reply_to}
                await eventually(lambda: answered(sync_ids), timeout_s=90, interval_s=0,
                                 what="every synchronous reply after the restart")
                for req in second:
                    if req.reply_to:
                        assert answers[req.activation_id].result == {"echo": {"n": req.payload["n"]}}
                runs = await activations(settings, topics.activations, {r.activation_id for r in sent})
    finally:
        await replies.stop()

    # Every invocation, sync and async, before and after the restart: exactly one run.
    assert set(runs) == {r.activation_id for r in sent}
    twice = {a: n for a, n in runs.items() if n != 1}
    assert not twice, f"ran more than once: {twice}"


async def activations(settings: Settings, topic: str, expected: set[str]) -> collections.Counter[str]:
    """Activation records per id, read until every expected id is there and then 2 s more."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    runs: collections.Counter[str] = collections.Counter()
    try:
        deadline = time.monotonic() + 90
        quiet_until: float | None = None
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    runs[ActivationRecord.from_bytes(record.value).activation_id] += 1
            if quiet_until is None and expected <= runs.keys():
                quiet_until = time.monotonic() + 2  # a second run would come about now
            if quiet_until is not None and time.monotonic() >= quiet_until:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return runs


async def test_a_producer_with_a_refused_batch_is_renewed_and_keeps_sending(
    settings: Settings, run_id: str,
) -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    topic = f"{settings.topic_prefix}.small-records-{run_id}"
    await ensure_topics(settings.kafka_bootstrap,
                        [TopicSpec(topic, 1, configs={"max.message.bytes": "65536"})])
    async with Producer(settings.kafka_bootstrap) as producer:
        await producer.send(topic, b"before", key="k")
        with pytest.raises(MessageSizeTooLargeError):  # refused by the broker, not the client
            await producer.send(topic, b"x" * 200_000, key="k")
        # The same partition again: without a new producer id this is OutOfOrderSequenceNumber,
        # and aiokafka's sender task ends for good.
        for n in range(3):
            await asyncio.wait_for(producer.send(topic, f"after {n}".encode(), key="k"), timeout=20)
        assert producer.renewals == 1
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        values: list[bytes] = []
        async def all_there() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            values.extend(r.value for rs in batch.values() for r in rs)
            return len(values) >= 4

        await eventually(all_there, timeout_s=20, what="the four records")
        assert values == [b"before", b"after 0", b"after 1", b"after 2"]
    finally:
        await consumer.stop()
