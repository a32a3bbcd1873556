"""Scheduler fire lag: due minute → invocation request on the invocations topic, 10,000 schedules.

Standalone: ``.venv/bin/python bench/scheduler_lag.py [--schedules 10000] [--minutes 2]``.

What it does, against the running Kafka and PostgreSQL (``FNBUS_*`` settings):
1. creates its own database and topic prefix (nothing else sees them) and
   starts one scheduler process (``fnbus serve scheduler``) on them;
2. publishes ``schedules`` Productive lambdas on lambda-changes, 10 per account
   (the per-account limit), and inserts one ``* * * * *`` schedule per lambda
   directly into the schedules table (the API would take minutes for 10,000);
3. for ``minutes`` minute boundaries, reads the invocations topic and measures,
   per request, its record timestamp (set when the scheduler produced it) minus
   its due minute (from ``schedule_fires``).

It measures up to the produce, not the invocation start: no invoker could run
10,000 containers in the same second, and the scheduler's job ends when the
request is on the topic. Prints p50/p99/max and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.stats import percentile  # noqa: E402
from fnbus.config import REPO_ROOT, Settings  # noqa: E402
from fnbus.kafka import Producer  # noqa: E402
from fnbus.schemas import LambdaChange, LambdaState, Runtime  # noqa: E402
from fnbus.topics import Topics, ensure_topics  # noqa: E402

MINUTE_MS = 60_000
PER_ACCOUNT = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _db_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path=f"/{name}"))


def _spawn(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "fnbus.cli", "serve", "scheduler",
                                 "--port", str(port)], env=env, cwd=REPO_ROOT, stdout=log,
                                stderr=subprocess.STDOUT)


async def run(n: int, minutes: int) -> dict[str, object]:
    settings = Settings()
    tag = secrets.token_hex(3)
    prefix, db_name = f"benchsched{tag}", f"fnbus_bench_sched_{tag}"
    db_url = _db_url(settings.database_url, db_name)
    topics = Topics(prefix)
    admin = await asyncpg.connect(settings.database_url)
    await admin.execute(f'CREATE DATABASE "{db_name}"')
    await admin.close()
    port = _free_port()
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"fnbus-bench-{tag}"
    home.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen[bytes] | None = None
    try:
        await ensure_topics(settings.kafka_bootstrap, topics.specs())
        lambdas = [(f"bench{i // PER_ACCOUNT}", str(uuid.uuid4())) for i in range(n)]
        async with Producer(settings.kafka_bootstrap) as producer:
            futures = []
            for account, lid in lambdas:
                change = LambdaChange(lambda_id=lid, account_id=account, name=f"l-{lid[:8]}",
                                      runtime=Runtime.NODEJS, state=LambdaState.PRODUCTIVE,
                                      deployed_version=1)
                futures.append(await producer.send_nowait(topics.lambda_changes,
                                                          change.to_bytes(), key=lid))
            await asyncio.gather(*futures)
        env = {**os.environ, "FNBUS_HOME": str(home), "FNBUS_DATABASE_URL": db_url,
               "FNBUS_TOPIC_PREFIX": prefix, "FNBUS_INSTANCE_ID": f"bench-{tag}",
               "FNBUS_LOG_JSON": "false", "FNBUS_LOG_LEVEL": "WARNING"}
        proc = _spawn(env, port, home / "scheduler.log")
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"scheduler did not become healthy; see {home}/scheduler.log")

        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        now = int(time.time() * 1000)
        first_due = now - now % MINUTE_MS + MINUTE_MS
        if first_due - now < 5_000:  # leave time to insert before the boundary
            first_due += MINUTE_MS
        await pool.execute(
            """INSERT INTO schedules (id, account_id, lambda_id, cron, payload, enabled,
                                      next_due_ms, created_ms, updated_ms)
               SELECT gen_random_uuid(), a, l::uuid, '* * * * *', '{"bench": true}'::jsonb, true,
                      $3, $4, $4
               FROM unnest($1::text[], $2::text[]) AS u(a, l)""",
            [a for a, _ in lambdas], [lid for _, lid in lambdas], first_due, now)

        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
        await consumer.start()
        count = next(s.partitions for s in topics.specs() if s.name == topics.invocations)
        parts = [TopicPartition(topics.invocations, p) for p in range(count)]
        consumer.assign(parts)
        produced_at: dict[str, int] = {}
        try:
            await consumer.seek_to_end(*parts)
            end = first_due + minutes * MINUTE_MS - 30_000
            print(f"{n} schedules across {n // PER_ACCOUNT} accounts; first due minute in "
                  f"{(first_due - time.time() * 1000) / 1000:.0f} s; measuring {minutes} "
                  "minute(s)", file=sys.stderr)
            while time.time() * 1000 < end:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for r in records:
                        produced_at[json.loads(r.value)["activation_id"]] = r.timestamp
        finally:
            await consumer.stop()
        rows = await pool.fetch("SELECT activation_id, due_ms FROM schedule_fires")
        await pool.close()
        due = {r["activation_id"]: r["due_ms"] for r in rows}
        lags = [(ts - due[a]) / 1000 for a, ts in produced_at.items() if a in due]
        per_minute: dict[int, int] = {}
        for a in produced_at:
            if a in due:
                per_minute[due[a]] = per_minute.get(due[a], 0) + 1
        return {
            "schedules": n, "accounts": n // PER_ACCOUNT, "minutes": minutes,
            "fires": len(lags), "fires_per_minute": sorted(per_minute.values()),
            "missing": minutes * n - len(lags),
            "lag_p50_s": round(percentile(lags, 50), 3) if lags else None,
            "lag_p99_s": round(percentile(lags, 99), 3) if lags else None,
            "lag_max_s": round(max(lags), 3) if lags else None,
            "measured": "due minute -> InvocationRequest record timestamp on the invocations topic",
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        admin = await asyncpg.connect(settings.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        await admin.close()
        kafka = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await kafka.start()
        try:
            mine = [t for t in await kafka.list_topics() if t.startswith(prefix + ".")]
            if mine:
                await kafka.delete_topics(mine)
        finally:
            await kafka.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(run(args.schedules, args.minutes))
    print(f"fires {result['fires']} (missing {result['missing']}), fire lag p50 "
          f"{result['lag_p50_s']} s, p99 {result['lag_p99_s']} s, max {result['lag_max_s']} s")
    print(json.dumps(result))
    return 0 if result["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
