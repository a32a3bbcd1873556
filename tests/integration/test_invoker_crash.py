"""An invoker killed mid-invocation loses nothing: another instance runs the request again.

Documented behaviour (docs/api.md): offsets are committed only after the result
is out, so a request whose invoker dies is redelivered to the next instance that
owns the partition (after the group's session timeout, 10 s) and runs again —
at-least-once. The caller gets the result of that run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import docker
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from fnbus.config import Settings
from fnbus.kafka import Producer
from fnbus.schemas import (
    EventSource,
    InvocationOutcome,
    InvocationRequest,
    InvocationResult,
    LambdaChange,
    LambdaState,
    Runtime,
)
from fnbus.topics import Topics, TopicSpec, ensure_topics
from tests.integration.invoke_support import deploy
from tests.integration.mgmt_support import Account, create_account
from tests.support import eventually, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("platform")]

SLOW = "function lambda(input, callback) { setTimeout(() => callback(null, 'finished'), 4000); }\n"


def _start_invoker(settings: Settings, prefix: str, instance: str, port: int,
                   home: str) -> subprocess.Popen[bytes]:
    env = {**os.environ,
           "FNBUS_HOME": home, "FNBUS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "FNBUS_TOPIC_PREFIX": prefix, "FNBUS_REGISTRY_URL": settings.registry_url,
           "FNBUS_SERVICE_TOKEN": settings.service_token, "FNBUS_INSTANCE_ID": instance,
           "FNBUS_PREWARM_PER_RUNTIME": "0", "FNBUS_LOG_JSON": "false"}
    return subprocess.Popen([sys.executable, "-m", "fnbus.cli", "serve", "invoker",
                             "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)  # reaped: an unreaped child warns (an error) in a later test


async def test_request_survives_an_invoker_killed_mid_invocation(
    settings: Settings, gateway_url: str, run_id: str,
    processes: list[subprocess.Popen[bytes]], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    account: Account = await create_account(settings, gateway_url, f"crash{run_id}")
    lambda_id = await deploy(account, "slow", SLOW)

    # A topic space of its own, so only the invokers started here consume it.
    topics = Topics(f"{settings.topic_prefix}crash")
    reply_topic = topics.replies("crash-test")
    await ensure_topics(settings.kafka_bootstrap, [*topics.specs(), TopicSpec(reply_topic, 1)])
    request = InvocationRequest(account_id=account.id, lambda_id=lambda_id, version=1,
                                source=EventSource.HTTP, payload={}, reply_to=reply_topic)
    home = str(tmp_path_factory.mktemp("crash-home"))
    first_port, second_port = free_port(), free_port()
    async with Producer(settings.kafka_bootstrap) as producer:
        change = LambdaChange(lambda_id=lambda_id, account_id=account.id, name="slow",
                              runtime=Runtime.NODEJS, state=LambdaState.PRODUCTIVE,
                              deployed_version=1, deployed_image=settings.runtime_image_node)
        await producer.send(topics.lambda_changes, change.to_bytes(), key=lambda_id)

        first = _start_invoker(settings, topics.prefix, f"{run_id}-first", first_port, home)
        processes.append(first)
        async with httpx.AsyncClient() as http:
            async def healthy() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{first_port}/healthz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(healthy, timeout_s=60, what="first invoker healthy")
            await producer.send(topics.invocations, request.to_bytes(), key=lambda_id)

            async def running() -> bool:
                stats = (await http.get(f"http://127.0.0.1:{first_port}/internal/pool",
                                        headers={"Authorization": f"Bearer {settings.service_token}"})).json()
                return stats.get("running", 0) == 1

            await eventually(running, timeout_s=30, interval_s=0.05, what="invocation running")

    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.monotonic()
    second = _start_invoker(settings, topics.prefix, f"{run_id}-second", second_port, home)
    processes.append(second)

    consumer = AIOKafkaConsumer(reply_topic, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        result = None
        deadline = time.monotonic() + 90
        while result is None and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    reply = InvocationResult.from_bytes(record.value)
                    if reply.activation_id == request.activation_id:
                        result = reply
        assert result is not None, "the request was lost with the killed invoker"
        assert result.outcome is InvocationOutcome.SUCCEEDED and result.result == "finished"
        assert time.monotonic() - killed_at < 90
    finally:
        await consumer.stop()
        client = docker.DockerClient(base_url=settings.docker_host)
        for owner in (f"{run_id}-first", f"{run_id}-second"):
            for container in await asyncio.to_thread(
                    client.containers.list, all=True, filters={"label": f"fnbus.invoker={owner}"}):
                await asyncio.to_thread(container.remove, force=True)
