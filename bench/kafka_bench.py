"""Kafka-side measurements of the harness: async completion, and the producer/consumer tuning sweeps.

- :class:`ActivationWatcher` counts a lambda's activation records as they arrive
  (the end of an async invocation, end to end).
- :func:`linger_latency` — sequential produce→consume round trips with the
  project's :class:`fnbus.kafka.Producer` at a given ``linger_ms``, alone and with
  a background stream of records on the same producer (the sync path shares its
  producer with async requests in the gateway and with activation/log records
  in the invoker).
- :func:`linger_throughput` — ``concurrency`` senders that each wait for the
  broker's ack before the next record, like the gateway's async path (202 after
  the ack): records per second and the client's CPU per record, at a given
  ``linger_ms`` and ``max_batch_size``.
- :func:`fetch_latency` — the consumer side: one record at a time, sparse, to a
  group consumer as the invoker's, at a given ``fetch_max_wait_ms``; and
  :func:`fetch_throughput`, a backlog read at a given ``max_poll_records``.

Every sweep uses its own one-partition ``bench.*`` topic on the shared broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.floors import resolve_arrivals
from fnbus.kafka import Producer
from fnbus.topics import Topics, TopicSpec, ensure_topics

BENCH_TOPIC_PREFIX = "bench"
WARMUP = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _broker_cpu_s(pid: int | None) -> float:
    """CPU seconds of the broker process so far (0 when unknown): what batching saves on its side."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def broker_pid(home: Path) -> int | None:
    try:
        return int((home / "run" / "kafka.pid").read_text().strip())
    except (OSError, ValueError):
        return None


