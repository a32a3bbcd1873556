"""The floors under the gateway figures, measured with the project's own building blocks.

1. a warm runner over its unix socket: :class:`fnbus.sandbox.DockerRuntime` starts a
   sandboxed runtime container, :class:`fnbus.runner_protocol.RunnerConnection`
   connects, inits a trivial lambda and times ``run()`` calls;
2. a cold container without the platform: start + connect + init, the work a
   cold start (no pre-warmed container) does before the first ``run()``;
3. one Kafka hop: :class:`fnbus.kafka.Producer` (acks=all, idempotent, linger 0
   — the services' producer) to a ``bench.*`` topic and an ``AIOKafkaConsumer``
   reading it with the gateway reply reader's settings;
4. ``docker run --rm --network none <runtime image> node -e 0`` (the CLI path the
   architecture keeps off the hot path).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from docker.errors import DockerException, NotFound

from fnbus import dockerutil
from fnbus.kafka import Producer
from fnbus.runner_protocol import RunnerConnection
from fnbus.sandbox import ContainerHandle, DockerRuntime, SandboxLimits
from fnbus.topics import TopicSpec, ensure_topics

from .gateway import NODE_ECHO

BENCH_TOPIC_PREFIX = "bench"
LABEL_LAMBDA = "fnbus.lambda"  # the deployer's label on per-version images


@dataclass
class RunnerFloor:
    run_ms: list[float] = field(default_factory=list)
    runner_reported_ms: list[float] = field(default_factory=list)
    cold: list[dict[str, float]] = field(default_factory=list)  # start/connect/init/total per container
    errors: list[str] = field(default_factory=list)


def _limits(settings: Any) -> SandboxLimits:
    return SandboxLimits(settings.lambda_memory_mb, settings.lambda_cpus, settings.lambda_pids_limit,
                         settings.lambda_tmpfs_mb)


async def _start_and_init(engine: DockerRuntime, image: str, lambda_id: str
                          ) -> tuple[ContainerHandle, RunnerConnection, dict[str, float]]:
    t0 = time.perf_counter()
    handle = await engine.start(image, {"fnbus.bench": "true"})
    t1 = time.perf_counter()
    conn = RunnerConnection()
    try:
        await conn.connect(handle.socket_path, timeout_s=30)
        t2 = time.perf_counter()
        await conn.init(code=NODE_ECHO, runtime="node", account_id="bench", lambda_id=lambda_id)
        t3 = time.perf_counter()
    except BaseException:
        await conn.close()
        await engine.remove(handle)
        raise
    timing = {"start_ms": (t1 - t0) * 1000, "connect_ms": (t2 - t1) * 1000, "init_ms": (t3 - t2) * 1000,
              "total_ms": (t3 - t0) * 1000}
    return handle, conn, timing


async def runner_floor(settings: Any, home: Path, *, runs: int, cold_samples: int) -> RunnerFloor:
    """Time ``runs`` warm ``run()`` calls on one container and ``cold_samples`` container starts."""
    out = RunnerFloor()
    client = dockerutil.client(settings.docker_host)
    sockets = home / "bench-sockets" / uuid.uuid4().hex[:8]
    engine = DockerRuntime(client, sockets, _limits(settings), owner=f"bench-{uuid.uuid4().hex[:8]}")
    image = settings.runtime_image_node
    try:
        # Cold: start + connect + init, one container at a time, each removed before the next.
        for i in range(cold_samples):
            handle, conn, timing = await _start_and_init(engine, image, f"bench-cold-{i}")
            await conn.close()
            await engine.remove(handle)
            out.cold.append(timing)
        handle, conn, timing = await _start_and_init(engine, image, "bench-warm")
        try:
            for i in range(min(50, runs)):  # warm-up: JIT, socket buffers
                await conn.run(f"warmup-{i}", {"headers": [], "payload": {"i": i}})
            for i in range(runs):
                t0 = time.perf_counter()
                result = await conn.run(f"bench-{i}", {"headers": [], "payload": {"i": i}})
                out.run_ms.append((time.perf_counter() - t0) * 1000)
                out.runner_reported_ms.append(result.duration_ms)
                if not result.ok and len(out.errors) < 3:
                    out.errors.append(f"run failed: {result.error}")
        finally:
            await conn.close()
            await engine.remove(handle)
    finally:
        with contextlib.suppress(Exception):
            await engine.cleanup()  # anything labelled with our owner, should a step have failed
        client.close()
        shutil.rmtree(sockets, ignore_errors=True)
        with contextlib.suppress(OSError):
            sockets.parent.rmdir()
    return out


@dataclass
class KafkaFloor:
    topic: str
    round_trip_ms: list[float] = field(default_factory=list)
    produce_ack_ms: list[float] = field(default_factory=list)


async def resolve_arrivals(consumer: AIOKafkaConsumer, pending: dict[bytes, asyncio.Future[float]],
                           *, timeout_ms: int = 200) -> None:
    """Until cancelled: a record whose value is a key of ``pending`` resolves that future
    with its arrival time (``time.perf_counter``)."""
    while True:
        batch = await consumer.getmany(timeout_ms=timeout_ms)
        now = time.perf_counter()
        for records in batch.values():
            for record in records:
                fut = pending.pop(record.value, None)
                if fut is not None and not fut.done():
                    fut.set_result(now)


async def kafka_floor(bootstrap: str, *, round_trips: int, fetch_max_wait_ms: int = 200) -> KafkaFloor:
    """Sequential produce→consume round trips on a one-partition ``bench.*`` topic.

    The consumer mirrors the gateway's reply reader: no group, the partition
    assigned, positioned at the end, ``getmany`` in a loop resolving futures.
    """
    topic = f"{BENCH_TOPIC_PREFIX}.kafka-round-trip"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, retention_ms=3600 * 1000)])
    out = KafkaFloor(topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_max_wait_ms)
    await consumer.start()
    pending: dict[bytes, asyncio.Future[float]] = {}
    reader: asyncio.Task[None] | None = None
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)

        reader = asyncio.create_task(resolve_arrivals(consumer, pending), name="bench-kafka-reader")
        async with Producer(bootstrap, client_id="fnbus-bench") as producer:
            loop = asyncio.get_running_loop()
            for i in range(round_trips + 20):
                value = f"{uuid.uuid4().hex}-{i}".encode()
                fut: asyncio.Future[float] = loop.create_future()
                pending[value] = fut
                t0 = time.perf_counter()
                await producer.send(topic, value, key=b"bench")
                t1 = time.perf_counter()
                received = await asyncio.wait_for(fut, timeout=30)
                if i >= 20:  # the first ones warm up connections and metadata
                    out.produce_ack_ms.append((t1 - t0) * 1000)
                    out.round_trip_ms.append((received - t0) * 1000)
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await consumer.stop()
    return out


def docker_run_floor(image: str, samples: int) -> tuple[list[float], list[str]]:
    """Wall time of ``docker run --rm --network none <image> node -e 0`` (blocking)."""
    times: list[float] = []
    errors: list[str] = []
    argv = ["docker", "run", "--rm", "--network", "none", image, "node", "-e", "0"]
    for _ in range(samples):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        elapsed = (time.perf_counter() - t0) * 1000
        if proc.returncode != 0:
            errors.append(f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
            continue
        times.append(elapsed)
    return times, errors


def cold_breakdown(samples: list[dict[str, float]]) -> dict[str, float]:
    """Median of each phase of the direct cold starts."""
    if not samples:
        return {}
    return {k: round(statistics.median(s[k] for s in samples), 2) for k in samples[0]}


def remove_leftover_images(settings: Any, lambda_ids: list[str], wait_s: float = 10.0) -> list[str]:
    """Remove per-version images of the deleted bench lambdas that undeploy left behind (blocking).

    The deployer removes a lambda's images on undeploy; whatever is still there
    after ``wait_s`` is reported (it is the platform's leak) and then removed.
    Never raises: problems come back as text.
    """
    problems: list[str] = []
    try:
        client = dockerutil.client(settings.docker_host)
    except DockerException as exc:
        return [f"could not check for leftover images: {exc}"]
    try:
        deadline = time.monotonic() + wait_s
        left: dict[str, list[str]] = {}
        while True:
            left = {}
            for lambda_id in lambda_ids:
                # The low-level listing: no per-image inspect that could race the deployer's removal.
                for img in client.api.images(filters={"label": f"{LABEL_LAMBDA}={lambda_id}"}):
                    left[img["Id"]] = list(img.get("RepoTags") or [])
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if left:
            tags = sorted(t for ts in left.values() for t in ts)
            problems.append(f"undeploy left {len(left)} image(s) of deleted bench lambdas {wait_s:.0f} s later "
                            f"({', '.join(tags[:4])}{' …' if len(tags) > 4 else ''}); the harness removed them")
            for image_id, image_tags in left.items():
                try:
                    client.api.remove_image(image_id, force=True)
                except NotFound:
                    pass
                except DockerException as exc:
                    problems.append(f"could not remove {image_tags or image_id}: {exc}")
    except DockerException as exc:
        problems.append(f"checking for leftover images failed: {exc}")
    finally:
        client.close()
    return problems