class ActivationWatcher:
    """Counts activation records of one lambda on the activations topic, from its end onwards.

    1. ``async with`` assigns every partition and seeks to the end before returning.
    2. ``wait_for(n, timeout_s)`` returns (records seen, the newest record's
       timestamp in ms since the epoch, or None) once ``n`` arrived or at the timeout.
    """

    def __init__(self, bootstrap: str, topic: str, lambda_id: str) -> None:
        self.topic = topic
        self.lambda_id = lambda_id
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                         fetch_max_wait_ms=50, max_poll_records=2000)
        self.seen: set[str] = set()
        self.last_ms: int | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ActivationWatcher:
        prefix = self.topic.rsplit(".", 1)[0]
        spec = next(s for s in Topics(prefix).specs() if s.name == self.topic)
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(spec.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:
            await self.consumer.position(tp)
        self._reader = asyncio.create_task(self._read(), name="bench-activation-watcher")
        return self

    async def _read(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        value = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue
                    if value.get("lambda_id") == self.lambda_id and value.get("activation_id"):
                        self.seen.add(value["activation_id"])
                        self.last_ms = max(self.last_ms or 0, record.timestamp)

    async def wait_for(self, n: int, timeout_s: float, quiet_s: float = 1.0) -> tuple[int, int | None]:
        """Until ``n`` records arrived and then none for ``quiet_s`` (calls the load tool did not
        count, in flight when it stopped, finish too), or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self._reader is not None and self._reader.done():
                self._reader.result()  # re-raise what ended it
            now = time.monotonic()
            if len(self.seen) != last_count:
                last_count, last_change = len(self.seen), now
            elif last_count >= n and now - last_change >= quiet_s:
                break
            await asyncio.sleep(0.05)
        return len(self.seen), self.last_ms

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self.consumer.stop()


async def _topic(bootstrap: str, name: str) -> str:
    topic = f"{BENCH_TOPIC_PREFIX}.{name}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, retention_ms=3600 * 1000)])
    return topic


async def _tail(bootstrap: str, topic: str, fetch_max_wait_ms: int, group: str | None = None,
                max_poll_records: int = 500) -> tuple[AIOKafkaConsumer, TopicPartition]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                fetch_max_wait_ms=fetch_max_wait_ms, max_poll_records=max_poll_records)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    return consumer, tp


@dataclass
class LatencySweep:
    linger_ms: int
    background_per_s: int
    round_trip_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)


async def linger_latency(bootstrap: str, *, linger_ms: int, round_trips: int,
                         background_per_s: int = 0) -> LatencySweep:
    """Sequential produce→consume round trips; optional background records on the same producer."""
    topic = await _topic(bootstrap, "linger-latency")
    out = LatencySweep(linger_ms, background_per_s)
    consumer, _ = await _tail(bootstrap, topic, fetch_max_wait_ms=200)
    pending: dict[bytes, asyncio.Future[float]] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        tasks.append(asyncio.create_task(resolve_arrivals(consumer, pending)))
        async with Producer(bootstrap, client_id="fnbus-bench", linger_ms=linger_ms) as producer:
            if background_per_s:
                async def background() -> None:
                    interval = 1 / background_per_s
                    while True:
                        await producer.send_nowait(topic, b"background", key=b"bg")
                        await asyncio.sleep(interval)

                tasks.append(asyncio.create_task(background()))
            loop = asyncio.get_running_loop()
            for i in range(round_trips + WARMUP):
                value = f"{uuid.uuid4().hex}-{i}".encode()
                fut: asyncio.Future[float] = loop.create_future()
                pending[value] = fut
                t0 = time.perf_counter()
                await producer.send(topic, value, key=b"bench")
                t1 = time.perf_counter()
                received = await asyncio.wait_for(fut, timeout=30)
                if i >= WARMUP:
                    out.ack_ms.append((t1 - t0) * 1000)
                    out.round_trip_ms.append((received - t0) * 1000)
                await asyncio.sleep(0.002)  # a caller's think time: batches cannot carry over
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await consumer.stop()
    return out


@dataclass
class ThroughputSweep:
    linger_ms: int
    max_batch_size: int
    concurrency: int
    records: int
    seconds: float
    cpu_s: float
    ack_ms_p50: float
    broker_cpu_s: float = 0.0
    mode: str = "closed"  # closed: each sender awaits its ack; open: send_nowait at a fixed rate

    @property
    def per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_record(self) -> float:
        return 1e6 * self.cpu_s / self.records if self.records else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"linger_ms": self.linger_ms, "max_batch_size": self.max_batch_size,
                "concurrency": self.concurrency, "records": self.records, "seconds": round(self.seconds, 3),
                "per_s": round(self.per_s, 1), "cpu_us_per_record": round(self.cpu_us_per_record, 1),
                "ack_ms_p50": round(self.ack_ms_p50, 3), "mode": self.mode,
                "broker_cpu_us_per_record": round(1e6 * self.broker_cpu_s / self.records, 1)
                if self.records else 0.0}


async def linger_throughput(bootstrap: str, *, linger_ms: int, max_batch_size: int, concurrency: int,
                            seconds: float, payload_bytes: int = 300, broker: int | None = None
                            ) -> ThroughputSweep:
    """``concurrency`` senders, each awaiting the ack before its next record (the gateway's async path)."""
    topic = await _topic(bootstrap, "linger-throughput")
    value = b"x" * payload_bytes
    acks: list[float] = []
    async with Producer(bootstrap, client_id="fnbus-bench", linger_ms=linger_ms,
                        max_batch_size=max_batch_size) as producer:
        for _ in range(WARMUP):
            await producer.send(topic, value, key=b"warm")
        count = 0
        stop_at = 0.0

        async def sender(w: int) -> None:
            nonlocal count
            key = f"k{w}".encode()
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await producer.send(topic, value, key=key)
                acks.append((time.perf_counter() - t0) * 1000)
                count += 1

        cpu0, bcpu0 = _cpu_s(), _broker_cpu_s(broker)
        t0 = time.perf_counter()
        stop_at = t0 + seconds
        await asyncio.gather(*(sender(w) for w in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu, bcpu = _cpu_s() - cpu0, _broker_cpu_s(broker) - bcpu0
    acks.sort()
    return ThroughputSweep(linger_ms, max_batch_size, concurrency, count, elapsed, cpu,
                           acks[len(acks) // 2] if acks else 0.0, bcpu)


async def linger_open_loop(bootstrap: str, *, linger_ms: int, max_batch_size: int, rate_per_s: int,
                           seconds: float, payload_bytes: int = 300, broker: int | None = None
                           ) -> ThroughputSweep:
    """Records queued with ``send_nowait`` at a fixed rate (the invoker's activation and log
    records): the client's and the broker's CPU per record, and the ack latency."""
    topic = await _topic(bootstrap, "linger-open-loop")
    value = b"z" * payload_bytes
    acks: list[float] = []
    async with Producer(bootstrap, client_id="fnbus-bench", linger_ms=linger_ms,
                        max_batch_size=max_batch_size) as producer:
        for _ in range(WARMUP):
            await producer.send(topic, value, key=b"warm")
        futures: list[asyncio.Future[Any]] = []
        tick_s = 0.005
        per_tick = max(1, round(rate_per_s * tick_s))
        cpu0, bcpu0 = _cpu_s(), _broker_cpu_s(broker)
        t0 = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - t0 < seconds:
            due = int((now - t0) * rate_per_s) + per_tick
            while sent < due:
                queued_at = time.perf_counter()
                fut = await producer.send_nowait(topic, value, key=f"k{sent % 8}".encode())
                fut.add_done_callback(lambda _f, q=queued_at: acks.append((time.perf_counter() - q) * 1000))
                futures.append(fut)
                sent += 1
            await asyncio.sleep(tick_s)
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - t0
        cpu, bcpu = _cpu_s() - cpu0, _broker_cpu_s(broker) - bcpu0
    acks.sort()
    return ThroughputSweep(linger_ms, max_batch_size, 0, sent, elapsed, cpu,
                           acks[len(acks) // 2] if acks else 0.0, bcpu, mode=f"open {rate_per_s}/s")


async def fetch_latency(bootstrap: str, *, fetch_max_wait_ms: int, records: int) -> list[float]:
    """Produce one record at a time (20 ms apart) to a group consumer: ack → consumed, ms."""
    topic = await _topic(bootstrap, "fetch-latency")
    consumer, _ = await _tail(bootstrap, topic, fetch_max_wait_ms=fetch_max_wait_ms)
    pending: dict[bytes, asyncio.Future[float]] = {}
    out: list[float] = []
    reader: asyncio.Task[None] | None = None
    try:
        reader = asyncio.create_task(resolve_arrivals(consumer, pending, timeout_ms=1000))
        async with Producer(bootstrap, client_id="fnbus-bench") as producer:
            loop = asyncio.get_running_loop()
            for i in range(records + WARMUP):
                value = f"{uuid.uuid4().hex}-{i}".encode()
                fut: asyncio.Future[float] = loop.create_future()
                pending[value] = fut
                await producer.send(topic, value, key=b"bench")
                acked = time.perf_counter()
                received = await asyncio.wait_for(fut, timeout=30)
                if i >= WARMUP:
                    out.append((received - acked) * 1000)
                await asyncio.sleep(0.02)
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await consumer.stop()
    return out


async def fetch_throughput(bootstrap: str, *, max_poll_records: int, fetch_max_wait_ms: int,
                           backlog: int) -> dict[str, float]:
    """Read a backlog of ``backlog`` records with ``getmany``: records per second and polls."""
    topic = await _topic(bootstrap, "fetch-throughput")
    consumer, tp = await _tail(bootstrap, topic, fetch_max_wait_ms=fetch_max_wait_ms,
                               max_poll_records=max_poll_records)
    try:
        start = await consumer.position(tp)
        async with Producer(bootstrap, client_id="fnbus-bench", linger_ms=5) as producer:
            futures = [await producer.send_nowait(topic, b"y" * 300, key=b"b") for _ in range(backlog)]
            await asyncio.gather(*futures)
        consumer.seek(tp, start)
        got = polls = 0
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        while got < backlog:
            batch = await consumer.getmany(timeout_ms=1000)
            polls += 1
            got += sum(len(r) for r in batch.values())
            if time.perf_counter() - t0 > 60:
                break
        elapsed = time.perf_counter() - t0
        cpu = _cpu_s() - cpu0
    finally:
        await consumer.stop()
    return {"max_poll_records": max_poll_records, "fetch_max_wait_ms": fetch_max_wait_ms, "records": got,
            "per_s": round(got / elapsed, 1) if elapsed else 0.0, "polls": polls,
            "cpu_us_per_record": round(1e6 * cpu / got, 1) if got else 0.0}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round((len(ordered) - 1) * q / 100)))]


async def tuning(bootstrap: str, *, quick: bool = False, say: Any = print, broker: int | None = None
                 ) -> dict[str, Any]:
    """The producer and consumer sweeps, in one document (bench/README.md, "Kafka tuning")."""
    trips = 100 if quick else 300
    seconds = 2.0 if quick else 4.0
    out: dict[str, Any] = {"sync_latency": [], "async_throughput": [], "fetch_latency": [],
                           "fetch_throughput": []}
    for background in (0, 200):
        for linger in (0, 1, 5):
            say(f"kafka tuning: sync round trips, linger {linger} ms, background {background}/s")
            sweep = await linger_latency(bootstrap, linger_ms=linger, round_trips=trips,
                                         background_per_s=background)
            out["sync_latency"].append({
                "linger_ms": linger, "background_per_s": background, "n": len(sweep.round_trip_ms),
                "round_trip_p50_ms": round(_p(sweep.round_trip_ms, 50), 3),
                "round_trip_p99_ms": round(_p(sweep.round_trip_ms, 99), 3),
                "ack_p50_ms": round(_p(sweep.ack_ms, 50), 3)})
    for linger, batch in ((0, 16384), (5, 16384), (20, 16384), (5, 65536), (20, 262144)):
        say(f"kafka tuning: async senders, linger {linger} ms, batch {batch} B")
        tp = await linger_throughput(bootstrap, linger_ms=linger, max_batch_size=batch, concurrency=64,
                                     seconds=seconds, broker=broker)
        out["async_throughput"].append(tp.to_dict())
    for linger, batch in ((0, 16384), (5, 16384), (20, 16384), (20, 65536)):
        say(f"kafka tuning: open loop 3000/s, linger {linger} ms, batch {batch} B")
        tp = await linger_open_loop(bootstrap, linger_ms=linger, max_batch_size=batch, rate_per_s=3000,
                                    seconds=seconds, broker=broker)
        out["async_throughput"].append(tp.to_dict())
    for wait in (10, 50, 200):
        say(f"kafka tuning: consumer fetch_max_wait {wait} ms")
        lat = await fetch_latency(bootstrap, fetch_max_wait_ms=wait, records=trips // 3)
        out["fetch_latency"].append({"fetch_max_wait_ms": wait, "n": len(lat),
                                     "consume_p50_ms": round(_p(lat, 50), 3),
                                     "consume_p99_ms": round(_p(lat, 99), 3)})
    for records in (100, 200, 500):
        say(f"kafka tuning: backlog read, max_poll_records {records}")
        out["fetch_throughput"].append(await fetch_throughput(
            bootstrap, max_poll_records=records, fetch_max_wait_ms=200, backlog=5000 if quick else 20000))
    return out


def main() -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Kafka producer/consumer tuning sweeps on the shared broker")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="")
    parser.add_argument("--home", default=os.environ.get("FNBUS_HOME", ".fnbus"),
                        help="where run/kafka.pid is (the broker's CPU per record)")
    args = parser.parse_args()
    result = asyncio.run(tuning(args.bootstrap, quick=args.quick, broker=broker_pid(Path(args.home)),
                                say=lambda m: print(f"==> {m}", file=sys.stderr, flush=True)))
    text = json.dumps(result, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
